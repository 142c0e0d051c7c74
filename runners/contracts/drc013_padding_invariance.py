"""DRC013, pattern 3: where the denoiser receives a text mask, more padding does not change the output."""

from __future__ import annotations

from runners.contracts._base import ContractFailure, denoiser_calls, first_output


class PaddingInvarianceContract:
    code = "DRC013"
    pattern = 3
    title = "padding length does not change the output where masks are honoured"

    ATOL = 1e-3

    def test_drc013_padding_invariance(self):
        import pytest
        import torch

        self.require("max_sequence_length")
        pipe = self.get_pipeline()
        outputs = {}
        for length in (16, 24):
            with denoiser_calls(pipe, self.factory) as calls:
                outputs[length] = torch.as_tensor(
                    first_output(pipe(**{**self.get_dummy_inputs(), "max_sequence_length": length}))
                ).float()
            masked = [k for k in (calls[0] if calls else {}) if "mask" in k and "image" not in k]
            if not masked:
                pytest.skip("the denoiser receives no text mask (a model trained without one attends to padding)")
        diff = (outputs[16] - outputs[24]).abs().max().item()
        if diff > self.ATOL:
            raise ContractFailure(
                f"padding the prompt to 24 instead of 16 tokens changed the output by {diff:.2e} although the denoiser "
                f"gets `{masked[0]}`: the mask does not reach every attention (the text encoder's too)"
            )
