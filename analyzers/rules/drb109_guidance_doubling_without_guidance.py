"""DRB109: a tensor is repeated for both guidance halves (`* 2`) even when classifier-free guidance is off."""

from __future__ import annotations

import re

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import call_name, keyword, names_tested_around


PER_PROMPT_RE = re.compile(r"^num_\w+_per_prompt$")
EXPANDING = frozenset({"repeat", "repeat_interleave", "expand"})
CONCATS = frozenset({"torch.cat", "torch.concat", "torch.concatenate"})
#: what tells that a pipeline runs with and without guidance
GUIDANCE_FLAGS = frozenset({"do_classifier_free_guidance", "do_cfg", "do_true_cfg"})
NEGATIVE_PREFIXES = ("negative_", "uncond_", "neg_")
STACKED = (
    "`{tensor}` is stacked for both guidance halves (`{code}`) even when classifier-free guidance is off, so it then "
    "has twice the rows of the latents; stack it only when `do_classifier_free_guidance` is true."
)


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
    any `if` (or conditional expression) that tests the guidance. In functions that show guidance is optional
    (they read a `do_classifier_free_guidance` flag or test the guidance in an `if`), a batch-axis stacking of
    both halves counts too: `torch.cat([latents] * 2)`, `torch.cat([x, x])`, `torch.cat([negative_x, x])`,
    unless it sits under an `if` that tests one of the stacked tensors (`if negative_x is not None:`).

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
    - huggingface/diffusers#4193 (Kandinsky stacked `negative_image_embeds` and CycleDiffusion doubled its
      latents whatever the guidance)
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
        Valid(
            """
            class KandinskyPipeline(DiffusionPipeline):
                def __call__(self, prompt, image_embeds, negative_image_embeds=None, num_images_per_prompt=1,
                             guidance_scale=4.0):
                    do_classifier_free_guidance = guidance_scale > 1.0
                    if do_classifier_free_guidance:
                        image_embeds = torch.cat([negative_image_embeds, image_embeds], dim=0)
                    if negative_image_embeds is not None:
                        image_embeds = torch.cat([negative_image_embeds, image_embeds])
                    latents = torch.cat([latents] * 2) if do_classifier_free_guidance else latents
                    hint = torch.cat([hint, hint], dim=1)  # channels, not the batch
                    return self.unet(latents, image_embeds, hint)
            """
        ),
    ]
    INVALID = [
        # the negative and positive halves stacked whether or not guidance is on
        Invalid(
            """
            class KandinskyPipeline(DiffusionPipeline):
                def __call__(self, prompt, image_embeds, negative_image_embeds, num_images_per_prompt=1,
                             guidance_scale=4.0):
                    do_classifier_free_guidance = guidance_scale > 1.0
                    prompt_embeds = self._encode_prompt(prompt, num_images_per_prompt, do_classifier_free_guidance)
                    image_embeds = torch.cat([negative_image_embeds, image_embeds], dim=0).to(self.unet.dtype)
                    return self.unet(prompt_embeds, image_embeds)
            """,
            message=(
                "`image_embeds` is stacked for both guidance halves (`torch.cat([negative_image_embeds, image_embeds], "
                "dim=0)`) even when classifier-free guidance is off, so it then has twice the rows of the latents; "
                "stack it only when `do_classifier_free_guidance` is true."
            ),
        ),
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
            optional = _guidance_is_optional(function)
            # a concatenation under `if negative_x is not None:` happens only when there is a negative half
            tested_around = names_tested_around(function) if optional else {}
            for call in walk.own_nodes(function, cst.Call):
                func = call.func
                if id(call) in guarded:
                    continue
                if optional and call_name(call) in CONCATS:
                    tensor = _doubled_by_concat(call)
                    halves = {n.value for n in walk.nodes(call, cst.Name)}
                    if tensor is not None and not halves & tested_around.get(id(call), set()):
                        code = " ".join(self.context.module.code_for_node(call).split())
                        self.report(call, STACKED.format(tensor=tensor, code=code), symbol=tensor)
                    continue
                if not isinstance(func, cst.Attribute) or func.attr.value not in EXPANDING:
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


def _guidance_is_optional(function: cst.FunctionDef) -> bool:
    """Whether `function` runs both with and without classifier-free guidance: it reads a
    `do_classifier_free_guidance` flag (its own or the pipeline's), or an `if` tests the guidance."""
    for name in walk.own_nodes(function, cst.Name):
        if name.value in GUIDANCE_FLAGS:
            return True
    for attribute in walk.own_nodes(function, cst.Attribute):
        if attribute.attr.value in GUIDANCE_FLAGS:
            return True
    tests = [b.test for b in walk.own_nodes(function, cst.If)] + [c.test for c in walk.own_nodes(function, cst.IfExp)]
    return any(_mentions_guidance(test) for test in tests)


def _doubled_by_concat(call: cst.Call) -> str | None:
    """The tensor a batch-axis `torch.cat` stacks for both guidance halves: `cat([x] * 2)`, `cat([x, x])`,
    `cat([negative_x, x])` (`uncond_x`, `neg_x` too); None for any other concatenation."""
    positional = [a for a in call.args if a.keyword is None]
    if not positional or positional[0].star:
        return None
    dim = keyword(call, "dim")
    axis = dim.value if dim is not None else (positional[1].value if len(positional) > 1 else None)
    if axis is not None and not (isinstance(axis, cst.Integer) and axis.value == "0"):
        return None
    parts = positional[0].value
    if isinstance(parts, cst.BinaryOperation) and isinstance(parts.operator, cst.Multiply):
        listed, count = parts.left, parts.right
        if isinstance(count, cst.List):
            listed, count = count, listed
        if not (isinstance(count, cst.Integer) and count.value == "2" and isinstance(listed, cst.List)):
            return None
        if len(listed.elements) == 1 and isinstance(listed.elements[0].value, cst.Name):
            return listed.elements[0].value.value
        return None
    if not isinstance(parts, (cst.List, cst.Tuple)) or len(parts.elements) != 2:
        return None
    first, second = (e.value for e in parts.elements)
    if not (isinstance(first, cst.Name) and isinstance(second, cst.Name)):
        return None
    if first.value == second.value:
        return second.value
    for prefix in NEGATIVE_PREFIXES:
        if first.value == prefix + second.value:
            return second.value
    return None


def _mentions_guidance(node: cst.CSTNode) -> bool:
    """Whether a name, attribute or string under `node` mentions guidance (comments aside)."""
    return any("guidance" in name.value for name in walk.nodes(node, cst.Name)) or any(
        "guidance" in string.value for string in walk.nodes(node, cst.SimpleString)
    )
