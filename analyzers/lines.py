"""First and last lines of libcst nodes, without generating the whole file's code.

libcst's `PositionProvider` generates the code of the whole tree again to count lines: for a large pipeline file
that costs as much as parsing it. Python's own parser (`ast`, several times faster than libcst) already knows the
first and last line of every statement, and those are the lines libcst reports for the same statement. So:

- a statement's lines come from its `ast` twin (the statements of both trees, taken in source order, pair up
  one to one; when they do not, the file keeps the slow path);
- a node inside a simple statement is placed by generating that one statement's code;
- a node in a compound statement's header (`if`/`for`/`while`/`with` tests and targets, a `def`'s decorators and
  parameters, a class's bases) is placed by generating the header alone, the body stubbed out.

Anything else (an `except` clause's type, a return annotation, a `match` subject) answers None, and the caller
falls back to libcst's positions.
"""

from __future__ import annotations

import ast
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import cast

import libcst as cst
from libcst.metadata import CodeRange, MetadataWrapper, PositionProvider

from analyzers import walk


#: compound statements whose header is everything before `body` and survives the body being stubbed out
_HEADER_FIELDS_DROPPED = {cst.If: ("orelse",), cst.For: ("orelse",), cst.While: ("orelse",)}
_HEADERED = (cst.If, cst.For, cst.While, cst.With, cst.FunctionDef, cst.ClassDef)
_STUB = cst.IndentedBlock(body=[cst.SimpleStatementLine(body=[cst.Pass()])])
_CONTAINERS = (cst.SimpleStatementLine, cst.SimpleStatementSuite)


def _ast_statements(body: list[ast.stmt], out: list[ast.stmt]) -> None:
    for statement in body:
        out.append(statement)
        for field in ("body", "handlers", "orelse", "finalbody", "cases"):
            inner = getattr(statement, field, None)
            if not isinstance(inner, list):
                continue
            for item in inner:
                if isinstance(item, ast.stmt):
                    _ast_statements([item], out)
                else:  # an except handler or a match case: its body holds statements
                    _ast_statements(item.body, out)


def _cst_statements(body: Sequence[cst.CSTNode], parent: int, out: list[tuple[cst.CSTNode, int]]) -> None:
    """The statements of `body` and of the blocks inside them, in source order (as `_ast_statements` lists their
    `ast` twins), each with the index in `out` of the statement around it (-1 at the top)."""
    for statement in body:
        if isinstance(statement, _CONTAINERS):
            out.extend((small, parent) for small in statement.body)
        else:
            _compound(statement, parent, out)


def _compound(statement: cst.CSTNode, parent: int, out: list[tuple[cst.CSTNode, int]]) -> None:
    index = len(out)
    out.append((statement, parent))
    if isinstance(statement, cst.Match):
        for case in statement.cases:
            _suite(case.body, index, out)
        return
    _suite(statement.body, index, out)  # type: ignore[attr-defined]
    for handler in getattr(statement, "handlers", ()):
        _suite(handler.body, index, out)
    orelse = getattr(statement, "orelse", None)
    if isinstance(orelse, cst.If):  # `elif`: a statement of its own, as in `ast`
        _compound(orelse, index, out)
    elif orelse is not None:
        _suite(orelse.body, index, out)
    final = getattr(statement, "finalbody", None)
    if final is not None:
        _suite(final.body, index, out)


def _suite(suite: cst.BaseSuite, parent: int, out: list[tuple[cst.CSTNode, int]]) -> None:
    if isinstance(suite, cst.SimpleStatementSuite):
        out.extend((small, parent) for small in suite.body)
    else:
        _cst_statements(cast("cst.IndentedBlock", suite).body, parent, out)


