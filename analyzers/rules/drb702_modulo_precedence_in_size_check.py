"""DRB702: `height % self.vae_scale_factor * 2 != 0` parses as `(height % f) * 2`: a weaker check than meant."""

from __future__ import annotations

import re
from typing import TypeVar

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.fixes import Proposal, Replace


N = TypeVar("N", bound=cst.CSTNode)

#: `x % name * y` in the source text; files without it are not parsed for this rule
_TEXT_RE = re.compile(r"%[ \t]*[\w.]+[ \t]*\*(?!\*)")


def _is_zero(node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.Integer) and node.evaluated_value == 0


def _precedence_bug(node: cst.BaseExpression) -> cst.BinaryOperation | None:
    """`x % a * b` (no parentheses around `x % a`), with `x` a variable or attribute; else None."""
    if node.lpar or not (isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Multiply)):
        return None
    inner = node.left
    if not (isinstance(inner, cst.BinaryOperation) and isinstance(inner.operator, cst.Modulo)) or inner.lpar:
        return None
    if dotted_name(inner.left) is None:
        return None  # `"%d" % n * 2` is string formatting
    return node


def _modulo(bug: cst.BinaryOperation) -> cst.BinaryOperation:
    """The `x % a` of a `_precedence_bug` `x % a * b`."""
    return cst.ensure_type(bug.left, cst.BinaryOperation)


def _parenthesised(bug: cst.BinaryOperation) -> cst.BinaryOperation:
    """`x % a * b` as `x % (a * b)`: the divisor the check meant, every space and comment kept."""
    inner = _modulo(bug)
    divisor = cst.BinaryOperation(
        left=inner.right, operator=bug.operator, right=bug.right, lpar=[cst.LeftParen()], rpar=[cst.RightParen()]
    )
    return inner.with_changes(right=divisor)


def _in_source_order(root: cst.BaseExpression, kind: type[N]) -> list[N]:
    """The nodes of type `kind` under `root`, in source order (the order decides which bug is reported)."""
    groups = walk.index(root)
    if cst.IfExp in groups or cst.Lambda in groups:
        # `walk` takes an `a if b else c` test first, lambda parameters out of order: keep source order
        import libcst.matchers as m  # rare path; the module costs 0.3 s to import

        return [n for n in m.findall(root, getattr(m, kind.__name__)()) if isinstance(n, kind)]
    return walk.nodes(root, kind)


