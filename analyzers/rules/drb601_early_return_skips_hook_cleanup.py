"""DRB601: a `return` in a pipeline `__call__` that is reached without passing `self.maybe_free_model_hooks()`."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.fixes import Proposal, insert_before, statement_line
from analyzers.flow import FlowWalker, function_returns, has_yield, returned_symbol
from analyzers.matchers import calls, denoiser_calls, pipeline_methods
from analyzers.offload import assigned_hooks, frees_hooks, legacy_hook, may_run_model, runs_forward


class _State(NamedTuple):
    freed: bool  # the hooks have certainly been freed on the path
    ran: bool  # a model may have run on the path
    stale: bool  # a model may have run after the hooks were last freed


class _HookFlow(FlowWalker[_State]):
    def __init__(
        self,
        on_return: Callable[[cst.Return, _State], None],
        free_calls: set[int],
        model_calls: set[int],
        forward_calls: set[int],
        hooks: set[str],
    ) -> None:
        super().__init__(on_return)
        self.free_calls = free_calls
        self.model_calls = model_calls
        self.forward_calls = forward_calls
        self.hooks = hooks

    def effect(self, statement: cst.BaseSmallStatement, state: _State) -> _State:
        freed, ran, stale = state
        # the ids of the function's hook-freeing and model calls are known: one plain walk, in source order
        for node in walk.walk(statement):
            key = id(node)
            if key in self.free_calls:
                freed, stale = True, False
            elif key in self.model_calls:
                ran = True
                stale = stale or (freed and key in self.forward_calls)
        return _State(freed, ran, stale)

    def split(self, test: cst.BaseExpression, state: _State) -> tuple[_State, _State]:
        state = self.effect_expr(test, state)
        if self.hooks and any(a.attr.value in self.hooks for a in walk.nodes(test, cst.Attribute)):
            # `if hasattr(self, "final_offload_hook") and self.final_offload_hook is not None:`: no hook, nothing leaks
            return state, _State(True, state.ran, False)
        return state, state

    def join(self, a: _State, b: _State) -> _State:
        return _State(a.freed and b.freed, a.ran or b.ran, a.stale or b.stale)


class EarlyReturnSkipsHookCleanup(Rule):
    """
    ## What it does
    Checks for a `return` in a pipeline `__call__` that can be reached, after a model has run, without
    passing `self.maybe_free_model_hooks()`, in a `__call__` that calls `self.maybe_free_model_hooks()`
    on its main path; and for a `return` reached after a model ran past that cleanup (the hooks are freed
    before `self.vae.decode(...)` rather than after it). The cleanup of releases before 0.21,
    `self.final_offload_hook.offload()` under `if hasattr(self, "final_offload_hook") and ...`, counts as
    the cleanup in a file that installs that hook itself.

    ## Why is this bad?
    With `enable_model_cpu_offload()` the last model used stays on the accelerator until
    `maybe_free_model_hooks()` offloads it and re-arms the hooks. An early exit such as
    `if output_type == "latent": return XPipelineOutput(images=latents)` skips that cleanup, so offload
    hooks leak and the next call starts with the wrong device state. Meta issue #13656 lists this under
    "Output and Cleanup Contracts Diverge": finalization branches are duplicated and return early before
    shared cleanup.

    ## Example
    ```python
    class MyPipeline(DiffusionPipeline):
        def __call__(self, prompt, output_type="pil", return_dict=True):
            latents = self.denoise(self.unet, prompt)
            if output_type == "latent":
                return MyPipelineOutput(images=latents)
            image = self.vae.decode(latents).sample
            self.maybe_free_model_hooks()
            return MyPipelineOutput(images=image)
    ```

    Use instead:
    ```python
    class MyPipeline(DiffusionPipeline):
        def __call__(self, prompt, output_type="pil", return_dict=True):
            latents = self.denoise(self.unet, prompt)
            if output_type == "latent":
                image = latents
            else:
                image = self.vae.decode(latents).sample
            self.maybe_free_model_hooks()
            return MyPipelineOutput(images=image)
    ```

    ## Known problems
    Returns before the first model call (a denoiser, an encoder, the VAE, `encode_prompt`, in source
    order) are not reported: no model has been moved onto the accelerator yet, so nothing leaks. After
    the cleanup only calls that run a model count (`self.unet(...)`, `self.vae.decode(...)`,
    `self.encode_prompt(...)`), not `self.unet.set_attn_processor(...)` or `self.vae.to(...)`. A
    `__call__` that never calls `self.maybe_free_model_hooks()` itself (it delegates cleanup, or has
    none) is left alone; a helper that frees the hooks on the caller's behalf is not followed. A `return`
    inside `try` whose `finally` frees the hooks counts as freed. Loops are approximated: the state after
    a loop is the state before it.

    ## References
    - huggingface/diffusers#13656, pattern 6
    - huggingface/diffusers#13610 (SDXL inpaint / InstructPix2Pix `output_type="latent"` early return)
    - huggingface/diffusers#14680 (proposed fix: fall through to the shared cleanup)
    - huggingface/diffusers#5680 (image variation freed the hooks before decoding with the VAE)
    """

    code = "DRB601"
    pattern = 6
    severity = "warning"
    message = (
        "`{returned}` leaves `__call__` without `self.maybe_free_model_hooks()`, so model offload hooks leak; "
        "free the hooks before returning, or fall through to the shared cleanup."
    )
    message_after = (
        "`{returned}` is reached after a model ran past `self.maybe_free_model_hooks()`, so that model stays on "
        "the accelerator; free the hooks after the last model call."
    )
    REQUIRES_ANY = ("maybe_free_model_hooks", "final_offload_hook")
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="pil", return_dict=True):
                    latents = self.unet(prompt)
                    if output_type == "latent":
                        image = latents
                    else:
                        image = self.vae.decode(latents)
                    self.maybe_free_model_hooks()
                    if not return_dict:
                        return (image,)
                    return MyPipelineOutput(images=image)
            """
        ),
        Valid(
            # freed on both branches before their returns (the shap_e shape)
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="pil"):
                    latents = self.prior(prompt)
                    if output_type == "latent":
                        self.maybe_free_model_hooks()
                        return MyPipelineOutput(images=latents)
                    image = self.renderer.decode(latents)
                    self.maybe_free_model_hooks()
                    return MyPipelineOutput(images=image)
            """
        ),
        Valid(
            # an early exit before any model ran leaks nothing
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, num_images=1):
                    if num_images == 0:
                        return MyPipelineOutput(images=[])
                    image = self.transformer(prompt)
                    self.maybe_free_model_hooks()
                    return MyPipelineOutput(images=image)
            """
        ),
        Valid(
            # a __call__ that has no cleanup at all is another defect, not this one
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="pil"):
                    latents = self.unet(prompt)
                    if output_type == "latent":
                        return MyPipelineOutput(images=latents)
                    return MyPipelineOutput(images=self.vae.decode(latents))
            """
        ),
        Valid(
            # returns of nested functions and returns guarded by a `finally` that frees the hooks
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="pil"):
                    def postprocess(x):
                        return x * 2
                    try:
                        latents = self.unet(prompt)
                        if output_type == "latent":
                            return MyPipelineOutput(images=latents)
                        image = postprocess(self.vae.decode(latents))
                    finally:
                        self.maybe_free_model_hooks()
                    return MyPipelineOutput(images=image)
            """
        ),
        Valid(
            # restoring processors after the cleanup configures a model without running it
            """
            class MyPAGPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="pil"):
                    saved = self.transformer.attn_processors
                    frames = self.vae.decode(self.transformer(prompt))
                    self.maybe_free_model_hooks()
                    if self.use_pag:
                        self.transformer.set_attn_processor(saved)
                    return MyPipelineOutput(frames=frames)
            """
        ),
        Valid(
            # the pre-0.21 cleanup, guarded by the hook the pipeline installs itself
            """
            class OldPipeline(DiffusionPipeline):
                def enable_model_cpu_offload(self, gpu_id=0):
                    _, self.final_offload_hook = cpu_offload_with_hook(self.vae, f"cuda:{gpu_id}")

                def __call__(self, prompt, output_type="pil"):
                    sample = self.vae.decode(self.unet(prompt))
                    if hasattr(self, "final_offload_hook") and self.final_offload_hook is not None:
                        self.final_offload_hook.offload()
                    return MyPipelineOutput(images=sample)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class MyXLPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="pil", return_dict=True):
                    latents = self.unet(prompt)
                    if not output_type == "latent":
                        image = self.vae.decode(latents, return_dict=False)[0]
                    else:
                        return StableDiffusionXLPipelineOutput(images=latents)
                    image = self.image_processor.postprocess(image, output_type=output_type)
                    self.maybe_free_model_hooks()
                    if not return_dict:
                        return (image,)
                    return StableDiffusionXLPipelineOutput(images=image)
            """,
            fixed="""
            class MyXLPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="pil", return_dict=True):
                    latents = self.unet(prompt)
                    if not output_type == "latent":
                        image = self.vae.decode(latents, return_dict=False)[0]
                    else:
                        self.maybe_free_model_hooks()
                        return StableDiffusionXLPipelineOutput(images=latents)
                    image = self.image_processor.postprocess(image, output_type=output_type)
                    self.maybe_free_model_hooks()
                    if not return_dict:
                        return (image,)
                    return StableDiffusionXLPipelineOutput(images=image)
            """,
            message=(
                "`return StableDiffusionXLPipelineOutput` leaves `__call__` without "
                "`self.maybe_free_model_hooks()`, so model offload hooks leak; free the hooks before returning, "
                "or fall through to the shared cleanup."
            ),
        ),
        Invalid(
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="pil", return_dict=True):
                    prompt_embeds = self.encode_prompt(prompt)
                    for t in self.scheduler.timesteps:
                        latents = self.transformer(prompt_embeds, t)
                        if self.interrupt:
                            break
                    if output_type == "latent":
                        if not return_dict:
                            # the tuple form
                            return (latents,)
                        image = latents
                    else:
                        image = self.vae.decode(latents)
                    self.maybe_free_model_hooks()
                    return MyPipelineOutput(images=image)
            """,
            fixed="""
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="pil", return_dict=True):
                    prompt_embeds = self.encode_prompt(prompt)
                    for t in self.scheduler.timesteps:
                        latents = self.transformer(prompt_embeds, t)
                        if self.interrupt:
                            break
                    if output_type == "latent":
                        if not return_dict:
                            # the tuple form
                            self.maybe_free_model_hooks()
                            return (latents,)
                        image = latents
                    else:
                        image = self.vae.decode(latents)
                    self.maybe_free_model_hooks()
                    return MyPipelineOutput(images=image)
            """,
            message=(
                "`return (latents,)` leaves `__call__` without `self.maybe_free_model_hooks()`, so model offload "
                "hooks leak; free the hooks before returning, or fall through to the shared cleanup."
            ),
        ),
        Invalid(
            # the cleanup runs before the VAE decodes, so the VAE stays on the accelerator
            """
            class MyVariationPipeline(DiffusionPipeline):
                def __call__(self, image, output_type="pil"):
                    latents = self.unet(self.image_encoder(image))
                    self.maybe_free_model_hooks()
                    decoded = self.vae.decode(latents)
                    return MyPipelineOutput(images=decoded)
            """,
            fixed="""
            class MyVariationPipeline(DiffusionPipeline):
                def __call__(self, image, output_type="pil"):
                    latents = self.unet(self.image_encoder(image))
                    self.maybe_free_model_hooks()
                    decoded = self.vae.decode(latents)
                    self.maybe_free_model_hooks()
                    return MyPipelineOutput(images=decoded)
            """,
            message=(
                "`return MyPipelineOutput` is reached after a model ran past `self.maybe_free_model_hooks()`, so "
                "that model stays on the accelerator; free the hooks after the last model call."
            ),
        ),
        Invalid(
            # the pre-0.21 idiom: the latent branch returns before the hook installed by the pipeline is offloaded
            """
            class OldXLPipeline(DiffusionPipeline):
                def enable_model_cpu_offload(self, gpu_id=0):
                    _, self.final_offload_hook = cpu_offload_with_hook(self.unet, f"cuda:{gpu_id}")

                def __call__(self, prompt, output_type="pil"):
                    latents = self.unet(prompt)
                    if output_type == "latent":
                        return OldOutput(images=latents)
                    sample = self.vae.decode(latents)
                    if hasattr(self, "final_offload_hook") and self.final_offload_hook is not None:
                        self.final_offload_hook.offload()
                    return OldOutput(images=sample)
            """,
            message=(
                "`return OldOutput` leaves `__call__` without `self.maybe_free_model_hooks()`, so model offload "
                "hooks leak; free the hooks before returning, or fall through to the shared cleanup."
            ),
        ),
        Invalid(
            # no fix: a return on the line of its `if`, and a return that runs a model itself (a free before it
            # would be undone by the decode)
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="pil"):
                    latents = self.unet(prompt)
                    if output_type == "latent": return MyPipelineOutput(images=latents)
                    if output_type == "decoded":
                        return MyPipelineOutput(images=self.vae.decode(latents))
                    image = self.vae.decode(latents)
                    self.maybe_free_model_hooks()
                    return MyPipelineOutput(images=image)
            """,
        ),
    ]

    def check(self) -> None:
        hooks: set[str] | None = None
        for cls, method in pipeline_methods(self.context, "__call__"):
            if hooks is None:
                hooks = assigned_hooks(self.context.module) if "_hook" in self.context.source else set()
            self._check_call(f"{cls.qualname}.__call__", method, hooks)

    def _check_call(self, scope: str, function: cst.FunctionDef, hooks: set[str]) -> None:
        if not isinstance(function.body, cst.IndentedBlock) or has_yield(function):
            return
        free_calls = {id(call) for call in calls(function.body) if frees_hooks(call, hooks)}
        if not free_calls:
            return
        returns = function_returns(function)
        if not returns:
            return
        model_calls = {id(call) for call in calls(function.body) if may_run_model(call)}
        model_calls |= {id(call) for call in denoiser_calls(function)}
        if not model_calls:
            return
        forward_calls = {id(call) for call in calls(function.body) if runs_forward(call)}
        forward_calls |= {id(call) for call in denoiser_calls(function)}
        legacy = {name for call in calls(function.body) if (name := legacy_hook(call)) in hooks}
        leaking: list[tuple[cst.Return, str]] = []

        def on_return(node: cst.Return, state: _State) -> None:
            if not state.freed and state.ran:
                leaking.append((node, self.message))
            elif state.stale:
                leaking.append((node, self.message_after))

        _HookFlow(on_return, free_calls, model_calls, forward_calls, legacy).block(
            function.body.body, _State(False, False, False)
        )
        # the fix frees the hooks right before the return, as the `__call__` already does on its main path; a second
        # free on a path that freed before a later model ran only offloads that model too
        frees = any(dotted_name(call.func) == "self.maybe_free_model_hooks" for call in calls(function.body))
        for node, message in leaking:
            returned = returned_symbol(node)
            line = statement_line(function.body, node) if frees else None
            runs_model = any(id(call) in model_calls for call in calls(node))
            fix = None
            if line is not None and not runs_model:
                fix = Proposal(
                    f"call `self.maybe_free_model_hooks()` before `{returned}`",
                    (insert_before(line, "self.maybe_free_model_hooks()\n", self.context.module),),
                )
            self.report(node, message.format(returned=returned), symbol=returned, scope=scope, fix=fix)
