"""DRB511: `__call__` makes its own latents only when the caller gave none, and passes the caller's on as given."""

from __future__ import annotations

import libcst as cst

from analyzers import casts, walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import denoiser_calls, parameters, pipeline_classes


#: tensor methods that change a tensor's shape or layout, never its device or dtype
_SHAPE_METHODS = frozenset(
    {"reshape", "view", "permute", "transpose", "unsqueeze", "squeeze", "flatten", "unflatten", "contiguous"}
)


def _reshapes(assign: cst.Assign, tensor: str) -> bool:
    """`latents = latents.reshape(...)` and the like: still the caller's tensor, in another shape."""
    value = assign.value
    return (
        isinstance(value, cst.Call)
        and isinstance(value.func, cst.Attribute)
        and isinstance(value.func.value, cst.Name)
        and value.func.value.value == tensor
        and value.func.attr.value in _SHAPE_METHODS
    )


def _derived(function: cst.FunctionDef, tensor: str, before: int) -> set[str]:
    """`tensor` and the names assigned, before position `before`, from values that read it or such a name
    (`latent_model_input = torch.cat([latents] * 2)`), in source order."""
    names = {tensor}
    for assign in walk.nodes(function.body, cst.Assign):
        if casts.order(assign) >= before:
            break
        if any(n.value in names for n in casts.tensor_values_read(assign.value)):
            for target in assign.targets:
                names.update(n.value for n in walk.nodes(target.target, cst.Name))
    return names