class ModuloPrecedenceInSizeCheck(Rule):
    """
    ## What it does
    Checks for divisibility tests written as `x % a * b != 0` (or `== 0`, or a bare `if x % a * b:`),
    which Python parses as `(x % a) * b`, not as `x % (a * b)`.

    ## Why is this bad?
    `(x % a) * b` is zero exactly when `x % a` is zero, so the check only enforces divisibility by `a`.
    In `height % self.vae_scale_factor * 2 != 0` a height of 72 passes although the latents are packed
    2x2 and need a multiple of `2 * vae_scale_factor`; the pipeline then fails late or crops silently.

    ## Example
    ```python
    if height % self.vae_scale_factor * 2 != 0 or width % self.vae_scale_factor * 2 != 0:
        logger.warning("`height` and `width` have to be divisible by ...")
    ```

    Use instead:
    ```python
    if height % (self.vae_scale_factor * 2) != 0 or width % (self.vae_scale_factor * 2) != 0:
        logger.warning("`height` and `width` have to be divisible by ...")
    ```

    ## Known problems
    Only tests of `if`, `elif`, `while` and `assert` are looked at; products such as `i % cols * w`
    outside a comparison with zero are deliberate (a grid offset) and are left alone.

    ## References
    - huggingface/diffusers#13656, pattern 7
    - huggingface/diffusers#13584 (FluxControlNetImg2ImgPipeline.check_inputs), fixed by huggingface/diffusers#13955
    """

    code = "DRB702"
    pattern = 7
    severity = "warning"
    message = (
        "`{expr}` parses as `({dividend} % {divisor}) * {factor}` and only checks divisibility by "
        "`{divisor}`; parenthesise the divisor: `{dividend} % ({divisor} * {factor})`."
    )

    VALID = [
        Valid(
            """
            class FooPipeline(DiffusionPipeline):
                def check_inputs(self, height, width):
                    if height % (self.vae_scale_factor * 2) != 0 or width % (self.vae_scale_factor * 2) != 0:
                        raise ValueError("bad size")
            """
        ),
        # a grid offset, not a divisibility test
        Valid(
            """
            def make_image_grid(images, rows, cols, w, h):
                for i, img in enumerate(images):
                    grid.paste(img, box=(i % cols * w, i // cols * h))
                    if (i % cols) * w > limit:
                        break
            """
        ),
        # string formatting
        Valid(
            """
            def banner(n):
                if "%d" % n * 2 != "":
                    return True
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class FooPipeline(DiffusionPipeline):
                def check_inputs(self, height, width):
                    if height % self.vae_scale_factor * 2 != 0 or width % self.vae_scale_factor * 2 != 0:
                        logger.warning("sizes will be resized")
            """,
            fixed="""
            class FooPipeline(DiffusionPipeline):
                def check_inputs(self, height, width):
                    if height % (self.vae_scale_factor * 2) != 0 or width % (self.vae_scale_factor * 2) != 0:
                        logger.warning("sizes will be resized")
            """,
            message=(
                "`height % self.vae_scale_factor * 2` parses as `(height % self.vae_scale_factor) * 2` and only "
                "checks divisibility by `self.vae_scale_factor`; parenthesise the divisor: "
                "`height % (self.vae_scale_factor * 2)`."
            ),
        ),
        Invalid(
            """
            def check_size(size, patch):
                assert not size % 8 * patch, "bad size"
            """,
            fixed="""
            def check_size(size, patch):
                assert not size % (8 * patch), "bad size"
            """,
            message=(
                "`size % 8 * patch` parses as `(size % 8) * patch` and only checks divisibility by `8`; "
                "parenthesise the divisor: `size % (8 * patch)`."
            ),
        ),
    ]

    @classmethod
    def applies_to(cls, path: str, source: str) -> bool:
        return "%" in source and _TEXT_RE.search(source) is not None

    def check(self) -> None:
        module = self.context.module
        statements: list[cst.If | cst.While | cst.Assert] = [
            *walk.nodes(module, cst.If),
            *walk.nodes(module, cst.While),
            *walk.nodes(module, cst.Assert),
        ]
        for statement in statements:  # findings are sorted by position later: their order does not matter
            test = statement.test
            bugs: list[cst.BinaryOperation] = []
            for comparison in _in_source_order(test, cst.Comparison):
                parts = [comparison.left, *(c.comparator for c in comparison.comparisons)]
                if len(parts) == 2 and any(_is_zero(p) for p in parts):
                    bugs.extend(b for b in map(_precedence_bug, parts) if b is not None)
            negated = [
                u.expression for u in _in_source_order(test, cst.UnaryOperation) if isinstance(u.operator, cst.Not)
            ]
            for candidate in [test, *negated]:
                bug = _precedence_bug(candidate)
                if bug is not None and bug not in bugs:
                    bugs.append(bug)
            for operand in _in_source_order(test, cst.BooleanOperation):
                for side in (operand.left, operand.right):
                    bug = _precedence_bug(side)
                    if bug is not None and bug not in bugs:
                        bugs.append(bug)
            if not bugs:
                continue
            first = bugs[0]
            inner = _modulo(first)
            code = module.code_for_node
            message = self.message.format(
                expr=code(first).strip(),
                dividend=code(inner.left).strip(),
                divisor=code(inner.right).strip(),
                factor=code(first.right).strip(),
            )
            symbol = "/".join(dict.fromkeys(dotted_name(_modulo(b).left) or "" for b in bugs))
            fix = Proposal(
                f"parenthesise the divisor: `{code(_parenthesised(first)).strip()}`",
                tuple(Replace(bug, _parenthesised(bug)) for bug in bugs),
            )
            self.report(first, message, symbol=symbol, fix=fix)
