"""DRB108: a batched mask or latent condition is cut to its first row and blended into every sample's latents."""

from __future__ import annotations

import re

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import pipeline_methods, target_names


#: tensors with one row per sample: inpainting masks and encoded image latents (not timesteps or sigmas)
BATCHED_RE = re.compile(r"mask|latents")
UNBATCHED_RE = re.compile(r"timestep|sigma")


def _first_row_of(value: cst.BaseExpression) -> str | None:
    """`name` for `name[:1]` or `name[0:1]` (first batch row, batch axis kept), else None."""
    if not isinstance(value, cst.Subscript) or not isinstance(value.value, cst.Name) or not value.slice:
        return None
    first = value.slice[0].slice
    if not isinstance(first, cst.Slice) or first.step is not None:
        return None
    lower, upper = first.lower, first.upper
    if not (isinstance(upper, cst.Integer) and upper.value == "1"):
        return None
    if lower is not None and not (isinstance(lower, cst.Integer) and lower.value == "0"):
        return None
    return value.value.value


class BatchedConditioningSlicedToFirstRow(Rule):
    """
    ## What it does
    Checks pipeline `__call__` methods for a per-sample tensor (an inpainting `mask`, `image_latents`, any
    name with `mask` or `latents` in it) cut to its first row, `mask[:1]` or `image_latents[0:1]`, and then
    blended into `latents`, which hold every sample of the batch.

    ## Why is this bad?
    The first sample's mask and image are broadcast over the whole batch. With several prompts, several
    input images or `num_images_per_prompt > 1` with different masks, every sample is blended with the first
    one's image under the first one's mask, silently: the shapes broadcast.

    ## Example
    ```python
    init_latents_proper = image_latents[:1]
    init_mask = mask[:1]
    latents = (1 - init_mask) * init_latents_proper + init_mask * latents
    ```

    Use instead:
    ```python
    init_latents_proper = image_latents
    init_mask, _ = mask.chunk(2) if do_classifier_free_guidance else (mask, None)
    latents = (1 - init_mask) * init_latents_proper + init_mask * latents
    ```

    ## Known problems
    Only the slice spellings `[:1]` and `[0:1]` on a plain name are recognised, and the sliced tensor must
    reach an assignment to `latents` within `__call__` (directly or through other names). Timesteps and
    sigmas, which hold no batch, are not looked at.

    ## References
    - huggingface/diffusers#13656, pattern 1
    - huggingface/diffusers#5033 (inpainting with a regular UNet blended every sample with the first mask)
    """

    code = "DRB108"
    pattern = 1
    severity = "error"
    message = (
        "`{source}` is cut to its first row, so the first sample's {kind} is blended into the latents of the whole "
        "batch; use every row of `{source}` (split off the guidance half with `.chunk(2)` if needed)."
    )
    REQUIRES_ANY = (":1]",)
    PATHS = ("/pipelines/",)

    VALID = [
        # the whole batch is kept; only the guidance half is split off
        Valid(
            """
            class MyInpaintPipeline(DiffusionPipeline):
                def __call__(self, prompt, image, mask_image, num_images_per_prompt=1):
                    for i, t in enumerate(self.scheduler.timesteps):
                        latents = self.scheduler.step(self.unet(latents, t), t, latents)
                        known, _ = mask.chunk(2)
                        source = self.scheduler.add_noise(image_latents, noise, t)
                        latents = (1 - known) * source + known * latents
                    return latents
            """
        ),
        # timesteps hold no batch; a sliced mask that is only logged reaches no latents
        Valid(
            """
            class MyImg2ImgPipeline(DiffusionPipeline):
                def __call__(self, prompt, image, strength=0.8, num_images_per_prompt=1):
                    latent_timestep = timesteps[:1].repeat(len(prompt) * num_images_per_prompt)
                    latents = self.prepare_latents(image, latent_timestep)
                    preview_mask = mask[:1]
                    self.log_preview(preview_mask)
                    return self.unet(latents, latent_timestep)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class MyInpaintPipeline(DiffusionPipeline):
                def __call__(self, prompt, image, mask_image, num_images_per_prompt=1):
                    for i, t in enumerate(self.scheduler.timesteps):
                        latents = self.scheduler.step(self.unet(latents, t), t, latents)
                        known_region = mask[:1]
                        source = self.scheduler.add_noise(image_latents, noise, t)
                        latents = (1 - known_region) * source + known_region * latents
                    return latents
            """,
            message=(
                "`mask` is cut to its first row, so the first sample's mask is blended into the latents of the whole "
                "batch; use every row of `mask` (split off the guidance half with `.chunk(2)` if needed)."
            ),
        ),
        # the image latents, through `add_noise`
        Invalid(
            """
            class MyVideoInpaintPipeline(DiffusionPipeline):
                def __call__(self, prompt, video, mask_video, num_videos_per_prompt=1):
                    for i, t in enumerate(self.scheduler.timesteps):
                        latents = self.scheduler.step(self.transformer(latents, t), t, latents)
                        reference = video_latents[0:1]
                        reference = self.scheduler.add_noise(reference, noise, t)
                        latents = (1 - mask) * reference + mask * latents
                    return latents
            """
        ),
    ]

    def check(self) -> None:
        for cls, method in pipeline_methods(self.context, "__call__"):
            self._check_call(f"{cls.qualname}.__call__", method)

    def _check_call(self, scope: str, function: cst.FunctionDef) -> None:
        assigns = walk.own_nodes(function, cst.Assign)
        flows = [
            ({n for t in a.targets for n in target_names(t.target)}, {n.value for n in walk.nodes(a.value, cst.Name)})
            for a in assigns
        ]
        for assign in assigns:
            source = _first_row_of(assign.value)
            if source is None or not BATCHED_RE.search(source) or UNBATCHED_RE.search(source):
                continue
            if source == "latents":
                continue  # slicing the latents themselves is not blending a condition into them
            carriers = {n for t in assign.targets for n in target_names(t.target)}
            changed = True
            while changed:
                changed = False
                for targets, reads in flows:
                    if reads & carriers and not targets <= carriers:
                        carriers |= targets
                        changed = True
            if "latents" not in carriers:
                continue
            kind = "mask" if "mask" in source else "latents"
            self.report(assign, self.message.format(source=source, kind=kind), symbol=source, scope=scope)
