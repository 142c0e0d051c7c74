"""DRB509: a pipeline upcasts its VAE to float32 and never casts it back."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name


FLOAT32 = frozenset({"torch.float32", "torch.float"})
#: how an input is cast to the VAE's current dtype
VAE_DTYPE = ("self.vae.dtype", "self.vae.post_quant_conv", "self.vae.parameters()")


def _vae_call(call: cst.Call) -> str | None:
    """`to`/`float` of `self.vae.to(...)`/`self.vae.float()`, `upcast_vae` of `self.upcast_vae()`."""
    name = dotted_name(call.func)
    if name == "self.upcast_vae":
        return "upcast_vae"
    if name in ("self.vae.to", "self.vae.float"):
        return name.rsplit(".", 1)[1]
    return None


def _upcasts(call: cst.Call) -> bool:
    kind = _vae_call(call)
    if kind in ("upcast_vae", "float"):
        return True
    return kind == "to" and any(dotted_name(arg.value) in FLOAT32 for arg in call.args)


def _restores(call: cst.Call) -> bool:
    """`self.vae.to(...)` with a dtype other than float32 (`dtype=torch.float16`, `dtype`, `vae_dtype`, ...)."""
    if _vae_call(call) != "to" or any(dotted_name(arg.value) in FLOAT32 for arg in call.args):
        return False
    for arg in call.args:
        if arg.keyword is not None:
            if arg.keyword.value == "dtype":
                return True
            continue
        # a positional device (`self.vae.to(device)`, `"cuda"`) is no cast back; a dtype is
        name = dotted_name(arg.value) or ""
        if "dtype" in name or name.startswith("torch.") and not name.startswith("torch.device"):
            return True
    return False


class UpcastVaeNeverRestored(Rule):
    """
    ## What it does
    Checks for pipeline methods that upcast the VAE to float32 (`self.upcast_vae()`,
    `self.vae.to(dtype=torch.float32)`, `self.vae.float()`) to decode or encode safely, and never cast it
    back to its own dtype (`self.vae.to(dtype=torch.float16)`) later in the same method.

    ## Why is this bad?
    The upcast changes the user's pipeline for good: after one call the VAE stays in float32, taking
    twice the memory, and the next call sees a float32 VAE, so a check like
    `self.vae.dtype == torch.float16 and self.vae.config.force_upcast` is false and the latents (still in
    float16) reach a float32 VAE: "Input type (c10::Half) and bias type (float) should be the same".

    ## Example
    ```python
    if self.vae.dtype == torch.float16 and self.vae.config.force_upcast:
        self.upcast_vae()
        latents = latents.to(next(iter(self.vae.post_quant_conv.parameters())).dtype)
    image = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]
    ```

    Use instead:
    ```python
    needs_upcasting = self.vae.dtype == torch.float16 and self.vae.config.force_upcast
    if needs_upcasting:
        self.upcast_vae()
        latents = latents.to(next(iter(self.vae.post_quant_conv.parameters())).dtype)
    image = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]
    if needs_upcasting:
        self.vae.to(dtype=torch.float16)
    ```

    ## Known problems
    The cast back must be a `self.vae.to(...)` with a dtype, after the upcast, in the same method; one
    done by the caller or by another helper is not seen, and any dtype counts (a cast back to the wrong
    dtype is not reported). `upcast_vae` itself and `__init__` are not looked at. A method that casts the VAE's
    input to the VAE's current dtype outside the upcasting branch (`latents.to(self.vae.dtype)` on every call)
    is left alone: the VAE then stays float32, but later calls still work.

    ## References
    - huggingface/diffusers#13656, pattern 5
    - huggingface/diffusers#4796 (SDXL pipelines left the VAE in float32 after decoding)
    """

    code = "DRB509"
    pattern = 5
    severity = "warning"
    message = (
        "the VAE is upcast to float32 here and never cast back, so it stays float32 after this call "
        "(twice the memory, and the next call's dtype checks see float32); cast it back with "
        "`self.vae.to(dtype=...)` once it is no longer needed."
    )
    REQUIRES_ANY = ("upcast_vae", "self.vae.to(", "self.vae.float(")
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            import torch

            class XLPipeline(DiffusionPipeline):
                def upcast_vae(self):
                    self.vae.to(dtype=torch.float32)

                def __init__(self, vae):
                    self.register_modules(vae=vae)
                    self.vae.to(torch.float32)

                def __call__(self, latents):
                    needs_upcasting = self.vae.dtype == torch.float16 and self.vae.config.force_upcast
                    if needs_upcasting:
                        self.upcast_vae()
                    image = self.vae.decode(latents.to(self.vae.dtype))
                    if needs_upcasting:
                        self.vae.to(dtype=torch.float16)
                    return image

                def decode(self, latents):
                    if self.vae.dtype == torch.float16 and self.vae.config.force_upcast:
                        self.upcast_vae()
                    return self.vae.decode(latents.to(self.vae.dtype))

                def encode(self, image, dtype):
                    if self.vae.config.force_upcast:
                        self.vae.float()
                    latents = self.vae.encode(image.float())
                    self.vae.to(dtype)
                    return latents
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            import torch

            class XLPipeline(DiffusionPipeline):
                def decode(self, latents):
                    if self.vae.dtype == torch.float16:
                        self.vae.to(dtype=torch.float32)
                    image = self.vae.decode(latents.float())
                    self.vae.to(latents.device)
                    return image
            """,
            message=(
                "the VAE is upcast to float32 here and never cast back, so it stays float32 after this call "
                "(twice the memory, and the next call's dtype checks see float32); cast it back with "
                "`self.vae.to(dtype=...)` once it is no longer needed."
            ),
        ),
    ]

    def check(self) -> None:
        code = self.context.module.code_for_node
        for function in walk.nodes(self.context.module, cst.FunctionDef):
            if function.name.value in ("upcast_vae", "__init__"):
                continue
            calls = [call for call in walk.own_nodes(function, cst.Call) if _vae_call(call)]
            upcasts = [i for i, call in enumerate(calls) if _upcasts(call)]
            if not upcasts or any(_restores(call) for call in calls[upcasts[0] + 1 :]):
                continue
            upcast = calls[upcasts[-1]]
            # the branch that upcasts; an input cast to the VAE's dtype outside it runs on every call, so a VAE
            # left in float32 still gets float32 input next time (only memory is lost): stay silent then
            branch: set[int] = set()
            for candidate in walk.own_nodes(function, cst.If):
                inside = {id(n) for n in walk.walk(candidate.body)}
                if id(upcast) in inside:
                    branch |= inside
            if any(
                isinstance(cast.func, cst.Attribute)
                and cast.func.attr.value == "to"
                and id(cast) not in branch
                and any(marker in code(arg.value) for arg in cast.args for marker in VAE_DTYPE)
                for cast in walk.own_nodes(function, cst.Call)
            ):
                continue
            self.report(upcast, self.message, symbol="self.vae")
