"""DRC005, pattern 4: every component listed in `_optional_components` may be None."""

from __future__ import annotations

from runners.contracts._base import ContractFailure, describe


class OptionalComponentsContract:
    code = "DRC005"
    pattern = 4
    title = "optional components set to None work"

    def test_drc005_optional_components(self):
        import pytest

        optional = [
            name
            for name in getattr(self.pipeline_class, "_optional_components", []) or []
            if not _structurally_required(name, self.factory)
        ]
        if not optional:
            pytest.skip(f"{self.factory.pipeline_class} has no optional component a prompt call can do without")
        present = [name for name in optional if self.factory.make_components(0).get(name) is not None]
        if not present:
            pytest.skip(f"the tiny {self.factory.pipeline_class} already leaves out {', '.join(optional)}")
        failures = []
        for name in present:
            components = self.factory.make_components(0)
            components[name] = None
            try:
                pipe = self.pipeline_class(**components).to(self.torch_device)
                pipe.set_progress_bar_config(disable=True)
                pipe(**self.get_dummy_inputs())
            except Exception as error:  # noqa: BLE001 - the crash is the finding
                failures.append(f"`{name}=None`: {describe(error, 160)}")
        if failures:
            raise ContractFailure("optional component set to None breaks the pipeline: " + "; ".join(failures))


#: the denoiser config says the model is conditioned on images: then the image encoder is part of this checkpoint
IMAGE_CONDITIONING = ("image_dim", "encoder_hid_dim_type", "image_embed_dim", "pooled_image_dim")


def _structurally_required(name: str, factory) -> bool:
    """Components that are optional only for other checkpoints or other inputs: a denoiser (Wan 2.2 needs one of
    two), text encoders and tokenizers (optional with precomputed embeddings, which a prompt call has not), and
    image encoders of a model configured for image conditioning (Wan 2.1 I2V)."""
    if name.startswith(("transformer", "unet", "tokenizer", "text_encoder")):
        return True
    if name in ("image_encoder", "image_processor", "feature_extractor"):
        config = factory.make_components(0).get(factory.denoiser).config
        return any(config.get(key) for key in IMAGE_CONDITIONING)
    return False
