"""What rules see of one file: one parse, one metadata wrapper, its classes and functions by dotted scope,
its import table, ancestry through the project view, and positions."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import PurePosixPath

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from analyzers.lines import StatementLines
from analyzers.modules import module_imports, module_name_for
from analyzers.project import Project
from analyzers.syntax import dotted_name, nested_blocks


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


class FileContext:
    """Everything rules share about one file: one parse, one metadata wrapper, one index."""

    def __init__(self, path: str, source: str, module: cst.Module, project: Project) -> None:
        self.path = path
        self.source = source
        self.module = module
        self.project = project
        self.module_name = module_name_for(path)
        self.is_package = PurePosixPath(path).name == "__init__.py"
        project.remember(self.module_name, module, self.is_package, len(source))

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
        return {d.name: d.node for d in self.definitions if d.parent is cls and isinstance(d.node, cst.FunctionDef)}

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

        Positions cost more than the parse (libcst generates the code again to count lines). Statements take
        their lines from Python's own parser, and a node inside one from generating that statement alone
        (`analyzers.lines`). Failing that, when `scope` names a function or class of this file, only its code is
        generated; otherwise the whole file's positions are resolved, once.
        """
        fast = self._statement_lines.lines(node)
        if fast is not None:
            return fast
        if scope is not None:
            local = self._local_position(node, scope)
            if local is not None:
                return local
        positions = self.wrapper.resolve(PositionProvider)
        code_range = positions[node]
        return code_range.start.line, code_range.end.line

    @cached_property
    def _ast_tree(self):
        """Python's own parse of the file (None when it does not parse: libcst accepts a little more)."""
        try:
            return ast.parse(self.source)
        except (SyntaxError, ValueError, RecursionError):
            return None

    @cached_property
    def _statement_lines(self) -> StatementLines:
        return StatementLines(self.module, self.source, self._ast_tree)

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
            cached = {}
            tree = self._ast_tree

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
