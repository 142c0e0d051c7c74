"""DRC018, pattern 6: `output_type` "latent", "pt", "np" and "pil" agree: np is pt channels-last, pil is np x 255
rounded, and the latents decode to the pt output the way the pipeline decodes them."""

from __future__ import annotations

from contextlib import contextmanager

from runners.contracts._base import ContractFailure, describe, first_output
from runners.contracts._embeddings import half_precision_tolerance


#: pipeline methods that reshape or renormalise latents before the VAE sees them: family-specific decoding
FAMILY_DECODING = ("_unpack_latents", "_denormalize_latents", "_unpack_latents_with_ids", "_unpatchify_latents")
#: VAE statistics some families (Wan, SDXL-style configs) undo before decoding
LATENT_STATISTICS = ("latents_mean", "latents_std")


@contextmanager
def _decoder_inputs(vae):
    """Record what `vae.decode(...)` is given meanwhile (nothing when there is no VAE)."""
    import torch

    calls: list = []
    decode = getattr(vae, "decode", None) if vae is not None else None
    if decode is None:
        yield calls
        return

    def record(*args, **kwargs):
        z = args[0] if args else kwargs.get("z")
        calls.append(z.detach().clone() if isinstance(z, torch.Tensor) else None)
        return decode(*args, **kwargs)

    vae.decode = record
    try:
        yield calls
    finally:
        del vae.decode  # the instance attribute: the class's method is back


def _pil_array(value):
    """A list of PIL images (or of lists of frames) as one uint8 array, or None."""
    import numpy as np
    from PIL import Image

    if isinstance(value, Image.Image):
        return np.asarray(value)
    if isinstance(value, (list, tuple)) and value:
        parts = [_pil_array(item) for item in value]
        if any(part is None for part in parts) or len({part.shape for part in parts}) != 1:
            return None
        return np.stack(parts)
    return None


def _channels_last(pt, shape):
    """`pt` laid out as an array of `shape`: channels moved last (images, video frames), or as it is (audio)."""
    moved = pt.movedim(-3, -1) if pt.ndim >= 3 else None
    if moved is not None and tuple(moved.shape) == tuple(shape):
        return moved
    if tuple(pt.shape) == tuple(shape):
        return pt
    return None


