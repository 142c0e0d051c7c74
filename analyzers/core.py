"""The rule engine: findings, fingerprints, the rule base class, the project view and `analyze`."""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
import re
import sys
import textwrap
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import PurePosixPath
from typing import ClassVar

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from analyzers import walk
from analyzers.patterns import DRBOT_META, PATTERNS


CODE_RE = re.compile(r"^DRB\d{3}$")
SEVERITIES = ("error", "warning", "note")


@dataclass(frozen=True)
class Finding:
    """One defect found in one place; see DESIGN §4."""

    code: str
    pattern: int
    path: str
    line: int
    end_line: int
    scope: str
    symbol: str
    message: str
    severity: str = "warning"
    fingerprint: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Finding:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


def fingerprint(code: str, path: str, scope: str, symbol: str, n: int) -> str:
    """Return the line-independent id of a finding: sha256 of `code|path|scope|symbol|n`, 16 hex digits."""
    return hashlib.sha256(f"{code}|{path}|{scope}|{symbol}|{n}".encode()).hexdigest()[:16]


def with_fingerprints(findings: Iterable[Finding]) -> list[Finding]:
    """Number identical (code, path, scope, symbol) tuples in source order and fill in fingerprints."""
    ordered = sorted(findings, key=lambda f: (f.path, f.line, f.end_line, f.code, f.symbol, f.message))
    seen: Counter[tuple[str, str, str, str]] = Counter()
    out = []
    for finding in ordered:
        key = (finding.code, finding.path, finding.scope, finding.symbol)
        n = seen[key]
        seen[key] += 1
        out.append(replace(finding, fingerprint=fingerprint(*key, n)))
    return out


@dataclass(frozen=True)
class Valid:
    """Code a rule must stay silent on. `files` adds other modules of the scanned tree, by path."""

    code: str
    path: str = "diffusers/pipelines/example/pipeline_example.py"
    files: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Invalid:
    """Code a rule must report; `message`, when given, is the exact message of the single finding."""

    code: str
    message: str | None = None
    path: str = "diffusers/pipelines/example/pipeline_example.py"
    files: Mapping[str, str] = field(default_factory=dict)


class AnalysisError(Exception):
    """A file could not be analysed (it does not parse); the scan goes on without it."""


# ---------------------------------------------------------------------------------------------
# Project view


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


