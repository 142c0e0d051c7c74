"""Tiny Qwen-Image family: QwenImagePipeline, its text encoder a tiny Qwen2.5-VL built from config.

Configs follow diffusers' fast tests (tests/pipelines/qwenimage/test_qwenimage.py). The tokenizer is a Qwen2 byte-level
BPE built offline from a tiny vocabulary whose merges spell the words of the pipeline's prompt template, so that its
system prefix is 34 tokens, as with the real Qwen2.5-VL tokenizer: the pipeline drops
`prompt_template_encode_start_idx` (34) leading hidden states, exactly that prefix.
"""

from __future__ import annotations

import functools

from runners.tiny import Factory, generator, register


#: the Qwen2.5-VL special tokens (chat turns, vision placeholders), as the real tokenizer has them
QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
#: Qwen2's pre-tokenizer split (transformers' tokenization_qwen2.PRETOKENIZE_REGEX)
QWEN2_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
#: what the pipeline wraps every prompt in (its prompt_template_encode); its first 34 tokens, the system turn, are dropped
QWEN_TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, spatial "
    "relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
)
#: words of our test prompts, one token each too
PROMPT_WORDS = "a the cat dog photo video red blue"


def pre_tokens(text: str, split: str, specials: tuple[str, ...]) -> tuple[str, ...]:
    """The byte-level pre-tokens of `text` (as a byte-level BPE with the `split` regex sees it), specials left out."""
    import re

    from tokenizers import Regex, pre_tokenizers

    pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    words: dict[str, None] = {}
    for part in re.split("|".join(map(re.escape, specials)), text):
        words.update((word, None) for word, _ in pre_tokenizer.pre_tokenize_str(part))
    return tuple(words)


def _byte_alphabet() -> list[str]:
    from runners.tiny.tokenizers import _byte_alphabet

    return _byte_alphabet()


@functools.cache
def bpe_model(words: tuple[str, ...], specials: tuple[str, ...]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """vocab + merges of a byte-level BPE: every byte, each word merged left to right into one token, the specials."""
    vocab = {token: i for i, token in enumerate(_byte_alphabet())}
    merges: list[tuple[str, str]] = []
    for word in words:
        for end in range(2, len(word) + 1):
            merged = word[:end]
            if merged not in vocab:
                vocab[merged] = len(vocab)
                merges.append((word[: end - 1], word[end - 1]))
    for token in specials:
        vocab[token] = len(vocab)
    return vocab, merges


def qwen2_tokenizer(model_max_length: int = 1024):
    """A Qwen2Tokenizer (byte-level BPE with Qwen2's pre-tokenizer) of 390 tokens, built in memory: the words of the
    Qwen-Image prompt template and of our prompts are one token each."""
    from transformers import Qwen2Tokenizer

    words = pre_tokens(QWEN_TEMPLATE.format(" " + PROMPT_WORDS), QWEN2_SPLIT, QWEN_SPECIALS)
    words += pre_tokens(PROMPT_WORDS, QWEN2_SPLIT, QWEN_SPECIALS)  # a prompt's first word, without its space
    vocab, merges = bpe_model(words, QWEN_SPECIALS)
    tokenizer = Qwen2Tokenizer(
        vocab=dict(vocab),
        merges=list(merges),  # (left, right) pairs
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=model_max_length,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIALS[1:])})
    return tokenizer


QWEN_VOCAB_SIZE = 512  # >= len(qwen2_tokenizer()): 256 bytes + the words' merges + 8 specials


def qwen2_5_vl_encoder(seed: int, hidden_size: int = 16):
    """A tiny Qwen2_5_VLForConditionalGeneration (text and vision towers) for `qwen2_tokenizer()`."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = qwen2_tokenizer()
    assert len(tokenizer) <= QWEN_VOCAB_SIZE, len(tokenizer)
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": hidden_size,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
            "vocab_size": QWEN_VOCAB_SIZE,
            "bos_token_id": ids("<|endoftext|>"),
            "eos_token_id": ids("<|im_end|>"),
            "pad_token_id": ids("<|endoftext|>"),
        },
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16},
        hidden_size=hidden_size,
        vocab_size=QWEN_VOCAB_SIZE,
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|endoftext|>"),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        vision_token_id=ids("<|vision_pad|>"),
    )
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(config)


def qwenimage_components(seed: int) -> dict:
    import torch
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel

    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=16,  # the text encoder's hidden size
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )
    torch.manual_seed(seed)
    z_dim = 4
    vae = AutoencoderKLQwenImage(
        base_dim=z_dim * 6,
        z_dim=z_dim,
        dim_mult=[1, 2, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
    )
    return {
        "transformer": transformer,
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "text_encoder": qwen2_5_vl_encoder(seed),
        "tokenizer": qwen2_tokenizer(),
    }


def qwenimage_inputs(device: str, seed: int) -> dict:
    return {
        "prompt": "a photo of the cat",
        "negative_prompt": "blue",
        "generator": generator(device, seed),
        "num_inference_steps": 2,
        "true_cfg_scale": 4.0,  # with a negative prompt: true classifier-free guidance (not guidance-distilled)
        "height": 32,
        "width": 32,
        "max_sequence_length": 16,
        "output_type": "pt",
    }


register(Factory("QwenImagePipeline", qwenimage_components, qwenimage_inputs, denoiser="transformer"))
