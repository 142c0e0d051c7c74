"""DRC001, pattern 1: two prompts x `num_*_per_prompt=2` give four outputs, every conditioning expanded to match."""

from __future__ import annotations

from runners.contracts._base import ContractFailure, batch_size, denoiser_calls, describe, first_output, refused


class BatchOutputsContract:
    code = "DRC001"
    pattern = 1
    title = "batch x per-prompt count gives one output each, with every conditioning expanded"

    def test_drc001_batch_outputs(self):
        per_prompt = self.factory.per_prompt_arg
        self.require("prompt", per_prompt)
        pipe = self.get_pipeline()
        inputs = self.get_dummy_inputs()
        inputs.update(prompt=["a photo of the cat", "a red dog"], **{per_prompt: 2})
        if isinstance(inputs.get("negative_prompt"), str):
            # one negative prompt per prompt: the contract is about expansion per output, not string broadcasting
            inputs["negative_prompt"] = [inputs["negative_prompt"]] * 2
        with denoiser_calls(pipe, self.factory) as calls:
            try:
                output = first_output(pipe(**inputs))
            except Exception as error:  # noqa: BLE001 - the crash is the finding
                if refused(error) and not calls:
                    # raised on purpose before any denoising: an input contract (a video-to-video pipeline wants one
                    # video per prompt), not an expansion gone wrong, which shows as a crash or in the denoiser
                    import pytest

                    pytest.skip(f"the pipeline declines 2 prompts x {per_prompt}=2 up front: {describe(error)}")
                raise ContractFailure(
                    f"2 prompts x {per_prompt}=2 raised {describe(error)}{_mismatch(calls)}"
                ) from error
        mismatch = _mismatch(calls)
        if batch_size(output) != 4 or mismatch:
            raise ContractFailure(
                f"2 prompts x {per_prompt}=2 gave {batch_size(output)} outputs, expected 4{mismatch}"
            )


def _mismatch(calls: list[dict]) -> str:
    """Name the conditioning tensors whose batch differs from the latents' at the first denoiser call that has one
    (position ids `*_ids` and timesteps carry no batch dimension and are left out)."""
    if not calls:
        return " (before the denoiser ran)"
    for index, call in enumerate(calls):
        latents = call.get("hidden_states") or call.get("sample") or call.get("arg0")
        if latents is None:
            return ""
        batch = latents[0][0]
        odd = [
            f"`{name}` has batch {shape[0]}"
            for name, (shape, _) in call.items()
            if len(shape) >= 2
            and name not in ("hidden_states", "sample", "arg0")
            and not name.endswith("_ids")
            and shape[0] not in (batch, 1)
        ]
        if odd:
            return (
                f"; at denoiser call {index + 1} the latents have batch {batch} but {', '.join(odd)}: "
                "not expanded per output"
            )
    return ""
