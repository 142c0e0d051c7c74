"""DRC015, pattern 2: the embeddings `encode_prompt` returns, passed instead of the prompts, give the same output."""

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


class PromptEmbedsContract:
    code = "DRC015"
    pattern = 2
    title = "precomputed prompt embeddings (negative, pooled, masks) give the prompt call's output"

    def test_drc015_prompt_embeds(self):
        import pytest
        import torch

        self.require("prompt", "prompt_embeds")
        try:
            return_names(self.pipeline_class)  # before building anything
        except Unmappable as why:
            pytest.skip(str(why))
        pipe = self.get_pipeline()
        reference, arguments = prompt_call_and_embeddings(self, pipe)
        passed = ", ".join(f"`{name}`" for name, value in arguments.items() if value is not None)
        try:
            # fresh inputs: the same seed, a generator not yet drawn from
            embedded = torch.as_tensor(first_output(pipe(**with_embeddings(prompt_inputs(self), arguments)))).float()
        except Exception as error:  # noqa: BLE001 - the crash is the finding
            raise ContractFailure(
                f"passing {passed} as encode_prompt returned them, instead of the prompts, raised {describe(error)}"
            ) from error
        if embedded.shape != reference.shape:
            raise ContractFailure(
                f"passing {passed} instead of the prompts gave an output of shape {tuple(embedded.shape)}, the "
                f"prompts {tuple(reference.shape)}"
            )
        diff = (embedded - reference).abs().max().item()
        if diff > tolerance(self):
            raise ContractFailure(
                f"passing {passed} as encode_prompt returned them, instead of the prompts, changed the output by "
                f"{diff:.2e}: __call__ does not use them as given (one dropped, re-encoded or transformed twice)"
            )