class ProvidedLatentsUsedAsGiven(Rule):
    """
    ## What it does
    Checks for pipeline `__call__` methods that take `latents`, build their own only under
    `if latents is None:`, and hand the caller's tensor to the denoiser as it came: neither moved to the
    execution device nor cast to the pipeline's dtype on the way.

    ## Why is this bad?
    Latents that the caller made on another device or in another dtype (float32 noise for a float16
    pipeline, or the other way round) reach the first layer of the denoiser unchanged, and the call fails
    with `mat1 and mat2 must have the same dtype` or `Input type (c10::Half) and bias type (float) should
    be the same`. The pipeline's own latents are made in the right dtype, so only the documented
    `latents=` path breaks.

    ## Example
    ```python
    def __call__(self, prompt, image, strength=0.3, latents=None):
        ...
        if latents is None:
            latents = self.prepare_latents(image, latent_timestep, batch_size, prompt_embeds.dtype, device)
        for t in timesteps:
            latent_model_input = torch.cat([latents] * 2)
            noise_pred = self.unet(latent_model_input, t, encoder_hidden_states=prompt_embeds)
    ```

    Use instead:
    ```python
    def __call__(self, prompt, image, strength=0.3, latents=None):
        ...
        if latents is None:
            latents = self.prepare_latents(image, latent_timestep, batch_size, prompt_embeds.dtype, device)
        else:
            latents = latents.to(device=device, dtype=prompt_embeds.dtype)
    ```

    ## Known problems
    Every assignment to `latents` before the first denoiser call must sit under a test that requires
    `latents is None`, the first denoiser call must read the latents or a value built from them, and no
    cast of anything built from them (`latent_model_input.to(dtype)`, `torch.cat([latents] * 2).half()`)
    may come before the end of that call, unless the latents' dtype was handed to another tensor first
    (as DRB501 counts it); a reshape (`latents = latents.reshape(...)`, `.view`, `.permute`, ...) keeps
    the caller's tensor. A helper that receives the latents (`latents = self.prepare_latents(...,
    latents)`) is DRB501's to judge, and this rule stays silent. A cast inside the denoiser's `forward`
    is not seen.

    ## References
    - huggingface/diffusers#13656, pattern 5
    - DRC008 (caller latents in another dtype) fails on the SDXL, SD3 and ControlNet img2img pipelines
      and their PAG copies of the 2026-08 tree
    """

    code = "DRB511"
    pattern = 5
    severity = "error"
    message = (
        "`__call__` makes its own `latents` only when the caller gave none and hands the caller's to the "
        "denoiser as given, never moved to the execution device or cast to the pipeline's dtype; add "
        "`else: latents = latents.to(device=device, dtype=...)`."
    )
    REQUIRES_ANY = ("latents is None",)
    PATHS = ("/pipelines/",)

    VALID = [
        # the caller's latents moved and cast in the `else`
        Valid(
            """
            class Img2ImgPipeline(DiffusionPipeline):
                def __call__(self, prompt, image, latents=None):
                    embeds = self.encode_prompt(prompt)
                    if latents is None:
                        latents = self.prepare_latents(image, embeds.dtype, self._execution_device)
                    else:
                        latents = latents.to(device=self._execution_device, dtype=embeds.dtype)
                    for t in self.scheduler.timesteps:
                        noise_pred = self.unet(latents, t, encoder_hidden_states=embeds)
                        latents = self.scheduler.step(noise_pred, t, latents)
                    return latents
            """
        ),
        # cast on the way into the denoiser
        Valid(
            """
            class CastingPipeline(DiffusionPipeline):
                def __call__(self, prompt, latents=None):
                    embeds = self.encode_prompt(prompt)
                    if latents is None:
                        latents = randn_tensor((1, 4, 8, 8), dtype=embeds.dtype)
                    for t in self.scheduler.timesteps:
                        model_input = torch.cat([latents] * 2)
                        noise_pred = self.unet(model_input.to(self.unet.dtype), t, embeds)
                        latents = self.scheduler.step(noise_pred, t, latents)
                    return latents
            """
        ),
        # a helper receives the caller's latents: DRB501 judges what it does with them
        Valid(
            """
            class HelperPipeline(DiffusionPipeline):
                def __call__(self, prompt, latents=None):
                    embeds = self.encode_prompt(prompt)
                    latents = self.prepare_latents((1, 4, 8, 8), embeds.dtype, latents)
                    for t in self.scheduler.timesteps:
                        noise_pred = self.unet(latents, t, embeds)
                    return latents
            """
        ),
        # the denoiser never sees the caller's latents before they are replaced
        Valid(
            """
            class RefinePipeline(DiffusionPipeline):
                def __call__(self, prompt, image, latents=None):
                    embeds = self.encode_prompt(prompt)
                    if latents is None:
                        latents = randn_tensor((1, 4, 8, 8), dtype=embeds.dtype)
                    image_latents = self.vae.encode(image).latent_dist.mode()
                    noise_pred = self.unet(image_latents, 0, embeds)
                    return noise_pred
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class SketchToImagePipeline(DiffusionPipeline):
                def __call__(self, prompt, sketch, strength=0.6, latents=None, guidance_scale=5.0):
                    device = self._execution_device
                    embeds = self.encode_prompt(prompt, device)
                    timesteps = self.get_timesteps(strength)
                    if latents is None:
                        latents = self.prepare_latents(sketch, timesteps[:1], embeds.dtype, device)
                    for i, t in enumerate(timesteps):
                        model_input = torch.cat([latents] * 2) if guidance_scale > 1 else latents
                        model_input = self.scheduler.scale_model_input(model_input, t)
                        noise_pred = self.unet(model_input, t, encoder_hidden_states=embeds)[0]
                        latents = self.scheduler.step(noise_pred, t, latents)
                    return latents
            """,
            message=(
                "`__call__` makes its own `latents` only when the caller gave none and hands the caller's to the "
                "denoiser as given, never moved to the execution device or cast to the pipeline's dtype; add "
                "`else: latents = latents.to(device=device, dtype=...)`."
            ),
        ),
        # video, keyword arguments, a compound test, and a cast that comes after the caller's dtype is handed on
        Invalid(
            """
            class ClipPipeline(DiffusionPipeline):
                def __call__(self, prompt, num_frames=9, latents=None, generator=None):
                    text_states = self.encode_prompt(prompt)
                    if latents is None and generator is not None:
                        latents = randn_tensor((1, 16, num_frames, 8, 8), generator=generator)
                    elif latents is None:
                        latents = torch.zeros((1, 16, num_frames, 8, 8))
                    frame_ids = torch.arange(num_frames).to(dtype=latents.dtype)
                    latents = latents.permute(0, 2, 1, 3, 4)
                    for t in self.scheduler.timesteps:
                        latents = latents.to(text_states.dtype)
                        velocity = self.transformer(hidden_states=latents, timestep=t, frame_ids=frame_ids)
                        latents = self.scheduler.step(velocity, t, latents)
                    return latents
            """
        ),
    ]

    def check(self) -> None:
        for cls in pipeline_classes(self.context):
            call = self.context.methods(cls).get("__call__")
            if call is None or "latents" not in {p.name.value for p in parameters(call)}:
                continue
            denoisers = denoiser_calls(call)
            if not denoisers:
                continue
            first = denoisers[0]
            start = casts.order(first)
            derived = _derived(call, "latents", start)
            if not any(n.value in derived for n in casts.tensor_values_read(first)):
                continue  # the denoiser does not see them (yet)
            cast = casts.first_cast(call, derived, until=first)
            if cast is not None and casts.dtype_read_before(call, "latents", cast) is None:
                continue  # cast on the way, before anything takes their dtype
            assignments = [
                a
                for a in casts.assignments(call, "latents")
                if casts.order(a) < start
                and not _reshapes(a, "latents")
                and not (cast is not None and any(c is cast for c in walk.nodes(a, cst.Call)))
            ]
            branches = [casts.none_branch(call, a, "latents") for a in assignments]
            fresh = [branch for branch in branches if branch is not None]
            if not fresh or len(fresh) != len(branches):
                continue  # nothing made under `is None`, or the caller's tensor replaced or moved on some path
            self.report(
                fresh[0],
                self.message,
                symbol="latents",
                scope=f"{cls.qualname}.__call__",
            )
