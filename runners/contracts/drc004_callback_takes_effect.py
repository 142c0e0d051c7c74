"""DRC004, pattern 2: a step-end callback that edits the latents changes the result."""

from __future__ import annotations

from runners.contracts._base import ContractFailure, first_output


class CallbackTakesEffectContract:
    code = "DRC004"
    pattern = 2
    title = "callback_on_step_end outputs are used"

    def test_drc004_callback_takes_effect(self):
        import pytest
        import torch

        self.require("callback_on_step_end", "callback_on_step_end_tensor_inputs")
        pipe = self.get_pipeline()
        seen: list[int] = []

        def zero_latents(pipeline, step, timestep, callback_kwargs):
            seen.append(step)
            return {"latents": torch.zeros_like(callback_kwargs["latents"])}

        plain = first_output(pipe(**self.get_dummy_inputs()))
        edited = first_output(
            pipe(**self.get_dummy_inputs(), callback_on_step_end=zero_latents,
                 callback_on_step_end_tensor_inputs=["latents"])
        )  # fmt: skip
        if not seen:
            raise ContractFailure("callback_on_step_end was accepted but never called")
        if torch.equal(torch.as_tensor(plain).float(), torch.as_tensor(edited).float()):
            # a test model whose output ignores its noise too (Allegro's fast test: the same frames for any seed)
            # cannot show whether the callback's latents are used
            reseeded = first_output(pipe(**self.get_dummy_inputs(seed=1)))
            if torch.equal(torch.as_tensor(plain).float(), torch.as_tensor(reseeded).float()):
                pytest.skip("the output is the same for another seed too: it does not depend on the latents at all")
            raise ContractFailure(
                "a callback that zeroes `latents` left the output unchanged: its return value is ignored"
            )
