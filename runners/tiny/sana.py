"""Tiny Sana: a Gemma2 text encoder with an offline Gemma BPE tokenizer, a Sana transformer, a DC autoencoder."""

from __future__ import annotations

import string

from runners.tiny import Factory, generator, register


_GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]  # Gemma's own order: pad 0, eos 1, bos 2, unk 3
_GEMMA_WORDS = {"▁a": ("▁", "a"), "▁t": ("▁", "t"), "he": ("h", "e"), "▁the": ("▁t", "he")}


def gemma_tokenizer(model_max_length: int = 8192):
    """A GemmaTokenizerFast (BPE, byte fallback) of 360 tokens: specials, 256 byte pieces, ▁ + ASCII, 4 merges.

    Built in memory (transformers 5 takes a dict vocab and a list of merge pairs); `add_bos_token` as in Gemma 2.
    """
    from transformers import GemmaTokenizerFast

    pieces = _GEMMA_SPECIALS + [f"<0x{byte:02X}>" for byte in range(256)]  # byte fallback for anything else
    pieces += ["▁"] + list(string.ascii_letters + string.digits + string.punctuation) + list(_GEMMA_WORDS)
    tokenizer = GemmaTokenizerFast(
        vocab={piece: i for i, piece in enumerate(pieces)},
        merges=list(_GEMMA_WORDS.values()),
        add_bos_token=True,
    )
    tokenizer.model_max_length = model_max_length
    return tokenizer


GEMMA_VOCAB_SIZE = 384  # >= len(gemma_tokenizer()): 5 + 256 + 1 + 94 + 4 = 360


def sana_components(seed: int) -> dict:
    import torch
    from diffusers import AutoencoderDC, FlowMatchEulerDiscreteScheduler, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    tokenizer = gemma_tokenizer()
    torch.manual_seed(seed)
    transformer = SanaTransformer2DModel(
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        num_attention_heads=2,
        attention_head_dim=4,
        num_cross_attention_heads=2,
        cross_attention_head_dim=4,
        cross_attention_dim=8,
        caption_channels=8,  # Gemma2's hidden size
        sample_size=32,
    )
    torch.manual_seed(seed)
    vae = AutoencoderDC(
        in_channels=3,
        latent_channels=4,
        attention_head_dim=2,
        encoder_block_types=("ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        encoder_qkv_multiscales=((), (5,)),
        decoder_qkv_multiscales=((), (5,)),
        encoder_layers_per_block=(1, 1),
        decoder_layers_per_block=[1, 1],
        downsample_block_type="conv",
        upsample_block_type="interpolate",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    )
    torch.manual_seed(seed)
    text_encoder = Gemma2Model(
        Gemma2Config(
            head_dim=16,
            hidden_size=8,
            initializer_range=0.02,
            intermediate_size=64,
            max_position_embeddings=8192,
            num_attention_heads=2,
            num_hidden_layers=1,
            num_key_value_heads=2,
            vocab_size=GEMMA_VOCAB_SIZE,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            attn_implementation="eager",
        )
    )
    return {
        "transformer": transformer,
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0),
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
    }


def sana_inputs(device: str, seed: int) -> dict:
    return {
        "prompt": "a photo of the cat",
        "negative_prompt": "",
        "generator": generator(device, seed),
        "num_inference_steps": 2,
        "guidance_scale": 6.0,
        "height": 32,
        "width": 32,
        "max_sequence_length": 16,
        # off: with sample_size 32 the call is binned up to 1024x1024 and cropped back (diffusers' fast test does)
        "use_resolution_binning": False,
        "complex_human_instruction": None,  # the default prepends a ~1,500-character instruction to every prompt
        "output_type": "pt",
    }


register(Factory("SanaPipeline", sana_components, sana_inputs, denoiser="transformer"))
