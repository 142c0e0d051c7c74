"""DRB507: a tensor in the float32 denoising dtype reaches `self.vae.encode`/`decode` without the VAE's dtype."""

from __future__ import annotations

from collections.abc import Mapping

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import call_name, keyword, parameters, pipeline_classes


_FLOAT32 = ("torch.float32", "torch.float")


class Float32TensorReachesVae(Rule):
    """
    ## What it does
    Checks for pipelines that denoise in float32 (`__call__` passes a literal `torch.float32` as the
    `dtype` of `self.prepare_latents(...)` or of another helper) and hand a tensor in that dtype to the
    VAE: the latents to `self.vae.decode(...)` in `__call__`, or, in the helper, a tensor cast with
    `.to(..., dtype=dtype)` to `self.vae.encode(...)`, with no cast to the VAE's own dtype.

    ## Why is this bad?
    The VAE is usually loaded in bfloat16 or float16. A float32 input (or one cast to the text encoder's
    dtype instead) makes its first convolution fail with
    `Input type (float) and bias type (c10::BFloat16) should be the same`: at the very end of a long
    video generation for `decode`, or before it starts for image-to-video `encode`. The pipeline picked
    float32 for the scheduler, not for the VAE; only the VAE's dtype is right for its input.

    ## Example
    ```python
    latents = self.prepare_latents(batch_size, num_channels_latents, height, width, torch.float32, device, generator)
    ...
    latents = latents.to(prompt_embeds.dtype)
    video = self.vae.decode(latents, timestep, return_dict=False)[0]
    ```

    Use instead:
    ```python
    latents = latents.to(self.vae.dtype)
    video = self.vae.decode(latents, timestep, return_dict=False)[0]
    ```

    ## Known problems
    Only a literal `torch.float32` passed as `dtype` (by keyword or position) is followed, and only direct
    `self.vae.encode(...)`/`self.vae.decode(...)` calls. A `__call__` that feeds the latents to another network
    outside its loops (`upsampled = self.latent_upsampler(latents)`) is left alone: what it decodes then comes in
    that network's dtype, which is the VAE's unless the user loaded the two in different dtypes. Any `.to(...)` of the function whose arguments mention
    the VAE (`self.vae.dtype`, `vae_dtype`, `next(self.vae.parameters()).dtype`) counts as the cast, wherever
    it is.

    ## References
    - huggingface/diffusers#13656, pattern 5
    - huggingface/diffusers#11533 (LTXPipeline decoded float32-prepared latents in the text encoder's dtype)
    - huggingface/diffusers#11371 (WanImageToVideoPipeline encoded its condition video in the float32 `dtype`
      of `prepare_latents`)
    """

    code = "DRB507"
    pattern = 5
    severity = "error"
    message_decode = (
        "`latents` are prepared in `torch.float32` and reach `self.vae.decode` without a cast to the VAE's dtype; "
        "cast them with `latents.to(self.vae.dtype)` before decoding."
    )
    message_encode = (
        "`{name}` is cast to `dtype`, which `__call__` sets to `torch.float32`, and then encoded by `self.vae`; "
        "cast it to `self.vae.dtype` instead."
    )
    REQUIRES_ANY = ("vae.decode", "vae.encode")
    PATHS = ("/pipelines/",)

    VALID = [
        # the latents go through another network before the VAE and come out in its dtype
        Valid(
            """
            import torch

            class LatentUpsamplePipeline(DiffusionPipeline):
                def __call__(self, video, generator=None):
                    device = self._execution_device
                    latents = self.prepare_latents(video=video, dtype=torch.float32, device=device, generator=generator)
                    latents = latents.to(self.latent_upsampler.dtype)
                    upsampled = self.latent_upsampler(latents)
                    latents = self.tone_map(upsampled)
                    return self.vae.decode(latents, return_dict=False)[0]
            """
        ),
        Valid(
            """
            import torch

            class VideoPipeline(DiffusionPipeline):
                def prepare_latents(self, image, shape, dtype, device, generator):
                    image = image.to(device=device, dtype=self.vae.dtype)
                    condition = self.vae.encode(image).latent_dist.mode()
                    return randn_tensor(shape, generator=generator, device=device, dtype=dtype), condition.to(dtype)

                def __call__(self, image, generator=None):
                    device = self._execution_device
                    latents, condition = self.prepare_latents(image, (1, 16, 64, 64), torch.float32, device, generator)
                    for t in self.scheduler.timesteps:
                        latents = self.scheduler.step(self.transformer(latents, t, condition), t, latents)[0]
                    latents = latents.to(self.vae.dtype)
                    return self.vae.decode(latents, return_dict=False)[0]
            """
        ),
        Valid(
            """
            import torch

            class ImagePipeline(DiffusionPipeline):
                def __call__(self, prompt, generator=None):
                    vae_dtype = self.vae.dtype
                    latents = self.prepare_latents(1, 4, 64, 64, torch.float32, "cuda", generator)
                    return self.vae.decode(latents.to(vae_dtype), return_dict=False)[0]

            class HalfPipeline(DiffusionPipeline):
                def prepare_latents(self, image, dtype):
                    image = image.to(dtype=dtype)
                    return self.vae.encode(image).latent_dist.sample()

                def __call__(self, image, prompt_embeds, generator=None):
                    latents = self.prepare_latents(image, prompt_embeds.dtype)
                    return self.vae.decode(latents, return_dict=False)[0]
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            import torch

            class VideoPipeline(DiffusionPipeline):
                def __call__(self, prompt, generator=None):
                    device = self._execution_device
                    prompt_embeds = self.encode_prompt(prompt, device=device)
                    latents = self.prepare_latents(
                        batch_size=1, num_channels=128, frames=9, dtype=torch.float32, device=device, generator=generator
                    )
                    for t in self.scheduler.timesteps:
                        latents = self.scheduler.step(self.transformer(latents, t, prompt_embeds), t, latents)[0]
                    latents = latents.to(prompt_embeds.dtype)
                    return self.vae.decode(latents, None, return_dict=False)[0]
            """,
            message=(
                "`latents` are prepared in `torch.float32` and reach `self.vae.decode` without a cast to the VAE's "
                "dtype; cast them with `latents.to(self.vae.dtype)` before decoding."
            ),
        ),
        Invalid(
            """
            import torch

            class ImageToVideoPipeline(DiffusionPipeline):
                def prepare_condition(self, image, num_frames, dtype, device):
                    frames = image.unsqueeze(2).repeat(1, 1, num_frames, 1, 1)
                    frames = frames.to(device, dtype)
                    return self.vae.encode(frames).latent_dist.mode()

                def __call__(self, image, num_frames=9):
                    device = self._execution_device
                    condition = self.prepare_condition(image, num_frames, torch.float32, device)
                    return self.transformer(condition.to(self.transformer.dtype))
            """,
            message=(
                "`frames` is cast to `dtype`, which `__call__` sets to `torch.float32`, and then encoded by "
                "`self.vae`; cast it to `self.vae.dtype` instead."
            ),
        ),
    ]

    def check(self) -> None:
        for cls in pipeline_classes(self.context):
            methods = self.context.methods(cls)
            call = methods.get("__call__")
            if call is None:
                continue
            if self._prepares_float32(call) and not self._casts_to_vae(call) and not self._refined(call, methods):
                for decode in walk.own_nodes(call, cst.Call):
                    if call_name(decode) == "self.vae.decode" and decode.args and self._reads_latents(decode):
                        self.report(decode, self.message_decode, symbol="latents", scope=f"{cls.qualname}.__call__")
                        break
            for name, method in methods.items():
                if name != "__call__" and self._called_with_float32(call, name, method):
                    self._check_encode(f"{cls.qualname}.{name}", method)

    @staticmethod
    def _refined(call: cst.FunctionDef, methods: Mapping[str, cst.FunctionDef]) -> bool:
        """Whether `__call__` feeds the latents to another network outside its loops
        (`upsampled = self.latent_upsampler(latents)`): what reaches the VAE then has that network's dtype."""
        loops = [*walk.own_nodes(call, cst.For), *walk.own_nodes(call, cst.While)]
        looped = {id(n) for loop in loops for n in walk.walk(loop)}
        for assign in walk.own_nodes(call, cst.Assign):
            value = assign.value
            name = call_name(value) if isinstance(value, cst.Call) else None
            if id(assign) in looped or not name or not name.startswith("self.") or name.count(".") != 1:
                continue
            component = name.split(".", 1)[1]
            if component in methods or component in ("vae", "scheduler"):
                continue
            value = cst.ensure_type(value, cst.Call)
            if any(isinstance(arg.value, cst.Name) and arg.value.value == "latents" for arg in value.args):
                return True
        return False

    def _prepares_float32(self, call: cst.FunctionDef) -> bool:
        """`latents = self.prepare_latents(..., torch.float32, ...)` (positional or `dtype=`)."""
        for assign in walk.own_nodes(call, cst.Assign):
            value = assign.value
            if not (isinstance(value, cst.Call) and call_name(value) == "self.prepare_latents"):
                continue
            if "latents" not in [n.value for t in assign.targets for n in walk.nodes(t.target, cst.Name)]:
                continue
            dtype = keyword(value, "dtype")
            candidates = [dtype.value] if dtype is not None else [a.value for a in value.args if a.keyword is None]
            if any(self.context.qualified_name(c) in _FLOAT32 for c in candidates):
                return True
        return False

    def _called_with_float32(self, call: cst.FunctionDef, name: str, method: cst.FunctionDef) -> bool:
        """Whether `__call__` calls `self.<name>(...)` with a literal `torch.float32` in its `dtype` slot."""
        names = [p.name.value for p in parameters(method)][1:]  # without `self`
        if "dtype" not in names:
            return False
        position = names.index("dtype")
        for node in walk.own_nodes(call, cst.Call):
            if call_name(node) != f"self.{name}":
                continue
            dtype = keyword(node, "dtype")
            positional = [a.value for a in node.args if a.keyword is None]
            value = dtype.value if dtype is not None else positional[position] if position < len(positional) else None
            if value is not None and self.context.qualified_name(value) in _FLOAT32:
                return True
        return False

    def _check_encode(self, scope: str, method: cst.FunctionDef) -> None:
        """`x = ....to(..., dtype=dtype)` then `self.vae.encode(x)` in `method`, with no cast to the VAE's dtype."""
        if self._casts_to_vae(method):
            return
        cast: set[str] = set()
        for assign in walk.own_nodes(method, cst.Assign):
            value = assign.value
            if not (
                isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute) and value.func.attr.value == "to"
            ):
                continue
            if any(isinstance(arg.value, cst.Name) and arg.value.value == "dtype" for arg in value.args):
                cast.update(t.target.value for t in assign.targets if isinstance(t.target, cst.Name))
        for node in walk.own_nodes(method, cst.Call):
            if call_name(node) != "self.vae.encode" or not node.args:
                continue
            argument = node.args[0].value
            if isinstance(argument, cst.Name) and argument.value in cast:
                self.report(node, self.message_encode.format(name=argument.value), symbol=argument.value, scope=scope)
                return

    @staticmethod
    def _reads_latents(decode: cst.Call) -> bool:
        return any(n.value.startswith("latents") for n in walk.nodes(decode.args[0].value, cst.Name))

    def _casts_to_vae(self, function: cst.FunctionDef) -> bool:
        """Whether some `.to(...)`/`.type(...)` of `function` names the VAE among its arguments."""
        code = self.context.module.code_for_node
        for node in walk.own_nodes(function, cst.Call):
            func = node.func
            if isinstance(func, cst.Attribute) and func.attr.value in ("to", "type", "type_as"):
                if any("vae" in code(arg.value) for arg in node.args):
                    return True
            if call_name(node) == "self.upcast_vae":
                return True
        return False
