"""Tiny LTX-Video family: LTXPipeline (T5 text encoder).

Configs follow diffusers' fast tests (tests/pipelines/ltx/test_ltx.py), with a T5 encoder built from config and our
offline T5 tokenizer. The VAE's `decoder_*` sizes are set as well as the encoder's: left out, the decoder takes its
full-size defaults (237M parameters, about 7 s a call).
"""

from __future__ import annotations

from runners.tiny import Factory, register
from runners.tiny.encoders import t5_encoder
from runners.tiny.tokenizers import t5_tokenizer
from runners.tiny.wan import video_inputs


def ltx_components(seed: int) -> dict:
    import torch
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXVideoTransformer3DModel

    torch.manual_seed(seed)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=1,
        caption_channels=32,  # the T5 encoder's d_model
    )
    torch.manual_seed(seed)
    vae = AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False,
        patch_size=1,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    return {
        "transformer": transformer,
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "text_encoder": t5_encoder(seed),
        "tokenizer": t5_tokenizer(),
    }


def ltx_inputs(device: str, seed: int) -> dict:
    # 9 frames (8k + 1, the recommended count), guidance 3.0 as in LTX's fast tests
    return {**video_inputs(device, seed), "guidance_scale": 3.0}


register(
    Factory("LTXPipeline", ltx_components, ltx_inputs, per_prompt_arg="num_videos_per_prompt", denoiser="transformer")
)
