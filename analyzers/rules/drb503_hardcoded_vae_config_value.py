"""DRB503: a pipeline hard-codes the VAE scale factor or the latent channel count that a component's config holds."""

from __future__ import annotations

import re

import libcst as cst

from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import parameters, pipeline_classes, self_attribute


#: `self.vae_scale_factor`, `self.vae_scale_factor_spatial`, `self.vae_scale_factor_temporal`, ...
_SCALE_RE = re.compile(r"^vae_scale_factor(_\w+)?$")
#: latent channel counts, as a local or a `self.` attribute
_CHANNEL_NAMES = frozenset({"num_channels_latents", "latent_channels", "vae_latent_channels"})
_DENOISERS = frozenset({"vae", "transformer", "unet"})


def _target_name(target: cst.BaseAssignTargetExpression) -> tuple[str, bool] | None:
    """(name, is_self_attribute) of `x` or `self.x`, else None."""
    if isinstance(target, cst.Name):
        return target.value, False
    if isinstance(target, cst.Attribute) and self_attribute(target):
        return target.attr.value, True
    return None


def _int_literal(node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.Integer)


class HardcodedVaeConfigValue(Rule):
    """
    ## What it does
    Checks for pipelines that set `self.vae_scale_factor` (or `_spatial`/`_temporal`) or
    `num_channels_latents` to a bare integer, unconditionally, although the pipeline receives the
    `vae` (or `transformer`/`unet`) component whose config holds that number.

    ## Why is this bad?
    The number is right only for the checkpoint the pipeline was written against. A VAE with another
    compression, a transformer with another number of input channels, or a fine-tune with a changed
    config silently gets latents of the wrong shape: wrong output resolution, shape errors deep in the
    model, or validation (`height % vae_scale_factor`) that checks the wrong multiple.

    ## Example
    ```python
    class MyPipeline(DiffusionPipeline):
        def __init__(self, vae, transformer, scheduler):
            super().__init__()
            self.register_modules(vae=vae, transformer=transformer, scheduler=scheduler)
            self.vae_scale_factor = 8
    ```

    Use instead:
    ```python
    class MyPipeline(DiffusionPipeline):
        def __init__(self, vae, transformer, scheduler):
            super().__init__()
            self.register_modules(vae=vae, transformer=transformer, scheduler=scheduler)
            self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if getattr(self, "vae", None) else 8
    ```

    ## Known problems
    Only an assignment at the top level of a method body is reported: a literal inside an `if`/`else`
    or a conditional expression is taken to be the fallback for a missing component. The rule does
    not check that the component's config really has a matching field; a VAE class without one still
    gets a finding.

    Severity is `note`: the number is usually right for every checkpoint published today, so the finding
    is a risk for the next checkpoint rather than a defect users meet now. It stays in pattern 5, whose
    description in #13656 names it: "pipelines hardcode VAE scale factors or latent channel counts" (a
    config assumption that leaks past the pipeline boundary), not pattern 8 (copies drifting apart) nor
    pattern 7 (validation that does not match what runs).

    ## References
    - huggingface/diffusers#13656, pattern 5
    - huggingface/diffusers#13618 (BriaFibo hard-codes `vae_scale_factor = 16`; follow-up huggingface/diffusers#13983)
    """

    code = "DRB503"
    pattern = 5
    severity = "note"
    message_scale = (
        "`self.{name} = {value}` hard-codes what the `vae` config holds; derive it from `self.vae.config` "
        "and keep `{value}` only as the fallback when `vae` is None."
    )
    message_channels = (
        "`{name} = {value}` hard-codes the latent channel count; read it from `self.{component}.config` instead."
    )
    REQUIRES_ANY = ("vae_scale_factor", "num_channels_latents", "latent_channels")
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def __init__(self, vae, transformer, scheduler):
                    super().__init__()
                    self.register_modules(vae=vae, transformer=transformer, scheduler=scheduler)
                    self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if getattr(self, "vae", None) else 8

                def __call__(self, prompt):
                    num_channels_latents = self.transformer.config.in_channels // 4
                    return self.run(prompt, num_channels_latents)
            """
        ),
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def __init__(self, vae, transformer, scheduler):
                    super().__init__()
                    if getattr(self, "vae", None):
                        self.vae_scale_factor_spatial = self.vae.config.spatial_compression_ratio
                    else:
                        self.vae_scale_factor_spatial = 8
            """
        ),
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def __init__(self, image_encoder, scheduler):
                    super().__init__()
                    self.vae_scale_factor = 8
            """
        ),
        Valid(
            """
            class NotAPipeline:
                def __init__(self, vae):
                    self.vae_scale_factor = 8
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class BriaFiboPipeline(DiffusionPipeline):
                def __init__(self, transformer, scheduler, vae, text_encoder, tokenizer):
                    self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, scheduler=scheduler)
                    self.vae_scale_factor = 16
            """,
            message=(
                "`self.vae_scale_factor = 16` hard-codes what the `vae` config holds; derive it from "
                "`self.vae.config` and keep `16` only as the fallback when `vae` is None."
            ),
        ),
        Invalid(
            """
            class LongCatImagePipeline(DiffusionPipeline):
                def __init__(self, scheduler, vae, text_encoder, tokenizer, transformer):
                    super().__init__()
                    self.register_modules(scheduler=scheduler, vae=vae, transformer=transformer)

                def __call__(self, prompt, height=None, width=None):
                    num_channels_latents = 16
                    return self.prepare_latents(prompt, num_channels_latents, height, width)
            """,
            message=(
                "`num_channels_latents = 16` hard-codes the latent channel count; read it from "
                "`self.transformer.config` instead."
            ),
        ),
    ]

    def check(self) -> None:
        for cls in pipeline_classes(self.context):
            methods = self.context.methods(cls)
            init = methods.get("__init__")
            if init is None:
                continue
            components = {p.name.value for p in parameters(init)} & _DENOISERS
            if not components:
                continue
            for method in methods.values():
                body = method.body.body if isinstance(method.body, cst.IndentedBlock) else ()
                for statement in body:  # the top level only: a literal in a branch is a fallback
                    if not isinstance(statement, cst.SimpleStatementLine):
                        continue
                    for small in statement.body:
                        if isinstance(small, cst.Assign) and len(small.targets) == 1 and _int_literal(small.value):
                            self._check_assign(cls.qualname, method, small, components)

    def _check_assign(self, owner: str, method: cst.FunctionDef, assign: cst.Assign, components: set[str]) -> None:
        target = _target_name(assign.targets[0].target)
        if target is None:
            return
        name, is_attribute = target
        value = cst.ensure_type(assign.value, cst.Integer).value  # `check` passes `x = <int literal>` only
        scope = f"{owner}.{method.name.value}"
        if is_attribute and _SCALE_RE.match(name) and "vae" in components:
            self.report(assign, self.message_scale.format(name=name, value=value), symbol=name, scope=scope)
        elif name in _CHANNEL_NAMES:
            component = next(c for c in ("transformer", "unet", "vae") if c in components)
            self.report(
                assign,
                self.message_channels.format(
                    name=f"self.{name}" if is_attribute else name, value=value, component=component
                ),
                symbol=name,
                scope=scope,
            )
