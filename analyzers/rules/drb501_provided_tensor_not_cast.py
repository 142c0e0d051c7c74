"""DRB501: a user-provided latents/embeds tensor is moved with `.to(device)` but never cast to the execution dtype."""

from __future__ import annotations

import libcst as cst

from analyzers import casts, walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.fixes import Proposal, Replace
from analyzers.matchers import calls, denoiser_calls, parameters, pipeline_classes


#: user-provided tensors that must reach the denoiser in the execution dtype
TENSOR_NAMES = frozenset(
    {
        "latents",
        "image_latents",
        "prompt_embeds",
        "negative_prompt_embeds",
        "pooled_prompt_embeds",
        "negative_pooled_prompt_embeds",
        "image_embeds",
        "negative_image_embeds",
    }
)


def _device_only_to(value: cst.BaseExpression, name: str) -> bool:
    """`name.to(device)` / `name.to(device=device)`: a move with no dtype."""
    if not (
        isinstance(value, cst.Call)
        and isinstance(value.func, cst.Attribute)
        and isinstance(value.func.value, cst.Name)
        and value.func.value.value == name
        and value.func.attr.value == "to"
    ):
        return False
    if not value.args or casts.casts_dtype(value):
        return False
    return all(
        (arg.keyword is None and not casts.is_dtype_expr(arg.value))
        or (arg.keyword is not None and arg.keyword.value == "device")
        for arg in value.args
    )


def _alias_moves(method: cst.FunctionDef, tensor: str, assignments: list[cst.Assign]) -> list[tuple[cst.Assign, str]]:
    """Moves of `tensor` into another name that flows back into `tensor` later: `noise = latents.to(device)`
    followed by `latents = noise * self.scheduler.init_noise_sigma`, each with the other name."""
    found = []
    for assign in walk.nodes(method.body, cst.Assign):
        if len(assign.targets) != 1 or not isinstance(assign.targets[0].target, cst.Name):
            continue
        alias = assign.targets[0].target.value
        if alias == tensor or not _device_only_to(assign.value, tensor):
            continue
        if any(
            casts.order(later) > casts.order(assign) and any(n.value == alias for n in casts.all_names(later.value))
            for later in assignments
        ):
            found.append((assign, alias))
    return found


def _passes_user_tensor(call: cst.FunctionDef, method: str, tensor: str) -> bool:
    """Whether `__call__` takes `tensor` and hands its own, unchanged parameter to `self.<method>(...)`."""
    if tensor not in {p.name.value for p in parameters(call)}:
        return False  # not user-provided: `__call__` makes it (e.g. from `self.movq.encode(image)`)
    for statement in call.body.body:
        hands_over = [
            c
            for c in calls(statement)
            if dotted_name(c.func) == f"self.{method}"
            and any(isinstance(a.value, cst.Name) and a.value.value == tensor for a in c.args)
        ]
        if any(casts.none_branch(call, c, tensor) is None for c in hands_over):
            return True  # (under `if latents is None:` it hands over None, never the caller's tensor)
        for assign in walk.nodes(statement, cst.Assign):
            if any(isinstance(t.target, cst.Name) and t.target.value == tensor for t in assign.targets):
                return False  # reassigned before it reaches the helper
    return False


def _cast_call(call: cst.Call) -> cst.Call | None:
    """`t.to(device)` / `t.to(device=d)` as `t.to(device=d, dtype=dtype)`; None for any other shape of call."""
    if len(call.args) != 1 or call.args[0].star:
        return None
    arg = call.args[0]
    if arg.keyword is not None and arg.keyword.value != "device":
        return None
    equal = cst.AssignEqual(whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace(""))
    return call.with_changes(
        args=[
            cst.Arg(
                keyword=cst.Name("device"),
                value=arg.value,
                equal=equal,
                comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")),
            ),
            cst.Arg(keyword=cst.Name("dtype"), value=cst.Name("dtype"), equal=equal),
        ]
    )