class OutputTypesContract:
    code = "DRC018"
    pattern = 6
    title = "output_type latent/pt/np/pil agree"

    def test_drc018_output_types(self):
        import numpy as np
        import pytest
        import torch

        self.require("output_type")
        pipe = self.get_pipeline()
        atol = half_precision_tolerance(self, 1e-4)

        def run(output_type):
            return first_output(pipe(**{**self.get_dummy_inputs(), "output_type": output_type, "return_dict": True}))

        vae = getattr(pipe, "vae", None)
        try:
            with _decoder_inputs(vae) as decoded:
                pt = run("pt")
        except Exception as error:  # noqa: BLE001
            pytest.skip(f"output_type='pt' raised {describe(error, 160)}")
        if not isinstance(pt, torch.Tensor):
            pytest.skip(f"output_type='pt' returned {type(pt).__name__}, not a tensor")
        pt = pt.detach().float().cpu()
        checked, unchecked, problems = [], [], []

        # np: the pt output, channels last
        array = None
        try:
            array = run("np")
        except Exception as error:  # noqa: BLE001
            unchecked.append(f"output_type='np' raised {describe(error, 100)}")
        if array is not None and not isinstance(array, np.ndarray):
            unchecked.append(f"output_type='np' returned {type(array).__name__}, not one NumPy array")
            array = None
        if array is not None:
            expected = _channels_last(pt, array.shape)
            if expected is None:
                unchecked.append(f"np {array.shape} is not pt {tuple(pt.shape)} with channels last")
            else:
                checked.append("np")
                diff = float(np.abs(array.astype(np.float32) - expected.numpy()).max())
                if diff > atol:
                    # the usual way to diverge: np denormalised to [0, 1], pt left as the decoder gives it
                    halved = float(np.abs(array.astype(np.float32) - (expected.numpy() / 2 + 0.5).clip(0, 1)).max())
                    why = (
                        ": np is clamp(pt / 2 + 0.5, 0, 1), the pt output is left as the decoder gives it"
                        if halved <= atol
                        else ""
                    )
                    problems.append(f"output_type='np' differs from the pt output (channels last) by {diff:.2e}{why}")

        # pil: the np output x 255, rounded
        try:
            images = run("pil")
        except Exception as error:  # noqa: BLE001
            images = None
            unchecked.append(f"output_type='pil' raised {describe(error, 100)}")
        if images is not None:
            pixels = _pil_array(images)
            source = array if array is not None else (pt.movedim(-3, -1) if pt.ndim >= 3 else pt).numpy()
            expected = np.clip(np.round(source.astype(np.float32) * 255), 0, 255)
            if pixels is not None and pixels.shape != expected.shape and expected.shape[-1] == 1:
                expected = expected[..., 0]  # grayscale: PIL mode "L" has no channel axis
            if pixels is None or pixels.shape != expected.shape:
                shown = "not PIL images" if pixels is None else f"PIL pixels {pixels.shape}"
                unchecked.append(f"output_type='pil' gave {shown}, the np output {source.shape}")
            else:
                checked.append("pil")
                diff = float(np.abs(pixels.astype(np.float32) - expected).max())
                if diff > 1:  # one level: rounding of values computed in another run
                    problems.append(f"output_type='pil' differs from round(np x 255) by {diff:.0f} levels")

        # latent: what the VAE decoded in the pt call, and decoding it again the pipeline's way
        note = self._latent_check(pipe, decoded, pt, atol, run, problems)
        if note:
            unchecked.append(note)
        else:
            checked.append("latent")
        if problems:
            raise ContractFailure(
                "; ".join(problems) + (f" (not compared: {'; '.join(unchecked)})" if unchecked else "")
            )
        if not checked:
            pytest.skip("; ".join(unchecked))

    def _latent_check(self, pipe, decoded, pt, atol, run, problems) -> str:
        """Compare the latent output with the pt output; return why it was not compared, or "" when it was."""
        import torch
        from diffusers.image_processor import VaeImageProcessor

        vae = getattr(pipe, "vae", None)
        config = getattr(vae, "config", None)
        if vae is None or config is None or getattr(config, "scaling_factor", None) is None:
            return "latent: the pipeline has no VAE with a scaling factor to decode with"
        if len(decoded) != 1 or decoded[0] is None:
            return f"latent: the pt call decoded {len(decoded)} times, not once"
        family = [name for name in FAMILY_DECODING if hasattr(pipe, name)]
        statistics = [name for name in LATENT_STATISTICS if getattr(config, name, None) is not None]
        try:
            latents = run("latent")
        except Exception as error:  # noqa: BLE001
            return f"output_type='latent' raised {describe(error, 100)}"
        if not isinstance(latents, torch.Tensor):
            return f"output_type='latent' returned {type(latents).__name__}"
        z = decoded[0]
        if latents.ndim != 4:
            return f"latent: {latents.ndim}-D latents (video or packed): pt, np and pil compared only"
        if tuple(z.shape) != tuple(latents.shape):
            return (
                f"latent: the pipeline reshapes the latents {tuple(latents.shape)} into {tuple(z.shape)} before "
                "decoding (family-specific unpacking; pt, np and pil compared only)"
            )
        if family or statistics:
            return (
                f"latent: family-specific decoding ({', '.join(family + [f'vae.config.{s}' for s in statistics])}; "
                "pt, np and pil compared only)"
            )
        processor = getattr(pipe, "image_processor", None)
        if not isinstance(processor, VaeImageProcessor) or hasattr(pipe, "video_processor"):
            return "latent: no VaeImageProcessor to postprocess the decoded latents with"
        shift = getattr(config, "shift_factor", None) or 0.0
        expected = latents.detach().float() / config.scaling_factor + shift
        scale = max(1.0, expected.abs().max().item())
        gap = (z.float().to(expected.device) - expected).abs().max().item()
        if gap > atol * scale:
            unshifted = (z.float().to(expected.device) - (expected - shift)).abs().max().item() if shift else gap
            why = (
                f"the VAE got latents / scaling_factor, without + shift_factor ({shift:g})"
                if unshifted <= atol * scale
                else f"the VAE got latents / scaling_factor{' + shift_factor' if shift else ''} off by {gap:.2e}"
            )
            problems.append(f"output_type='latent' returned latents that are not what the pt call decodes: {why}")
            return ""
        with torch.no_grad():
            image = vae.decode(expected.to(z.device, z.dtype), return_dict=False)[0]
            again = processor.postprocess(image, output_type="pt").detach().float().cpu()
        if again.shape != pt.shape:
            return f"latent: decoding gives {tuple(again.shape)}, the pt output is {tuple(pt.shape)} (resized after)"
        diff = (again - pt).abs().max().item()
        if diff > atol:
            if getattr(pipe, "watermark", None) is not None or getattr(pipe, "safety_checker", None) is not None:
                return "latent: the pt output passes a watermarker or safety checker after decoding"
            problems.append(
                f"decoding the latent output (vae.decode(latents / scaling_factor"
                f"{' + shift_factor' if shift else ''}), image_processor.postprocess) differs from the pt output by "
                f"{diff:.2e}"
            )
        return ""
