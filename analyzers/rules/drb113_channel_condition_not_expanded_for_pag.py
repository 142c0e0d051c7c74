"""DRB113: a channel-concatenated condition is doubled for CFG only while the latents follow the PAG batch."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.matchers import METADATA_ATTRIBUTES, calls, keyword, pipeline_methods, target_names


#: the PAG mixin helper that appends the perturbed copy to a guidance batch
PAG_HELPER = "_prepare_perturbed_attention_guidance"
#: names of the classifier-free guidance flag handed to the helpers that double a tensor
CFG_FLAG = "do_classifier_free_guidance"
#: tensor methods that grow a batch
GROWING = frozenset({"repeat", "repeat_interleave", "expand", "expand_as", "tile"})


def _is_cfg_flag(node: cst.BaseExpression) -> bool:
    """`do_classifier_free_guidance` or `self.do_classifier_free_guidance`."""
    return (dotted_name(node) or "").rpartition(".")[2] == CFG_FLAG


def _calls_pag_helper(value: cst.CSTNode) -> bool:
    return any((dotted_name(c.func) or "").endswith(f".{PAG_HELPER}") for c in calls(value))


def _shape_reads(node: cst.CSTNode) -> set[str]:
    """Names whose metadata `node` reads: `x` in `x.shape[0]` or `x.size(0)`."""
    return {
        attribute.value.value
        for attribute in walk.nodes(node, cst.Attribute)
        if attribute.attr.value in METADATA_ATTRIBUTES and isinstance(attribute.value, cst.Name)
    }


def _tiled_by_ratio(value: cst.BaseExpression) -> set[str]:
    """For `torch.cat([latents] * (prompt_embeds.shape[0] // latents.shape[0]))`, the names whose batch sets the
    count (`prompt_embeds`, `latents`); empty for a literal count or any other value."""
    if not isinstance(value, cst.Call) or dotted_name(value.func) != "torch.cat" or not value.args:
        return set()
    tiled = value.args[0].value
    if not isinstance(tiled, cst.BinaryOperation) or not isinstance(tiled.operator, cst.Multiply):
        return set()
    count = tiled.right if isinstance(tiled.left, cst.List) else tiled.left
    if isinstance(count, cst.Integer):
        return set()
    return _shape_reads(count)


def _channel_dim(call: cst.Call) -> bool:
    """Whether `torch.cat(...)` joins along a literal non-batch axis (`dim=1`, `dim=-3`)."""
    arg = keyword(call, "dim")
    if arg is None:
        positional = [a for a in call.args if a.keyword is None]
        arg = positional[1] if len(positional) > 1 else None
    if arg is None:
        return False
    value = arg.value
    if isinstance(value, cst.UnaryOperation) and isinstance(value.operator, cst.Minus):
        value = value.expression
    return isinstance(value, cst.Integer) and int(value.value) != 0


def _doubles_for_cfg(value: cst.BaseExpression, name: str) -> bool:
    """Whether `value` builds `name` with the classifier-free guidance doubling only: a helper given the
    guidance flag (`self.prepare_mask_latents(..., self.do_classifier_free_guidance)`), or
    `torch.cat([name] * 2) if do_classifier_free_guidance else name`."""
    if isinstance(value, cst.Call):
        return any(_is_cfg_flag(arg.value) for arg in value.args)
    if isinstance(value, cst.IfExp) and _is_cfg_flag(value.test):
        doubled = value.body
        if isinstance(doubled, cst.Call) and dotted_name(doubled.func) == "torch.cat" and doubled.args:
            tiled = doubled.args[0].value
            return (
                isinstance(tiled, cst.BinaryOperation)
                and isinstance(tiled.operator, cst.Multiply)
                and any(isinstance(side, cst.Integer) and side.value == "2" for side in (tiled.left, tiled.right))
            )
    return False


def _grows(value: cst.CSTNode) -> bool:
    """Whether `value` may grow a batch: `repeat`, `expand`, `tile` or a `torch.cat`."""
    for call in calls(value):
        name = dotted_name(call.func) or ""
        if name == "torch.cat" or name.rpartition(".")[2] in GROWING:
            return True
    return False


def _callback_pop(value: cst.BaseExpression) -> bool:
    """`callback_outputs.pop("mask", mask)`: the step-end callback may swap the tensor, not reshape it."""
    return isinstance(value, cst.Call) and (dotted_name(value.func) or "").endswith(".pop")


class ChannelConditionNotExpandedForPag(Rule):
    """
    ## What it does
    Checks pipeline `__call__` methods with perturbed-attention guidance (PAG) that size the denoiser input
    after the guidance batch of the prompt embeddings, `torch.cat([latents] * (prompt_embeds.shape[0] //
    latents.shape[0]))`, where `prompt_embeds` went through `self._prepare_perturbed_attention_guidance(...)`,
    and then concatenate along the channels a tensor (an inpainting `mask`, `masked_image_latents`, ...) that
    was only doubled for classifier-free guidance: built by a helper given `do_classifier_free_guidance`, or
    `torch.cat([x] * 2) if do_classifier_free_guidance else x`, and never expanded for PAG.

    ## Why is this bad?
    PAG appends a perturbed copy to the guidance batch: with classifier-free guidance and PAG on, the prompt
    embeddings, and so the denoiser input, have three rows per sample, the channel condition two. The
    concatenation fails with "Sizes of tensors must match except in dimension 1" as soon as PAG is enabled
    (or, with PAG alone, two rows meet one).

    ## Example
    ```python
    mask, masked_image_latents = self.prepare_mask_latents(..., self.do_classifier_free_guidance)
    if self.do_perturbed_attention_guidance:
        prompt_embeds = self._prepare_perturbed_attention_guidance(
            prompt_embeds, negative_prompt_embeds, self.do_classifier_free_guidance
        )
    for t in timesteps:
        latent_model_input = torch.cat([latents] * (prompt_embeds.shape[0] // latents.shape[0]))
        latent_model_input = torch.cat([latent_model_input, mask, masked_image_latents], dim=1)
    ```

    Use instead:
    ```python
    if self.do_perturbed_attention_guidance:
        mask = self._prepare_perturbed_attention_guidance(mask, mask, self.do_classifier_free_guidance)
        masked_image_latents = self._prepare_perturbed_attention_guidance(
            masked_image_latents, masked_image_latents, self.do_classifier_free_guidance
        )
    ```

    ## Known problems
    Only the PAG mixin's helper is recognised as the PAG expansion, and only a denoiser input tiled by a ratio
    of batch sizes in `__call__` itself. A tensor that `__call__` rebinds in any other way (a `repeat` to the
    input's batch, say) is taken as expanded.

    ## References
    - huggingface/diffusers#13656, pattern 1
    - huggingface/diffusers#9128 (StableDiffusionXLPAGInpaintPipeline: mask and masked image latents expanded for
      PAG)
    """

    code = "DRB113"
    pattern = 1
    severity = "error"
    message = (
        "`{name}` is doubled for classifier-free guidance only, but `{input}` follows the perturbed-attention "
        "guidance batch of `{embeds}` when they are concatenated along the channels, so the sizes differ "
        "whenever PAG is on; expand it for PAG too: "
        "`{name} = self._prepare_perturbed_attention_guidance({name}, {name}, self.do_classifier_free_guidance)`."
    )
    REQUIRES_ALL = (PAG_HELPER, CFG_FLAG)
    PATHS = ("/pipelines/",)

    VALID = [
        # the mask is expanded for PAG as well
        Valid(
            """
            class InpaintPAGPipeline(DiffusionPipeline, PAGMixin):
                def __call__(self, prompt, image, mask_image):
                    mask, masked = self.prepare_mask_latents(mask_image, image, self.do_classifier_free_guidance)
                    if self.do_perturbed_attention_guidance:
                        prompt_embeds = self._prepare_perturbed_attention_guidance(
                            prompt_embeds, negative_prompt_embeds, self.do_classifier_free_guidance
                        )
                        mask = self._prepare_perturbed_attention_guidance(mask, mask, self.do_classifier_free_guidance)
                        masked = self._prepare_perturbed_attention_guidance(
                            masked, masked, self.do_classifier_free_guidance
                        )
                    for t in timesteps:
                        latent_model_input = torch.cat([latents] * (prompt_embeds.shape[0] // latents.shape[0]))
                        latent_model_input = torch.cat([latent_model_input, mask, masked], dim=1)
                        noise_pred = self.unet(latent_model_input, t, encoder_hidden_states=prompt_embeds)
            """
        ),
        # the input is doubled for guidance only, as the mask is
        Valid(
            """
            class InpaintPipeline(DiffusionPipeline, PAGMixin):
                def __call__(self, prompt, image, mask_image):
                    mask = self.prepare_mask(mask_image, self.do_classifier_free_guidance)
                    if self.do_perturbed_attention_guidance:
                        prompt_embeds = self._prepare_perturbed_attention_guidance(
                            prompt_embeds, negative_prompt_embeds, self.do_classifier_free_guidance
                        )
                    for t in timesteps:
                        latent_model_input = torch.cat([latents] * 2) if self.do_classifier_free_guidance else latents
                        latent_model_input = torch.cat([latent_model_input, mask], dim=1)
            """
        ),
        # the mask is grown to the input's batch in the loop
        Valid(
            """
            class InpaintPAGPipeline(DiffusionPipeline, PAGMixin):
                def __call__(self, prompt, image, mask_image):
                    mask = self.prepare_mask(mask_image, self.do_classifier_free_guidance)
                    if self.do_perturbed_attention_guidance:
                        prompt_embeds = self._prepare_perturbed_attention_guidance(
                            prompt_embeds, negative_prompt_embeds, self.do_classifier_free_guidance
                        )
                    for t in timesteps:
                        latent_model_input = torch.cat([latents] * (prompt_embeds.shape[0] // latents.shape[0]))
                        if mask.shape[0] < latent_model_input.shape[0]:
                            mask = mask.repeat(2, 1, 1, 1)[: latent_model_input.shape[0]]
                        latent_model_input = torch.cat([latent_model_input, mask], dim=1)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class InpaintPAGPipeline(DiffusionPipeline, PAGMixin):
                def __call__(self, prompt, image, mask_image, callback_on_step_end=None):
                    mask = self.prepare_mask(mask_image, do_classifier_free_guidance=self.do_classifier_free_guidance)
                    if self.do_perturbed_attention_guidance:
                        prompt_embeds = self._prepare_perturbed_attention_guidance(
                            prompt_embeds, negative_prompt_embeds, self.do_classifier_free_guidance
                        )
                    for t in timesteps:
                        latent_model_input = torch.cat([latents] * (prompt_embeds.shape[0] // latents.shape[0]))
                        latent_model_input = self.scheduler.scale_model_input(latent_model_input, t)
                        latent_model_input = torch.cat([latent_model_input, mask], dim=1)
                        noise_pred = self.unet(latent_model_input, t, encoder_hidden_states=prompt_embeds)
                        if callback_on_step_end is not None:
                            callback_outputs = callback_on_step_end(self, i, t, {})
                            mask = callback_outputs.pop("mask", mask)
            """,
            message=(
                "`mask` is doubled for classifier-free guidance only, but `latent_model_input` follows the "
                "perturbed-attention guidance batch of `prompt_embeds` when they are concatenated along the "
                "channels, so the sizes differ whenever PAG is on; expand it for PAG too: "
                "`mask = self._prepare_perturbed_attention_guidance(mask, mask, self.do_classifier_free_guidance)`."
            ),
        ),
        # a conditional doubling in `__call__`, a keyword flag, a negative axis
        Invalid(
            """
            class DepthPAGPipeline(DiffusionPipeline, PAGMixin):
                def __call__(self, prompt, depth_map, guidance_scale=5.0):
                    do_classifier_free_guidance = guidance_scale > 1
                    depth = self.prepare_depth(depth_map)
                    depth = torch.cat([depth] * 2) if do_classifier_free_guidance else depth
                    if self.do_perturbed_attention_guidance:
                        embeds = self._prepare_perturbed_attention_guidance(
                            embeds, negative_embeds, do_classifier_free_guidance=do_classifier_free_guidance
                        )
                    for t in timesteps:
                        model_input = torch.cat((embeds.shape[0] // latents.shape[0]) * [latents])
                        model_input = torch.cat([model_input, depth], dim=-3)
            """
        ),
    ]

    def check(self) -> None:
        for cls, method in pipeline_methods(self.context, "__call__"):
            self._check_call(f"{cls.qualname}.__call__", method)

    def _check_call(self, scope: str, function: cst.FunctionDef) -> None:
        assigns = walk.own_nodes(function, cst.Assign)
        bound: dict[str, list[cst.BaseExpression]] = {}  # name -> every value assigned to it, tuple targets too
        for assign in assigns:
            for target in assign.targets:
                for name in target_names(target.target):
                    bound.setdefault(name, []).append(assign.value)
        perturbed = {
            name
            for assign in assigns
            if _calls_pag_helper(assign.value)
            for target in assign.targets
            for name in target_names(target.target)
        }
        if not perturbed:
            return
        # the denoiser inputs tiled to the PAG batch: `torch.cat([latents] * (prompt_embeds.shape[0] // ...))`
        inputs: dict[str, str] = {}
        for assign in assigns:
            embeds = sorted(_tiled_by_ratio(assign.value) & perturbed)
            if embeds and len(assign.targets) == 1 and isinstance(assign.targets[0].target, cst.Name):
                inputs[assign.targets[0].target.value] = embeds[0]
        if not inputs:
            return
        reported: set[str] = set()
        for call in calls(function.body):
            if dotted_name(call.func) != "torch.cat" or not call.args or not _channel_dim(call):
                continue
            joined = call.args[0].value
            if not isinstance(joined, (cst.List, cst.Tuple)):
                continue
            names = [e.value.value for e in joined.elements if isinstance(e.value, cst.Name)]
            latent_input = next((n for n in names if n in inputs), None)
            if latent_input is None:
                continue
            for name in names:
                if name == latent_input or name in perturbed or name in reported:
                    continue
                values = [v for v in bound.get(name, []) if not _callback_pop(v)]
                doubled = [v for v in values if _doubles_for_cfg(v, name)]
                if doubled and not any(_grows(v) for v in values if v not in doubled):
                    reported.add(name)
                    self.report(
                        call,
                        self.message.format(name=name, input=latent_input, embeds=inputs[latent_input]),
                        symbol=name,
                        scope=scope,
                    )
