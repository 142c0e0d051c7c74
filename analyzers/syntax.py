"""Two questions about libcst nodes that the engine itself asks: the dotted name of an expression, and the
statement lists inside a compound statement. Rules import them too; richer queries live in `analyzers.matchers`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import libcst as cst


def dotted_name(node: cst.BaseExpression | None) -> str | None:
    """`a.b.c` for a Name/Attribute chain, else None."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        head = dotted_name(node.value)
        return f"{head}.{node.attr.value}" if head else None
    return None


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
