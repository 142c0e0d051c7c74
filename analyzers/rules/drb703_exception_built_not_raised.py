"""DRB703: a validation builds an exception (`ValueError(...)`) as a bare statement and never raises it."""

from __future__ import annotations

import re

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.fixes import Proposal, Replace


#: exception classes a validation raises; a bare call of one of these is a lost check
_EXCEPTIONS = frozenset(
    {
        "ValueError",
        "TypeError",
        "RuntimeError",
        "AssertionError",
        "NotImplementedError",
        "KeyError",
        "IndexError",
        "AttributeError",
        "ImportError",
        "OSError",
        "Exception",
    }
)


#: a project exception class by its name: `OptionalDependencyNotAvailable`, `PipelineConfigError`, ...
_EXCEPTION_CLASS = re.compile(r"[A-Z][A-Za-z0-9]*(?:Error|Exception|NotAvailable)")


def _exception_name(node: cst.BaseExpression) -> str | None:
    """`ValueError` for a bare `ValueError(...)` call (also `builtins.ValueError`); else None."""
    if not isinstance(node, cst.Call):
        return None
    name = dotted_name(node.func) or ""
    last = name.rpartition(".")[2]
    return last if last in _EXCEPTIONS or _EXCEPTION_CLASS.fullmatch(last) else None


class ExceptionBuiltNotRaised(Rule):
    """
    ## What it does
    Checks for statements that only construct an exception, such as `ValueError("...")` on a line
    of its own, without `raise`.

    ## Why is this bad?
    The exception object is created and thrown away: the check around it passes every input. In a
    pipeline's `check_inputs` the invalid combination it was meant to reject goes on to fail later,
    deep in the denoising loop, with an error that does not name the argument (or silently produces
    a wrong result).

    ## Example
    ```python
    def check_inputs(self, prompt, boxes, phrases):
        if len(boxes) != len(phrases):
            ValueError("`boxes` and `phrases` must have the same length")
    ```

    Use instead:
    ```python
    def check_inputs(self, prompt, boxes, phrases):
        if len(boxes) != len(phrases):
            raise ValueError("`boxes` and `phrases` must have the same length")
    ```

    ## Known problems
    Besides the built-in exception classes, only classes named like exceptions (`...Error`, `...Exception`,
    diffusers' `OptionalDependencyNotAvailable`) are recognised; a project exception with another name built as
    a bare statement is not reported.

    ## References
    - huggingface/diffusers#13656, pattern 7
    - huggingface/diffusers#7473 (the GLIGEN `check_inputs` built its `ValueError`s without raising them)
    """

    code = "DRB703"
    pattern = 7
    severity = "warning"
    message = "`{name}(...)` is built but never raised, so this check lets every input through; add `raise`."
    REQUIRES_ANY = ("Error(", "Exception(", "NotAvailable(")  # every name `_exception_name` accepts ends so

    VALID = [
        Valid(
            """
            def check_inputs(height, width):
                if height % 8 != 0:
                    raise ValueError(f"`height` must be divisible by 8, got {height}")
                error = TypeError("unused until later")
                errors = [ValueError("a"), ValueError("b")]
                return error, errors
            """
        ),
        Valid(
            """
            def make_error(name):
                return ValueError(f"bad {name}")

            def check(x):
                if x is None:
                    raise make_error("x")
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            try:
                if not (is_torch_available() and is_transformers_available()):
                    OptionalDependencyNotAvailable()
            except OptionalDependencyNotAvailable:
                from ...utils import dummy_torch_and_transformers_objects
            """,
            fixed="""
            try:
                if not (is_torch_available() and is_transformers_available()):
                    raise OptionalDependencyNotAvailable()
            except OptionalDependencyNotAvailable:
                from ...utils import dummy_torch_and_transformers_objects
            """,
            message=(
                "`OptionalDependencyNotAvailable(...)` is built but never raised, so this check lets every input "
                "through; add `raise`."
            ),
        ),
        Invalid(
            """
            class BoxPipeline(DiffusionPipeline):
                def check_inputs(self, prompt, boxes, labels):
                    if boxes is not None and len(boxes) != len(labels):
                        ValueError(
                            "`boxes` and `labels` must have the same length, but got"
                            f" {len(boxes)} and {len(labels)}"
                        )
            """,
            fixed="""
            class BoxPipeline(DiffusionPipeline):
                def check_inputs(self, prompt, boxes, labels):
                    if boxes is not None and len(boxes) != len(labels):
                        raise ValueError(
                            "`boxes` and `labels` must have the same length, but got"
                            f" {len(boxes)} and {len(labels)}"
                        )
            """,
            message=(
                "`ValueError(...)` is built but never raised, so this check lets every input through; add `raise`."
            ),
        ),
        Invalid(
            """
            import builtins

            def validate_strength(strength):
                if not 0.0 <= strength <= 1.0:
                    builtins.TypeError("strength must lie in [0, 1]")
            """,
            fixed="""
            import builtins

            def validate_strength(strength):
                if not 0.0 <= strength <= 1.0:
                    raise builtins.TypeError("strength must lie in [0, 1]")
            """,
            message=(
                "`TypeError(...)` is built but never raised, so this check lets every input through; add `raise`."
            ),
        ),
    ]

    def check(self) -> None:
        for statement in walk.nodes(self.context.module, cst.Expr):
            name = _exception_name(statement.value)
            if name is not None:
                fix = Proposal(f"raise the `{name}`", (Replace(statement, cst.Raise(exc=statement.value)),))
                self.report(statement, self.message.format(name=name), symbol=name, fix=fix)
