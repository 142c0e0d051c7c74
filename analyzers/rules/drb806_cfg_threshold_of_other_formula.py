"""DRB806: a `guidance_scale > 1` CFG switch copied into a class whose guidance is anchored on the conditional
prediction (`cond + s * (cond - uncond)`), which guides for every scale above 0."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid


#: substrings that name a guidance scale
SCALE_WORDS = ("guidance", "cfg")


def _code(node: cst.CSTNode) -> str:
    return " ".join(cst.Module([]).code_for_node(node).split())


def _scale_and_difference(expr: cst.BaseExpression) -> tuple[cst.BaseExpression, cst.BinaryOperation] | None:
    """`s * (a - b)` or `(a - b) * s` -> (s, the subtraction)."""
    if not (isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, cst.Multiply)):
        return None
    for scale, diff in ((expr.left, expr.right), (expr.right, expr.left)):
        if isinstance(diff, cst.BinaryOperation) and isinstance(diff.operator, cst.Subtract):
            return scale, diff
    return None


def _guidance(expr: cst.BinaryOperation) -> tuple[str, str] | None:
    """For `x + s * (a - b)` with a guidance-like `s`: ("cond", scale code) when x is a, ("uncond", ...) when
    x is b; None otherwise."""
    if not isinstance(expr.operator, cst.Add):
        return None
    found = _scale_and_difference(expr.right)
    anchor = expr.left
    if found is None:
        found = _scale_and_difference(expr.left)
        anchor = expr.right
    if found is None:
        return None
    scale, diff = found
    scale_code = _code(scale)
    if not any(word in scale_code.lower() for word in SCALE_WORDS):
        return None
    anchor_code, minuend, subtrahend = _code(anchor), _code(diff.left), _code(diff.right)
    if minuend == subtrahend:
        return None
    if anchor_code == minuend:
        return "cond", scale_code
    if anchor_code == subtrahend:
        return "uncond", scale_code
    return None


def _threshold_name(comparison: cst.Comparison) -> str | None:
    """The scale's name in `<scale> > 1` (`self._guidance_scale` -> `_guidance_scale`); None otherwise."""
    if len(comparison.comparisons) != 1:
        return None
    target = comparison.comparisons[0]
    if not isinstance(target.operator, cst.GreaterThan):
        return None
    value = target.comparator
    if not (isinstance(value, (cst.Integer, cst.Float)) and float(value.value) == 1.0):
        return None
    left = comparison.left
    if isinstance(left, cst.Attribute):
        name = left.attr.value
    elif isinstance(left, cst.Name):
        name = left.value
    else:
        return None
    if not any(word in name.lower() for word in SCALE_WORDS):
        return None
    return name


class CfgThresholdOfOtherFormula(Rule):
    """
    ## What it does
    Checks classes whose classifier-free guidance is anchored on the conditional prediction
    (`pred = cond + s * (cond - uncond)`) and that switch guidance on with `guidance_scale > 1`, the threshold of
    the usual formula (`uncond + s * (cond - uncond)`), where `s = 1` means no guidance.

    ## Why is this bad?
    In the usual formula a scale of 1 returns the conditional prediction, so `> 1` skips the unconditional
    pass only when it would change nothing. With the conditional anchor, no guidance is `s = 0`, and every
    scale above 0 pushes the prediction away from the unconditional one. Copying the `> 1` switch from a
    sibling pipeline therefore silently disables guidance for scales in (0, 1], which the formula and the
    model's recommended settings use. diffusers shipped this in the Z-Image text-to-image and img2img pipelines.

    ## Example
    ```python
    @property
    def do_classifier_free_guidance(self):
        return self._guidance_scale > 1


    # in __call__
    pred = pos + self.guidance_scale * (pos - neg)
    ```

    Use instead:
    ```python
    @property
    def do_classifier_free_guidance(self):
        return self._guidance_scale > 0
    ```

    ## Known problems
    Only a `<guidance/cfg scale> > 1` comparison in the same class as a conditional-anchored formula whose
    scale carries the same name is reported, and not in a class that also uses the usual formula.

    ## References
    - huggingface/diffusers#13656, pattern 8
    - huggingface/diffusers#13183, huggingface/diffusers#13212 (Z-Image: `> 1` threshold with `pos + s*(pos-neg)`)
    """

    code = "DRB806"
    pattern = 8
    severity = "warning"
    message = (
        "`{test}` switches classifier-free guidance on only above 1, the threshold of `uncond + s * (cond - "
        "uncond)`, but this class guides with `{formula}`, where no guidance is `s = 0`; scales in (0, 1] silently "
        "disable guidance. Compare with `> 0`."
    )
    REQUIRES_ANY = ("guidance", "cfg")
    VALID = [
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                @property
                def do_classifier_free_guidance(self):
                    return self._guidance_scale > 1

                def __call__(self, guidance_scale=5.0):
                    self._guidance_scale = guidance_scale
                    noise_pred = noise_uncond + self._guidance_scale * (noise_text - noise_uncond)
            """
        ),
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                @property
                def do_classifier_free_guidance(self):
                    return self._guidance_scale > 0

                def __call__(self, guidance_scale=5.0):
                    self._guidance_scale = guidance_scale
                    pred = pos + self._guidance_scale * (pos - neg)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class MyPipeline(DiffusionPipeline):
                @property
                def do_classifier_free_guidance(self):
                    return self._guidance_scale > 1

                def __call__(self, guidance_scale=5.0):
                    self._guidance_scale = guidance_scale
                    scale = self.guidance_scale
                    pred = pos + scale * (pos - neg)
                    cfg_pred = pos + (pos - neg) * self.guidance_scale
            """,
            message=(
                "`self._guidance_scale > 1` switches classifier-free guidance on only above 1, the threshold of "
                "`uncond + s * (cond - uncond)`, but this class guides with `pos + (pos - neg) * self.guidance_scale`,"
                " where no guidance is `s = 0`; scales in (0, 1] silently disable guidance. Compare with `> 0`."
            ),
        ),
        Invalid(
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, guidance_scale=5.0):
                    do_classifier_free_guidance = guidance_scale > 1.0
                    if do_classifier_free_guidance:
                        noise_pred = cond + guidance_scale * (cond - uncond)
            """
        ),
    ]

    def check(self) -> None:
        for cls in self.context.classes:
            node = cls.node
            kinds: dict[str, list[tuple[str, cst.BinaryOperation]]] = {"cond": [], "uncond": []}
            for op in walk.nodes(node, cst.BinaryOperation):
                found = _guidance(op)
                if found is not None:
                    kinds[found[0]].append((found[1], op))
            if not kinds["cond"] or kinds["uncond"]:
                continue
            for comparison in walk.nodes(node, cst.Comparison):
                name = _threshold_name(comparison)
                if name is None:
                    continue
                key = name.lstrip("_")
                formula = next((op for scale, op in kinds["cond"] if key in scale), None)
                if formula is None:
                    continue
                self.report(
                    comparison,
                    self.message.format(test=_code(comparison), formula=_code(formula)),
                    symbol=name,
                )
