"""Tiny text encoders shared by the families (built from config, for the offline tokenizers)."""

from __future__ import annotations

from runners.tiny.tokenizers import T5_VOCAB_SIZE, t5_tokenizer


def t5_encoder(seed: int | None = None, umt5: bool = False, d_model: int = 32):
    """A tiny (UM)T5 encoder built from config (tiny-random-t5's sizes) for `t5_tokenizer()`."""
    import torch
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    config_class, model_class = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    tokenizer = t5_tokenizer()
    config = config_class(
        vocab_size=T5_VOCAB_SIZE,
        d_model=d_model,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    if seed is not None:
        torch.manual_seed(seed)
    return model_class(config)
