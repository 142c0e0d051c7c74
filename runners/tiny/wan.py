"""Tiny Wan family: WanPipeline (Wan 2.1 T2V) and WanImageToVideoPipeline (Wan 2.1 I2V, CLIP image encoder).

Configs follow diffusers' fast tests (tests/pipelines/wan/), with a UMT5 text encoder built from config and our offline
T5 tokenizer instead of `hf-internal-testing/tiny-random-t5`.
"""

from __future__ import annotations

from runners.tiny import Factory, generator, register
from runners.tiny.encoders import t5_encoder
from runners.tiny.tokenizers import t5_tokenizer


def video_image(size: int = 32):
    """A deterministic RGB PIL image (a colour gradient), the conditioning image of image-to-video pipelines."""
    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 255, size, dtype=np.float32)
    pixels = np.stack(
        [ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1), 255 - ramp[None, :].repeat(size, 0)]
    )
    return Image.fromarray(pixels.transpose(1, 2, 0).astype(np.uint8))


def wan_vae(seed: int):
    import torch
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    return AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )


def wan_transformer(seed: int, in_channels: int = 16, image_dim: int | None = None):
    import torch
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=in_channels,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        image_dim=image_dim,
    )


def wan_components(seed: int, transformer=None) -> dict:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return {
        "transformer": transformer if transformer is not None else wan_transformer(seed),
        "vae": wan_vae(seed),
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0),
        "text_encoder": t5_encoder(seed, umt5=True),
        "tokenizer": t5_tokenizer(),
        "transformer_2": None,
    }


def wan_i2v_components(seed: int) -> dict:
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    # Wan 2.1 I2V: latents (16) + first-frame mask (4) + encoded condition video (16); `image_dim` is the CLIP hidden
    # size, so the transformer takes `encoder_hidden_states_image` (the image encoder's penultimate hidden states)
    components = wan_components(seed, transformer=wan_transformer(seed, in_channels=36, image_dim=4))
    torch.manual_seed(seed)
    components["image_encoder"] = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=4,
            projection_dim=4,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            intermediate_size=16,
            patch_size=8,
        )
    )
    components["image_processor"] = CLIPImageProcessor(crop_size=32, size=32)
    return components


def video_inputs(device: str, seed: int) -> dict:
    return {
        "prompt": "a video of the cat",
        "negative_prompt": "blue",
        "generator": generator(device, seed),
        "num_inference_steps": 2,
        "guidance_scale": 6.0,
        "height": 32,
        "width": 32,
        "num_frames": 9,
        "max_sequence_length": 16,
        "output_type": "pt",
    }


def wan_i2v_inputs(device: str, seed: int) -> dict:
    return {"image": video_image(), **video_inputs(device, seed)}


register(
    Factory(
        "WanPipeline", wan_components, video_inputs, per_prompt_arg="num_videos_per_prompt", denoiser="transformer"
    )
)
register(
    Factory(
        "WanImageToVideoPipeline",
        wan_i2v_components,
        wan_i2v_inputs,
        per_prompt_arg="num_videos_per_prompt",
        denoiser="transformer",
    )
)
