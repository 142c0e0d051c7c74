"""Forward walks over a function's statements, for rules about what happens on the way to a `return`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, Generic, TypeVar

import libcst as cst

from analyzers import walk
from analyzers.core import dotted_name


S = TypeVar("S")

#: the "state" after a statement that leaves the function on every path (`return`, `raise`). It is a member of every
#: walker's state type `S` (the bottom of the lattice), so it is typed `Any` and can stand wherever an `S` is expected
DEAD: Final[Any] = object()


class FlowWalker(Generic[S]):
    """A small forward data-flow walk over the statements of one function body.

    It follows the statement order of `body` and hands every `return` of the function (not of nested
    defs or lambdas) to `on_return` with the abstract state on the path that reaches it. A branch that
    ends in `return`/`raise` does not flow on. The subclass supplies the lattice: `effect` (a simple
    statement's effect), `split` (the states on the true/false side of a test) and `join`.
    """

    def __init__(self, on_return: Callable[[cst.Return, S], None]) -> None:
        self.on_return = on_return

    # -- lattice, overridden by users ---------------------------------------------------------
    def effect(self, statement: cst.BaseSmallStatement, state: S) -> S:
        return state

    def split(self, test: cst.BaseExpression, state: S) -> tuple[S, S]:
        return state, state

    def join(self, a: S, b: S) -> S:
        raise NotImplementedError

    def finally_effect(self, block: cst.BaseSuite, state: S) -> S:
        """The state a `return` inside `try` has once the `finally` block has run."""
        out = self.block(block.body, state, report=False) if isinstance(block, cst.IndentedBlock) else state
        return state if out is DEAD else out

    # -- walk -----------------------------------------------------------------------------------
    def _join(self, a: S, b: S) -> S:
        if a is DEAD:
            return b
        if b is DEAD:
            return a
        return self.join(a, b)

    def block(
        self, body: Sequence[cst.CSTNode], state: S, *, report: bool = True, finals: tuple[cst.BaseSuite, ...] = ()
    ) -> S:
        """Walk statements; return the state after them, or `DEAD` when every path has left the function."""
        for statement in body:
            if state is DEAD:
                return DEAD
            state = self.statement(statement, state, report, finals)
        return state

    def _suite(self, suite: cst.BaseSuite, state: S, report: bool, finals: tuple[cst.BaseSuite, ...]) -> S:
        # an IndentedBlock holds statements, a SimpleStatementSuite (`if x: return y`) small statements
        return self.block(suite.body, state, report=report, finals=finals)

    def statement(self, statement: cst.CSTNode, state: S, report: bool, finals: tuple[cst.BaseSuite, ...]) -> S:
        if isinstance(statement, cst.SimpleStatementLine):
            return self.block(statement.body, state, report=report, finals=finals)
        if isinstance(statement, cst.Return):
            if report:
                final_state = state
                for block in finals:
                    final_state = self.finally_effect(block, final_state)
                self.on_return(statement, final_state)
            return DEAD
        if isinstance(statement, cst.Raise):
            return DEAD
        if isinstance(statement, (cst.Break, cst.Continue)):
            return DEAD  # the loop's exit state is approximated by the state before the loop
        if isinstance(statement, cst.BaseSmallStatement):
            return self.effect(statement, state)
        if isinstance(statement, (cst.FunctionDef, cst.ClassDef)):
            return state
        if isinstance(statement, cst.If):
            yes, no = self.split(statement.test, state)
            out_yes = self._suite(statement.body, yes, report, finals)
            if statement.orelse is None:
                out_no: S = no
            elif isinstance(statement.orelse, cst.If):
                out_no = self.statement(statement.orelse, no, report, finals)
            else:
                out_no = self._suite(statement.orelse.body, no, report, finals)
            return self._join(out_yes, out_no)
        if isinstance(statement, (cst.For, cst.While)):
            if isinstance(statement, cst.While):
                state = self.effect_expr(statement.test, state)
            else:
                state = self.effect_expr(statement.iter, state)
            body_out = self._suite(statement.body, state, report, finals)
            after = self._join(state, body_out)
            if statement.orelse is not None and after is not DEAD:
                after = self._suite(statement.orelse.body, after, report, finals)
            return after
        if isinstance(statement, cst.With):
            for item in statement.items:
                state = self.effect_expr(item.item, state)
            return self._suite(statement.body, state, report, finals)
        if isinstance(statement, (cst.Try, cst.TryStar)):
            inner_finals = finals if statement.finalbody is None else (statement.finalbody.body, *finals)
            body_out = self._suite(statement.body, state, report, inner_finals)
            if statement.orelse is not None:
                body_out = self._suite(statement.orelse.body, body_out, report, inner_finals)
            out = body_out
            for handler in statement.handlers:
                out = self._join(out, self._suite(handler.body, state, report, inner_finals))
            if statement.finalbody is not None and out is not DEAD:
                out = self._suite(statement.finalbody.body, out, report, finals)
            return out
        if isinstance(statement, cst.Match):
            out = DEAD
            for case in statement.cases:
                out = self._join(out, self._suite(case.body, state, report, finals))
            return self._join(out, state)
        return state

    def effect_expr(self, expr: cst.BaseExpression, state: S) -> S:
        return self.effect(cst.Expr(expr), state)


def maybe_skipped(root: cst.CSTNode, *, nested_defs: bool = False) -> set[int]:
    """Ids of the nodes under `root` that may not run when it runs: lambdas, comprehensions, both branches of
    `a if c else b`, the right of `and`/`or` (and, with `nested_defs`, the bodies of nested defs and classes)."""
    skipped: set[int] = set()
    kinds = _SKIPPABLE_AND_DEFS if nested_defs else _SKIPPABLE
    for node in walk.walk(root):
        kind = type(node)
        if kind in kinds:
            if id(node) not in skipped:
                skipped.update(map(id, walk.walk(node)))
        elif kind is cst.IfExp:
            skipped.update(map(id, walk.walk(node.body)))  # type: ignore[attr-defined]
            skipped.update(map(id, walk.walk(node.orelse)))  # type: ignore[attr-defined]
        elif kind is cst.BooleanOperation:
            skipped.update(map(id, walk.walk(node.right)))  # type: ignore[attr-defined]
    return skipped


#: nodes whose whole subtree may not run: lambdas and comprehensions (and, for `nested_defs`, defs and classes)
_SKIPPABLE = frozenset({cst.Lambda, cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp})
_SKIPPABLE_AND_DEFS = _SKIPPABLE | {cst.FunctionDef, cst.ClassDef}


def function_returns(function: cst.FunctionDef) -> list[cst.Return]:
    """The `return` statements of `function` itself (not of nested functions, classes or lambdas)."""
    return walk.own_nodes(function, cst.Return)


def has_yield(function: cst.FunctionDef) -> bool:
    """Whether `function` itself yields: a `yield` not inside a nested def or lambda (a nested class counts)."""
    yields = walk.nodes(function.body, cst.Yield)
    if not yields:
        return False
    nested: set[int] = set()
    for scope_kind in (cst.FunctionDef, cst.Lambda):
        for scope in walk.nodes(function.body, scope_kind):
            if id(scope) not in nested:
                nested.update(id(n) for n in walk.walk(scope))
    return any(id(node) not in nested for node in yields)


def returned_symbol(node: cst.Return) -> str:
    """A stable name for what a `return` returns: `return StableDiffusionXLPipelineOutput`, `return (image,)`."""
    value = node.value
    if value is None:
        return "return"
    if isinstance(value, cst.Call):
        name = dotted_name(value.func)
        if name:
            return f"return {name.rpartition('.')[2]}"
    if isinstance(value, cst.Name):
        return f"return {value.value}"
    if isinstance(value, cst.Tuple):
        parts = []
        for element in value.elements:
            inner = element.value
            parts.append(inner.value if isinstance(inner, cst.Name) else "...")
        return "return (" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
    return "return ..."
