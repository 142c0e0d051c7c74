"""DRB605: a pipeline that supports model CPU offload but whose `__call__` never frees the offload hooks."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Definition, FileContext, Invalid, Rule, Valid
from analyzers.flow import has_yield
from analyzers.matchers import calls, denoiser_calls, pipeline_methods, self_attribute
from analyzers.offload import (
    assigned_hooks,
    frees_hooks,
    legacy_hook,
    may_run_model,
    runs_subpipeline,
    supports_model_offload,
)


def _bare_free(function: cst.FunctionDef) -> cst.Attribute | None:
    """`self.maybe_free_model_hooks` written as a statement without the call parentheses."""
    for expr in walk.nodes(function.body, cst.Expr):
        if self_attribute(expr.value, "maybe_free_model_hooks"):
            return expr.value
    return None


def _has_free_method(ctx: FileContext) -> bool:
    """Whether the project's `DiffusionPipeline` defines `maybe_free_model_hooks` (true when it cannot be read)."""
    top = ctx.module_name.partition(".")[0]
    found = ctx.project.locate_class(f"{top}.pipelines.pipeline_utils", "DiffusionPipeline")
    if found is None:
        return True
    return any(f.name.value == "maybe_free_model_hooks" for f in walk.nodes(found[1], cst.FunctionDef))


