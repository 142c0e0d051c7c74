"""DRC010, pattern 6: with model CPU offload, every model is back off the accelerator after the call."""

from __future__ import annotations

from runners.contracts._base import ContractFailure, describe


class OffloadCleanupContract:
    code = "DRC010"
    pattern = 6
    title = "offload hooks released after the call"

    def test_drc010_offload_cleanup(self):
        import pytest
        import torch

        if not self.torch_device.startswith("cuda") or not torch.cuda.is_available():
            pytest.skip("model CPU offload needs an accelerator")
        pipe = self.factory.build("cpu", self.dtype)
        pipe.enable_model_cpu_offload(device=self.torch_device)
        try:
            pipe(**self.get_dummy_inputs())
        except Exception as error:  # noqa: BLE001 - the crash is the finding
            raise ContractFailure(f"the call with enable_model_cpu_offload() raised {describe(error)}") from error
        stuck = [
            name
            for name, component in pipe.components.items()
            if isinstance(component, torch.nn.Module) and any(p.device.type == "cuda" for p in component.parameters())
        ]
        if stuck:
            raise ContractFailure(
                f"after the call {', '.join(f'`{n}`' for n in stuck)} still sit on {self.torch_device}: the offload "
                "hooks were not released (call `self.maybe_free_model_hooks()` on every return path)"
            )
