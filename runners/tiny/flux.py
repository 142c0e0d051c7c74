"""Tiny Flux: a CLIP text encoder (pooled) and a T5 encoder, a Flux transformer with guidance embeddings."""

from __future__ import annotations

from runners.tiny import Factory, generator, register
from runners.tiny.encoders import t5_encoder
from runners.tiny.sd import clip_text_config, flow_vae
from runners.tiny.tokenizers import clip_tokenizer, t5_tokenizer


def flux_components(seed: int) -> dict:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,  # 1 latent channel, packed 2x2
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,  # T5's d_model
        pooled_projection_dim=32,  # CLIP's hidden size (the pooler output)
        guidance_embeds=True,  # as FLUX.1-dev: the `guidance_scale` path runs
        axes_dims_rope=[4, 4, 8],
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(clip_text_config(projection_dim=32))
    torch.manual_seed(seed)
    text_encoder_2 = t5_encoder()
    torch.manual_seed(seed)
    vae = flow_vae(latent_channels=1)
    return {
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "tokenizer": clip_tokenizer(),
        "tokenizer_2": t5_tokenizer(),
        "transformer": transformer,
        "vae": vae,
        "image_encoder": None,
        "feature_extractor": None,
    }


def flux_inputs(device: str, seed: int) -> dict:
    return {
        "prompt": "a photo of the cat",
        # true CFG (a second, negative transformer pass) needs true_cfg_scale > 1 and a negative prompt
        "negative_prompt": "",
        "true_cfg_scale": 2.0,
        "guidance_scale": 3.5,
        "generator": generator(device, seed),
        "num_inference_steps": 2,
        "height": 32,
        "width": 32,
        "max_sequence_length": 32,
        "output_type": "pt",
    }


register(Factory("FluxPipeline", flux_components, flux_inputs, denoiser="transformer"))
