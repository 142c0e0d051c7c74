"""DRB601: a `return` in a pipeline `__call__` that is reached without passing `self.maybe_free_model_hooks()`."""

from __future__ import annotations

from collections.abc import Callable

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.flow import FlowWalker, function_returns, has_yield, returned_symbol
from analyzers.matchers import DENOISER_ATTRS, calls, denoiser_calls, pipeline_methods, self_attribute


def _is_free_hooks(call: cst.Call) -> bool:
    return self_attribute(call.func, "maybe_free_model_hooks")


#: `self.<attr>(...)`/`self.<attr>.<method>(...)` calls that run (and so, under offload, load) a model
_MODEL_HELPERS = ("encode_prompt", "_encode_prompt", "encode_image", "prepare_ip_adapter_image_embeds")


def _is_model_call(call: cst.Call) -> bool:
    func = call.func
    if isinstance(func, cst.Attribute) and self_attribute(func):
        attr = func.attr.value
        return attr in DENOISER_ATTRS or attr in _MODEL_HELPERS or "encoder" in attr or attr in ("vae", "controlnet")
    if isinstance(func, cst.Attribute) and isinstance(func.value, cst.Attribute) and self_attribute(func.value):
        attr = func.value.attr.value
        return attr in DENOISER_ATTRS or "encoder" in attr or attr in ("vae", "controlnet", "vqvae", "movq")
    return False


class _HookFlow(FlowWalker["tuple[bool, bool]"]):
    """State: (`self.maybe_free_model_hooks()` has certainly run, a model may have run) on the path."""

    def __init__(
        self,
        on_return: Callable[[cst.Return, tuple[bool, bool]], None],
        free_calls: set[int],
        model_calls: set[int],
    ) -> None:
        super().__init__(on_return)
        self.free_calls = free_calls
        self.model_calls = model_calls

    def effect(self, statement: cst.BaseSmallStatement, state: tuple[bool, bool]) -> tuple[bool, bool]:
        freed, ran = state
        if freed and ran:
            return state
        # the ids of the function's hook-freeing and model calls are known: one plain walk, stopped early
        for node in walk.walk(statement):
            key = id(node)
            if key in self.free_calls:
                freed = True
            if key in self.model_calls:
                ran = True
            if freed and ran:
                break
        return freed, ran

    def split(self, test: cst.BaseExpression, state: tuple[bool, bool]) -> tuple[tuple[bool, bool], tuple[bool, bool]]:
        state = self.effect_expr(test, state)
        return state, state

    def join(self, a: tuple[bool, bool], b: tuple[bool, bool]) -> tuple[bool, bool]:
        return a[0] and b[0], a[1] or b[1]


class EarlyReturnSkipsHookCleanup(Rule):
    """
    ## What it does
    Checks for a `return` in a pipeline `__call__` that can be reached, after a model has run, without
    passing `self.maybe_free_model_hooks()`, in a `__call__` that calls `self.maybe_free_model_hooks()`
    on its main path.

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
    order) are not reported: no model has been moved onto the accelerator yet, so nothing leaks. A
    `__call__` that never calls `self.maybe_free_model_hooks()` itself (it delegates cleanup, or has
    none) is left alone; a helper that frees the hooks on the caller's behalf is not followed. A `return`
    inside `try` whose `finally` frees the hooks counts as freed. Loops are approximated: the state after
    a loop is the state before it.

    ## References
    - huggingface/diffusers#13656, pattern 6
    - huggingface/diffusers#13610 (SDXL inpaint / InstructPix2Pix `output_type="latent"` early return)
    - huggingface/diffusers#14680 (proposed fix: fall through to the shared cleanup)
    """

    code = "DRB601"
    pattern = 6
    message = (
        "`{returned}` leaves `__call__` without `self.maybe_free_model_hooks()`, so model offload hooks leak; "
        "free the hooks before returning, or fall through to the shared cleanup."
    )
    REQUIRES_ANY = ("maybe_free_model_hooks",)
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
    ]

    def check(self) -> None:
        for cls, method in pipeline_methods(self.context, "__call__"):
            self._check_call(f"{cls.qualname}.__call__", method)

    def _check_call(self, scope: str, function: cst.FunctionDef) -> None:
        if not isinstance(function.body, cst.IndentedBlock) or has_yield(function):
            return
        free_calls = {id(call) for call in calls(function.body) if _is_free_hooks(call)}
        if not free_calls:
            return
        returns = function_returns(function)
        if not returns:
            return
        model_calls = {id(call) for call in calls(function.body) if _is_model_call(call)}
        model_calls |= {id(call) for call in denoiser_calls(function)}
        if not model_calls:
            return
        leaking: list[cst.Return] = []

        def on_return(node: cst.Return, state: tuple[bool, bool]) -> None:
            freed, ran = state
            if not freed and ran:
                leaking.append(node)

        _HookFlow(on_return, free_calls, model_calls).block(function.body.body, (False, False))
        for node in leaking:
            returned = returned_symbol(node)
            self.report(node, self.message.format(returned=returned), symbol=returned, scope=scope)
