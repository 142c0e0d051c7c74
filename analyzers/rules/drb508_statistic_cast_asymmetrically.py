"""DRB508: of a `*_mean`/`*_std` pair, one is moved to the latents' device and dtype and the other is not."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid


def _moves(node: cst.CSTNode) -> bool:
    """Whether `node` contains a `.to(...)`/`.type(...)`/`.type_as(...)` call."""
    return any(
        isinstance(call.func, cst.Attribute) and call.func.attr.value in ("to", "type", "type_as")
        for call in walk.nodes(node, cst.Call)
    )


class StatisticCastAsymmetrically(Rule):
    """
    ## What it does
    Checks for pipeline functions that build a pair of normalisation statistics, `<name>_mean` and
    `<name>_std` (the VAE's latent mean and standard deviation), move one of them to the latents' device
    and dtype with `.to(...)`, and leave the other as it was built.

    ## Why is this bad?
    Statistics come from a config list or a VAE buffer: a float32 tensor on the CPU or on the VAE's
    device. The one that is not moved either fails the arithmetic on another device, or type-promotes
    the bfloat16 latents to float32 (`(latents - mean) / std`), so the transformer then receives float32
    latents and fails, or runs in the wrong precision. The author clearly meant both to be cast: one of
    them is.

    ## Example
    ```python
    latents_mean = self.vae.bn.running_mean.view(1, -1, 1, 1).to(latents.device, latents.dtype)
    latents_std = torch.sqrt(self.vae.bn.running_var.view(1, -1, 1, 1) + eps)
    latents = (latents - latents_mean) / latents_std
    ```

    Use instead:
    ```python
    latents_mean = self.vae.bn.running_mean.view(1, -1, 1, 1).to(latents.device, latents.dtype)
    latents_std = torch.sqrt(self.vae.bn.running_var.view(1, -1, 1, 1) + eps).to(latents.device, latents.dtype)
    latents = (latents - latents_mean) / latents_std
    ```

    ## Known problems
    Only names that end in `_mean` and `_std` with the same stem, assigned in the same function, are
    paired. A later `<name>.to(...)` anywhere in the function counts as the cast.

    ## References
    - huggingface/diffusers#13656, pattern 5
    - huggingface/diffusers#13299 (Flux2 pipelines cast `latents_bn_mean` but not `latents_bn_std`)
    """

    code = "DRB508"
    pattern = 5
    severity = "warning"
    message = (
        "`{moved}` is moved with `.to(...)` but `{other}` is not, so it stays on its own device and dtype; "
        "cast `{other}` the same way."
    )
    REQUIRES_ANY = ("_std",)
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            import torch

            class LatentPipeline(DiffusionPipeline):
                def normalize(self, latents):
                    latents_mean = torch.tensor(self.vae.config.latents_mean).view(1, -1, 1, 1)
                    latents_std = torch.tensor(self.vae.config.latents_std).view(1, -1, 1, 1)
                    latents_mean = latents_mean.to(latents.device, latents.dtype)
                    latents_std = latents_std.to(latents.device, latents.dtype)
                    return (latents - latents_mean) / latents_std

                def unnormalize(self, latents):
                    mean = torch.tensor(self.vae.config.latents_mean).to(latents)
                    image_std = torch.tensor([0.5, 0.5, 0.5])
                    return latents * image_std + mean
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            import torch

            class LatentPipeline(DiffusionPipeline):
                def encode_image(self, image):
                    image_latents = self.vae.encode(image).latent_dist.mode()
                    stats_mean = self.vae.running_mean.view(1, -1, 1, 1).to(image_latents.device, image_latents.dtype)
                    stats_std = torch.sqrt(self.vae.running_var.view(1, -1, 1, 1) + 1e-4)
                    return (image_latents - stats_mean) / stats_std
            """,
            message=(
                "`stats_mean` is moved with `.to(...)` but `stats_std` is not, so it stays on its own device and "
                "dtype; cast `stats_std` the same way."
            ),
        ),
    ]

    def check(self) -> None:
        for function in walk.nodes(self.context.module, cst.FunctionDef):
            assigns: dict[str, list[cst.Assign]] = {}
            for assign in walk.own_nodes(function, cst.Assign):
                if len(assign.targets) == 1 and isinstance(assign.targets[0].target, cst.Name):
                    assigns.setdefault(assign.targets[0].target.value, []).append(assign)
            for name in assigns:
                if not name.endswith("_mean"):
                    continue
                other = name[: -len("_mean")] + "_std"
                if other not in assigns:
                    continue
                moved_later = {
                    call.func.value.value
                    for call in walk.own_nodes(function, cst.Call)
                    if isinstance(call.func, cst.Attribute)
                    and call.func.attr.value in ("to", "type", "type_as")
                    and isinstance(call.func.value, cst.Name)
                }
                mean_moved = name in moved_later or any(_moves(a.value) for a in assigns[name])
                std_moved = other in moved_later or any(_moves(a.value) for a in assigns[other])
                if mean_moved == std_moved:
                    continue
                moved, unmoved = (name, other) if mean_moved else (other, name)
                self.report(assigns[unmoved][0], self.message.format(moved=moved, other=unmoved), symbol=unmoved)
