"""The project view: a read-only view of the scanned tree that rules ask for sibling modules, file listings and
tree-wide indexes (a directory, an in-memory mapping for rule cases, or one git revision for reviews).

The view also tells what a piece of code read through it (`recording`): the files (present or absent), the listings
and the tree-wide indexes, with a digest of each (`digest`). The result cache (`analyzers.cache`) keeps that list
beside a file's findings and trusts them again only while every digest is unchanged.
"""

from __future__ import annotations

import hashlib
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

import libcst as cst

from analyzers.modules import module_imports, module_name_for
from analyzers.parsing import parse_module


Reader = Callable[[str], "str | None"]
#: lists the files under a directory, recursively, as paths relative to the same root as the reader's
Lister = Callable[[str], "Iterable[str]"]
#: what a piece of code read through the view: ("file", path) (its text, or that it is absent),
#: ("dir", directory) (the listing `files` answered) or ("memo", key) (a tree-wide index, itself built from reads)
Read = tuple[str, str]


def text_digest(text: str | None) -> str | None:
    """A short content hash of a file's text (None for an absent file)."""
    if text is None:
        return None
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


#: parses shared by every view of a process, by the digest of the text parsed: a module unchanged between two
#: revisions (the base and head of a review, one head and the next) is parsed once. libcst trees are immutable, so
#: sharing one between views is safe; few are kept, since a parse of a large module takes tens of megabytes
_SHARED_PARSES: OrderedDict[str, cst.Module | None] = OrderedDict()
SHARED_PARSES_KEPT = 24


def parse_shared(text: str) -> cst.Module | None:
    """`cst.parse_module(text)` (None when it does not parse), answered from the process's recent parses."""
    key = text_digest(text) or ""
    if key in _SHARED_PARSES:
        _SHARED_PARSES.move_to_end(key)
        return _SHARED_PARSES[key]
    try:
        module: cst.Module | None = parse_module(text)
    except (cst.ParserSyntaxError, RecursionError):
        module = None
    _SHARED_PARSES[key] = module
    while len(_SHARED_PARSES) > SHARED_PARSES_KEPT:
        _SHARED_PARSES.popitem(last=False)
    return module


def parsed_already(text: str) -> cst.Module | None:
    """The process's recent parse of `text` when it has one (a neighbour a rule read before the scan came to it),
    else None; parses nothing."""
    key = text_digest(text) or ""
    module = _SHARED_PARSES.get(key)
    if module is not None:
        _SHARED_PARSES.move_to_end(key)
    return module


