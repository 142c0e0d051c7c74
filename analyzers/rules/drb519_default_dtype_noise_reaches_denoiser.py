"""DRB519: noise drawn without a `dtype` reaches the denoiser with no cast, so a half-precision model gets float32."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import call_name, denoiser_calls, keyword, target_names, values_read


#: draws of noise that default to float32; `randn_tensor(shape, generator, device, dtype, layout)`
_DRAWS = {"randn_tensor": 3, "torch.randn": None}
#: methods of a tensor that change its dtype
_CASTS = frozenset({"half", "bfloat16", "type", "type_as"})
#: words that, in the arguments of `.to(...)`, say a dtype is given
_DTYPE_WORDS = ("dtype", "float16", "bfloat16", "half", "float32")


def _is_draw(node: cst.BaseExpression) -> bool:
    """`randn_tensor(shape, generator=g, device=d)` with no `dtype`, by keyword or position."""
    if not isinstance(node, cst.Call):
        return False
    name = call_name(node)
    if name not in _DRAWS:
        return False
    if keyword(node, "dtype") is not None or any(arg.star for arg in node.args):
        return False
    position = _DRAWS[name]
    positional = [arg for arg in node.args if arg.keyword is None]
    return position is None or len(positional) <= position


def _seed(value: cst.BaseExpression) -> bool:
    """The draw itself, or the draw scaled by a number or an attribute (`* self.scheduler.init_noise_sigma`):
    a product with another tensor takes that tensor's dtype into account."""
    if _is_draw(value):
        return True
    if isinstance(value, cst.BinaryOperation) and isinstance(value.operator, (cst.Multiply, cst.Divide)):
        for draw, other in ((value.left, value.right), (value.right, value.left)):
            if _is_draw(draw) and isinstance(other, (cst.Integer, cst.Float, cst.Attribute)):
                return True
    return False


def _is_cast(call: cst.Call, source: cst.Module) -> bool:
    """`.to(dtype)`, `.to(device, self.unet.dtype)`, `.half()`: a call that sets the dtype of its receiver."""
    if not isinstance(call.func, cst.Attribute):
        return False
    method = call.func.attr.value
    if method in _CASTS:
        return True
    if method != "to":
        return False
    return any(word in source.code_for_node(arg) for arg in call.args for word in _DTYPE_WORDS)


