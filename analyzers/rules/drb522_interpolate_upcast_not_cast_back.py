"""DRB522: an activation is upcast for `interpolate` (`x.float()`) and the float32 result is never cast back."""

from __future__ import annotations

from typing import cast

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import call_name, keyword, names_read


#: resampling functions that are given an upcast copy
RESAMPLERS = frozenset({"interpolate", "upsample", "upsample_bilinear", "upsample_nearest"})
FLOAT32 = frozenset({"torch.float32", "torch.float"})
#: methods that cast a tensor
CASTS = frozenset({"to", "type", "type_as", "half", "bfloat16", "float", "double"})


def _upcast_of(expr: cst.BaseExpression, module: cst.Module) -> str | None:
    """`x.float()` / `x.to(torch.float32)` / `x.to(dtype=torch.float32)` / `x.type(torch.float32)`: the name `x`."""
    if not isinstance(expr, cst.Call) or not isinstance(expr.func, cst.Attribute):
        return None
    if not isinstance(expr.func.value, cst.Name):
        return None
    method = expr.func.attr.value
    if method == "float" and not expr.args:
        return expr.func.value.value
    if method in ("to", "type"):
        dtype = keyword(expr, "dtype")
        value = dtype.value if dtype is not None else expr.args[0].value if len(expr.args) == 1 else None
        if value is not None and module.code_for_node(value) in FLOAT32:
            return expr.func.value.value
    return None


def _casts(statement: cst.CSTNode, name: str) -> bool:
    """Whether `statement` casts `name` (`name.to(...)`, `name.type(...)`, `name.half()`, ...)."""
    return any(
        isinstance(call.func, cst.Attribute)
        and call.func.attr.value in CASTS
        and isinstance(call.func.value, cst.Name)
        and call.func.value.value == name
        for call in walk.nodes(statement, cst.Call)
    )


def _is_module_class(cls: cst.ClassDef) -> bool:
    """A model class: it defines `forward`, or derives from a `...Module`/`ModelMixin` base."""
    if any(isinstance(s, cst.FunctionDef) and s.name.value == "forward" for s in cls.body.body):
        return True
    bases = [b.value for b in cls.bases]
    return any(
        (isinstance(b, cst.Name) and (b.value.endswith("Module") or b.value == "ModelMixin"))
        or (isinstance(b, cst.Attribute) and b.attr.value.endswith("Module"))
        for b in bases
    )


