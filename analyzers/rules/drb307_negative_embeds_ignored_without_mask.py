"""DRB307: precomputed negative embeddings count as given only when their attention mask is given too."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid


def _operands(node: cst.BaseExpression, operator: type[cst.BaseBooleanOp]) -> list[cst.BaseExpression]:
    """The operands of a chain of one boolean operator (`a or b or c`), parentheses looked through."""
    if isinstance(node, cst.BooleanOperation) and isinstance(node.operator, operator):
        return [*_operands(node.left, operator), *_operands(node.right, operator)]
    return [node]


def _tested_name(node: cst.BaseExpression) -> str | None:
    """`x` of `x is not None`."""
    if (
        isinstance(node, cst.Comparison)
        and len(node.comparisons) == 1
        and isinstance(node.comparisons[0].operator, cst.IsNot)
        and isinstance(node.comparisons[0].comparator, cst.Name)
        and node.comparisons[0].comparator.value == "None"
        and isinstance(node.left, cst.Name)
    ):
        return node.left.value
    return None


class NegativeEmbedsIgnoredWithoutMask(Rule):
    """
    ## What it does
    Checks for a test of whether a negative prompt was given that accepts the raw prompt alone but
    precomputed embeddings only together with their attention mask:
    `negative_prompt is not None or (negative_prompt_embeds is not None and negative_prompt_embeds_mask is not None)`.

    ## Why is this bad?
    The test decides whether classifier-free guidance runs. A user who passes precomputed
    `negative_prompt_embeds` without a mask (the mask is optional: no mask means every token is valid)
    gets no guidance at all, silently: the negative embeddings are dropped because of a missing mask,
    and the output changes with no warning.

    ## Example
    ```python
    has_neg_prompt = negative_prompt is not None or (
        negative_prompt_embeds is not None and negative_prompt_embeds_mask is not None
    )
    do_true_cfg = true_cfg_scale > 1 and has_neg_prompt
    ```

    Use instead:
    ```python
    has_neg_prompt = negative_prompt is not None or negative_prompt_embeds is not None
    do_true_cfg = true_cfg_scale > 1 and has_neg_prompt
    ```

    ## Known problems
    Only a flag assigned an `or` of a test of a `*prompt` argument and an `and` of `<embeds> is not None`
    and `<mask> is not None` (names containing `embeds` and `mask`) is matched, and only when the same
    function gates something with it (`scale > 1 and flag`): a flag read only as `not flag`, to fill in an
    empty negative prompt while the embeddings are still used, is left alone. The same decision spread
    over several statements is not seen. Validation code that checks an embeddings/mask pair without
    the raw prompt next to it is left alone.

    ## References
    - huggingface/diffusers#13656, pattern 3
    - huggingface/diffusers#13379 (QwenImage pipelines skipped true CFG for negative embeddings without a mask)
    """

    code = "DRB307"
    pattern = 3
    severity = "warning"
    message = (
        "`{embeds}` counts as given only together with `{mask}`, so precomputed `{embeds}` without a mask "
        "silently turns guidance off; test `{embeds} is not None` alone and treat a missing mask as all tokens valid."
    )
    REQUIRES_ANY = ("mask is not None",)
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            class EditPipeline(DiffusionPipeline):
                def __call__(self, prompt=None, negative_prompt=None, negative_embeds=None, negative_embeds_mask=None):
                    has_negative = negative_prompt is not None or negative_embeds is not None
                    if negative_embeds is not None and negative_embeds_mask is not None:
                        self.check_shapes(negative_embeds, negative_embeds_mask)
                    return self.run(self.guidance_scale > 1 and has_negative)

                def encode(self, negative_prompt=None, negative_embeds=None, negative_embeds_mask=None):
                    # read only negated: an empty prompt is filled in, the embeddings are still used
                    given = negative_prompt is not None or (negative_embeds is not None and negative_embeds_mask is not None)
                    if self.guidance_scale > 1 and not given:
                        negative_prompt = ""
                    return self.encode_prompt(negative_prompt, negative_embeds, negative_embeds_mask)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class EditPipeline(DiffusionPipeline):
                def __call__(self, prompt=None, negative_prompt=None, negative_embeds=None, negative_embeds_mask=None):
                    has_negative = (negative_embeds is not None and negative_embeds_mask is not None) or negative_prompt is not None
                    use_cfg = self.guidance_scale > 1 and has_negative
                    return self.run(use_cfg)
            """,
            message=(
                "`negative_embeds` counts as given only together with `negative_embeds_mask`, so precomputed "
                "`negative_embeds` without a mask silently turns guidance off; test `negative_embeds is not None` "
                "alone and treat a missing mask as all tokens valid."
            ),
        ),
    ]

    def check(self) -> None:
        for function in walk.nodes(self.context.module, cst.FunctionDef):
            # a flag that gates guidance: `do_cfg = scale > 1 and has_negative`; a flag read only as
            # `not has_negative` (to fill in an empty negative prompt) leaves the embeddings in use
            gating = {
                operand.value
                for node in walk.own_nodes(function, cst.BooleanOperation)
                if isinstance(node.operator, cst.And)
                for operand in _operands(node, cst.And)
                if isinstance(operand, cst.Name)
            }
            for assign in walk.own_nodes(function, cst.Assign):
                targets = [t.target for t in assign.targets]
                if len(targets) != 1 or not isinstance(targets[0], cst.Name) or targets[0].value not in gating:
                    continue
                operands = _operands(assign.value, cst.Or)
                if len(operands) < 2 or not any((_tested_name(o) or "").endswith("prompt") for o in operands):
                    continue
                for operand in operands:
                    tested = [_tested_name(o) for o in _operands(operand, cst.And)]
                    embeds = next((n for n in tested if n and "embeds" in n and "mask" not in n), None)
                    mask = next((n for n in tested if n and "mask" in n), None)
                    if len(tested) > 1 and embeds and mask:
                        self.report(operand, self.message.format(embeds=embeds, mask=mask), symbol=mask)
