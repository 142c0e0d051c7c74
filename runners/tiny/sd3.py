"""Tiny Stable Diffusion 3: two CLIP text encoders with projection, one T5 encoder, an SD3 transformer."""

from __future__ import annotations

from runners.tiny import Factory, generator, register
from runners.tiny.encoders import t5_encoder
from runners.tiny.sd import clip_text_config, flow_vae
from runners.tiny.tokenizers import clip_tokenizer, t5_tokenizer


def sd3_components(seed: int) -> dict:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,  # T5's d_model; the CLIP embeds (32 + 32) are padded or cut to it
        pooled_projection_dim=64,  # the two CLIP projections side by side: 32 + 32
        out_channels=4,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModelWithProjection(clip_text_config(projection_dim=32))
    torch.manual_seed(seed)
    text_encoder_2 = CLIPTextModelWithProjection(clip_text_config(projection_dim=32))
    torch.manual_seed(seed)
    text_encoder_3 = t5_encoder()
    torch.manual_seed(seed)
    vae = flow_vae(latent_channels=4)
    return {
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "text_encoder_3": text_encoder_3,
        "tokenizer": clip_tokenizer(),
        "tokenizer_2": clip_tokenizer(),
        "tokenizer_3": t5_tokenizer(),
        "transformer": transformer,
        "vae": vae,
        "image_encoder": None,
        "feature_extractor": None,
    }


def sd3_inputs(device: str, seed: int) -> dict:
    return {
        "prompt": "a photo of the cat",
        "generator": generator(device, seed),
        "num_inference_steps": 2,
        "guidance_scale": 5.0,
        "height": 32,
        "width": 32,
        "max_sequence_length": 32,
        "output_type": "pt",
    }


register(Factory("StableDiffusion3Pipeline", sd3_components, sd3_inputs, denoiser="transformer"))