def _fix(method: cst.FunctionDef, tensor: str, moves: list[cst.Assign]) -> Proposal | None:
    """Cast every move of the provided tensor with the method's own `dtype` parameter, when that is what `dtype`
    still is (the method never assigns it) and each move is a plain one-argument `.to(...)`."""
    if "dtype" not in {p.name.value for p in parameters(method)} or casts.assignments(method, "dtype"):
        return None
    replacements = []
    for move in moves:
        call = cst.ensure_type(move.value, cst.Call)
        cast = _cast_call(call)
        if cast is None:
            return None
        replacements.append(Replace(call, cast))
    return Proposal(f"cast `{tensor}` with `{tensor}.to(device=device, dtype=dtype)`", tuple(replacements))


class ProvidedTensorNotCast(Rule):
    """
    ## What it does
    Checks for pipeline methods that take a user-provided tensor (`latents`, `prompt_embeds`,
    `image_embeds`, ...) together with a `dtype`, and move the provided tensor with
    `tensor.to(device)` only, while the freshly created tensor of the other branch gets `dtype=dtype`.
    It stays silent when `__call__` casts the latents to a dtype later on.

    ## Why is this bad?
    A tensor that the user made in float32 reaches a half-precision denoiser uncast: the first layer
    fails with `Input type (float) and bias type (c10::Half) should be the same`, or the run silently
    goes on in mixed precision. The pipeline's own tensors are in the execution dtype, so only the
    documented `latents=` / `prompt_embeds=` path breaks.

    ## Example
    ```python
    def prepare_latents(self, batch_size, num_channels_latents, height, width, dtype, device, generator, latents=None):
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        else:
            latents = latents.to(device)
        return latents
    ```

    Use instead:
    ```python
    def prepare_latents(self, batch_size, num_channels_latents, height, width, dtype, device, generator, latents=None):
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        else:
            latents = latents.to(device=device, dtype=dtype)
        return latents
    ```

    ## Known problems
    Only a method of a pipeline class that has both the tensor and `dtype` as parameters, and uses
    `dtype` for something else, is looked at. A cast in `__call__` of anything whose name mentions
    `latent` (`latent_model_input.to(transformer_dtype)`) counts as casting the latents when it comes
    before the end of the first denoiser call; one after it (at the end of the loop body, after
    `scheduler.step`) leaves the first step uncast and does not count. A move into another name that
    flows back into the tensor (`noise = latents.to(device)`, then `latents = noise * sigma`) is a move
    too. A cast in `__call__` does not count either when, before it, the latents' dtype is handed on to
    another tensor (`.to(dtype=latents.dtype)`; not a timestep, whose embedding computes in float32
    anyway), and a cast of a tensor that only reads the latents'
    shape (`t.expand(latents.shape[0]).to(dtype)`) is not a cast of the latents. The caller's tensor is
    still the caller's after an assignment in an `if` without `else` that does not hold the move
    (`if self.free_noise_enabled: latents = ...`), and the fresh branch may test more than
    `latents is None` (`if latents is None and add_noise:`). A cast inside the denoiser's `forward` is
    not seen (those findings would be false positives).

    ## References
    - huggingface/diffusers#13656, pattern 5
    - huggingface/diffusers#13608 (PRX `prepare_latents` moves user latents with `latents.to(device)` only)
    """

    code = "DRB501"
    pattern = 5
    severity = "error"
    message = (
        "user-provided `{name}` is moved with `{name}.to(device)` but never cast to the execution dtype; "
        "use `{name}.to(device=device, dtype=dtype)` instead."
    )
    REQUIRES_ANY = tuple(f"{name}.to(device" for name in sorted(TENSOR_NAMES))
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def prepare_latents(self, shape, dtype, device, generator, latents=None):
                    if latents is None:
                        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                    else:
                        latents = latents.to(device=device, dtype=dtype)
                    return latents
            """
        ),
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def prepare_latents(self, shape, dtype, device, generator, latents=None):
                    if latents is None:
                        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                    else:
                        latents = latents.to(device)
                    return latents

                def __call__(self, prompt, latents=None):
                    latents = self.prepare_latents((1, 4), torch.float32, "cuda", None, latents)
                    transformer_dtype = self.transformer.dtype
                    for t in self.scheduler.timesteps:
                        latent_model_input = latents.to(transformer_dtype)
                        noise_pred = self.transformer(latent_model_input, t)
                    return latents
            """
        ),
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, device, dtype, prompt_embeds=None):
                    if prompt_embeds is None:
                        prompt_embeds = self.text_encoder(prompt)[0]
                    prompt_embeds = prompt_embeds.to(device)
                    return prompt_embeds.to(dtype=dtype)
            """
        ),
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def prepare_latents(self, shape, device, generator, latents=None):
                    if latents is None:
                        latents = randn_tensor(shape, generator=generator, device=device)
                    else:
                        latents = latents.to(device)
                    return latents
            """
        ),
        Valid(
            """
            class KandinskyImg2ImgPipeline(DiffusionPipeline):
                def prepare_latents(self, latents, latent_timestep, shape, dtype, device, generator):
                    if latents is None:
                        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                    else:
                        latents = latents.to(device)
                    return latents

                def __call__(self, prompt, image):
                    image = image.to(dtype=self.unet.dtype)
                    latents = self.movq.encode(image)["latents"]
                    latents = self.prepare_latents(latents, 0, (1, 4), self.unet.dtype, "cuda", None)
                    return self.unet(latents)
            """
        ),
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def prepare_latents(self, shape, dtype, device, generator, latents=None):
                    if latents is None:
                        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                    else:
                        latents = latents.to(device)
                    return latents

                def __call__(self, prompt, latents=None):
                    latents = self.prepare_latents((1, 4), self.unet.dtype, "cuda", None, latents)
                    for t in self.scheduler.timesteps:
                        noise_pred = self.unet(latents.to(self.unet.dtype), t)
                        latents = self.scheduler.step(noise_pred, t, latents)
                    return latents
            """
        ),
        # a branch that replaces the tensor on both paths: the caller's value never reaches the move
        Valid(
            """
            class SwitchPipeline(DiffusionPipeline):
                def prepare_latents(self, shape, dtype, device, generator, latents=None):
                    if self.use_cache:
                        latents = self.cached_latents(shape)
                    else:
                        latents = self.fresh_latents(shape)
                    noise = latents.to(device)
                    latents = noise * self.scheduler.init_noise_sigma
                    return latents
            """
        ),
        # the helper is called only when the caller gave no latents: its move never sees the caller's tensor
        Valid(
            """
            class OnlyFreshPipeline(DiffusionPipeline):
                def prepare_latents(self, shape, dtype, device, generator, latents=None):
                    if latents is None:
                        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                    else:
                        latents = latents.to(device)
                    return latents

                def __call__(self, prompt, latents=None):
                    if latents is None:
                        latents = self.prepare_latents((1, 4), self.unet.dtype, "cuda", None, latents)
                    return self.unet(latents, 0)
            """
        ),
        # the timestep takes the caller's dtype, and the latents are cast before the denoiser: timestep
        # embeddings compute in float32 anyway
        Valid(
            """
            class FlowPipeline(DiffusionPipeline):
                def prepare_latents(self, shape, dtype, device, generator, latents=None):
                    if latents is None:
                        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                    else:
                        latents = latents.to(device)
                    return latents

                def __call__(self, prompt, latents=None):
                    latents = self.prepare_latents((1, 64, 16), self.transformer.dtype, "cuda", None, latents)
                    for t in self.scheduler.timesteps:
                        timestep = t.expand(latents.shape[0]).to(latents.dtype)
                        hidden = latents.to(self.transformer.dtype)
                        velocity = self.transformer(hidden, timestep / 1000)
                        latents = self.scheduler.step(velocity, t, latents)
                    return latents
            """
        ),
        # the caller's dtype kept in a variable (to cast back after each step) is not handed on to other tensors
        Valid(
            """
            class LoopPipeline(DiffusionPipeline):
                def prepare_latents(self, shape, dtype, device, generator, latents=None):
                    if latents is None:
                        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                    else:
                        latents = latents.to(device)
                    return latents

                def __call__(self, prompt, latents=None):
                    latents = self.prepare_latents((1, 4), self.unet.dtype, "cuda", None, latents)
                    latents_dtype = latents.dtype
                    for t in self.scheduler.timesteps:
                        sample = latents.to(self.unet.dtype)
                        noise_pred = self.unet(sample, t)
                        latents = self.scheduler.step(noise_pred, t, latents).to(latents_dtype)
                    return latents
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class VideoPipeline(DiffusionPipeline):
                def prepare_latents(self, shape, dtype, device, generator, latents=None):
                    if latents is None:
                        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                    else:
                        latents = latents.to(device)
                    return latents * self.scheduler.init_noise_sigma

                def __call__(self, prompt, latents=None):
                    embeds = self.encode_prompt(prompt)
                    latents = self.prepare_latents((1, 13, 16), embeds.dtype, "cuda", None, latents)
                    for t in self.scheduler.timesteps:
                        model_input = torch.cat([latents] * 2)
                        noise_pred = self.transformer(model_input, embeds, t)
                        latents = self.scheduler.step(noise_pred, t, latents)
                        latents = latents.to(embeds.dtype)
                    return latents
            """,
            fixed="""
            class VideoPipeline(DiffusionPipeline):
                def prepare_latents(self, shape, dtype, device, generator, latents=None):
                    if latents is None:
                        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                    else:
                        latents = latents.to(device=device, dtype=dtype)
                    return latents * self.scheduler.init_noise_sigma

                def __call__(self, prompt, latents=None):
                    embeds = self.encode_prompt(prompt)
                    latents = self.prepare_latents((1, 13, 16), embeds.dtype, "cuda", None, latents)
                    for t in self.scheduler.timesteps:
                        model_input = torch.cat([latents] * 2)
                        noise_pred = self.transformer(model_input, embeds, t)
                        latents = self.scheduler.step(noise_pred, t, latents)
                        latents = latents.to(embeds.dtype)
                    return latents
            """,
        ),
        Invalid(
            """
            class InpaintPipeline(DiffusionPipeline):
                def prepare_latents(self, shape, dtype, device, generator, image=None, latents=None):
                    if latents is None:
                        noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                        latents = noise * self.scheduler.init_noise_sigma
                    else:
                        noise = latents.to(device)
                        latents = noise * self.scheduler.init_noise_sigma
                    return latents, noise

                def __call__(self, prompt, image, latents=None):
                    latents, noise = self.prepare_latents((1, 4), self.unet.dtype, "cuda", None, image, latents)
                    return self.unet(latents)
            """,
            fixed="""
            class InpaintPipeline(DiffusionPipeline):
                def prepare_latents(self, shape, dtype, device, generator, image=None, latents=None):
                    if latents is None:
                        noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                        latents = noise * self.scheduler.init_noise_sigma
                    else:
                        noise = latents.to(device=device, dtype=dtype)
                        latents = noise * self.scheduler.init_noise_sigma
                    return latents, noise

                def __call__(self, prompt, image, latents=None):
                    latents, noise = self.prepare_latents((1, 4), self.unet.dtype, "cuda", None, image, latents)
                    return self.unet(latents)
            """,
        ),
        Invalid(
            """
            class PRXPipeline(DiffusionPipeline):
                def prepare_latents(self, batch_size, num_channels_latents, height, width, dtype, device, generator=None, latents=None):
                    if latents is None:
                        shape = (batch_size, num_channels_latents, height // 8, width // 8)
                        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                    else:
                        latents = latents.to(device)
                    return latents

                def __call__(self, prompt, latents=None):
                    latents = self.prepare_latents(1, 16, 512, 512, self.transformer.dtype, self._execution_device, None, latents)
                    for t in self.scheduler.timesteps:
                        latents_in = torch.cat([latents, latents], dim=0)
                        noise_pred = self.transformer(hidden_states=latents_in, timestep=t)
                    return latents
            """,
            fixed="""
            class PRXPipeline(DiffusionPipeline):
                def prepare_latents(self, batch_size, num_channels_latents, height, width, dtype, device, generator=None, latents=None):
                    if latents is None:
                        shape = (batch_size, num_channels_latents, height // 8, width // 8)
                        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                    else:
                        latents = latents.to(device=device, dtype=dtype)
                    return latents

                def __call__(self, prompt, latents=None):
                    latents = self.prepare_latents(1, 16, 512, 512, self.transformer.dtype, self._execution_device, None, latents)
                    for t in self.scheduler.timesteps:
                        latents_in = torch.cat([latents, latents], dim=0)
                        noise_pred = self.transformer(hidden_states=latents_in, timestep=t)
                    return latents
            """,
            message=(
                "user-provided `latents` is moved with `latents.to(device)` but never cast to the execution dtype; "
                "use `latents.to(device=device, dtype=dtype)` instead."
            ),
        ),
        Invalid(
            """
            class MyPipeline(DiffusionPipeline):
                def prepare_ip_adapter_image_embeds(self, image, image_embeds, device, dtype):
                    if image_embeds is None:
                        image_embeds = self.image_encoder(image.to(device=device, dtype=dtype)).image_embeds
                    else:
                        image_embeds = image_embeds.to(device=device)
                    return image_embeds

                def __call__(self, image, image_embeds=None):
                    image_embeds = self.prepare_ip_adapter_image_embeds(image, image_embeds, "cuda", torch.float16)
                    return self.unet(image, added_cond_kwargs={"image_embeds": image_embeds})
            """,
            fixed="""
            class MyPipeline(DiffusionPipeline):
                def prepare_ip_adapter_image_embeds(self, image, image_embeds, device, dtype):
                    if image_embeds is None:
                        image_embeds = self.image_encoder(image.to(device=device, dtype=dtype)).image_embeds
                    else:
                        image_embeds = image_embeds.to(device=device, dtype=dtype)
                    return image_embeds

                def __call__(self, image, image_embeds=None):
                    image_embeds = self.prepare_ip_adapter_image_embeds(image, image_embeds, "cuda", torch.float16)
                    return self.unet(image, added_cond_kwargs={"image_embeds": image_embeds})
            """,
            message=(
                "user-provided `image_embeds` is moved with `image_embeds.to(device)` but never cast to the "
                "execution dtype; use `image_embeds.to(device=device, dtype=dtype)` instead."
            ),
        ),
        Invalid(
            # `dtype` is not the parameter any more where the tensor moves: which dtype is meant is not certain
            """
            class MyPipeline(DiffusionPipeline):
                def prepare_latents(self, shape, dtype, device, generator, latents=None):
                    dtype = dtype if dtype is not None else torch.float32
                    if latents is None:
                        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                    else:
                        latents = latents.to(device)
                    return latents

                def __call__(self, prompt, latents=None):
                    latents = self.prepare_latents((1, 4), None, "cuda", None, latents)
                    return self.unet(latents)
            """,
        ),
        # the cast before the denoiser is of the timestep, built from the latents' shape only
        Invalid(
            """
            class ShapePipeline(DiffusionPipeline):
                def prepare_latents(self, shape, dtype, device, generator, latents=None):
                    if latents is None:
                        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                    else:
                        latents = latents.to(device)
                    return latents

                def __call__(self, prompt, latents=None):
                    latents = self.prepare_latents((2, 8), self.dit.dtype, "cuda", None, latents)
                    for t in self.scheduler.timesteps:
                        step = torch.full((latents.shape[0],), t).to(dtype=self.dit.dtype)
                        out = self.transformer(latents, step)
                        latents = self.scheduler.step(out, t, latents)
                    return latents
            """,
            fixed="""
            class ShapePipeline(DiffusionPipeline):
                def prepare_latents(self, shape, dtype, device, generator, latents=None):
                    if latents is None:
                        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                    else:
                        latents = latents.to(device=device, dtype=dtype)
                    return latents

                def __call__(self, prompt, latents=None):
                    latents = self.prepare_latents((2, 8), self.dit.dtype, "cuda", None, latents)
                    for t in self.scheduler.timesteps:
                        step = torch.full((latents.shape[0],), t).to(dtype=self.dit.dtype)
                        out = self.transformer(latents, step)
                        latents = self.scheduler.step(out, t, latents)
                    return latents
            """,
        ),
        # the fresh branch's test asks for more than `latents is None`; the move is in the `elif`
        Invalid(
            """
            class BlendPipeline(DiffusionPipeline):
                def prepare_latents(self, shape, dtype, device, generator, image, latents=None, add_noise=True):
                    if latents is None and add_noise:
                        noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                        latents = self.scheduler.add_noise(image, noise, 0)
                    elif add_noise:
                        noise = latents.to(device)
                        latents = noise * self.scheduler.init_noise_sigma
                    else:
                        latents = image.to(device)
                    return latents

                def __call__(self, prompt, image, latents=None):
                    latents = self.prepare_latents((1, 4), self.unet.dtype, "cuda", None, image, latents)
                    return self.unet(latents, 0)
            """,
            fixed="""
            class BlendPipeline(DiffusionPipeline):
                def prepare_latents(self, shape, dtype, device, generator, image, latents=None, add_noise=True):
                    if latents is None and add_noise:
                        noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                        latents = self.scheduler.add_noise(image, noise, 0)
                    elif add_noise:
                        noise = latents.to(device=device, dtype=dtype)
                        latents = noise * self.scheduler.init_noise_sigma
                    else:
                        latents = image.to(device)
                    return latents

                def __call__(self, prompt, image, latents=None):
                    latents = self.prepare_latents((1, 4), self.unet.dtype, "cuda", None, image, latents)
                    return self.unet(latents, 0)
            """,
        ),
        # an optional mode replaces the tensor first; without it, the caller's latents reach the move
        Invalid(
            """
            class LoopingVideoPipeline(DiffusionPipeline):
                def prepare_latents(self, shape, dtype, device, generator, latents=None):
                    if self.looping:
                        latents = self._looping_latents(shape, dtype, device, generator, latents)
                    if latents is None:
                        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                    else:
                        latents = latents.to(device)
                    return latents

                def __call__(self, prompt, latents=None):
                    latents = self.prepare_latents((1, 16, 4), self.transformer.dtype, "cuda", None, latents)
                    return self.transformer(latents, 0)
            """,
            fixed="""
            class LoopingVideoPipeline(DiffusionPipeline):
                def prepare_latents(self, shape, dtype, device, generator, latents=None):
                    if self.looping:
                        latents = self._looping_latents(shape, dtype, device, generator, latents)
                    if latents is None:
                        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                    else:
                        latents = latents.to(device=device, dtype=dtype)
                    return latents

                def __call__(self, prompt, latents=None):
                    latents = self.prepare_latents((1, 16, 4), self.transformer.dtype, "cuda", None, latents)
                    return self.transformer(latents, 0)
            """,
        ),
        # `__call__` casts the latents in the loop, but hands their (the caller's) dtype to a conditioning
        # tensor before it
        Invalid(
            """
            class GuidedPipeline(DiffusionPipeline):
                def prepare_latents(self, shape, dtype, device, generator, latents=None):
                    if latents is None:
                        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                    else:
                        latents = latents.to(device)
                    return latents

                def __call__(self, prompt, guidance_scale=3.0, latents=None):
                    embeds = self.encode_prompt(prompt)
                    latents = self.prepare_latents((1, 4), embeds.dtype, "cuda", None, latents)
                    cond = self.guidance_embedding(guidance_scale).to(dtype=latents.dtype)
                    for t in self.scheduler.timesteps:
                        latents = latents.to(embeds.dtype)
                        pred = self.unet(latents, t, embeds, timestep_cond=cond)
                        latents = self.scheduler.step(pred, t, latents)
                    return latents
            """,
            fixed="""
            class GuidedPipeline(DiffusionPipeline):
                def prepare_latents(self, shape, dtype, device, generator, latents=None):
                    if latents is None:
                        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                    else:
                        latents = latents.to(device=device, dtype=dtype)
                    return latents

                def __call__(self, prompt, guidance_scale=3.0, latents=None):
                    embeds = self.encode_prompt(prompt)
                    latents = self.prepare_latents((1, 4), embeds.dtype, "cuda", None, latents)
                    cond = self.guidance_embedding(guidance_scale).to(dtype=latents.dtype)
                    for t in self.scheduler.timesteps:
                        latents = latents.to(embeds.dtype)
                        pred = self.unet(latents, t, embeds, timestep_cond=cond)
                        latents = self.scheduler.step(pred, t, latents)
                    return latents
            """,
        ),
    ]

    def check(self) -> None:
        for cls in pipeline_classes(self.context):
            methods = self.context.methods(cls)
            call = methods.get("__call__")
            for name, method in methods.items():
                params = {p.name.value for p in parameters(method)}
                if "dtype" not in params:
                    continue
                for tensor in sorted(params & TENSOR_NAMES):
                    self._check_method(cls.qualname, name, method, tensor, call, methods)

    def _check_method(
        self,
        owner: str,
        name: str,
        method: cst.FunctionDef,
        tensor: str,
        call: cst.FunctionDef | None,
        methods: dict[str, cst.FunctionDef],
    ) -> None:
        assignments = casts.assignments(method, tensor)
        moves = [a for a in assignments if _device_only_to(a.value, tensor)]
        aliases = _alias_moves(method, tensor, assignments)  # `noise = latents.to(device)`; `latents = noise * …`
        moves = sorted(moves + [move for move, _ in aliases], key=casts.order)
        if not moves:
            return
        first_move = moves[0]
        # the value moved must still be the caller's: no other assignment to the tensor before it,
        # except the fresh one in the `is None` branch (which the move's branch does not see)
        before = [a for a in assignments if casts.order(a) < casts.order(first_move)]
        if any(casts.none_branch(method, a, tensor) is None and not _bypassed(method, a, first_move) for a in before):
            return
        if casts.casts_name(method, {tensor, *(alias for _, alias in aliases)}):
            return  # cast elsewhere in the method (`return latents.to(dtype=dtype)`)
        if not any(n.value == "dtype" for n in casts.all_names(method.body)):
            return  # no execution dtype in play here
        if call is not None and name != "__call__":
            denoiser = denoiser_calls(call)
            cast = casts.first_cast(call, {tensor}, until=denoiser[0] if denoiser else None)
            if cast is not None and casts.dtype_read_before(call, tensor, cast) is None:
                return  # `__call__` casts it on the way to the denoiser, before anything takes its dtype
        if name != "__call__" and (call is None or not _passes_user_tensor(call, name, tensor)):
            return  # the tensor this helper receives is not (or no longer) the one the user gave
        self.report(
            first_move,
            self.message.format(name=tensor),
            symbol=tensor,
            scope=f"{owner}.{name}",
            fix=_fix(method, tensor, moves),
        )


def _bypassed(method: cst.FunctionDef, assign: cst.Assign, move: cst.Assign) -> bool:
    """Whether the caller's value can reach `move` around `assign`: `assign` sits in the body of an `if` without
    an `else` that does not hold `move` (`if self.free_noise_enabled: latents = ...`), so when its test is false
    the tensor is still the caller's."""
    for if_node in walk.nodes(method.body, cst.If):
        if if_node.orelse is not None:
            continue
        inside = walk.nodes(if_node.body, cst.Assign)
        if any(node is assign for node in inside) and not any(node is move for node in inside):
            return True
    return False
