"""DRB805: an inpainting call crops to the mask (`padding_mask_crop`) but never pastes the result back."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import parameters


PARAM = "padding_mask_crop"


def _called(call: cst.Call) -> str | None:
    func = call.func
    if isinstance(func, cst.Attribute):
        return func.attr.value
    if isinstance(func, cst.Name):
        return func.value
    return None


class MaskCropWithoutOverlay(Rule):
    """
    ## What it does
    Checks functions that take `padding_mask_crop`, crop the image and mask to the masked region
    (`get_crop_region(...)`), and never paste the inpainted crop back onto the original image
    (`image_processor.apply_overlay(...)`), as every pipeline the feature was copied from does.

    ## Why is this bad?
    With `padding_mask_crop` the pipeline denoises only a crop around the mask, resized to the output size.
    The sibling inpaint pipelines finish with `apply_overlay(mask_image, original_image, image, crops_coords)`,
    which resizes the crop back and pastes it into the full original image. A copy that keeps the cropping
    but not that last step returns the enlarged crop instead of the user's image, against the documentation
    of the argument it copied. diffusers shipped this in the Flux inpaint pipeline.

    ## Example
    ```python
    if padding_mask_crop is not None:
        crops_coords = self.mask_processor.get_crop_region(mask_image, width, height, pad=padding_mask_crop)
    ...
    image = self.image_processor.postprocess(image, output_type=output_type)
    return FluxPipelineOutput(images=image)
    ```

    Use instead:
    ```python
    image = self.image_processor.postprocess(image, output_type=output_type)
    if padding_mask_crop is not None:
        image = [self.image_processor.apply_overlay(mask_image, original_image, i, crops_coords) for i in image]
    ```

    ## Known problems
    Only the function that takes `padding_mask_crop` as a parameter is read: a pipeline that pastes the crop
    back in a helper whose name does not mention `overlay` would be reported, and a modular block, which reads
    the argument from its state, is not looked at.

    ## References
    - huggingface/diffusers#13656, pattern 8
    - huggingface/diffusers#11658 (Flux inpaint: `padding_mask_crop` cropped but never overlaid)
    """

    code = "DRB805"
    pattern = 8
    severity = "error"
    message = (
        "`{name}` crops the image and mask to the masked region with `padding_mask_crop` but never pastes the "
        "result back (`image_processor.apply_overlay(...)`), so users get the enlarged crop instead of their "
        "image; overlay each output image onto the original as the sibling inpaint pipelines do."
    )
    REQUIRES_ANY = ("get_crop_region",)
    PATHS = ("/pipelines/", "/examples/")
    VALID = [
        Valid(
            """
            class MyInpaintPipeline(DiffusionPipeline):
                def __call__(self, image, mask_image, padding_mask_crop=None):
                    if padding_mask_crop is not None:
                        crops_coords = self.mask_processor.get_crop_region(mask_image, 64, 64, pad=padding_mask_crop)
                    else:
                        crops_coords = None
                    image = self.run(image, mask_image, crops_coords)
                    if padding_mask_crop is not None:
                        image = [self.image_processor.apply_overlay(mask_image, image, i, crops_coords) for i in image]
                    return image
            """
        ),
        # cropping in a helper that does not take the argument: which function pastes back is not known here
        Valid(
            """
            class MyInpaintPipeline(DiffusionPipeline):
                def prepare(self, mask_image, pad):
                    return self.mask_processor.get_crop_region(mask_image, 64, 64, pad=pad)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class MyInpaintPipeline(DiffusionPipeline):
                def __call__(self, image, mask_image, padding_mask_crop=None):
                    if padding_mask_crop is not None:
                        crops_coords = self.mask_processor.get_crop_region(mask_image, 64, 64, pad=padding_mask_crop)
                    else:
                        crops_coords = None
                    image = self.run(image, mask_image, crops_coords)
                    return self.image_processor.postprocess(image)
            """,
            message=(
                "`__call__` crops the image and mask to the masked region with `padding_mask_crop` but never pastes "
                "the result back (`image_processor.apply_overlay(...)`), so users get the enlarged crop instead of "
                "their image; overlay each output image onto the original as the sibling inpaint pipelines do."
            ),
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            if PARAM not in {p.name.value for p in parameters(function)}:
                continue
            calls = walk.nodes(function, cst.Call)
            crops = [c for c in calls if _called(c) == "get_crop_region"]
            if not crops:
                continue
            if any("overlay" in (_called(c) or "") for c in calls):
                continue
            self.report(
                crops[0], self.message.format(name=function.name.value), symbol=PARAM, scope=definition.qualname
            )