class InterpolateUpcastNotCastBack(Rule):
    """
    ## What it does
    Checks model code for `x = F.interpolate(x.float(), ...)` (or `x.to(torch.float32)`) where the float32 result
    is used next without being cast back to the original dtype (`.to(orig_dtype)` on the call or on `x` before its
    next use).

    ## Why is this bad?
    Upcasting before `interpolate` works around missing half-precision kernels (bicubic, antialias, some
    backends), but the result stays float32: an fp16/bf16 model then feeds float32 activations to the next block,
    which fails with a dtype mismatch (`Input type (float) and bias type (c10::Half) should be the same`) or
    silently runs the rest of the network in float32, only on the path that resizes (odd resolutions, a skip
    connection of another size).

    ## Example
    ```python
    if x.shape[-2:] != skip.shape[-2:]:
        x = F.interpolate(x.float(), skip.shape[-2:], mode="bilinear")
    x = block(x, skip)
    ```

    Use instead:
    ```python
    x = F.interpolate(x.float(), skip.shape[-2:], mode="bilinear").to(x.dtype)
    ```

    ## Known problems
    Only an upcast of the name that receives the result is followed (`x = interpolate(x.float())`), to the next
    statement of the function, in source order, that reads it; pipelines (masks, images that are meant to stay
    float32) are not checked.

    ## References
    - huggingface/diffusers#13656, pattern 5
    - huggingface/diffusers#7356 (StableCascadeUNet left the interpolated activations in float32)
    """

    code = "DRB522"
    pattern = 5
    severity = "error"
    message = (
        "`{name}` is upcast for `{resampler}` (`{upcast}`) and the float32 result reaches `{use}` without being "
        "cast back, so fp16/bf16 models get float32 activations (dtype mismatch); cast it back, e.g. "
        "`.to({name}.dtype)` on the call."
    )
    REQUIRES_ANY = ("interpolate", "upsample")
    PATHS = ("/models/", "/pipelines/")

    VALID = [
        Valid(
            """
            class UpBlock(nn.Module):
                def forward(self, x, skip):
                    if x.shape[-2:] != skip.shape[-2:]:
                        x = F.interpolate(x.float(), skip.shape[-2:], mode="bilinear").to(x.dtype)
                    x = self.block(x, skip)
                    if x.shape[-1] != skip.shape[-1]:
                        orig_dtype = x.dtype
                        x = F.interpolate(x.to(torch.float32), skip.shape[-2:], mode="bicubic")
                        x = x.to(orig_dtype)
                    y = F.interpolate(skip.float(), scale_factor=2.0)
                    return self.out(x, y.to(x.dtype))
            """,
            path="diffusers/models/unets/unet_example.py",
        ),
        # a pipeline resizing a mask: float32 is wanted there
        Valid(
            """
            class InpaintPipeline(DiffusionPipeline):
                def prepare_mask(self, mask, size):
                    mask = F.interpolate(mask.float(), size=size, mode="nearest")
                    return mask * self.scale
            """,
            path="diffusers/pipelines/example/pipeline_example.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            class CascadeUNet(ModelMixin):
                def _up_decode(self, outputs, emb):
                    x = outputs[0]
                    for i, block in enumerate(self.up_blocks):
                        skip = outputs[i] if i > 0 else None
                        if skip is not None and x.size(-1) != skip.size(-1):
                            x = torch.nn.functional.interpolate(x.float(), skip.shape[-2:], mode="bilinear")
                        x = block(x, skip)
                    return x
            """,
            message=(
                "`x` is upcast for `torch.nn.functional.interpolate` (`x.float()`) and the float32 result reaches "
                "`x = block(x, skip)` without being cast back, so fp16/bf16 models get float32 activations (dtype "
                "mismatch); cast it back, e.g. `.to(x.dtype)` on the call."
            ),
            path="diffusers/models/unets/unet_example.py",
        ),
        Invalid(
            """
            class Upsample(nn.Module):
                def forward(self, hidden_states, output_size=None):
                    hidden_states = F.interpolate(hidden_states.to(dtype=torch.float32), size=output_size)
                    hidden_states = self.conv(hidden_states)
                    return hidden_states
            """,
            path="diffusers/models/upsampling_example.py",
        ),
    ]

    def check(self) -> None:
        module = self.context.module
        for definition in self.context.definitions:
            function = definition.node
            parent = definition.parent
            if not isinstance(function, cst.FunctionDef) or parent is None or not parent.is_class:
                continue
            if not isinstance(parent.node, cst.ClassDef) or not _is_module_class(parent.node):
                continue
            assigns = [
                a
                for a in walk.own_nodes(function, cst.Assign)
                if len(a.targets) == 1
                and isinstance(a.targets[0].target, cst.Name)
                and isinstance(a.value, cst.Call)
                and (call_name(a.value) or "").rpartition(".")[2] in RESAMPLERS
                and a.value.args
            ]
            if not assigns:
                continue
            statements = walk.own_nodes(function, cst.SimpleStatementLine)
            for assign in assigns:
                name = cast("cst.Name", assign.targets[0].target).value
                if _upcast_of(cast("cst.Call", assign.value).args[0].value, module) != name:
                    continue
                self._check_use(function, definition.qualname, statements, assign, name)

    def _check_use(
        self,
        function: cst.FunctionDef,
        scope: str,
        statements: list[cst.SimpleStatementLine],
        assign: cst.Assign,
        name: str,
    ) -> None:
        module = self.context.module
        here = walk.span(assign)
        if here is None:
            return
        after = [s for s in statements if (walk.span(s) or (0, 0))[0] >= here[1]]
        after.sort(key=lambda s: walk.span(s) or (0, 0))
        for statement in after:
            if not any(n.value == name for n in names_read(statement)):
                continue
            if _casts(statement, name):
                return
            use = " ".join(module.code_for_node(statement).split())
            call = cast("cst.Call", assign.value)
            upcast = module.code_for_node(call.args[0].value)
            resampler = call_name(call) or "interpolate"
            message = self.message.format(name=name, resampler=resampler, upcast=upcast, use=use)
            self.report(assign.value, message, symbol=name, scope=scope)
            return
