"""The project view: a read-only view of the scanned tree that rules ask for sibling modules, file listings and
tree-wide indexes (a directory, an in-memory mapping for rule cases, or one git revision for reviews)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping

import libcst as cst

from analyzers.modules import module_imports


Reader = Callable[[str], "str | None"]
#: lists the files under a directory, recursively, as paths relative to the same root as the reader's
Lister = Callable[[str], "Iterable[str]"]


class Project:
    """A read-only view of the scanned tree that loads sibling modules by dotted name, lazily and cached.

    Paths are POSIX paths relative to the parent of the top-level package (`diffusers/models/…`), the
    same paths findings carry. The reader returns a file's text or None when there is no such file.
    """

    #: parsed modules kept at once; a scan touches each file once, rules ask for a few neighbours
    CACHE_SIZE = 64

    def __init__(self, reader: Reader, lister: Lister | None = None) -> None:
        self._reader = reader
        self._lister = lister
        self._listings: dict[str, tuple[str, ...]] = {}
        self._memos: dict[str, object] = {}
        self._sources: OrderedDict[str, str | None] = OrderedDict()
        self._modules: OrderedDict[str, cst.Module | None] = OrderedDict()
        self._imports: OrderedDict[str, dict[str, str]] = OrderedDict()
        self._packages: dict[str, bool] = {}

    def _cached(self, cache: OrderedDict, key: str, make: Callable[[], object]):
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        value = cache[key] = make()
        if len(cache) > self.CACHE_SIZE:
            cache.popitem(last=False)
        return value

    @classmethod
    def from_mapping(cls, files: Mapping[str, str]) -> Project:
        return cls(lambda path: files.get(path), lambda directory: [p for p in files if p.startswith(directory + "/")])

    @classmethod
    def from_directory(cls, *roots: str) -> Project:
        """A view over directories that hold top-level packages (site-packages; a checkout's `src/` and root).

        A path is read from the first root that has it: `diffusers/…` from `src/`, `tests/…` from the checkout.
        """
        import os

        def read(path: str) -> str | None:
            for root in roots:
                full = os.path.join(root, *path.split("/"))
                try:
                    with open(full, encoding="utf-8") as handle:
                        return handle.read()
                except FileNotFoundError:
                    continue
                except (OSError, UnicodeDecodeError):
                    return None
            return None

        def listing(directory: str) -> list[str]:
            found: set[str] = set()
            for root in roots:
                start = os.path.join(root, *directory.split("/"))
                for dirpath, dirnames, filenames in os.walk(start):
                    dirnames[:] = [d for d in dirnames if not d.startswith((".", "__pycache__"))]
                    relative = os.path.relpath(dirpath, root).replace(os.sep, "/")
                    found.update(f"{relative}/{name}" for name in filenames)
            return sorted(found)

        return cls(read, listing)

    def files(self, directory: str) -> tuple[str, ...]:
        """Every file under `directory` (recursively, sorted); empty when there is none or the view cannot list.

        Rules that ask must treat "empty" as "cannot tell", not as "absent": a wheel has no `tests/`.
        """
        directory = directory.strip("/")
        if directory not in self._listings:
            self._listings[directory] = tuple(sorted(self._lister(directory))) if self._lister else ()
        return self._listings[directory]

    def memo(self, key: str, make: Callable[[], object]):
        """A value derived from the whole tree (an index of the tests, say), built once per view."""
        if key not in self._memos:
            self._memos[key] = make()
        return self._memos[key]

    def source(self, path: str) -> str | None:
        return self._cached(self._sources, path, lambda: self._reader(path))

    def module_path(self, dotted: str) -> str | None:
        """Return the path of module `dotted` (`a/b.py` or `a/b/__init__.py`), or None if absent."""
        base = dotted.replace(".", "/")
        for candidate in (f"{base}.py", f"{base}/__init__.py"):
            if self.source(candidate) is not None:
                return candidate
        return None

    def module(self, dotted: str) -> cst.Module | None:
        """Return the parsed module `dotted`, or None if it is absent or does not parse."""

        def load() -> cst.Module | None:
            path = self.module_path(dotted)
            if path is None:
                return None
            self._packages[dotted] = path.endswith("__init__.py")
            try:
                return cst.parse_module(self.source(path) or "")
            except (cst.ParserSyntaxError, RecursionError):
                return None

        return self._cached(self._modules, dotted, load)

    def remember(self, dotted: str, module: cst.Module, is_package: bool) -> None:
        """Share a parse the engine already made, so a rule asking for this module does not parse it again."""
        self._packages[dotted] = is_package
        self._cached(self._modules, dotted, lambda: module)

    def imports(self, dotted: str) -> dict[str, str]:
        """The import table of module `dotted` (empty if it is absent)."""

        def build() -> dict[str, str]:
            module = self.module(dotted)
            return {} if module is None else module_imports(module, dotted, self._packages.get(dotted, False))

        return self._cached(self._imports, dotted, build)

    def locate_class(self, dotted: str, name: str, max_hops: int = 4) -> tuple[str, cst.ClassDef] | None:
        """Find the class that `name` (`Foo` or `mod.Foo`) means inside module `dotted`, following imports."""
        for _ in range(max_hops):
            head, _, rest = name.partition(".")
            if not rest:
                local = self.find_class(dotted, name)
                if local is not None:
                    return dotted, local
            qualified = self.imports(dotted).get(head)
            if qualified is None:
                return None
            qualified = f"{qualified}.{rest}" if rest else qualified
            dotted, _, name = qualified.rpartition(".")
            if not dotted:
                return None
        return None

    def find_class(self, dotted: str, name: str) -> cst.ClassDef | None:
        """Return the top-level class `name` of module `dotted`, or None."""
        module = self.module(dotted)
        if module is None:
            return None
        for statement in module.body:
            if isinstance(statement, cst.ClassDef) and statement.name.value == name:
                return statement
        return None
