"""DRB104: IP-Adapter image embeddings are expanded by `num_*_per_prompt` only, the latents by `batch_size` times it."""

from __future__ import annotations

import re

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import calls, parameters, pipeline_methods, self_attribute, target_names


#: `__call__` parameters that multiply the effective batch
PER_PROMPT_RE = re.compile(r"^num_\w+_per_prompt$")
#: the inputs of an IP-Adapter: one image (or its embeddings) for the whole call, not one per prompt
IP_ADAPTER_INPUT_RE = re.compile(r"ip_adapter_image")


def _multiplies(node: cst.CSTNode, left: str, right: str) -> bool:
    """Whether `node` holds `left * right` or `right * left` (both plain names)."""
    for op in walk.nodes(node, cst.BinaryOperation):
        if isinstance(op.operator, cst.Multiply):
            names = {n.value for n in (op.left, op.right) if isinstance(n, cst.Name)}
            if names == {left, right}:
                return True
    return False


def _batch_size_is_effective(function: cst.FunctionDef, per_prompt: str) -> bool:
    """Whether `batch_size` is (re)bound to something that already counts the per-prompt copies."""
    for assign in walk.nodes(function.body, cst.Assign):
        bound = {n for t in assign.targets for n in target_names(t.target)}
        if "batch_size" in bound and any(n.value == per_prompt for n in walk.nodes(assign.value, cst.Name)):
            return True
    for augmented in walk.nodes(function.body, cst.AugAssign):
        if isinstance(augmented.target, cst.Name) and augmented.target.value == "batch_size":
            return True
    return False


class IPAdapterEmbedsExpandedPerPromptOnly(Rule):
    """
    ## What it does
    Checks pipeline `__call__` methods that hand an IP-Adapter input (`ip_adapter_image`,
    `ip_adapter_image_embeds`) to a helper of the pipeline (`self.encode_image(...)`,
    `self.prepare_ip_adapter_image_embeds(...)`) together with the bare `num_images_per_prompt`
    (or `num_videos_per_prompt`, ...) as the copy count, while the latents of the same call are sized
    `batch_size * num_images_per_prompt`.

    ## Why is this bad?
    An IP-Adapter takes one reference image for the whole call, not one per prompt. Expanded by the
    per-prompt count alone it yields `num_images_per_prompt` rows, where the UNet or transformer gets
    `batch_size * num_images_per_prompt` latents: any list of two or more prompts with an IP-Adapter
    image fails in attention with a batch-size mismatch, although one prompt works.

    ## Example
    ```python
    batch_size = len(prompt)
    image_embeds, negative_image_embeds = self.encode_image(ip_adapter_image, device, num_images_per_prompt)
    latents = self.prepare_latents(batch_size * num_images_per_prompt, ...)
    ```

    Use instead:
    ```python
    image_embeds = self.prepare_ip_adapter_image_embeds(
        ip_adapter_image, ip_adapter_image_embeds, device, batch_size * num_images_per_prompt, do_cfg
    )
    ```

    ## Known problems
    Only the helper call in `__call__` is looked at, not what the helper does with the count. A `__call__`
    that rebinds `batch_size` to include the count is skipped. One that pins the count to 1 is still
    reported: the embeddings then have one row for `batch_size` latents.

    ## References
    - huggingface/diffusers#13656, pattern 1
    - huggingface/diffusers#6573 (IP-Adapter embeddings sized `batch_size * num_images_per_prompt`)
    - huggingface/diffusers#7820 (the same fix for InstructPix2Pix)
    """

    code = "DRB104"
    pattern = 1
    severity = "error"
    message = (
        "`{input}` is expanded by `{per_prompt}` only while the latents are sized `batch_size * {per_prompt}`, so "
        "batched prompts with an IP-Adapter image get too few image embeddings; pass `batch_size * {per_prompt}` "
        "to `{helper}`."
    )
    REQUIRES_ANY = ("ip_adapter_image",)
    PATHS = ("/pipelines/",)

    VALID = [
        # the helper gets the effective batch
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, ip_adapter_image=None, num_images_per_prompt=1):
                    batch_size = len(prompt)
                    style = self.prepare_ip_adapter_image_embeds(
                        ip_adapter_image, None, self.device, batch_size * num_images_per_prompt
                    )
                    latents = self.prepare_latents(batch_size * num_images_per_prompt)
                    return self.unet(latents, added_cond_kwargs={"image_embeds": style})
            """
        ),
        # the per-prompt count goes to the prompt encoder, whose input already has one row per prompt
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, ip_adapter_image=None, num_images_per_prompt=1):
                    batch_size = len(prompt)
                    text = self.encode_prompt(prompt, self.device, num_images_per_prompt)
                    latents = self.prepare_latents(batch_size * num_images_per_prompt)
                    return self.unet(latents, encoder_hidden_states=text)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, ip_adapter_image=None, num_images_per_prompt=1):
                    batch_size = 1 if isinstance(prompt, str) else len(prompt)
                    if ip_adapter_image is not None:
                        reference, negative_reference = self.encode_image(
                            ip_adapter_image, self.device, num_images_per_prompt, output_hidden_states=True
                        )
                    latents = self.prepare_latents(batch_size * num_images_per_prompt)
                    return self.unet(latents, added_cond_kwargs={"image_embeds": reference})
            """,
            message=(
                "`ip_adapter_image` is expanded by `num_images_per_prompt` only while the latents are sized "
                "`batch_size * num_images_per_prompt`, so batched prompts with an IP-Adapter image get too few image "
                "embeddings; pass `batch_size * num_images_per_prompt` to `self.encode_image`."
            ),
        ),
        # keyword spelling, video variant
        Invalid(
            """
            class MyVideoPipeline(DiffusionPipeline):
                def __call__(self, prompt, ip_adapter_image=None, ip_adapter_image_embeds=None, num_videos_per_prompt=1):
                    batch_size = len(prompt)
                    reference = self.prepare_ip_adapter_image_embeds(
                        ip_adapter_image=ip_adapter_image,
                        ip_adapter_image_embeds=ip_adapter_image_embeds,
                        num_images=num_videos_per_prompt,
                    )
                    latents = self.prepare_latents(num_videos_per_prompt * batch_size)
                    return self.unet(latents, added_cond_kwargs={"image_embeds": reference})
            """
        ),
    ]

    def check(self) -> None:
        for cls, method in pipeline_methods(self.context, "__call__"):
            self._check_call(f"{cls.qualname}.__call__", method)

    def _check_call(self, scope: str, function: cst.FunctionDef) -> None:
        for per_prompt in (p.name.value for p in parameters(function) if PER_PROMPT_RE.match(p.name.value)):
            if not _multiplies(function.body, "batch_size", per_prompt):
                continue
            if _batch_size_is_effective(function, per_prompt):
                continue
            for call in calls(function.body):
                if not self_attribute(call.func):
                    continue
                values = [arg.value for arg in call.args]
                inputs = [v.value for v in values if isinstance(v, cst.Name) and IP_ADAPTER_INPUT_RE.search(v.value)]
                if not inputs or not any(isinstance(v, cst.Name) and v.value == per_prompt for v in values):
                    continue
                helper = f"self.{call.func.attr.value}"
                message = self.message.format(input=inputs[0], per_prompt=per_prompt, helper=helper)
                self.report(call, message, symbol=inputs[0], scope=scope)
