"""DRB109: a tensor is repeated for both guidance halves (`* 2`) even when classifier-free guidance is off."""

from __future__ import annotations

import re

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid


PER_PROMPT_RE = re.compile(r"^num_\w+_per_prompt$")
EXPANDING = frozenset({"repeat", "repeat_interleave", "expand"})


def _factors(node: cst.BaseExpression) -> list[cst.BaseExpression]:
    """The factors of a product `a * b * c`, parentheses looked through."""
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Multiply):
        return [*_factors(node.left), *_factors(node.right)]
    return [node]


def _base_name(node: cst.BaseExpression) -> str | None:
    """`x` of `x.reshape(1, -1).to(device).repeat(...)`."""
    while isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute):
        node = node.func.value
    return node.value if isinstance(node, cst.Name) else None


class GuidanceDoublingWithoutGuidance(Rule):
    """
    ## What it does
    Checks pipeline functions that can run without classifier-free guidance (they read
    `do_classifier_free_guidance` or `guidance_scale`) for a tensor expanded by a count with a literal
    factor 2 for the two guidance halves, `x.repeat(batch_size * num_images_per_prompt * 2, 1)`, outside
    any `if` (or conditional expression) that tests the guidance.

    ## Why is this bad?
    The factor 2 holds only when the unconditional and conditional batches are stacked. With
    `guidance_scale <= 1`, or when only the conditional half is sent to a ControlNet (guess mode), the
    tensor has twice the rows of the latents it goes with: the call fails on a shape mismatch, or each
    sample is paired with another sample's conditioning.

    ## Example
    ```python
    control_type = control_type.reshape(1, -1).to(device).repeat(batch_size * num_images_per_prompt * 2, 1)
    ```

    Use instead:
    ```python
    repeat_factor = batch_size * num_images_per_prompt * (2 if self.do_classifier_free_guidance else 1)
    control_type = control_type.reshape(1, -1).to(device).repeat(repeat_factor, 1)
    ```

    ## Known problems
    Only a count written in the call as a product with a `num_*_per_prompt` factor and a literal `2` is
    matched; a count computed earlier into a variable is not followed. A doubling under any `if` whose test
    mentions guidance is taken as guarded, whatever that test says.

    ## References
    - huggingface/diffusers#13656, pattern 1
    - huggingface/diffusers#11888 (ControlNet-Union SDXL pipelines doubled `control_type` without guidance)
    """

    code = "DRB109"
    pattern = 1
    severity = "error"
    message = (
        "`{tensor}` is repeated for both guidance halves (`* 2`) even when classifier-free guidance is off, so it "
        "then has twice the rows of the latents; multiply by 2 only when `do_classifier_free_guidance` is true."
    )
    REQUIRES_ANY = ("_per_prompt",)
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            class UnionPipeline(DiffusionPipeline):
                def __call__(self, prompt, control_type, num_images_per_prompt=1, guidance_scale=5.0):
                    batch_size = len(prompt)
                    factor = batch_size * num_images_per_prompt * (2 if self.do_classifier_free_guidance else 1)
                    control_type = control_type.reshape(1, -1).repeat(factor, 1)
                    if self.do_classifier_free_guidance:
                        style = self.style.repeat(2 * batch_size * num_images_per_prompt, 1)
                    pooled = self.pooled.repeat(batch_size * num_images_per_prompt, 1)
                    return self.unet(control_type, style, pooled)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class UnionPipeline(DiffusionPipeline):
                def __call__(self, prompt, control_types, num_images_per_prompt=1, guidance_scale=5.0):
                    batch_size = len(prompt)
                    control_types = [c.reshape(1, -1).repeat(2 * (batch_size * num_images_per_prompt), 1) for c in control_types]
                    return self.unet(control_types, guidance=guidance_scale)
            """,
            message=(
                "`c` is repeated for both guidance halves (`* 2`) even when classifier-free guidance is off, so it "
                "then has twice the rows of the latents; multiply by 2 only when `do_classifier_free_guidance` is true."
            ),
        ),
    ]

    def check(self) -> None:
        for function in walk.nodes(self.context.module, cst.FunctionDef):
            if not _mentions_guidance(function.body):
                continue
            guarded: set[int] = set()
            for branch in walk.own_nodes(function, cst.If):
                if _mentions_guidance(branch.test):
                    guarded.update(id(n) for n in walk.walk(branch.body))
            for choice in walk.own_nodes(function, cst.IfExp):
                if _mentions_guidance(choice.test):
                    guarded.update(id(n) for n in walk.walk(choice.body))
            for call in walk.own_nodes(function, cst.Call):
                func = call.func
                if id(call) in guarded or not isinstance(func, cst.Attribute) or func.attr.value not in EXPANDING:
                    continue
                if not call.args or call.args[0].keyword is not None:
                    continue
                factors = _factors(call.args[0].value)
                doubled = any(isinstance(f, cst.Integer) and f.value == "2" for f in factors)
                per_prompt = any(
                    PER_PROMPT_RE.match(n.value) for f in factors for n in walk.nodes(f, cst.Name)
                ) or any(isinstance(f, cst.Name) and PER_PROMPT_RE.match(f.value) for f in factors)
                tensor = _base_name(func.value)
                if doubled and per_prompt and tensor:
                    self.report(call, self.message.format(tensor=tensor), symbol=tensor)


def _mentions_guidance(node: cst.CSTNode) -> bool:
    """Whether a name, attribute or string under `node` mentions guidance (comments aside)."""
    return any("guidance" in name.value for name in walk.nodes(node, cst.Name)) or any(
        "guidance" in string.value for string in walk.nodes(node, cst.SimpleString)
    )
