"""DRB513: an image is cast to the dtype of a VAE decoder layer and then encoded."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import names_read


#: VAE layers that `upcast_vae` leaves in the half dtype (they belong to the decoder side)
DECODER_LAYERS = ("post_quant_conv", "decoder")


def _decoder_cast(value: cst.BaseExpression) -> tuple[str, str] | None:
    """`(tensor, layer)` of `tensor.to(<… vae.post_quant_conv … dtype>)`; None for any other value."""
    if not (isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute) and value.func.attr.value == "to"):
        return None
    if not isinstance(value.func.value, cst.Name):
        return None
    for arg in value.args:
        attributes = [a.attr.value for a in walk.nodes(arg.value, cst.Attribute)]
        if "dtype" not in attributes and "dtype" not in (arg.keyword.value if arg.keyword else ""):
            continue
        for layer in DECODER_LAYERS:
            if layer in attributes:
                return value.func.value.value, layer
    return None


class EncoderInputCastToDecoderDtype(Rule):
    """
    ## What it does
    Checks pipeline functions that cast an image to the dtype of a VAE decoder layer
    (`image.to(next(iter(self.vae.post_quant_conv.parameters())).dtype)`) and then hand that image to the
    VAE's encoder (`self.vae.encode(image)`).

    ## Why is this bad?
    The decoder's dtype is not the encoder's. `upcast_vae()` moves the VAE to float32 but keeps
    `post_quant_conv` and the decoder's first blocks in float16 when a memory-efficient attention is in use,
    so the image is cast back to float16 and fed to a float32 encoder: `vae.encode` fails on a dtype
    mismatch for fp16 SDXL-type VAEs that need upcasting. The cast is right only before `vae.decode`.

    ## Example
    ```python
    if needs_upcasting:
        self.upcast_vae()
        image = image.to(next(iter(self.vae.post_quant_conv.parameters())).dtype)
    image_latents = self.vae.encode(image).latent_dist.mode()
    ```

    Use instead:
    ```python
    if needs_upcasting:
        image = image.float()
        self.upcast_vae()
    image_latents = self.vae.encode(image).latent_dist.mode()
    ```

    ## Known problems
    Only a cast assigned back to a name and encoded later in the same function is seen.

    ## References
    - huggingface/diffusers#13656, pattern 5
    - huggingface/diffusers#7858 (SDXL InstructPix2Pix and LEdits++ SDXL cast the image to `post_quant_conv`'s
      dtype before encoding)
    """

    code = "DRB513"
    pattern = 5
    severity = "error"
    message = (
        "`{tensor}` is cast to the dtype of `vae.{layer}`, a decoder layer that `upcast_vae()` leaves in float16, "
        "and then encoded by the float32 encoder; cast it with `{tensor}.float()` (or to `self.vae.dtype`) before "
        "encoding."
    )
    REQUIRES_ANY = ("post_quant_conv",)
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def prepare_image_latents(self, image):
                    if self.vae.dtype == torch.float16 and self.vae.config.force_upcast:
                        image = image.float()
                        self.upcast_vae()
                    image_latents = self.vae.encode(image).latent_dist.mode()
                    return image_latents

                def decode(self, latents):
                    latents = latents.to(next(iter(self.vae.post_quant_conv.parameters())).dtype)
                    return self.vae.decode(latents).sample
            """,
            path="diffusers/pipelines/example/pipeline_example.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            class Pix2PixPipeline(DiffusionPipeline):
                def prepare_image_latents(self, image, needs_upcasting):
                    if needs_upcasting:
                        self.upcast_vae()
                        image = image.to(next(iter(self.vae.post_quant_conv.parameters())).dtype)
                    image_latents = self.vae.encode(image).latent_dist.mode()
                    return image_latents
            """,
            message=(
                "`image` is cast to the dtype of `vae.post_quant_conv`, a decoder layer that `upcast_vae()` leaves "
                "in float16, and then encoded by the float32 encoder; cast it with `image.float()` (or to "
                "`self.vae.dtype`) before encoding."
            ),
            path="diffusers/pipelines/example/pipeline_example.py",
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            casts: list[tuple[cst.Assign, str, str, int]] = []
            for assign in walk.own_nodes(function, cst.Assign):
                found = _decoder_cast(assign.value)
                span = walk.span(assign)
                if found is not None and span is not None:
                    casts.append((assign, *found, span[0]))
            if not casts:
                continue
            encodes = []
            for call in walk.own_nodes(function, cst.Call):
                func = call.func
                span = walk.span(call)
                if isinstance(func, cst.Attribute) and func.attr.value == "encode" and span is not None:
                    encodes.append(({n.value for a in call.args for n in names_read(a.value)}, span[0]))
            for assign, tensor, layer, start in casts:
                if any(tensor in read and begin > start for read, begin in encodes):
                    message = self.message.format(tensor=tensor, layer=layer)
                    self.report(assign, message, symbol=tensor, scope=definition.qualname)
