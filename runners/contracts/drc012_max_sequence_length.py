"""DRC012, pattern 2: `max_sequence_length` sets the text sequence the denoiser attends to."""

from __future__ import annotations

from runners.contracts._base import ContractFailure, denoiser_calls, describe


LONG_PROMPT = " ".join(["a photo of the red cat and the blue dog"] * 8)
#: denoiser arguments that carry the encoded prompt
TEXT_ARGS = ("encoder_hidden_states", "prompt_embeds")


class MaxSequenceLengthContract:
    code = "DRC012"
    pattern = 2
    title = "max_sequence_length takes effect"

    def test_drc012_max_sequence_length(self):
        import pytest

        self.require("max_sequence_length")
        pipe = self.get_pipeline()
        lengths = {}
        for length in (16, 24):
            with denoiser_calls(pipe, self.factory) as calls:
                try:
                    # a prompt longer than both lengths: pipelines that pad to the longest prompt use the length as a cap
                    pipe(**{**self.get_dummy_inputs(), "prompt": LONG_PROMPT, "max_sequence_length": length})
                except Exception as error:  # noqa: BLE001
                    raise ContractFailure(f"max_sequence_length={length} raised {describe(error)}") from error
            text = next((calls[0][k][0] for k in TEXT_ARGS if calls and k in calls[0]), None)
            if text is None or len(text) < 3:
                pytest.skip("the denoiser receives no text sequence to measure")
            lengths[length] = text[1]
        if lengths[16] == lengths[24]:
            raise ContractFailure(
                f"max_sequence_length=16 and 24 both gave a text sequence of {lengths[16]} tokens: the argument is ignored"
            )
