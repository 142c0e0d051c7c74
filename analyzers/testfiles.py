"""Queries over test modules (skips, trivial bodies, comments), for pattern 10 rules."""

from __future__ import annotations

import re

import libcst as cst

from analyzers.core import FileContext, dotted_name
from analyzers.matchers import string_value


TODO_RE = re.compile(r"\b(TODO|FIXME|XXX)\b")
#: decorators / calls that skip a test unconditionally
SKIP_DECORATORS = ("unittest.skip", "pytest.mark.skip", "skip")
#: decorators that skip or expect failure, conditionally or not
SKIPPING_NAMES = ("skip", "skipIf", "skipUnless", "xfail", "skipif")


def definitions_of_tests(context: FileContext) -> list:
    """Every `test*` function or method of the file."""
    return [d for d in context.definitions if not d.is_class and d.name.startswith("test")]


def decorator_name(decorator: cst.Decorator) -> str:
    expression = decorator.decorator
    if isinstance(expression, cst.Call):
        expression = expression.func
    return dotted_name(expression) or ""


EXPLAINING_WORDS = re.compile(r"\b(because|since|due to|until|requires?|needs? an?|not supported|see)\b", re.I)


def placeholder_reason(reason: str) -> bool:
    """Whether a skip reason is a TODO with no explanation: `"TODO: revisit"`, `"TODO: Test does not work"`."""
    if not TODO_RE.search(reason):
        return False
    rest = re.sub(r"\(\w[\w ,.-]*\)", " ", TODO_RE.sub(" ", reason))  # drop `(owner)` tags
    words = re.findall(r"[A-Za-z]+", rest)
    return len(words) <= 6 and not EXPLAINING_WORDS.search(rest)


def is_skipped(function: cst.FunctionDef) -> bool:
    """Whether a decorator skips `function` or marks it as an expected failure (any condition)."""
    return any(decorator_name(d).rpartition(".")[2] in SKIPPING_NAMES for d in function.decorators)


def skip_reason(call: cst.Call) -> str | None:
    """The reason string of `unittest.skip("…")` / `pytest.mark.skip(reason="…")` / `self.skipTest("…")`."""
    for arg in call.args:
        if arg.keyword is None or arg.keyword.value in ("reason", "msg"):
            value = string_value(arg.value)
            if value is None and isinstance(arg.value, cst.FormattedString):
                value = "".join(p.value for p in arg.value.parts if isinstance(p, cst.FormattedStringText))
            return value
    return None


def trivial_body(function: cst.FunctionDef) -> bool:
    """Whether the body is only `pass`, `...`, a docstring or a bare `return`."""
    body = function.body
    statements = body.body if isinstance(body, (cst.IndentedBlock, cst.SimpleStatementSuite)) else ()
    for statement in statements:
        smalls = statement.body if isinstance(statement, cst.SimpleStatementLine) else [statement]
        if isinstance(body, cst.SimpleStatementSuite):
            smalls = [statement]
        for small in smalls:
            if isinstance(small, cst.Pass) or (isinstance(small, cst.Return) and small.value is None):
                continue
            if isinstance(small, cst.Expr) and isinstance(
                small.value, (cst.Ellipsis, cst.SimpleString, cst.ConcatenatedString)
            ):
                continue
            return False
    return True


def body_comments(context: FileContext, function: cst.FunctionDef) -> str:
    """The comments and docstrings of a trivial body (its code is short)."""
    code = context.module.code_for_node(function.body)
    return "\n".join(line for line in code.splitlines() if line.strip().startswith(("#", '"', "'")))


def leading_comments(function: cst.FunctionDef) -> str:
    """The comments on the lines right above `def` (and its decorators)."""
    return "\n".join(line.comment.value for line in function.leading_lines if line.comment is not None)
