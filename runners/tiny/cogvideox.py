"""Tiny CogVideoX family: CogVideoXPipeline (T5 text encoder, patch size 2, learned/sincos positional embeddings).

Configs follow diffusers' fast tests (tests/pipelines/cogvideo/test_cogvideox.py), sized for 32x32 and 9 frames, with a
T5 encoder built from config and our offline T5 tokenizer instead of `hf-internal-testing/tiny-random-t5`.
"""

from __future__ import annotations

from runners.tiny import Factory, register
from runners.tiny.encoders import t5_encoder
from runners.tiny.tokenizers import t5_tokenizer
from runners.tiny.wan import video_inputs


def cogvideox_components(seed: int) -> dict:
    import torch
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel

    torch.manual_seed(seed)
    transformer = CogVideoXTransformer3DModel(
        # num_attention_heads * attention_head_dim (the inner dim) must be divisible by 16 for the 3D positional
        # embeddings; text_embed_dim is the T5 encoder's d_model
        num_attention_heads=4,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        time_embed_dim=2,
        text_embed_dim=32,
        num_layers=1,
        sample_width=4,  # latent width 4 -> 32 pixels
        sample_height=4,  # latent height 4 -> 32 pixels
        sample_frames=9,  # latent frames (9 - 1) / 4 + 1 = 3
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=16,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    )
    # the scheduler config of THUDM/CogVideoX-2b (the pipeline takes CogVideoXDDIMScheduler or CogVideoXDPMScheduler)
    scheduler = CogVideoXDDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        set_alpha_to_one=True,
        snr_shift_scale=3.0,
        timestep_spacing="trailing",
    )
    return {
        "transformer": transformer,
        "vae": vae,
        "scheduler": scheduler,
        "text_encoder": t5_encoder(seed),
        "tokenizer": t5_tokenizer(),
    }


register(
    Factory(
        "CogVideoXPipeline",
        cogvideox_components,
        video_inputs,
        per_prompt_arg="num_videos_per_prompt",
        denoiser="transformer",
    )
)
