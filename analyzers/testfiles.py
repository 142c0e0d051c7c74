"""Queries over test modules (skips, trivial bodies, comments), for pattern 10 rules."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

import libcst as cst

from analyzers import walk
from analyzers.core import Definition, FileContext, Project, dotted_name
from analyzers.matchers import string_value


TODO_RE = re.compile(r"\b(TODO|FIXME|XXX)\b")
#: decorators / calls that skip a test unconditionally
SKIP_DECORATORS = ("unittest.skip", "pytest.mark.skip", "skip")
#: decorators that skip or expect failure, conditionally or not
SKIPPING_NAMES = ("skip", "skipIf", "skipUnless", "xfail", "skipif")


def definitions_of_tests(context: FileContext) -> list[Definition]:
    """Every `test*` function or method of the file (its `node` is a `cst.FunctionDef`)."""
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


#: `pytest.mark.xfail` as decorators spell it
XFAIL_DECORATORS = ("pytest.mark.xfail", "mark.xfail", "xfail")


def unconditional_xfail_reason(decorator: cst.Decorator) -> str | None:
    """The reason of an `@pytest.mark.xfail` that applies everywhere (no condition, or the literal `True`: `xfail(True,
    reason=…)`, `xfail(condition=True, …)`), "" when it gives none; None for any other decorator, or an xfail whose
    condition is an expression (a device, a library version: an environment check)."""
    if decorator_name(decorator) not in XFAIL_DECORATORS:
        return None
    expression = decorator.decorator
    if not isinstance(expression, cst.Call):
        return ""
    reason = ""
    for position, arg in enumerate(expression.args):
        keyword = arg.keyword.value if arg.keyword is not None else None
        if keyword == "reason":
            value = string_value(arg.value)
            reason = value if value is not None else reason
        elif keyword == "condition" or (keyword is None and position == 0):
            if not (isinstance(arg.value, cst.Name) and arg.value.value == "True"):
                return None
    return reason


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


# ---------------------------------------------------------------------------------------------
# The tests of a whole tree, for rules that ask "is this class tested at all?"

#: decorators that mark a slow / integration test (diffusers' testing_utils)
SLOW_DECORATORS = re.compile(r"(^|\.)(slow|nightly|require_big_accelerator|require_big_gpu_with_torch_cuda)$")
SLOW_CLASS_NAME = re.compile(r"(Slow|Integration|Nightly)(Tests?)?$")


@dataclass(frozen=True)
class CoverageIndex:
    """Which test files name which identifiers, and which test files hold a slow or integration test."""

    referenced_in: dict[str, frozenset[str]]
    slow_files: frozenset[str]

    def files_naming(self, name: str, under: str = "tests/") -> frozenset[str]:
        return frozenset(p for p in self.referenced_in.get(name, ()) if p.startswith(under))


def _decorator_text(decorator: ast.expr) -> str:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    try:
        return ast.unparse(target)
    except Exception:  # noqa: BLE001 - an odd decorator just is not a slow marker
        return ""


def _is_slow(node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    if any(SLOW_DECORATORS.search(_decorator_text(d)) for d in node.decorator_list):
        return True
    return isinstance(node, ast.ClassDef) and bool(SLOW_CLASS_NAME.search(node.name))


def _index_file(path: str, source: str, referenced: dict[str, set[str]], slow: set[str]) -> None:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError):
        return
    # `from diffusers... import FooPipeline as StableDiffusionPipeline`: the tests name the class by its alias
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            aliases.update((alias.asname, alias.name) for alias in node.names if alias.asname)
    names: set[str] = set()
    for top in tree.body:
        if not isinstance(top, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if _is_slow(top) or (
            isinstance(top, ast.ClassDef)
            and any(isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_slow(m) for m in top.body)
        ):
            slow.add(path)
        for node in ast.walk(top):
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
    names.update(aliases[name] for name in names & aliases.keys())
    for name in names:
        referenced.setdefault(name, set()).add(path)


def coverage_index(project: Project) -> CoverageIndex | None:
    """The index of every `tests/**.py` file in the view, built once per view; None when it has no tests
    (a wheel, a single file): then nobody can tell whether something is tested, and rules stay silent."""

    def build() -> CoverageIndex | None:
        paths = [p for p in project.files("tests") if p.endswith(".py")]
        if not paths:
            return None
        referenced: dict[str, set[str]] = {}
        slow: set[str] = set()
        for path in paths:
            source = project.source(path)
            if source is not None:
                _index_file(path, source, referenced, slow)
        return CoverageIndex({k: frozenset(v) for k, v in referenced.items()}, frozenset(slow))

    return project.memo("testfiles.coverage_index", build)


def inherited_tests(context: FileContext, cls: cst.ClassDef) -> dict[str, str]:
    """`test_*` methods that `cls` inherits from its bases in the project view: {method: defining class}."""
    found: dict[str, str] = {}
    for _module, base in context.ancestors(cls):
        for statement in base.body.body:
            if isinstance(statement, cst.FunctionDef) and statement.name.value.startswith("test"):
                found.setdefault(statement.name.value, base.name.value)
    return found


PIPELINE_BASES = frozenset({"DiffusionPipeline"})
MODEL_BASES = frozenset({"ModelMixin"})


def exported_names(project: Project) -> frozenset[str]:
    """Names `diffusers/__init__.py` exports: its lazy import structure lists them as strings, and releases before
    0.21 imported them eagerly (`from .pipelines import (FooPipeline, …)`)."""
    return project.memo("testfiles.exported_names", lambda: package_exports(project, "diffusers/__init__.py"))


def package_exports(project: Project, path: str) -> frozenset[str]:
    """Names the package `__init__.py` at `path` exports: the identifiers its lazy import structure lists as
    strings, and the names it imports eagerly from its own submodules."""
    source = project.source(path)
    if source is None:
        return frozenset()
    try:
        module = cst.parse_module(source)
    except cst.ParserSyntaxError:
        return frozenset()
    names = {node.value[1:-1] for node in walk.nodes(module, cst.SimpleString) if node.value[1:-1].isidentifier()}
    for imported in walk.nodes(module, cst.ImportFrom):
        if imported.relative and not isinstance(imported.names, cst.ImportStar):
            for alias in imported.names:
                bound = alias.asname.name if alias.asname is not None else alias.name
                if isinstance(bound, cst.Name):
                    names.add(bound.value)
    return frozenset(names)


def is_deprecated_alias(cls: cst.ClassDef) -> bool:
    """A renamed class kept for compatibility: it only warns in `__init__` and runs its parent's code."""
    methods = [s for s in cls.body.body if isinstance(s, cst.FunctionDef)]
    names = {m.name.value for m in methods}
    if names - {"__init__"}:
        return False
    return any(
        isinstance(call.func, cst.Name) and call.func.value == "deprecate"
        for method in methods
        for call in walk.nodes(method, cst.Call)
    )
