"""DRC011, pattern 2: custom `sigmas` or `timesteps` change the schedule the pipeline runs."""

from __future__ import annotations

from runners.contracts._base import ContractFailure, declined, describe, first_output


class ScheduleTakesEffectContract:
    code = "DRC011"
    pattern = 2
    title = "custom sigmas/timesteps take effect"

    def test_drc011_schedule_takes_effect(self):
        import pytest
        import torch

        params = self.call_parameters()
        pipe = self.get_pipeline()
        base = torch.as_tensor(first_output(pipe(**self.get_dummy_inputs()))).float()
        checked, problems, refusals = [], [], []
        for name, value in (("sigmas", [1.0, 0.3]), ("timesteps", [999, 300])):
            if name not in params:
                continue
            # as many steps as the default run, so a pipeline that drops the schedule reproduces the default output
            inputs = {**self.get_dummy_inputs(), name: value, "num_inference_steps": len(value)}
            try:
                custom = torch.as_tensor(first_output(pipe(**inputs))).float()
            except ValueError as error:  # the scheduler says it cannot take a custom schedule: fine
                if "does not support custom" in str(error) or "scheduler" in str(error).lower():
                    continue
                if declined(error):  # the pipeline's own input check states a constraint on the schedule
                    refusals.append(f"`{name}={value}`: {describe(error, 160)}")
                    continue
                problems.append(f"`{name}={value}` raised {describe(error, 160)}")
                continue
            checked.append(name)
            if torch.equal(custom, base):
                problems.append(
                    f"`{name}={value}` gave the same output as the default schedule: the argument is ignored"
                )
        if problems:
            raise ContractFailure("; ".join(problems))
        if not checked:
            why = f" ({'; '.join(refusals)})" if refusals else ""
            pytest.skip(f"{self.factory.pipeline_class} takes no custom schedule its scheduler supports{why}")
