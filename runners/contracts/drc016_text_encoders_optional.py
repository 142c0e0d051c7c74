"""DRC016, pattern 4: text encoders and tokenizers listed in `_optional_components` may be None when the embeddings are
passed: the call works, gives the prompt call's output, and a different negative embedding still changes it."""

from __future__ import annotations

from runners.contracts._base import ContractFailure, describe, first_output
from runners.contracts._embeddings import (
    Unmappable,
    prompt_call_and_embeddings,
    prompt_inputs,
    return_names,
    tolerance,
    with_embeddings,
)


TEXT_COMPONENTS = ("text_encoder", "tokenizer")


class TextEncodersOptionalContract:
    code = "DRC016"
    pattern = 4
    title = "optional text encoders set to None work with precomputed embeddings, negatives still taking effect"

    def test_drc016_text_encoders_optional(self):
        import pytest
        import torch

        self.require("prompt", "prompt_embeds")
        name = self.factory.pipeline_class
        optional = [n for n in getattr(self.pipeline_class, "_optional_components", []) or []
                    if n.startswith(TEXT_COMPONENTS)]  # fmt: skip
        if not optional:
            pytest.skip(f"{name} lists no text encoder or tokenizer in _optional_components")
        components = self.factory.make_components(0)
        present = [n for n in optional if components.get(n) is not None]
        if not present:
            pytest.skip(f"the tiny {name} already leaves out {', '.join(optional)}")
        try:
            return_names(self.pipeline_class)
        except Unmappable as why:
            pytest.skip(str(why))
        # both pipelines built here, from the same seed: a constructor may draw weights of its own (AnimateDiff's
        # `UNetMotionModel.from_unet2d`), and two unseeded builds then differ whatever the encoders do
        torch.manual_seed(0)
        pipe = self.build_from(self.factory.make_components(0))
        reference, arguments = prompt_call_and_embeddings(self, pipe)
        left_out = ", ".join(f"`{n}`" for n in present)
        for component in present:
            components[component] = None
        try:
            torch.manual_seed(0)
            bare = self.build_from(components)
        except Exception as error:  # noqa: BLE001 - the crash is the finding
            raise ContractFailure(f"building {name} with {left_out} = None raised {describe(error)}") from error
        atol = tolerance(self)

        def run(pipeline, given: dict):
            return torch.as_tensor(first_output(pipeline(**with_embeddings(prompt_inputs(self), given)))).float()

        try:
            embedded = run(bare, arguments)
        except Exception as error:  # noqa: BLE001 - the crash is the finding
            raise ContractFailure(
                f"with {left_out} = None (optional components) and the embeddings passed, the call raised "
                f"{describe(error)}"
            ) from error
        diff = (embedded - reference).abs().max().item() if embedded.shape == reference.shape else float("inf")
        if diff > atol:
            raise ContractFailure(
                f"with {left_out} = None and the embeddings encode_prompt returned, the output differs from the prompt "
                f"call's by {diff:.2e}: without its text encoders the pipeline does not use the embeddings as given"
            )
        # the negative embeddings replaced by the positive ones (a consistent set: embeddings, pooled, mask)
        swapped = dict(arguments)
        for key, value in arguments.items():
            positive = key.removeprefix("negative_")
            if key.startswith("negative_") and value is not None and arguments.get(positive) is not None:
                swapped[key] = arguments[positive]
        if all(swapped[k] is arguments[k] for k in arguments):
            return  # no negative embeddings to vary: the equality above is the whole contract
        if (run(bare, swapped) - embedded).abs().max().item() > atol:
            return
        # the negative had no effect without the encoders: does it have one with them?
        if (run(pipe, swapped) - reference).abs().max().item() > atol:
            varied = ", ".join(f"`{k}`" for k in arguments if swapped[k] is not arguments[k])
            raise ContractFailure(
                f"with {left_out} = None, a different {varied} leaves the output unchanged, while with the text "
                "encoders it changes it: the negative embeddings are ignored when the encoders are absent"
            )
