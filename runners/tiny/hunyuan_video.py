"""Tiny HunyuanVideo family: HunyuanVideoPipeline (Llama text encoder + CLIP text encoder 2).

Configs follow diffusers' fast tests (tests/pipelines/hunyuan_video/test_hunyuan_video.py). Those replace the prompt
template with "{}"; we keep the pipeline's default one instead, so the tokenizer is a Llama 3 style byte-level BPE built
offline (Llama 3's pre-tokenizer split, `<|begin_of_text|>` prepended, right padding), whose vocabulary has each word
of the template as one token: the template's system turn is then 95 tokens, as with the real tokenizer, and the
pipeline's `crop_start` (95) crops exactly that prefix.
"""

from __future__ import annotations

from runners.tiny import Factory, generator, register
from runners.tiny.qwenimage import PROMPT_WORDS, bpe_model, pre_tokens
from runners.tiny.sd import clip_text_config
from runners.tiny.tokenizers import clip_tokenizer


#: Llama 3's pre-tokenizer split (as in its tokenizer.json)
LLAMA3_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
LLAMA3_SPECIALS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<pad>",
)
LLAMA_VOCAB_SIZE = 512  # >= len(llama3_tokenizer())


def llama3_tokenizer(model_max_length: int = 1024):
    """A Llama 3 style fast tokenizer (byte-level BPE, no Hub files) of 504 tokens, built in memory."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    words = pre_tokens(DEFAULT_PROMPT_TEMPLATE["template"].format(PROMPT_WORDS), LLAMA3_SPLIT, LLAMA3_SPECIALS)
    words += pre_tokens(" " + PROMPT_WORDS, LLAMA3_SPLIT, LLAMA3_SPECIALS)
    vocab, merges = bpe_model(words, LLAMA3_SPECIALS)
    # ignore_merges: a pre-token in the vocabulary is one token, as in Llama 3's tokenizer.json
    backend = Tokenizer(BPE(vocab=dict(vocab), merges=list(merges), ignore_merges=True, fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in LLAMA3_SPECIALS])
    bos = "<|begin_of_text|>"
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, vocab[bos])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token="<|eot_id|>",
        pad_token="<pad>",
        padding_side="right",  # the pipeline crops the template's prefix from the left
        model_max_length=model_max_length,
    )


def hunyuan_video_components(seed: int) -> dict:
    import torch
    from diffusers import AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, HunyuanVideoTransformer3DModel
    from transformers import CLIPTextModel, LlamaConfig, LlamaModel

    torch.manual_seed(seed)
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=10,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        patch_size=1,
        patch_size_t=1,
        guidance_embeds=True,
        text_embed_dim=16,  # the Llama hidden size
        pooled_projection_dim=8,  # the CLIP text hidden size
        rope_axes_dim=(2, 4, 4),
    )
    torch.manual_seed(seed)
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        act_fn="silu",
        norm_num_groups=4,
        scaling_factor=0.476986,
        spatial_compression_ratio=8,
        temporal_compression_ratio=4,
        mid_block_add_attention=True,
    )
    tokenizer = llama3_tokenizer()
    assert len(tokenizer) <= LLAMA_VOCAB_SIZE, len(tokenizer)
    llama_config = LlamaConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=16,
        intermediate_size=37,
        rms_norm_eps=1e-05,
        num_attention_heads=4,
        num_key_value_heads=4,
        # the pipeline takes the hidden states 2 layers before the last (num_hidden_layers_to_skip=2): with 3 layers
        # one decoder layer (attention under the prompt mask) runs before them
        num_hidden_layers=3,
        vocab_size=LLAMA_VOCAB_SIZE,
        hidden_act="silu",
    )
    torch.manual_seed(seed)
    text_encoder = LlamaModel(llama_config)
    torch.manual_seed(seed)
    text_encoder_2 = CLIPTextModel(clip_text_config(hidden_size=8))
    return {
        "transformer": transformer,
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0),
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "tokenizer": tokenizer,
        "tokenizer_2": clip_tokenizer(),
    }


def hunyuan_video_inputs(device: str, seed: int) -> dict:
    return {
        "prompt": "a video of the cat",
        "negative_prompt": "blue",
        "generator": generator(device, seed),
        "num_inference_steps": 2,
        "guidance_scale": 4.5,  # embedded guidance (the transformer is guidance-distilled)
        "true_cfg_scale": 2.0,  # with the negative prompt: true classifier-free guidance too
        "height": 32,
        "width": 32,
        "num_frames": 9,  # 4k + 1
        "max_sequence_length": 16,
        "output_type": "pt",
    }


register(
    Factory(
        "HunyuanVideoPipeline",
        hunyuan_video_components,
        hunyuan_video_inputs,
        per_prompt_arg="num_videos_per_prompt",
        denoiser="transformer",
    )
)
