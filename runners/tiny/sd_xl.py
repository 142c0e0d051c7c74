"""Tiny Stable Diffusion XL family: text-to-image and inpainting (two CLIP text encoders, a text_time UNet)."""

from __future__ import annotations

from runners.tiny import Factory, register
from runners.tiny.sd import clip_text_config, image_inputs, tiny_vae
from runners.tiny.tokenizers import clip_tokenizer


def _sdxl_unet(projection_input_dim: int):
    """diffusers' fast-test SDXL UNet: `projection_input_dim` is 6 (5 with an aesthetic score) time ids x 8 + 32."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(2, 4),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=projection_input_dim,
        cross_attention_dim=64,  # the two text encoders' hidden states side by side: 32 + 32
        norm_num_groups=1,
    )


def _sdxl_components(seed: int, projection_input_dim: int) -> dict:
    import torch
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet = _sdxl_unet(projection_input_dim)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        steps_offset=1,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
    )
    torch.manual_seed(seed)
    vae = tiny_vae()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(clip_text_config(projection_dim=32))
    text_encoder_2 = CLIPTextModelWithProjection(clip_text_config(projection_dim=32))  # pooled embeds: 32
    return {
        "unet": unet,
        "scheduler": scheduler,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": clip_tokenizer(),
        "text_encoder_2": text_encoder_2,
        "tokenizer_2": clip_tokenizer(),
        "image_encoder": None,
        "feature_extractor": None,
        # explicit: the default (None) turns the watermark on whenever invisible-watermark happens to be installed
        "add_watermarker": False,
    }


def sdxl_components(seed: int) -> dict:
    return _sdxl_components(seed, projection_input_dim=6 * 8 + 32)


def sdxl_inpaint_components(seed: int) -> dict:
    # as diffusers' inpaint fast tests: an aesthetic score replaces the target size in the time ids (5 of them)
    return {**_sdxl_components(seed, projection_input_dim=5 * 8 + 32), "requires_aesthetics_score": True}


def image_and_mask(seed: int, size: int = 32):
    """A seeded RGB noise image and a mask (white = repaint) over its lower right quarter, both PIL."""
    import numpy as np
    from PIL import Image

    pixels = np.random.RandomState(seed).randint(0, 256, size=(size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[size // 2 :, size // 2 :] = 255
    return Image.fromarray(pixels), Image.fromarray(mask)  # modes RGB and L from the shapes


def sdxl_inpaint_inputs(device: str, seed: int) -> dict:
    image, mask_image = image_and_mask(seed)
    # strength 1.0: both steps run (the default 0.9999 keeps int(2 * 0.9999) = 1 of them)
    return {**image_inputs(device, seed), "image": image, "mask_image": mask_image, "strength": 1.0}


register(Factory("StableDiffusionXLPipeline", sdxl_components, image_inputs, denoiser="unet"))
register(Factory("StableDiffusionXLInpaintPipeline", sdxl_inpaint_components, sdxl_inpaint_inputs, denoiser="unet"))