class StatementLines:
    """Lines of the nodes of one prepared file (`walk.prepare` ran on `module`); `lines(node)` or None."""

    def __init__(self, module: cst.Module, source: str, tree: ast.Module | None) -> None:
        self._module = module
        self._lines: dict[int, tuple[int, int]] = {}
        self._starts: list[int] = []  # walk-order index of each statement, ascending
        self._statements: list[cst.CSTNode] = []
        self._parents: list[int] = []  # index into _statements of the enclosing statement, -1 at the top
        self._snippets: dict[int, tuple[Mapping[cst.CSTNode, CodeRange], int]] = {}
        self.usable = tree is not None and self._pair(tree)

    def _pair(self, tree: ast.Module) -> bool:
        if walk.order_of(self._module) is None:
            return False
        twins: list[ast.stmt] = []
        _ast_statements(tree.body, twins)
        statements: list[tuple[cst.CSTNode, int]] = []
        _cst_statements(self._module.body, -1, statements)
        if len(statements) != len(twins):
            return False
        last = -1
        for (node, parent), twin in zip(statements, twins, strict=True):
            if isinstance(node, cst.BaseCompoundStatement) != (type(twin).__name__ not in _SMALL_AST):
                return False
            bounds = walk.span(node)
            if bounds is None or bounds[0] <= last:
                return False  # not the prepared file's, or not in walk order: keep the slow path
            last = bounds[0]
            self._parents.append(parent)
            self._starts.append(bounds[0])
            self._statements.append(node)
            self._lines[id(node)] = (twin.lineno, twin.end_lineno or twin.lineno)
        return True

    def lines(self, node: cst.CSTNode) -> tuple[int, int] | None:
        if not self.usable:
            return None
        known = self._lines.get(id(node))
        if known is not None:
            return known
        if isinstance(node, _CONTAINERS):
            inner = [self._lines.get(id(s)) for s in node.body]
            if inner and all(inner):
                return inner[0][0], inner[-1][1]  # type: ignore[index]
            return None
        span = walk.span(node)
        if span is None:
            return None
        owner = self._owner(span[0])
        if owner is None:
            return None
        statement = self._statements[owner]
        if isinstance(statement, cst.BaseCompoundStatement):
            body = walk.span(statement.body)
            if not isinstance(statement, _HEADERED) or body is None or span[0] >= body[0]:
                return None  # not in the header: an `else`/`except` clause, a return annotation, …
        placed = self._snippet(owner)
        if placed is None:
            return None
        positions, offset = placed
        code_range = positions.get(node)
        if code_range is None:
            return None
        return code_range.start.line + offset, code_range.end.line + offset

    def _owner(self, index: int) -> int | None:
        """The innermost statement whose subtree holds the node at walk-order `index`."""
        candidate = bisect_right(self._starts, index) - 1
        while candidate >= 0:
            bounds = walk.span(self._statements[candidate])
            if bounds is not None and bounds[1] > index:
                return candidate
            candidate = self._parents[candidate]
        return None

    def _snippet(self, owner: int) -> tuple[Mapping[cst.CSTNode, CodeRange], int] | None:
        if owner in self._snippets:
            return self._snippets[owner]
        statement = self._statements[owner]
        generated: cst.CSTNode
        if isinstance(statement, cst.BaseSmallStatement):
            generated = statement
            snippet = cst.Module(body=[cst.SimpleStatementLine(body=[statement])])
        else:
            changes = {"body": _STUB, **{name: None for name in _HEADER_FIELDS_DROPPED.get(type(statement), ())}}
            compound = cast("cst.BaseCompoundStatement", statement).with_changes(**changes)
            generated = compound
            snippet = cst.Module(body=[compound])
        snippet = snippet.with_changes(
            default_indent=self._module.default_indent, default_newline=self._module.default_newline
        )
        positions = MetadataWrapper(snippet, unsafe_skip_copy=True).resolve(PositionProvider)
        first = self._lines[id(statement)][0]
        result = (positions, first - positions[generated].start.line)
        self._snippets[owner] = result
        return result


#: `ast` statement types that are simple statements in libcst
_SMALL_AST = frozenset(
    {
        "Expr",
        "Assign",
        "AugAssign",
        "AnnAssign",
        "Return",
        "Pass",
        "Break",
        "Continue",
        "Raise",
        "Assert",
        "Delete",
        "Import",
        "ImportFrom",
        "Global",
        "Nonlocal",
        "TypeAlias",
    }
)
