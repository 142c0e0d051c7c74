"""DRC009, pattern 9: fused QKV projections and another attention backend give the same output."""

from __future__ import annotations

from runners.contracts._base import ContractFailure, describe, first_output, refused


class AttentionEquivalenceContract:
    code = "DRC009"
    pattern = 9
    title = "fused/unfused QKV and attention backends agree"

    ATOL = 1e-3

    def test_drc009_attention_equivalence(self):
        import pytest
        import torch

        if self.dtype is not None and self.dtype != torch.float32:
            # fusing or another backend reorders reductions: in bf16 that moves a tiny model's output by 1e-2..1e-1
            # over its steps (measured on an H100), as much as a real mismatch would, so the comparison cannot tell
            pytest.skip("attention equivalence is checked in float32 only")
        pipe = self.get_pipeline()
        model = getattr(pipe, self.factory.denoiser)
        fuse = getattr(model, "fuse_qkv_projections", None)
        set_backend = getattr(model, "set_attention_backend", None)
        if fuse is None and set_backend is None:
            pytest.skip(f"{type(model).__name__} has neither fuse_qkv_projections nor set_attention_backend")
        base = torch.as_tensor(first_output(pipe(**self.get_dummy_inputs()))).float()
        problems, unsupported = [], []
        if fuse is not None:
            try:
                fuse()
                fused = torch.as_tensor(first_output(pipe(**self.get_dummy_inputs()))).float()
                model.unfuse_qkv_projections()
                unfused = torch.as_tensor(first_output(pipe(**self.get_dummy_inputs()))).float()
            except Exception as error:  # noqa: BLE001
                if refused(error):  # the model says it cannot fuse: a limitation it declares, not a divergence
                    unsupported.append(f"fuse_qkv_projections(): {describe(error, 160)}")
                else:
                    problems.append(f"fuse_qkv_projections(): {describe(error, 160)}")
            else:
                if (fused - base).abs().max() > self.ATOL:
                    problems.append(f"fused QKV changes the output (max diff {(fused - base).abs().max():.2e})")
                if (unfused - base).abs().max() > self.ATOL:
                    problems.append(
                        f"unfusing does not restore the output (max diff {(unfused - base).abs().max():.2e})"
                    )
        if set_backend is not None:
            try:
                set_backend("_native_math")
                other = torch.as_tensor(first_output(pipe(**self.get_dummy_inputs()))).float()
            except Exception as error:  # noqa: BLE001
                if refused(error):  # "requires the 'flex' attention backend"
                    unsupported.append(f"set_attention_backend('_native_math'): {describe(error, 160)}")
                else:
                    problems.append(f"set_attention_backend('_native_math'): {describe(error, 160)}")
            else:
                if (other - base).abs().max() > self.ATOL:
                    problems.append(
                        f"the _native_math backend changes the output (max diff {(other - base).abs().max():.2e})"
                    )
            finally:
                try:
                    model.reset_attention_backend()
                except Exception:  # noqa: BLE001 - older models have no reset
                    pass
        if problems:
            raise ContractFailure("; ".join(problems))
        if unsupported and len(unsupported) == (fuse is not None) + (set_backend is not None):
            pytest.skip(f"the model declines every variant: {'; '.join(unsupported)}")