class Project:
    """A read-only view of the scanned tree that loads sibling modules by dotted name, lazily and cached.

    Paths are POSIX paths relative to the parent of the top-level package (`diffusers/models/…`), the
    same paths findings carry. The reader returns a file's text or None when there is no such file.
    """

    #: parsed modules (neighbours rules asked for) kept at once, at most this many and of at most this much text
    #: (a parse takes some 30 bytes of memory per byte of text): a scan of diffusers asks for the same neighbours
    #: from files far apart (a model from its pipelines, the LoRA loaders from every pipeline); with 64 modules and
    #: no byte bound it parsed 41 of them twice (1.5 s), with these 10 (the analysed file asked for later)
    MODULES_KEPT = 4096
    MODULE_BYTES_KEPT = 16_000_000
    #: parses of analysed files kept (`remember`) until a rule asks for them as neighbours
    REMEMBERED_KEPT = 8
    #: file texts kept at once: texts are small beside their parses, and rules look up the same modules (and the
    #: absent candidates of a dotted name) again and again; with 64, a scan of diffusers read its files 9,700 times
    SOURCES_KEPT = 4096

    def __init__(self, reader: Reader, lister: Lister | None = None) -> None:
        self._reader = reader
        self._lister = lister
        self._listings: dict[str, tuple[str, ...]] = {}
        self._memos: dict[str, object] = {}
        self._sources: OrderedDict[str, str | None] = OrderedDict()
        self._modules: OrderedDict[str, cst.Module | None] = OrderedDict()
        #: parses the engine made of the files it analysed (`remember`), until a rule asks for one
        self._remembered: OrderedDict[str, tuple[cst.Module, frozenset[Read], int]] = OrderedDict()
        self._module_sizes: dict[str, int] = {}
        self._module_bytes = 0
        self._imports: OrderedDict[str, dict[str, str]] = OrderedDict()
        self._packages: dict[str, bool] = {}
        #: open `recording`s, innermost last; a read is noted in the innermost one only, and a cached value
        #: (a parse, an import table, a memo) passes on the reads it was made from whenever it is asked for
        self._recorders: list[set[Read]] = []
        self._behind: dict[tuple[int, str], frozenset[Read]] = {}
        self._memo_reads: dict[str, frozenset[Read]] = {}
        self._digests: dict[Read, str | None] = {}

    def _note(self, read: Read) -> None:
        if self._recorders:
            self._recorders[-1].add(read)

    def _recorded(self, make: Callable[[], object]) -> tuple[object, frozenset[Read]]:
        reads: set[Read] = set()
        self._recorders.append(reads)
        try:
            return make(), frozenset(reads)
        finally:
            self._recorders.pop()

    def _cached(self, cache: OrderedDict, key: str, make: Callable[[], object], kept: int):
        if key in cache:
            cache.move_to_end(key)
            if self._recorders:
                self._recorders[-1].update(self._behind.get((id(cache), key), ()))
            return cache[key]
        value, reads = self._recorded(make)
        cache[key] = value
        self._behind[(id(cache), key)] = reads
        if self._recorders:
            self._recorders[-1].update(reads)
        if len(cache) > kept:
            old, _ = cache.popitem(last=False)
            self._behind.pop((id(cache), old), None)
        return value

    @contextmanager
    def recording(self) -> Iterator[set[Read]]:
        """Collect what the code inside reads through this view: every file asked for (found or not), every
        listing, every memo, including those that parses and import tables cached earlier were made from."""
        reads: set[Read] = set()
        self._recorders.append(reads)
        try:
            yield reads
        finally:
            self._recorders.pop()

    def digest(self, read: Read) -> str | None:
        """The digest of a file's text (None when absent) or of a listing, as this view sees it now: the one taken
        when the file was read for a rule, or a fresh read."""
        kind, name = read
        if kind == "dir":
            return hashlib.blake2b(
                "\n".join(self.files(name)).encode("utf-8", "surrogatepass"), digest_size=16
            ).hexdigest()
        if kind != "file":
            raise ValueError(f"no digest for a {kind} read")
        if read not in self._digests:
            self.source(name)
        return self._digests.get(read)

    def memo_reads(self, key: str) -> frozenset[Read] | None:
        """What memo `key` was built from (None when this view has not built it)."""
        return self._memo_reads.get(key)

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

    def overlaid(self, files: Mapping[str, str]) -> Project:
        """A fresh view that reads `files` (path -> text) where this one would read the tree: the tree as it will be
        once they are written (`drbot fix` checks its edits so before writing any). Listings stay this view's."""
        reader = self._reader
        return Project(lambda path: files[path] if path in files else reader(path), self._lister)

    def files(self, directory: str) -> tuple[str, ...]:
        """Every file under `directory` (recursively, sorted); empty when there is none or the view cannot list.

        Rules that ask must treat "empty" as "cannot tell", not as "absent": a wheel has no `tests/`.
        """
        directory = directory.strip("/")
        self._note(("dir", directory))
        if directory not in self._listings:
            self._listings[directory] = tuple(sorted(self._lister(directory))) if self._lister else ()
        return self._listings[directory]

    def memo(self, key: str, make: Callable[[], object]):
        """A value derived from the whole tree (an index of the tests, say), built once per view."""
        if key not in self._memos:
            self._memos[key], self._memo_reads[key] = self._recorded(make)
        self._note(("memo", key))
        return self._memos[key]

    def source(self, path: str) -> str | None:
        self._note(("file", path))
        return self._cached(self._sources, path, lambda: self._read(path), self.SOURCES_KEPT)

    def _read(self, path: str) -> str | None:
        text = self._reader(path)
        self._digests[("file", path)] = text_digest(text)
        return text

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
            remembered = self._remembered.pop(dotted, None)
            if remembered is not None:  # analysed a few files ago
                module, reads, size = remembered
                for read in reads:
                    self._note(read)
                self._module_sizes[dotted] = size
                self._module_bytes += size
                return module
            path = self.module_path(dotted)
            if path is None:
                return None
            self._packages[dotted] = path.endswith("__init__.py")
            text = self.source(path) or ""
            self._module_sizes[dotted] = len(text)
            self._module_bytes += len(text)
            return parse_shared(text)

        module = self._cached(self._modules, dotted, load, sys.maxsize)  # bounded by `_trim_modules`
        self._trim_modules()
        return module

    def _trim_modules(self) -> None:
        """Forget the least recently asked-for parses while those kept hold more than `MODULE_BYTES_KEPT` of text."""
        while len(self._modules) > 1 and (
            len(self._modules) > self.MODULES_KEPT or self._module_bytes > self.MODULE_BYTES_KEPT
        ):
            old, _ = self._modules.popitem(last=False)
            self._behind.pop((id(self._modules), old), None)
            self._module_bytes -= self._module_sizes.pop(old, 0)

    def parsed(self, path: str, source: str) -> cst.Module | None:
        """The parse of `path` this view already holds (a neighbour a rule asked for before the scan came to it) when
        its text is `source`, else None; parses and reads nothing."""
        module = self._modules.get(module_name_for(path))
        if module is None or self._sources.get(path) != source:
            return None
        return module

    def remember(self, dotted: str, module: cst.Module, is_package: bool, size: int = 0) -> None:
        """Share a parse the engine already made, so a rule asking for this module does not parse it again."""
        self._packages[dotted] = is_package
        if dotted in self._modules:
            self._modules.move_to_end(dotted)
            return
        # what `module_path` would have read to find it: a file that asks for this module later depends on them
        # (the file being analysed does not: the cache keys its results on its own text)
        base = dotted.replace(".", "/")
        paths = (f"{base}.py", f"{base}/__init__.py") if is_package else (f"{base}.py",)
        # kept apart from the modules rules asked for: a scan remembers every file it analyses, and those would
        # push the neighbours that many files ask for (a family's model, the pipeline base class) out of the cache
        self._remembered[dotted] = (module, frozenset(("file", path) for path in paths), size)
        self._remembered.move_to_end(dotted)
        if len(self._remembered) > self.REMEMBERED_KEPT:
            self._remembered.popitem(last=False)

    def imports(self, dotted: str) -> dict[str, str]:
        """The import table of module `dotted` (empty if it is absent)."""

        def build() -> dict[str, str]:
            module = self.module(dotted)
            return {} if module is None else module_imports(module, dotted, self._packages.get(dotted, False))

        return self._cached(self._imports, dotted, build, self.MODULES_KEPT)  # a table per module kept

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
