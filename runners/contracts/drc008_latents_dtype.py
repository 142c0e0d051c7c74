"""DRC008, pattern 5: latents given in another dtype are cast; nothing reaches the denoiser as float64."""

from __future__ import annotations

from runners.contracts._base import ContractFailure, declined, denoiser_calls, describe, first_output


class LatentsDtypeContract:
    code = "DRC008"
    pattern = 5
    title = "latents in another dtype are cast; no float64 on the hot path"

    def test_drc008_latents_dtype(self):
        import pytest
        import torch

        self.require("latents", "output_type")
        pipe = self.get_pipeline()
        with denoiser_calls(pipe, self.factory) as calls:
            try:
                latent = first_output(
                    pipe(**{**self.get_dummy_inputs(), "output_type": "latent", "return_dict": True})
                )
                crash = None
            except Exception as error:  # noqa: BLE001 - judged below
                latent, crash = None, error
        doubles = sorted({name for call in calls for name, (_, dtype) in call.items() if dtype == torch.float64})
        if doubles:
            raise ContractFailure(
                f"float64 reached the denoiser in {', '.join(f'`{n}`' for n in doubles)}: keep the hot path in the "
                "model's dtype" + (f" ({describe(crash)})" if crash else "")
            )
        if crash is not None:
            pytest.skip(f"cannot learn the latent shape: output_type='latent' raised {describe(crash)}")
        if not isinstance(latent, torch.Tensor):
            pytest.skip("output_type='latent' returned no tensor to learn the latent shape from")
        # latents from another run in another precision: half precision for a float32 pipeline, and vice versa
        other = torch.float16 if latent.dtype == torch.float32 else torch.float32
        given = torch.randn(latent.shape, generator=torch.Generator("cpu").manual_seed(3)).to(latent.device, other)
        try:
            pipe(**{**self.get_dummy_inputs(), "latents": given})
        except Exception as error:  # noqa: BLE001 - the crash is the finding
            if declined(error):  # "only one of `video` or `latents`": the pipeline does not take latents with these
                pytest.skip(f"the pipeline's input check declines `latents` with its test inputs: {describe(error)}")
            raise ContractFailure(
                f"`latents` in {str(other).removeprefix('torch.')} were not cast to the pipeline's "
                f"{str(latent.dtype).removeprefix('torch.')}: {describe(error)}"
            ) from error