class OffloadHooksNeverFreed(Rule):
    """
    ## What it does
    Checks for a pipeline that supports `enable_model_cpu_offload()` (it sets `model_cpu_offload_seq`, or,
    as before diffusers 0.21, defines `enable_model_cpu_offload` itself) whose `__call__` runs models but
    never frees the offload hooks: no `self.maybe_free_model_hooks()` call anywhere in the class, no
    `self.final_offload_hook.offload()` for a hook the file installs, or only the bare attribute
    `self.maybe_free_model_hooks` without the call.

    ## Why is this bad?
    Under model CPU offload each model is moved onto the accelerator when it runs and back when the next
    one runs; the last one stays there until `maybe_free_model_hooks()` offloads it and re-arms the
    hooks for the next call. Without that call the pipeline holds accelerator memory after it returns,
    and its sibling pipelines, which do call it, behave differently. Since 0.21 the old
    `if hasattr(self, "final_offload_hook") ...: self.final_offload_hook.offload()` frees nothing in a
    pipeline that relies on the shared `enable_model_cpu_offload`: nothing sets that hook any more. Meta
    issue #13656 lists `maybe_free_model_hooks()` among the finalization contracts that related families
    handle differently.

    ## Example
    ```python
    class MyPipeline(DiffusionPipeline):
        model_cpu_offload_seq = "text_encoder->unet->vae"

        def __call__(self, prompt, output_type="pil"):
            latents = self.unet(self.text_encoder(prompt))
            image = self.vae.decode(latents)
            return MyPipelineOutput(images=image)
    ```

    Use instead:
    ```python
    class MyPipeline(DiffusionPipeline):
        model_cpu_offload_seq = "text_encoder->unet->vae"

        def __call__(self, prompt, output_type="pil"):
            latents = self.unet(self.text_encoder(prompt))
            image = self.vae.decode(latents)
            self.maybe_free_model_hooks()
            return MyPipelineOutput(images=image)
    ```

    ## Known problems
    A call of `maybe_free_model_hooks` anywhere in the class (a helper that `__call__` uses, say) counts,
    whether `__call__` reaches it or not; a `__call__` that calls `super().__call__(...)` is left alone. Models
    are recognised by the pipeline attribute they are called through (`self.unet(...)`,
    `self.vae.decode(...)`, `self.text_encoder(...)`, `self.encode_prompt(...)`) and inner pipelines of a
    combined pipeline by name (`self.prior_pipe(...)`); a model reached only through a local alias or another
    helper is not seen. A pipeline whose own `enable_model_cpu_offload` hands the job to its inner pipelines
    (neither `cpu_offload_with_hook` nor `super().enable_model_cpu_offload()`) installs no hooks of its own and is
    left alone. Pipelines under `deprecated/` are frozen and skipped by default.

    ## References
    - huggingface/diffusers#13656, pattern 6
    - huggingface/diffusers#5589 and #5680 (pipelines that still relied on `final_offload_hook`, or never freed)
    - huggingface/diffusers#13649 (DDPM never freed the hooks)
    """

    code = "DRB605"
    pattern = 6
    severity = "warning"
    message = (
        "`{cls}.__call__` runs models but never calls `self.maybe_free_model_hooks()`, so under "
        "`enable_model_cpu_offload()` the last model stays on the accelerator; call `self.maybe_free_model_hooks()` "
        "after the last model call."
    )
    message_old = (
        "`{cls}.__call__` runs models but never calls `self.final_offload_hook.offload()`, so under "
        "`enable_model_cpu_offload()` the last model stays on the accelerator; offload the final hook after the last "
        "model call."
    )
    message_bare = (
        "`{cls}.__call__` names `self.maybe_free_model_hooks` without calling it, so the offload hooks are never "
        "freed; call `self.maybe_free_model_hooks()`."
    )
    message_legacy = (
        "`{cls}.__call__` frees only `self.{hook}`, which nothing installs since `enable_model_cpu_offload()` moved "
        "to `DiffusionPipeline`, so the offload hooks are never freed; call `self.maybe_free_model_hooks()` instead."
    )
    REQUIRES_ANY = ("model_cpu_offload_seq", "enable_model_cpu_offload")
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            class FooPipeline(DiffusionPipeline):
                model_cpu_offload_seq = "text_encoder->transformer->vae"

                def __call__(self, prompt, output_type="pil"):
                    embeds = self.text_encoder(prompt)
                    frames = self.vae.decode(self.transformer(embeds))
                    self._finish()
                    return FooOutput(frames=frames)

                def _finish(self):
                    self.maybe_free_model_hooks()
            """
        ),
        Valid(
            # no offload sequence: `enable_model_cpu_offload()` raises, so there are no hooks to free
            """
            class FooPipeline(DiffusionPipeline):
                def __call__(self, batch_size=1):
                    sample = self.unet(batch_size)
                    return FooOutput(images=sample)
            """
        ),
        Valid(
            # before 0.21: the pipeline installs its own hook and offloads it
            """
            class FooPipeline(DiffusionPipeline):
                def enable_model_cpu_offload(self, gpu_id=0):
                    hook = None
                    for model in (self.text_encoder, self.unet):
                        _, hook = cpu_offload_with_hook(model, f"cuda:{gpu_id}", prev_module_hook=hook)
                    self.final_offload_hook = hook

                def __call__(self, prompt):
                    sample = self.unet(self.text_encoder(prompt))
                    if hasattr(self, "final_offload_hook") and self.final_offload_hook is not None:
                        self.final_offload_hook.offload()
                    return FooOutput(images=sample)
            """
        ),
        Valid(
            # the combined pipeline hands offload to its inner pipelines, which free their own hooks
            """
            class FooCombinedPipeline(DiffusionPipeline):
                model_cpu_offload_seq = "prior_text_encoder->prior_prior->unet->movq"

                def enable_model_cpu_offload(self, gpu_id=0):
                    self.prior_pipe.enable_model_cpu_offload()
                    self.decoder_pipe.enable_model_cpu_offload()

                def __call__(self, prompt):
                    embeds = self.prior_pipe(prompt)
                    return self.decoder_pipe(image_embeds=embeds)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class FooPipeline(DiffusionPipeline):
                model_cpu_offload_seq = "unet"

                def __call__(self, batch_size=1, output_type="pil"):
                    sample = self.randn(batch_size)
                    for t in self.scheduler.timesteps:
                        sample = self.scheduler.step(self.unet(sample, t), t, sample)
                    return FooOutput(images=sample)
            """,
            message=(
                "`FooPipeline.__call__` runs models but never calls `self.maybe_free_model_hooks()`, so under "
                "`enable_model_cpu_offload()` the last model stays on the accelerator; call "
                "`self.maybe_free_model_hooks()` after the last model call."
            ),
        ),
        Invalid(
            """
            class FooPriorPipeline(DiffusionPipeline):
                model_cpu_offload_seq = "text_encoder->prior"

                def __call__(self, prompt):
                    embeds = self.prior(self.text_encoder(prompt))
                    self.maybe_free_model_hooks
                    return FooPriorOutput(embeds=embeds)
            """,
            message=(
                "`FooPriorPipeline.__call__` names `self.maybe_free_model_hooks` without calling it, so the offload "
                "hooks are never freed; call `self.maybe_free_model_hooks()`."
            ),
        ),
        Invalid(
            # the shared `enable_model_cpu_offload` installs no `final_offload_hook`: this cleanup is dead code
            """
            class FooUpscalePipeline(DiffusionPipeline):
                model_cpu_offload_seq = "text_encoder->unet->vae"

                def __call__(self, prompt, image):
                    sample = self.vae.decode(self.unet(self.text_encoder(prompt), image))
                    if hasattr(self, "final_offload_hook") and self.final_offload_hook is not None:
                        self.final_offload_hook.offload()
                    return FooOutput(images=sample)
            """,
            message=(
                "`FooUpscalePipeline.__call__` frees only `self.final_offload_hook`, which nothing installs since "
                "`enable_model_cpu_offload()` moved to `DiffusionPipeline`, so the offload hooks are never freed; "
                "call `self.maybe_free_model_hooks()` instead."
            ),
        ),
        Invalid(
            # a combined pipeline: the inner pipelines free their own hooks, not the ones installed on this one
            """
            class FooCombinedPipeline(DiffusionPipeline):
                model_cpu_offload_seq = "prior_text_encoder->prior_prior->unet->movq"

                def __call__(self, prompt):
                    embeds = self.prior_pipe(prompt)
                    return self.decoder_pipe(image_embeds=embeds)
            """,
            message=(
                "`FooCombinedPipeline.__call__` runs models but never calls `self.maybe_free_model_hooks()`, so "
                "under `enable_model_cpu_offload()` the last model stays on the accelerator; call "
                "`self.maybe_free_model_hooks()` after the last model call."
            ),
        ),
        Invalid(
            # a release before `maybe_free_model_hooks`: the pipeline installs its own hooks and must offload the last
            """
            class FooPipeline(DiffusionPipeline):
                def enable_model_cpu_offload(self, gpu_id=0):
                    hook = None
                    for model in (self.text_encoder, self.unet):
                        _, hook = cpu_offload_with_hook(model, f"cuda:{gpu_id}", prev_module_hook=hook)
                    self.final_offload_hook = hook

                def __call__(self, prompt):
                    sample = self.unet(self.text_encoder(prompt))
                    return FooOutput(images=sample)
            """,
            path="diffusers/pipelines/foo/pipeline_foo.py",
            files={
                "diffusers/pipelines/pipeline_utils.py": (
                    "class DiffusionPipeline(ConfigMixin):\n    def to(self, device):\n        return self\n"
                )
            },
            message=(
                "`FooPipeline.__call__` runs models but never calls `self.final_offload_hook.offload()`, so under "
                "`enable_model_cpu_offload()` the last model stays on the accelerator; offload the final hook after "
                "the last model call."
            ),
        ),
    ]

    def check(self) -> None:
        hooks: set[str] | None = None
        for cls, method in pipeline_methods(self.context, "__call__"):
            if not isinstance(method.body, cst.IndentedBlock) or has_yield(method):
                continue
            if hooks is None:
                hooks = assigned_hooks(self.context.module) if "_hook" in self.context.source else set()
            self._check_call(cls, method, hooks)

    def _check_call(self, cls: Definition, function: cst.FunctionDef, hooks: set[str]) -> None:
        class_calls = calls(cls.node)
        if any(frees_hooks(call, hooks) for call in class_calls):
            return
        if any(isinstance(c.func, cst.Attribute) and c.func.attr.value == "__call__" for c in calls(function.body)):
            return  # `super().__call__(...)`: the parent's cleanup runs
        body_calls = calls(function.body)
        runs = denoiser_calls(function) or [c for c in body_calls if may_run_model(c) or runs_subpipeline(c)]
        if not runs:
            return
        node = cst.ensure_type(cls.node, cst.ClassDef)
        if not supports_model_offload(self.context, node):
            return
        name = cls.name
        scope = f"{cls.qualname}.__call__"
        bare = _bare_free(function)
        legacy = next((h for c in body_calls if (h := legacy_hook(c)) is not None), None)
        if bare is not None:
            self.report(bare, self.message_bare.format(cls=name), symbol="maybe_free_model_hooks", scope=scope)
        elif legacy is not None:
            message = self.message_legacy.format(cls=name, hook=legacy)
            self.report(function.name, message, symbol="maybe_free_model_hooks", scope=scope)
        else:
            # before diffusers 0.21 `DiffusionPipeline` had no `maybe_free_model_hooks`: the cleanup was the final hook
            template = self.message if _has_free_method(self.context) else self.message_old
            self.report(function.name, template.format(cls=name), symbol="maybe_free_model_hooks", scope=scope)
