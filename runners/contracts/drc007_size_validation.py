"""DRC007, pattern 7: a height/width the model cannot take is rejected by `check_inputs` before any model runs."""

from __future__ import annotations

import logging
from contextlib import contextmanager

from runners.contracts._base import ContractFailure, denoiser_calls, describe, first_output


@contextmanager
def _warnings():
    """Collect the warnings diffusers logs meanwhile (its verbosity may be turned down for the report)."""
    logger = logging.getLogger("diffusers")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler, level = Keep(logging.WARNING), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def size_unit(pipe, factory) -> tuple[int, int, int]:
    """(unit, VAE scale, patch): sizes must be multiples of unit = VAE spatial scale x patch size."""
    scale = getattr(pipe, "vae_scale_factor_spatial", None) or getattr(pipe, "vae_scale_factor", None) or 8
    config = getattr(getattr(pipe, factory.denoiser), "config", {})
    patch = config.get("patch_size", 1) if hasattr(config, "get") else 1
    patch = patch[-1] if isinstance(patch, (list, tuple)) else (patch or 1)
    if hasattr(pipe, "_pack_latents"):  # Flux-style 2x2 packing
        patch *= 2
    return int(scale) * int(patch), int(scale), int(patch)


def bad_size(unit: int) -> int:
    """A size that is not a multiple of `unit`; a multiple of 8 when unit > 8, since most checks only ask for 8."""
    if unit > 8 and unit % 8 == 0:
        return 2 * unit + 8
    return 2 * unit + max(1, unit // 2)


class SizeValidationContract:
    code = "DRC007"
    pattern = 7
    title = "invalid height/width rejected by check_inputs before any model forward"

    def test_drc007_size_validation(self):
        import pytest

        self.require("height", "width")
        pipe = self.get_pipeline()
        unit, scale, patch = size_unit(pipe, self.factory)
        if unit < 2:
            pytest.skip("this pipeline accepts any size")
        size = bad_size(unit)
        why = f"height=width={size} is not a multiple of {unit} (VAE scale {scale} x patch {patch})"
        with denoiser_calls(pipe, self.factory) as calls, _warnings() as warned:
            try:
                output = first_output(pipe(**{**self.get_dummy_inputs(), "height": size, "width": size}))
            except ValueError as error:
                if calls:
                    raise ContractFailure(
                        f"{why}; rejected only after {len(calls)} denoiser calls: {describe(error)}"
                    ) from error
                return  # rejected up front, as it should be
            except Exception as error:  # noqa: BLE001 - the crash is the finding
                where = f"after {len(calls)} denoiser call(s)" if calls else "before the denoiser ran"
                raise ContractFailure(
                    f"{why}, yet check_inputs accepted it; the call then raised, {where}: {describe(error)}"
                ) from error
        # no error: fine when the pipeline produced the size asked for, or said it adjusted it (Flux warns)
        shape = tuple(output.shape[-2:]) if hasattr(output, "shape") else None
        if shape is not None and shape != (size, size) and not warned:
            raise ContractFailure(f"{why}; check_inputs accepted it and the output is silently {shape[0]}x{shape[1]}")
