"""Model CPU offload in pipelines: which calls free the offload hooks and which run a model (DRB601, DRB605)."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import FileContext, dotted_name
from analyzers.matchers import DENOISER_ATTRS, self_attribute
from analyzers.models import ancestry, class_assignment


#: `self.<helper>(...)` calls that run a model (and so, under offload, move it onto the accelerator)
MODEL_HELPERS = ("encode_prompt", "_encode_prompt", "encode_image", "prepare_ip_adapter_image_embeds")
#: components that are models besides the denoiser and the encoders
MODEL_COMPONENTS = ("vae", "controlnet", "vqvae", "movq")
#: methods of a component that run it
FORWARD_METHODS = ("decode", "encode", "forward", "tiled_decode", "tiled_encode", "_decode", "_encode")


def is_free_call(call: cst.Call) -> bool:
    """`self.maybe_free_model_hooks()`."""
    return self_attribute(call.func, "maybe_free_model_hooks")


def legacy_hook(call: cst.Call) -> str | None:
    """`final_offload_hook` for `self.final_offload_hook.offload()` (the idiom of diffusers before 0.21), else None."""
    func = call.func
    if isinstance(func, cst.Attribute) and func.attr.value == "offload" and self_attribute(func.value):
        name = func.value.attr.value
        return name if name.endswith("_hook") else None
    return None


def assigned_hooks(module: cst.Module) -> set[str]:
    """`self.<name>_hook` attributes the file assigns a value other than `None` (its own offload hooks)."""
    found: set[str] = set()
    for assign in walk.nodes(module, cst.Assign):
        if isinstance(assign.value, cst.Name) and assign.value.value == "None":
            continue
        for target in assign.targets:
            for node in walk.nodes(target.target, cst.Attribute):
                if self_attribute(node) and node.attr.value.endswith("_hook"):
                    found.add(node.attr.value)
    return found


def frees_hooks(call: cst.Call, hooks: set[str]) -> bool:
    """`self.maybe_free_model_hooks()`, or `self.<hook>.offload()` for a hook of `hooks` (one the file installs)."""
    return is_free_call(call) or legacy_hook(call) in hooks


def may_run_model(call: cst.Call) -> bool:
    """`self.unet(...)`, `self.text_encoder(...)`, `self.vae.decode(...)`, `self.encode_prompt(...)`, ...: any call of
    a model component or of one of its methods, or of a helper that runs one."""
    func = call.func
    if isinstance(func, cst.Attribute) and self_attribute(func):
        attr = func.attr.value
        return attr in DENOISER_ATTRS or attr in MODEL_HELPERS or "encoder" in attr or attr in MODEL_COMPONENTS
    if isinstance(func, cst.Attribute) and self_attribute(func.value):
        attr = func.value.attr.value
        return attr in DENOISER_ATTRS or "encoder" in attr or attr in MODEL_COMPONENTS
    return False


def runs_forward(call: cst.Call) -> bool:
    """A call that certainly runs a model's forward: `self.unet(...)`, `self.vae.decode(...)`, `self.encode_prompt(...)`.

    Narrower than `may_run_model`: `self.unet.set_attn_processor(...)` or `self.vae.to(dtype)` move or configure a
    model without running it, and they often follow the cleanup on purpose.
    """
    func = call.func
    if isinstance(func, cst.Attribute) and self_attribute(func):
        attr = func.attr.value
        return attr in DENOISER_ATTRS or attr in MODEL_HELPERS or "encoder" in attr or attr in MODEL_COMPONENTS
    if isinstance(func, cst.Attribute) and self_attribute(func.value):
        attr = func.value.attr.value
        is_model = attr in DENOISER_ATTRS or "encoder" in attr or attr in MODEL_COMPONENTS
        return is_model and func.attr.value in FORWARD_METHODS
    return False


def runs_subpipeline(call: cst.Call) -> bool:
    """`self.prior_pipe(...)`, `self.decoder_pipeline(...)`: a combined pipeline running one of its inner pipelines."""
    func = call.func
    return (
        isinstance(func, cst.Attribute) and self_attribute(func) and func.attr.value.endswith(("_pipe", "_pipeline"))
    )


def supports_model_offload(ctx: FileContext, cls: cst.ClassDef) -> bool:
    """Whether `enable_model_cpu_offload()` installs hooks on this pipeline's models: the nearest class of its
    ancestry that overrides `enable_model_cpu_offload` installs them itself with `cpu_offload_with_hook` (before
    0.21) or hands over to `super()`, or, where no class overrides it, the nearest `model_cpu_offload_seq` is a
    string (0.21 and later). An override that hands the job to inner pipelines (`self.prior_pipe.
    enable_model_cpu_offload()`) installs none here: the inner pipelines free their own hooks."""
    for _, node in ancestry(ctx, ctx.module_name, cls):
        if node.name.value == "DiffusionPipeline":
            return False
        body = node.body.body if isinstance(node.body, cst.IndentedBlock) else ()
        for statement in body:
            if isinstance(statement, cst.FunctionDef) and statement.name.value == "enable_model_cpu_offload":
                return any(_installs_hooks(c) for c in walk.nodes(statement, cst.Call))
        value = class_assignment(node, "model_cpu_offload_seq")
        if value is not None:
            return isinstance(value, (cst.SimpleString, cst.ConcatenatedString))
    return False


def _installs_hooks(call: cst.Call) -> bool:
    """`cpu_offload_with_hook(...)` or `super().enable_model_cpu_offload(...)`."""
    name = dotted_name(call.func) or ""
    if name.endswith("cpu_offload_with_hook"):
        return True
    func = call.func
    return (
        isinstance(func, cst.Attribute)
        and func.attr.value == "enable_model_cpu_offload"
        and isinstance(func.value, cst.Call)
        and dotted_name(func.value.func) == "super"
    )
