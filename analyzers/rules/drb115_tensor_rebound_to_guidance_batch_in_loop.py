"""DRB115: a tensor is rebound to its expansion to one batch inside a loop, then expanded to another."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import pipeline_methods


def _self_expansion(assign: cst.Assign) -> tuple[str, str] | None:
    """(name, size) for `name = name.expand(size, ...)`, the size as written."""
    if len(assign.targets) != 1 or not isinstance(assign.targets[0].target, cst.Name):
        return None
    name = assign.targets[0].target.value
    value = assign.value
    if not isinstance(value, cst.Call) or not isinstance(value.func, cst.Attribute) or not value.args:
        return None
    if (
        value.func.attr.value != "expand"
        or not isinstance(value.func.value, cst.Name)
        or value.func.value.value != name
    ):
        return None
    first = value.args[0]
    if first.keyword is not None or first.star != "" or len(value.args) < 2:
        return None
    return name, cst.Module(body=[]).code_for_node(first.value)


class TensorReboundToGuidanceBatchInLoop(Rule):
    """
    ## What it does
    Checks pipeline `__call__` methods for a tensor made before the denoising loop that the loop rebinds to
    its own expansion, `mask = mask.expand(latent_model_input.shape[0], -1, -1)`, while another statement of
    the method expands the same name to a different batch, `mask = mask.expand(latents.shape[0], -1, -1)`.

    ## Why is this bad?
    `expand` only grows dimensions of size 1. Once the name holds the classifier-free guidance batch (two
    rows per sample), expanding it to the single-pass batch fails with "The expanded size of the tensor must
    match the existing size", and the next step of the loop starts from the rebound tensor, not the original.
    The extra guidance passes (STG, modality guidance) or any second batch size break as soon as the first
    expansion has run.

    ## Example
    ```python
    for i, t in enumerate(timesteps):
        latent_model_input = torch.cat([latents] * 2)
        if attention_mask is not None:
            attention_mask = attention_mask.expand(latent_model_input.shape[0], -1, -1)
        ...
        if self.do_spatio_temporal_guidance:
            attention_mask = attention_mask.expand(latents.shape[0], -1, -1)
    ```

    Use instead:
    ```python
        cfg_attention_mask = attention_mask.expand(latent_model_input.shape[0], -1, -1)
        ...
        single_attention_mask = attention_mask.expand(latents.shape[0], -1, -1)
    ```

    ## Known problems
    Sizes are compared as written: two spellings of the same batch are taken as different. Only `expand` with
    the size given first and the name rebound to itself is matched.

    ## References
    - huggingface/diffusers#13656, pattern 1
    - huggingface/diffusers#14447 (LTX2InContextPipeline: the self-attention mask kept under new names per pass)
    """

    code = "DRB115"
    pattern = 1
    severity = "error"
    message = (
        "`{name}` is rebound in the loop to its expansion to `{size}` rows, but is also expanded to `{other}` "
        "rows; `expand` cannot shrink it back, and the next step starts from the rebound tensor; keep the "
        "original and bind each expansion to its own name (`{name}_{hint} = {name}.expand({size}, ...)`)."
    )
    REQUIRES_ALL = (".expand(",)
    PATHS = ("/pipelines/",)

    VALID = [
        # each expansion gets its own name
        Valid(
            """
            class VideoPipeline(DiffusionPipeline):
                def __call__(self, prompt, attention_mask=None):
                    for t in timesteps:
                        latent_model_input = torch.cat([latents] * 2)
                        cfg_mask = attention_mask.expand(latent_model_input.shape[0], -1, -1)
                        self.transformer(latent_model_input, attention_mask=cfg_mask)
                        single_mask = attention_mask.expand(latents.shape[0], -1, -1)
                        self.transformer(latents, attention_mask=single_mask)
            """
        ),
        # one batch only: the rebinding is idempotent
        Valid(
            """
            class ImagePipeline(DiffusionPipeline):
                def __call__(self, prompt):
                    for t in timesteps:
                        latent_model_input = torch.cat([latents] * 2)
                        timestep = t.expand(latent_model_input.shape[0])
                        mask = mask.expand(latent_model_input.shape[0], -1)
                        self.transformer(latent_model_input, timestep, attention_mask=mask)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class VideoPipeline(DiffusionPipeline):
                def __call__(self, prompt, attention_mask=None):
                    for i, t in enumerate(timesteps):
                        latent_model_input = torch.cat([latents] * 2)
                        if attention_mask is not None:
                            attention_mask = attention_mask.expand(latent_model_input.shape[0], -1, -1)
                        self.transformer(latent_model_input, attention_mask=attention_mask)
                        if self.do_spatio_temporal_guidance:
                            if attention_mask is not None:
                                attention_mask = attention_mask.expand(latents.shape[0], -1, -1)
                            self.transformer(latents, attention_mask=attention_mask)
            """,
            message=(
                "`attention_mask` is rebound in the loop to its expansion to `latent_model_input.shape[0]` rows, "
                "but is also expanded to `latents.shape[0]` rows; `expand` cannot shrink it back, and the next "
                "step starts from the rebound tensor; keep the original and bind each expansion to its own name "
                "(`attention_mask_cfg = attention_mask.expand(latent_model_input.shape[0], ...)`)."
            ),
        ),
    ]

    def check(self) -> None:
        for cls, method in pipeline_methods(self.context, "__call__"):
            self._check_call(f"{cls.qualname}.__call__", method)

    def _check_call(self, scope: str, function: cst.FunctionDef) -> None:
        in_loop: set[int] = set()
        for loop in walk.nodes(function.body, cst.For) + walk.nodes(function.body, cst.While):
            in_loop.update(id(a) for a in walk.nodes(loop.body, cst.Assign))
        sizes: dict[str, list[tuple[cst.Assign, str]]] = {}
        for assign in walk.nodes(function.body, cst.Assign):
            found = _self_expansion(assign)
            if found is not None:
                sizes.setdefault(found[0], []).append((assign, found[1]))
        for name, expansions in sizes.items():
            if len({size for _, size in expansions}) < 2:
                continue
            first = next(((a, s) for a, s in expansions if id(a) in in_loop), None)
            if first is None:
                continue
            assign, size = first
            other = next(s for _, s in expansions if s != size)
            self.report(
                assign,
                self.message.format(name=name, size=size, other=other, hint="cfg"),
                symbol=name,
                scope=scope,
            )
