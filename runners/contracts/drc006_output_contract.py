"""DRC006, pattern 6: `return_dict=False` gives a tuple, also with `output_type="latent"`."""

from __future__ import annotations

from runners.contracts._base import ContractFailure, describe, refused


class OutputContract:
    code = "DRC006"
    pattern = 6
    title = "return_dict=False returns a tuple, for every output_type"

    def test_drc006_output_contract(self):
        import torch

        self.require("return_dict", "output_type")
        pipe = self.get_pipeline()
        problems, declined = [], []
        for output_type in ("pt", "latent"):
            try:
                result = pipe(**{**self.get_dummy_inputs(), "output_type": output_type, "return_dict": False})
            except Exception as error:  # noqa: BLE001
                if refused(error) and output_type in str(error):
                    # "Only the output types `pt`, `pil` and `np` are supported": a documented limit, said up front
                    declined.append(f"output_type={output_type!r}: {describe(error, 160)}")
                else:
                    problems.append(f"output_type={output_type!r}, return_dict=False raised {describe(error, 160)}")
                continue
            if not isinstance(result, tuple):
                problems.append(
                    f"output_type={output_type!r}, return_dict=False returned {type(result).__name__}, not a tuple"
                )
            elif not isinstance(result[0], (torch.Tensor, list)):
                problems.append(f"output_type={output_type!r}: the tuple's first item is {type(result[0]).__name__}")
        if problems:
            raise ContractFailure("; ".join(problems))
        if len(declined) == 2:
            import pytest

            pytest.skip(f"the pipeline declines both output types: {'; '.join(declined)}")
