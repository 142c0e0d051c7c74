"""DRB311: a function that defines a mask shape allocates a mask with another shape (the latents')."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.matchers import target_names


#: torch functions and tensor methods that allocate a tensor of the shape given as their first argument
ALLOCATORS = frozenset({"zeros", "ones", "full", "empty", "new_zeros", "new_ones", "new_full", "new_empty"})
MASK = "mask"
MASK_SHAPE = "mask_shape"


def _allocated_shape(value: cst.BaseExpression) -> cst.Name | None:
    """`shape` in `torch.zeros(shape, ...)` or `latents.new_zeros(shape)`, when the shape is one name."""
    if not isinstance(value, cst.Call) or not value.args:
        return None
    if not isinstance(value.func, cst.Attribute) or value.func.attr.value not in ALLOCATORS:
        return None
    method = value.func.attr.value
    if not method.startswith("new_") and dotted_name(value.func.value) != "torch":
        return None  # `torch.zeros(shape)`, or a tensor's `x.new_zeros(shape)`
    first = value.args[0]
    if first.keyword is not None or first.star or not isinstance(first.value, cst.Name):
        return None
    return first.value


class MaskAllocatedWithLatentShape(Rule):
    """
    ## What it does
    Checks functions that bind a mask shape (`mask_shape = (batch_size, 1, num_frames, height, width)`) and
    also allocate a mask (a name with `mask` in it) from another shape name bound in the same function:
    `conditioning_mask = latents.new_zeros(shape)` next to `conditioning_mask = torch.zeros(mask_shape, ...)`.

    ## Why is this bad?
    The other shape is the latents' (every channel), so that branch builds a mask with `C` channels where the
    rest of the pipeline expects one: after packing it comes out `[B, seq, C * p]` instead of `[B, seq]`, and
    the per-token timestep (`timestep * (1 - conditioning_mask)`) or the blend with the latents breaks or
    broadcasts wrongly. LTX's image-to-video pipeline built its first-frame conditioning mask this way when
    the caller passed `latents`.

    ## Example
    ```python
    shape = (batch_size, num_channels_latents, num_frames, height, width)
    mask_shape = (batch_size, 1, num_frames, height, width)
    if latents is not None:
        conditioning_mask = latents.new_zeros(shape)
    ```

    Use instead:
    ```python
    if latents is not None:
        conditioning_mask = latents.new_zeros(mask_shape)
    ```

    ## Known problems
    Only a function that binds a name ending in `mask_shape` is looked at, and only allocations whose shape
    is a single name (`torch.zeros/ones/full/empty`, `x.new_zeros/new_ones/new_full/new_empty`).

    ## References
    - huggingface/diffusers#13656, pattern 3
    - huggingface/diffusers#10918 (LTX image-to-video: conditioning mask built with the latents' shape)
    """

    code = "DRB311"
    pattern = 3
    severity = "error"
    message = (
        "`{mask}` is allocated with `{shape}` although this function defines `{mask_shape}` for its masks, "
        "so the mask gets the latents' channels; allocate it with `{mask_shape}`."
    )
    REQUIRES_ANY = ("mask_shape",)

    VALID = [
        Valid(
            """
            import torch

            class MyPipeline(DiffusionPipeline):
                def prepare_latents(self, batch_size, channels, frames, height, width, latents=None):
                    shape = (batch_size, channels, frames, height, width)
                    mask_shape = (batch_size, 1, frames, height, width)
                    if latents is not None:
                        conditioning_mask = latents.new_zeros(mask_shape)
                        return latents, conditioning_mask
                    noise = torch.zeros(shape)
                    conditioning_mask = torch.zeros(mask_shape)
                    return noise, conditioning_mask
            """
        ),
        Valid(
            # no mask shape in this function: nothing to compare with
            """
            import torch

            def make(shape):
                mask = torch.zeros(shape)
                return mask
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            import torch

            class MyPipeline(DiffusionPipeline):
                def prepare_latents(self, batch_size, channels, frames, height, width, latents=None):
                    shape = (batch_size, channels, frames, height, width)
                    mask_shape = (batch_size, 1, frames, height, width)
                    if latents is not None:
                        conditioning_mask = latents.new_zeros(shape)
                        conditioning_mask[:, :, 0] = 1.0
                        return latents, conditioning_mask
                    conditioning_mask = torch.zeros(mask_shape)
                    return torch.randn(shape), conditioning_mask
            """,
            message=(
                "`conditioning_mask` is allocated with `shape` although this function defines `mask_shape` for "
                "its masks, so the mask gets the latents' channels; allocate it with `mask_shape`."
            ),
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if isinstance(function, cst.FunctionDef):
                self._check_function(definition.qualname, function)

    def _check_function(self, scope: str, function: cst.FunctionDef) -> None:
        assigns = [a for a in walk.own_nodes(function, cst.Assign) if len(a.targets) == 1]
        bound = {name for a in assigns for name in target_names(a.targets[0].target)}
        mask_shapes = sorted(name for name in bound if name.endswith(MASK_SHAPE))
        if not mask_shapes:
            return
        for assign in assigns:
            target = assign.targets[0].target
            if not isinstance(target, cst.Name) or MASK not in target.value.lower():
                continue
            shape = _allocated_shape(assign.value)
            if shape is None or shape.value not in bound or MASK in shape.value.lower():
                continue
            message = self.message.format(mask=target.value, shape=shape.value, mask_shape=mask_shapes[0])
            self.report(assign.value, message, symbol=target.value, scope=scope)