def module_name_for(path: str) -> str:
    """`diffusers/pipelines/x/__init__.py` -> `diffusers.pipelines.x`; `a/b.py` -> `a.b`."""
    parts = list(PurePosixPath(path).with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve_relative(module_name: str, is_package: bool, level: int, target: str | None) -> str:
    """Resolve `from {'.' * level}{target} import …` inside `module_name` to an absolute dotted name."""
    if level == 0:
        return target or ""
    parts = module_name.split(".")
    if not is_package:
        parts = parts[:-1]
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    if target:
        parts.append(target)
    return ".".join(parts)


def dotted_name(node: cst.BaseExpression | None) -> str | None:
    """`a.b.c` for a Name/Attribute chain, else None."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        head = dotted_name(node.value)
        return f"{head}.{node.attr.value}" if head else None
    return None


@dataclass(frozen=True)
class Definition:
    """A class or function of the analysed file, with its dotted scope (`Outer.method`)."""

    node: cst.ClassDef | cst.FunctionDef
    qualname: str
    parent: Definition | None

    @property
    def name(self) -> str:
        return self.node.name.value

    @property
    def is_class(self) -> bool:
        return isinstance(self.node, cst.ClassDef)


def nested_blocks(statement: cst.CSTNode) -> Iterator[Sequence[cst.CSTNode]]:
    """Yield the statement lists directly inside a compound statement, in source order (not inside nested
    defs): the body, `except` handlers, `case` blocks, then `else`/`elif` (an `elif` as a one-`If` list) and
    `finally`."""
    body = getattr(statement, "body", None)
    if isinstance(body, cst.BaseSuite):
        yield body.body
    for handler in getattr(statement, "handlers", ()) or ():
        yield handler.body.body
    for case in getattr(statement, "cases", ()) or ():
        yield case.body.body
    orelse = getattr(statement, "orelse", None)
    if isinstance(orelse, cst.If):
        yield [orelse]
    elif isinstance(orelse, cst.Else):
        yield orelse.body.body
    finalbody = getattr(statement, "finalbody", None)
    if isinstance(finalbody, cst.Finally):
        yield finalbody.body.body


def _walk_definitions(body: Sequence[cst.CSTNode], prefix: str, parent: Definition | None) -> Iterator[Definition]:
    for statement in body:
        if isinstance(statement, (cst.ClassDef, cst.FunctionDef)):
            qualname = f"{prefix}.{statement.name.value}" if prefix else statement.name.value
            definition = Definition(statement, qualname, parent)
            yield definition
            yield from _walk_definitions(
                statement.body.body if isinstance(statement.body, cst.IndentedBlock) else (), qualname, definition
            )
        elif isinstance(statement, cst.BaseCompoundStatement):
            for block in nested_blocks(statement):
                yield from _walk_definitions(block, prefix, parent)


def module_imports(module: cst.Module, module_name: str, is_package: bool) -> dict[str, str]:
    """Module-level (and `if`/`try`-guarded) imports of `module`: local name -> absolute dotted name."""
    table: dict[str, str] = {}

    def visit(body: Sequence[cst.CSTNode]) -> None:
        for statement in body:
            if isinstance(statement, cst.SimpleStatementLine):
                for small in statement.body:
                    if isinstance(small, cst.ImportFrom) and not isinstance(small.names, cst.ImportStar):
                        base = resolve_relative(
                            module_name, is_package, len(small.relative), dotted_name(small.module)
                        )
                        for alias in small.names:
                            name = dotted_name(alias.name) or ""
                            local = alias.asname.name.value if alias.asname else name  # type: ignore[union-attr]
                            table[local] = f"{base}.{name}" if base else name
                    elif isinstance(small, cst.Import):
                        for alias in small.names:
                            name = dotted_name(alias.name) or ""
                            if alias.asname:
                                table[alias.asname.name.value] = name  # type: ignore[union-attr]
                            else:
                                table[name.split(".")[0]] = name.split(".")[0]
            elif isinstance(statement, (cst.If, cst.Try)):
                for block in nested_blocks(statement):
                    visit(block)

    visit(module.body)
    return table


class FileContext:
    """Everything rules share about one file: one parse, one metadata wrapper, one index."""

    def __init__(self, path: str, source: str, module: cst.Module, project: Project) -> None:
        self.path = path
        self.source = source
        self.module = module
        self.project = project
        self.module_name = module_name_for(path)
        self.is_package = PurePosixPath(path).name == "__init__.py"
        project.remember(self.module_name, module, self.is_package)

    @cached_property
    def wrapper(self) -> MetadataWrapper:
        # unsafe_skip_copy: rules hold nodes of self.module; a deep copy would break identity.
        return MetadataWrapper(self.module, unsafe_skip_copy=True)

    @cached_property
    def definitions(self) -> list[Definition]:
        return list(_walk_definitions(self.module.body, "", None))

    @cached_property
    def classes(self) -> list[Definition]:
        return [d for d in self.definitions if d.is_class]

    def methods(self, cls: Definition) -> dict[str, cst.FunctionDef]:
        """Return the methods defined directly in class `cls`, by name (the last definition wins)."""
        return {d.name: d.node for d in self.definitions if d.parent is cls and not d.is_class}

    @cached_property
    def imports(self) -> dict[str, str]:
        """Module-level (and `if`/`try`-guarded) imports: local name -> absolute dotted name."""
        return module_imports(self.module, self.module_name, self.is_package)

    def qualified_name(self, node: cst.BaseExpression) -> str | None:
        """Resolve a Name/Attribute through this module's imports: `torch.float64`, `diffusers.…Pipeline`."""
        name = dotted_name(node)
        if name is None:
            return None
        head, _, rest = name.partition(".")
        if head in self.imports:
            base = self.imports[head]
            return f"{base}.{rest}" if rest else base
        return None

    def base_names(self, cls: cst.ClassDef) -> list[str]:
        """Base classes of `cls`, as the last component of each base expression."""
        names = []
        for arg in cls.bases:
            name = dotted_name(arg.value)
            if name:
                names.append(name.rpartition(".")[2])
        return names

    def inherits_from(
        self,
        cls: cst.ClassDef,
        targets: frozenset[str],
        max_steps: int = 64,
        follow: Callable[[str], bool] | None = None,
    ) -> bool:
        """Whether a base class of `cls`, followed through the project view, is named in `targets`.

        `follow(base_name)` prunes the search: bases it rejects are not loaded (mixins, say).
        """
        frontier: list[tuple[str, cst.ClassDef]] = [(self.module_name, cls)]
        seen: set[tuple[str, str]] = set()
        for _ in range(max_steps):
            if not frontier:
                return False
            module_name, node = frontier.pop()
            for arg in node.bases:
                name = dotted_name(arg.value)
                if not name:
                    continue
                if name.rpartition(".")[2] in targets:
                    return True
                if follow is not None and not follow(name):
                    continue
                found = self.project.locate_class(module_name, name)
                if found is not None and found[1].name.value in targets:
                    return True  # imported under another name
                if found is not None and (found[0], found[1].name.value) not in seen:
                    seen.add((found[0], found[1].name.value))
                    frontier.append(found)
        return False

    def ancestors(self, cls: cst.ClassDef, max_steps: int = 64) -> Iterator[tuple[str, cst.ClassDef]]:
        """The base classes of `cls` that the project view can find, nearest first: (module, class) pairs."""
        frontier: list[tuple[str, cst.ClassDef]] = [(self.module_name, cls)]
        seen: set[tuple[str, str]] = set()
        for _ in range(max_steps):
            if not frontier:
                return
            module_name, node = frontier.pop(0)
            for arg in node.bases:
                name = dotted_name(arg.value)
                found = self.project.locate_class(module_name, name) if name else None
                if found is not None and (found[0], found[1].name.value) not in seen:
                    seen.add((found[0], found[1].name.value))
                    frontier.append(found)
                    yield found

    def position(self, node: cst.CSTNode, scope: str | None = None) -> tuple[int, int]:
        """Return (first line, last line) of `node`.

        Positions cost more than the parse (libcst generates the code again to count lines). When `scope`
        names a function or class of this file, only its code is generated, and `ast` (several times faster
        than libcst) tells where it starts; otherwise the whole file's positions are resolved, once.
        """
        if scope is not None:
            local = self._local_position(node, scope)
            if local is not None:
                return local
        positions = self.wrapper.resolve(PositionProvider)
        code_range = positions[node]
        return code_range.start.line, code_range.end.line

    def _local_position(self, node: cst.CSTNode, scope: str) -> tuple[int, int] | None:
        cache = self.__dict__.setdefault("_local_positions", {})
        if scope not in cache:
            cache[scope] = self._function_positions(scope)
        entry = cache[scope]
        if entry is None:
            return None
        positions, offset = entry
        code_range = positions.get(node)
        if code_range is None:
            return None
        return code_range.start.line + offset, code_range.end.line + offset

    def _function_positions(self, scope: str):
        matches = [d for d in self.definitions if d.qualname == scope]
        def_lines = self._ast_def_lines().get(scope, [])
        if len(matches) != 1 or len(def_lines) != 1:
            return None  # absent or defined twice: let the whole-file positions decide
        function = matches[0].node
        synthetic = cst.Module(
            body=[function], default_indent=self.module.default_indent, default_newline=self.module.default_newline
        )
        positions = MetadataWrapper(synthetic, unsafe_skip_copy=True).resolve(PositionProvider)
        return positions, def_lines[0] - positions[function.name].start.line

    def _ast_def_lines(self) -> dict[str, list[int]]:
        """qualname -> line of each `def`/`class` with that name (after decorators), from Python's own parser."""
        cached = self.__dict__.get("_def_lines")
        if cached is None:
            import ast

            cached = {}
            try:
                tree = ast.parse(self.source)
            except (SyntaxError, ValueError, RecursionError):
                tree = None

            def visit(body: list, prefix: str) -> None:
                for statement in body:
                    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        qualname = f"{prefix}.{statement.name}" if prefix else statement.name
                        cached.setdefault(qualname, []).append(statement.lineno)
                        visit(statement.body, qualname)
                    else:
                        for field in ("body", "orelse", "finalbody"):
                            inner = getattr(statement, field, None)
                            if isinstance(inner, list):
                                visit(inner, prefix)
                        for handler in getattr(statement, "handlers", ()) or ():
                            visit(handler.body, prefix)
                        for case in getattr(statement, "cases", ()) or ():
                            visit(case.body, prefix)

            if tree is not None:
                visit(tree.body, "")
            self.__dict__["_def_lines"] = cached
        return cached

    def enclosing_scope(self, line: int, end_line: int) -> str:
        """Dotted name of the innermost class or function around lines `line`..`end_line`."""
        best = ""
        best_span = None
        for definition in self.definitions:
            start, end = self.position(definition.node)
            if start <= line and end_line <= end:
                span = end - start
                if best_span is None or span <= best_span:
                    best, best_span = definition.qualname, span
        return best


# ---------------------------------------------------------------------------------------------
# Rules


_SECTION_RE = re.compile(r"^## (?P<title>.+?)\s*$", re.MULTILINE)


def docstring_sections(doc: str) -> dict[str, str]:
    """Split a ruff-style rule docstring into {section title: body}."""
    doc = textwrap.dedent(doc or "").strip("\n")
    sections: dict[str, str] = {}
    matches = list(_SECTION_RE.finditer(doc))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(doc)
        sections[match["title"]] = doc[match.end() : end].strip("\n")
    return sections


def _slug(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


_RULE_CODES: dict[str, str] = {}


class Rule(cst.CSTVisitor):
    """Base class of drbot rules: one defect, one class, one file under `analyzers/rules/`.

    A rule looks at one `FileContext`. By default `check()` visits the whole module with the rule's
    `visit_*`/`leave_*` methods; a rule that only needs a few functions overrides `check()` and walks
    those (`analyzers.walk`). For libcst's `@m.visit`/`@m.leave` matcher decorators, subclass
    `analyzers.decorated.DecoratedRule` instead: `libcst.matchers` takes 0.3 s to import, which every
    `drbot` run would otherwise pay. `applies_to` is a cheap text prefilter: files no rule applies to are
    not parsed.
    """

    code: ClassVar[str]
    pattern: ClassVar[int]
    message: ClassVar[str] = ""
    severity: ClassVar[str] = "warning"
    VALID: ClassVar[Sequence[Valid]] = ()
    INVALID: ClassVar[Sequence[Invalid]] = ()
    #: substrings of which at least one must occur in a file for this rule to run on it
    REQUIRES_ANY: ClassVar[tuple[str, ...]] = ()
    #: path fragments (`/pipelines/`) of which at least one must occur in the file's path
    PATHS: ClassVar[tuple[str, ...]] = ()

    name: ClassVar[str]
    title: ClassVar[str]
    rationale: ClassVar[str]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("abstract", False):
            return
        where = f"{cls.__module__}.{cls.__qualname__}"
        if not CODE_RE.match(getattr(cls, "code", "")):
            raise TypeError(f"{where}: `code` must be DRB + 3 digits")
        if cls.code in _RULE_CODES and _RULE_CODES[cls.code] != where:
            raise TypeError(f"{where}: code {cls.code} is already used by {_RULE_CODES[cls.code]}")
        _RULE_CODES[cls.code] = where
        if cls.pattern not in PATTERNS and cls.pattern != DRBOT_META:
            raise TypeError(f"{where}: `pattern` must be one of the #13656 patterns 1-10")
        if cls.severity not in SEVERITIES:
            raise TypeError(f"{where}: `severity` must be one of {SEVERITIES}")
        sections = docstring_sections(cls.__doc__ or "")
        for required in ("What it does", "Why is this bad?"):
            if not sections.get(required):
                raise TypeError(f"{where}: the docstring needs a `## {required}` section")
        if not cls.VALID or not cls.INVALID:
            raise TypeError(f"{where}: at least one VALID and one INVALID case are required")
        cls.name = _slug(cls.__name__)
        cls.title = " ".join(sections["What it does"].split())
        cls.rationale = " ".join(sections["Why is this bad?"].split())

    def __init__(self, context: FileContext) -> None:
        super().__init__()
        self.context = context
        self.reports: list[tuple[cst.CSTNode, str, str, str | None]] = []

    @classmethod
    def applies_to(cls, path: str, source: str) -> bool:
        """Cheap test on path and text; False skips the rule (and the parse, if no rule applies).

        Files under `tests/` (a checkout's test suite) are only for rules whose `PATHS` name `/tests/`.
        """
        if path.startswith("tests/") and not any(fragment.startswith("/tests/") for fragment in cls.PATHS):
            return False
        if cls.PATHS and not any(fragment in f"/{path}" for fragment in cls.PATHS):
            return False
        return not cls.REQUIRES_ANY or any(needle in source for needle in cls.REQUIRES_ANY)

    def check(self) -> None:
        """Look at the file and `report` defects. The default visits the whole module."""
        self.context.wrapper.visit(self)

    def report(self, node: cst.CSTNode, message: str, *, symbol: str, scope: str | None = None) -> None:
        """Report a finding at `node`. `scope` defaults to the innermost class/function around it."""
        self.reports.append((node, message, symbol, scope))


def all_rules() -> list[type[Rule]]:
    """Every rule class under `analyzers.rules`, by code; nothing to register."""
    import analyzers.rules as package

    for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
        importlib.import_module(info.name)
    found: dict[str, type[Rule]] = {}
    stack = list(Rule.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        module = sys.modules.get(cls.__module__)
        # only the class its module exports: not abstract bases, not re-executed copies (mutation tests)
        if (
            not cls.__dict__.get("abstract", False)
            and cls.__module__.startswith(package.__name__ + ".")
            and getattr(module, cls.__name__, None) is cls
        ):
            found[cls.code] = cls
    return [found[code] for code in sorted(found)]


def select_rules(
    rules: Sequence[type[Rule]], select: Sequence[str] = (), ignore: Sequence[str] = ()
) -> list[type[Rule]]:
    """Filter rules by code prefix (`DRB0`, `DRB002`) or pattern (`P1`), ruff-style."""

    def matches(rule: type[Rule], selector: str) -> bool:
        selector = selector.strip().upper()
        if selector in ("ALL", ""):
            return True
        if selector.startswith("P") and selector[1:].isdigit():
            return rule.pattern == int(selector[1:])
        return rule.code.startswith(selector)

    chosen = [r for r in rules if not select or any(matches(r, s) for s in select)]
    return [r for r in chosen if not any(matches(r, s) for s in ignore)]


# ---------------------------------------------------------------------------------------------
# Suppression comments

SUPPRESSION_RE = re.compile(
    r"""\#\s*drbot:\s*ignore        # the marker
        (?:\[(?P<codes>[^\]]*)\])?   # optional [DRB001, DRB002]
        (?P<reason>[^\#]*)           # free-text reason up to another comment
    """,
    re.VERBOSE,
)
BARE_IGNORE_CODE = "DRB000"
BARE_IGNORE_MESSAGE = (
    "`# drbot: ignore` without a rule code silences nothing; name the rule, as in `# drbot: ignore[DRB002] reason`."
)


@dataclass(frozen=True)
class Suppression:
    line: int
    codes: frozenset[str]
    reason: str
    standalone: bool  # the comment is alone on its line, so it covers the next line


def suppressions(source: str) -> list[Suppression]:
    """Find `# drbot: ignore[...]` comments. Only lines that mention `drbot:` are looked at."""
    if "drbot:" not in source:
        return []
    found = []
    for number, text in enumerate(source.splitlines(), start=1):
        if "drbot:" not in text:
            continue
        match = SUPPRESSION_RE.search(text)
        if not match:
            continue
        codes = frozenset(c.strip().upper() for c in (match["codes"] or "").split(",") if c.strip())
        standalone = text.lstrip().startswith("#")
        found.append(Suppression(number, codes, match["reason"].strip(), standalone))
    return found


def _apply_suppressions(findings: list[Finding], path: str, source: str) -> list[Finding]:
    marks = suppressions(source)
    if not marks:
        return findings
    by_line: dict[int, set[str]] = {}
    extra: list[Finding] = []
    for mark in marks:
        if not mark.codes:
            extra.append(
                Finding(
                    BARE_IGNORE_CODE, DRBOT_META, path, mark.line, mark.line, "", "drbot: ignore", BARE_IGNORE_MESSAGE
                )
            )
            continue
        by_line.setdefault(mark.line, set()).update(mark.codes)
        if mark.standalone:
            by_line.setdefault(mark.line + 1, set()).update(mark.codes)
    kept = [f for f in findings if f.code not in by_line.get(f.line, ())]
    return kept + extra


# ---------------------------------------------------------------------------------------------
# Running rules


def parse(path: str, source: str) -> cst.Module:
    """Parse `source`, raising AnalysisError with the position when libcst cannot."""
    try:
        return cst.parse_module(source)
    except cst.ParserSyntaxError as error:
        raise AnalysisError(
            f"libcst cannot parse this file: {error.message} (line {error.raw_line}, column {error.raw_column})"
        ) from None
    except RecursionError:
        raise AnalysisError("libcst cannot parse this file: nesting too deep") from None


#: code diffusers no longer changes: its docs say deprecated pipelines are not tested and "won't accept any
#: changes", so findings there are noise for maintainers. Scanned only when asked (`include_frozen`).
FROZEN_PREFIXES = ("diffusers/pipelines/deprecated/",)


def is_frozen(path: str) -> bool:
    return path.startswith(FROZEN_PREFIXES)


@dataclass
class FileResult:
    path: str
    findings: list[Finding]
    errors: list[str]
    skipped: bool = False


def analyze_file(
    path: str,
    source: str,
    *,
    project: Project | None = None,
    rules: Sequence[type[Rule]] | None = None,
    include_frozen: bool = False,
) -> FileResult:
    """Run `rules` on one file. A parse failure or a rule's exception becomes an error, never a raise."""
    if is_frozen(path) and not include_frozen:
        return FileResult(path, [], [], skipped=True)
    rules = all_rules() if rules is None else rules
    applicable = [rule for rule in rules if rule.applies_to(path, source)]
    if not applicable and "drbot:" not in source:
        return FileResult(path, [], [])
    try:
        module = parse(path, source)
    except AnalysisError as error:
        return FileResult(path, [], [str(error)])
    project = project or Project.from_mapping({path: source})
    context = FileContext(path, source, module, project)
    findings: list[Finding] = []
    errors: list[str] = []
    try:
        _run_rules(context, applicable, findings, errors)
    finally:
        walk.clear()
    findings = _apply_suppressions(findings, path, source)
    return FileResult(path, with_fingerprints(findings), errors)


def _run_rules(
    context: FileContext, applicable: Sequence[type[Rule]], findings: list[Finding], errors: list[str]
) -> None:
    for rule_class in applicable:
        rule = rule_class(context)
        try:
            rule.check()
            for node, message, symbol, scope in rule.reports:
                line, end_line = context.position(node, scope)
                findings.append(
                    Finding(
                        code=rule.code,
                        pattern=rule.pattern,
                        path=context.path,
                        line=line,
                        end_line=end_line,
                        scope=scope if scope is not None else context.enclosing_scope(line, end_line),
                        symbol=symbol,
                        message=message,
                        severity=rule.severity,
                    )
                )
        except Exception as error:  # noqa: BLE001 - one broken rule must not stop the scan
            errors.append(f"{rule.code} raised {type(error).__name__}: {error}")


def analyze(
    path: str, source: str, *, project: Project | None = None, rules: Sequence[type[Rule]] | None = None
) -> list[Finding]:
    """Return the findings of `rules` (default: all) on one file; raise AnalysisError if it cannot be analysed."""
    result = analyze_file(path, source, project=project, rules=rules)
    if result.errors:
        raise AnalysisError("; ".join(result.errors))
    return result.findings


def run_case(rule: type[Rule], case: Valid | Invalid) -> list[Finding]:
    """Run one rule on one of its embedded cases (dedented), with the case's extra files as the project."""
    source = textwrap.dedent(case.code)
    files = {path: textwrap.dedent(text) for path, text in case.files.items()}
    files[case.path] = source
    return analyze(case.path, source, project=Project.from_mapping(files), rules=[rule])