class DefaultDtypeNoiseReachesDenoiser(Rule):
    """
    ## What it does
    Checks pipeline methods that draw their starting noise with `randn_tensor(...)` (or `torch.randn(...)`)
    without a `dtype` and pass it, directly or through other local names (`image = noise`,
    `model_input = self.scheduler.scale_model_input(latents, t)`), to the denoiser (`self.unet(...)`,
    `self.transformer(...)`, or a local alias of one) with no cast to a dtype anywhere on the way.

    ## Why is this bad?
    Without `dtype`, the noise is float32 whatever the model's dtype. A pipeline loaded with
    `torch_dtype=torch.float16` then fails on its first step with
    `Input type (float) and bias type (c10::Half) should be the same`: the model's first convolution does
    not cast its input.

    ## Example
    ```python
    image = randn_tensor(image_shape, generator=generator, device=device)
    for t in self.progress_bar(self.scheduler.timesteps):
        model_output = self.unet(image, t).sample
    ```

    Use instead:
    ```python
    image = randn_tensor(image_shape, generator=generator, device=device, dtype=self.unet.dtype)
    ```

    ## Known problems
    Only noise drawn in the method that calls the denoiser is followed; noise drawn in `prepare_latents` and
    returned is not. Any `.to(...)` whose arguments mention a dtype, or `.half()`/`.type(...)`, applied to a
    name that carries the noise counts as the cast. A product with another tensor (`sigma * noise + image`)
    ends the trail, since it promotes to that tensor's dtype.

    ## References
    - huggingface/diffusers#13656, pattern 5
    - huggingface/diffusers#9222 (DDPMPipeline drew float32 noise for a float16 UNet, fixed in 0.31.0)
    """

    code = "DRB519"
    pattern = 5
    severity = "error"
    message = (
        "`{name}` is drawn by `{draw}` without `dtype`, so it is float32 when it reaches `{model}`, which fails "
        "for a half-precision model; pass `dtype={dtype}` to `{draw}`."
    )
    REQUIRES_ANY = ("randn",)
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            class DDPMPipeline(DiffusionPipeline):
                def __call__(self, batch_size=1, generator=None):
                    image = randn_tensor((batch_size, 3, 32, 32), generator=generator, dtype=self.unet.dtype)
                    image = image.to(self._execution_device)
                    for t in self.scheduler.timesteps:
                        image = self.scheduler.step(self.unet(image, t).sample, t, image).prev_sample
                    return image
            """
        ),
        # cast after the draw
        Valid(
            """
            class LatentPipeline(DiffusionPipeline):
                def __call__(self, batch_size=1, generator=None):
                    latents = randn_tensor((batch_size, 4, 64, 64), generator=generator, device=self.device)
                    latents = latents.to(dtype=self.transformer.dtype)
                    return self.transformer(latents)
            """
        ),
        # mixed with a tensor of another dtype, or never given to the model
        Valid(
            """
            class VideoPipeline(DiffusionPipeline):
                def __call__(self, image_latents, sigma, generator=None):
                    image_latents = sigma * randn_tensor(image_latents.shape, generator=generator) + image_latents
                    noise = randn_tensor(image_latents.shape, generator=generator)
                    log_noise(noise)
                    return self.transformer(image_latents)
            """
        ),
        # the cast happens at the call
        Valid(
            """
            class ScorePipeline(DiffusionPipeline):
                def __call__(self, generator=None):
                    sample = randn_tensor((1, 3, 32, 32), generator=generator)
                    return self.unet(sample.to(self.device, self.unet.dtype), 0)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class DDPMPipeline(DiffusionPipeline):
                def __call__(self, batch_size=1, generator=None):
                    if self.device.type == "mps":
                        image = randn_tensor((batch_size, 3, 32, 32), generator=generator)
                        image = image.to(self.device)
                    else:
                        image = randn_tensor((batch_size, 3, 32, 32), generator=generator, device=self.device)
                    for t in self.scheduler.timesteps:
                        model_output = self.unet(image, t).sample
                        image = self.scheduler.step(model_output, t, image).prev_sample
                    return image
            """,
            message=(
                "`image` is drawn by `randn_tensor` without `dtype`, so it is float32 when it reaches `self.unet`, "
                "which fails for a half-precision model; pass `dtype=self.unet.dtype` to `randn_tensor`."
            ),
        ),
        # through a scaling, another name and a local alias of the model
        Invalid(
            """
            class KarrasPipeline(DiffusionPipeline):
                def __call__(self, generator=None):
                    model = self.unet
                    sample = randn_tensor((1, 3, 32, 32), generator=generator) * self.scheduler.init_noise_sigma
                    for t in self.scheduler.timesteps:
                        model_input = self.scheduler.scale_model_input(sample, t)
                        sample = self.scheduler.step(model((model_input + 1) / 2, t).sample, t, sample).prev_sample
                    return sample
            """
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            models = denoiser_calls(function)
            if not models:
                continue
            assigns = walk.own_nodes(function, cst.Assign)
            seeds: dict[str, cst.Call] = {}
            for assign in assigns:
                if _seed(assign.value):
                    draw = assign.value if isinstance(assign.value, cst.Call) else None
                    if draw is None:
                        binary = cst.ensure_type(assign.value, cst.BinaryOperation)
                        draw = cst.ensure_type(binary.left if _is_draw(binary.left) else binary.right, cst.Call)
                    for target in assign.targets:
                        for name in target_names(target.target):
                            seeds.setdefault(name, draw)
            if not seeds:
                continue
            for name, draw in seeds.items():
                carried = self._carried(function, assigns, {name})
                if carried is None:
                    continue  # the noise is cast somewhere
                model = next(
                    (m for m in models if any(n.value in carried for arg in m.args for n in values_read(arg.value))),
                    None,
                )
                if model is None:
                    continue
                model_name = self.context.module.code_for_node(model.func)
                dtype = f"{model_name}.dtype" if model_name.startswith("self.") else "self.unet.dtype"
                self.report(
                    draw,
                    self.message.format(name=name, draw=call_name(draw), model=model_name, dtype=dtype),
                    symbol=name,
                    scope=definition.qualname,
                )
                break

    def _carried(self, function: cst.FunctionDef, assigns: list[cst.Assign], carried: set[str]) -> set[str] | None:
        """The names that hold the noise, following assignments until nothing changes; None when a cast is applied
        to one of them anywhere in `function`."""
        module = self.context.module
        for call in walk.own_nodes(function, cst.Call):
            if _is_cast(call, module):
                receiver = cst.ensure_type(call.func, cst.Attribute).value
                if any(n.value in carried for n in values_read(receiver)):
                    return None
        changed = True
        while changed:
            changed = False
            for assign in assigns:
                reads = {n.value for n in values_read(assign.value)}
                if not reads & carried or self._mixed(assign.value, carried):
                    continue
                for target in assign.targets:
                    for name in target_names(target.target):
                        if name not in carried:
                            carried.add(name)
                            changed = True
            for call in walk.own_nodes(function, cst.Call):
                if _is_cast(call, module):
                    receiver = cst.ensure_type(call.func, cst.Attribute).value
                    if any(n.value in carried for n in values_read(receiver)):
                        return None
        return carried

    @staticmethod
    def _mixed(value: cst.BaseExpression, carried: set[str]) -> bool:
        """Whether `value` combines the noise arithmetically with a name that does not carry it: its dtype then
        follows the other tensor's."""
        for binary in walk.nodes(value, cst.BinaryOperation):
            sides = [{n.value for n in values_read(side)} for side in (binary.left, binary.right)]
            if any(side & carried for side in sides) and any(side and not side & carried for side in sides):
                return True
        return False
