"""Stand-ins for the tiny Hub checkpoints diffusers' fast tests load, written into a local Hugging Face hub cache.

Fast tests call `AutoTokenizer.from_pretrained("hf-internal-testing/tiny-random-t5")` and the like. With no network,
each such repository is built here in code (a config with the shapes the tests rely on, weights from a fixed seed,
tokenizer files made offline) and written in the hub cache layout (`models--org--name/snapshots/<rev>/`,
`refs/main`), so that with `HF_HUB_OFFLINE=1` and `HF_HUB_CACHE` pointed at it `from_pretrained` runs its real code.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import string
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path


#: bump when a stand-in's files change: the revision (a snapshot folder name) is derived from it
VERSION = "1"


@dataclass(frozen=True)
class StandIn:
    repo: str
    write: Callable[[Path], None]  # writes the snapshot's files into an empty folder
    note: str  # what it holds, for the coverage report

    @property
    def revision(self) -> str:
        """A 40-hex commit id, as the hub cache names snapshots: fixed for a given writer, so editing one writes a new
        snapshot (helpers it calls are covered by `VERSION`)."""
        source = inspect.getsource(self.write)
        return hashlib.sha1(f"drbot-standin:{self.repo}:{VERSION}:{source}".encode()).hexdigest()


STANDINS: dict[str, StandIn] = {}


def standin(repo: str, note: str):
    def register(write: Callable[[Path], None]) -> Callable[[Path], None]:
        STANDINS[repo] = StandIn(repo, write, note)
        return write

    return register


def default_cache() -> Path:
    """`$DRBOT_STANDIN_CACHE`, else `~/.cache/drbot/hub-standins` (never the user's real hub cache)."""
    configured = os.environ.get("DRBOT_STANDIN_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "drbot" / "hub-standins"


def repo_folder(cache: Path, repo: str) -> Path:
    return cache / ("models--" + repo.replace("/", "--"))


def populate(cache: Path | None = None, repos: Iterable[str] | None = None) -> Path:
    """Write every stand-in (or those of `repos`) that the cache lacks; return the cache folder.

    A snapshot is written to a temporary folder and renamed into place, so concurrent runs never see half of one.
    """
    cache = Path(cache) if cache is not None else default_cache()
    for repo in repos if repos is not None else STANDINS:
        item = STANDINS[repo]
        folder = repo_folder(cache, repo)
        snapshot = folder / "snapshots" / item.revision
        if not snapshot.is_dir():
            (folder / "snapshots").mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder / "snapshots"))
            try:
                item.write(staging)
                staging.chmod(0o755)  # mkdtemp makes it private
                staging.rename(snapshot)
            except OSError:
                if not snapshot.is_dir():  # another process renamed its copy first: keep that one
                    raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        ref = folder / "refs" / "main"
        if not ref.is_file() or ref.read_text() != item.revision:  # a complete cache is never written (read-only)
            ref.parent.mkdir(parents=True, exist_ok=True)
            ref.write_text(item.revision)
    return cache


def offline_env(cache: Path) -> dict[str, str]:
    """Environment for a process whose `from_pretrained` calls must resolve to the stand-ins (set before import:
    huggingface_hub reads these once)."""
    return {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    }


def _eval_seeded(model_class, config, seed: int = 0):
    import torch

    torch.manual_seed(seed)
    return model_class(config).eval()


# -- T5 ---------------------------------------------------------------------------------------------------------------

#: words of the fast tests' prompts ("A painting of a squirrel eating a burger", "dance monkey", ...) get a piece each
T5_WORDS = (
    "a the of and in on with cat dog photo video red blue painting squirrel eating burger dance monkey astronaut "
    "horse riding man woman portrait picture image prompt bad quality low"
).split()


def t5_pieces(size: int = 1000) -> list[tuple[str, float]]:
    """A Unigram vocabulary of exactly `size` pieces: T5's specials, every printable ASCII character alone and
    word-initial, the test prompts' words, then two-letter pieces (alone, then word-initial) to fill up (tiny-random-t5 has 1000 + 100 extras)."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    chars = string.ascii_letters + string.digits + string.punctuation
    pieces += [(f"▁{w}", -1.0) for w in T5_WORDS]
    pieces += [(c, -3.0) for c in chars] + [(f"▁{c}", -3.5) for c in chars]
    seen = {piece for piece, _ in pieces}
    fill = (f"{lead}{a}{b}" for lead in ("", "▁") for a in string.ascii_lowercase for b in string.ascii_lowercase)
    while len(pieces) < size:
        piece = next(fill)
        if piece not in seen:
            pieces.append((piece, -4.0))
    return pieces[:size]


def t5_tokenizer(model_max_length: int = 512):
    """T5's tokenizer for the stand-ins: 1000 Unigram pieces and 100 `<extra_id_*>` tokens (ids < 1103)."""
    from transformers import T5TokenizerFast

    tokenizer = T5TokenizerFast(vocab=t5_pieces(), extra_ids=100)
    tokenizer.model_max_length = model_max_length
    return tokenizer


def t5_config(model_type: str = "t5", **overrides):
    """tiny-random-t5's sizes: the fast tests build encoders of d_model 32 (`joint_attention_dim=32`, ...)."""
    from transformers import T5Config, UMT5Config

    config_class = UMT5Config if model_type == "umt5" else T5Config
    kwargs = dict(
        vocab_size=1103,
        d_model=32,
        d_kv=8,
        d_ff=37,
        num_layers=5,
        num_decoder_layers=5,
        num_heads=4,
        relative_attention_num_buckets=8,
        dropout_rate=0.1,
        initializer_factor=0.002,
        is_encoder_decoder=True,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    kwargs.update(overrides)
    return config_class(**kwargs)


def _write_t5(folder: Path, model_type: str = "t5", architecture: str = "T5ForConditionalGeneration") -> None:
    import transformers

    config = t5_config(model_type)
    model = _eval_seeded(getattr(transformers, architecture), config)
    model.save_pretrained(folder)
    t5_tokenizer().save_pretrained(folder)


@standin(
    "hf-internal-testing/tiny-random-t5", "T5ForConditionalGeneration, d_model 32, 5 layers, vocab 1103; T5 tokenizer"
)
def write_tiny_random_t5(folder: Path) -> None:
    _write_t5(folder)


@standin("hf-internal-testing/tiny-random-T5Model", "T5Model, d_model 32, vocab 1103; T5 tokenizer")
def write_tiny_random_t5_model(folder: Path) -> None:
    _write_t5(folder, architecture="T5Model")


@standin(
    "hf-internal-testing/tiny-random-T5ForConditionalGeneration",
    "T5ForConditionalGeneration, d_model 32, vocab 1103; T5 tokenizer",
)
def write_tiny_random_t5_for_conditional_generation(folder: Path) -> None:
    _write_t5(folder)


@standin("hf-internal-testing/tiny-random-umt5", "UMT5EncoderModel, d_model 32, vocab 1103; T5 tokenizer")
def write_tiny_random_umt5(folder: Path) -> None:
    _write_t5(folder, model_type="umt5", architecture="UMT5EncoderModel")


# -- CLIP -------------------------------------------------------------------------------------------------------------


def clip_tokenizer_files(folder: Path) -> None:
    """vocab.json + merges.txt + tokenizer configs of a byte-level CLIP BPE whose ids stay below 1000 (the fast
    tests' `CLIPTextConfig(vocab_size=1000)`), `<|endoftext|>` last so argmax pooling finds it, max length 77."""
    from transformers import CLIPTokenizer

    from runners.tiny.tokenizers import _clip_files

    source = _clip_files()
    tokenizer = CLIPTokenizer(
        vocab=str(source / "vocab.json"),
        merges=str(source / "merges.txt"),
        model_max_length=77,
        pad_token="<|endoftext|>",
    )
    tokenizer.save_pretrained(folder)
    for name in ("vocab.json", "merges.txt"):  # the slow-format files too, as the real repository has them
        shutil.copy(source / name, folder / name)


@standin(
    "hf-internal-testing/tiny-random-clip",
    "CLIPModel (text hidden 32, 5 layers, vocab 1000; vision 32 at 30x30); CLIP BPE tokenizer of 516 tokens, length 77",
)
def write_tiny_random_clip(folder: Path) -> None:
    from transformers import CLIPConfig, CLIPModel

    clip_tokenizer_files(folder)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=5, num_attention_heads=4,
            max_position_embeddings=77, bos_token_id=514, eos_token_id=515, pad_token_id=515,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=37, num_hidden_layers=5, num_attention_heads=4, image_size=30,
            patch_size=2, num_channels=3,
        ),
        projection_dim=64,
    )  # fmt: skip
    _eval_seeded(CLIPModel, config).save_pretrained(folder)


# -- Qwen2-VL ---------------------------------------------------------------------------------------------------------

#: Qwen2's special tokens at their real ids: fast tests build text encoders whose configs name them
#: (`vision_start_token_id=151652`, the default `image_token_id=151655`, vocab 151936 or 152064)
QWEN2_SPECIALS = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|object_ref_start|>": 151646,
    "<|object_ref_end|>": 151647, "<|box_start|>": 151648, "<|box_end|>": 151649, "<|quad_start|>": 151650,
    "<|quad_end|>": 151651, "<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655, "<|video_pad|>": 151656,
}  # fmt: skip

#: Qwen2-VL's chat template: a system turn unless given, images and videos as vision placeholders
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen2_tokenizer(model_max_length: int = 32768):
    """A Qwen2Tokenizer: a byte-level BPE (Qwen2's pre-tokenizer) whose merges spell the Qwen-Image prompt template
    and our prompts' words, with Qwen2's special tokens at their real ids (a sparse vocabulary)."""
    from transformers import Qwen2Tokenizer

    from runners.tiny.qwenimage import PROMPT_WORDS, QWEN2_SPLIT, QWEN_TEMPLATE, bpe_model, pre_tokens

    specials = tuple(QWEN2_SPECIALS)
    words = pre_tokens(QWEN_TEMPLATE.format(" " + PROMPT_WORDS), QWEN2_SPLIT, specials)
    words += pre_tokens(PROMPT_WORDS, QWEN2_SPLIT, specials)
    vocab, merges = bpe_model(words, ())
    vocab = {**vocab, **QWEN2_SPECIALS}
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=list(merges),
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=model_max_length,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(specials[1:])})
    return tokenizer


@standin(
    "hf-internal-testing/tiny-random-Qwen2VLForConditionalGeneration",
    "Qwen2VLForConditionalGeneration (hidden 16, vocab 151936, tied embeddings); Qwen2 byte-level BPE with the real "
    "special-token ids; Qwen2-VL image processor (patch 14, merge 2) and chat template",
)
def write_tiny_random_qwen2_vl(folder: Path) -> None:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

    tokenizer = qwen2_tokenizer()
    tokenizer.chat_template = QWEN2_VL_CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    # the processor's files: its image processor and chat template (a Qwen2VLProcessor object cannot be made here,
    # its video processor needs torchvision; loading one from these files needs it too)
    Qwen2VLImageProcessorPil(
        patch_size=14, merge_size=2, temporal_patch_size=2, min_pixels=56 * 56, max_pixels=28 * 28 * 1280
    ).save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(QWEN2_VL_CHAT_TEMPLATE)
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=151936, hidden_size=16, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=2, rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]}, tie_word_embeddings=True,
            bos_token_id=151643, eos_token_id=151645, pad_token_id=151643,
        ),
        vision_config=dict(depth=2, embed_dim=16, hidden_size=16, num_heads=2, mlp_ratio=1, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
        vision_token_id=151654, tie_word_embeddings=True,
    )  # fmt: skip
    _eval_seeded(Qwen2VLForConditionalGeneration, config).save_pretrained(folder)


# -- Gemma, Llama, BERT -----------------------------------------------------------------------------------------------


@standin(
    "hf-internal-testing/dummy-gemma",
    "Gemma tokenizer of 8 pieces (specials, ▁, a, t, e; the rest <unk>): Sana's fast tests embed with vocab_size 8",
)
def write_dummy_gemma(folder: Path) -> None:
    from transformers import GemmaConfig, GemmaTokenizerFast

    # Sana's fast tests build Gemma2Model(vocab_size=8): every id a prompt can produce must stay below 8
    pieces = ["<pad>", "<eos>", "<bos>", "<unk>", "▁", "a", "t", "e"]
    tokenizer = GemmaTokenizerFast(vocab={p: i for i, p in enumerate(pieces)}, merges=[], add_bos_token=True)
    tokenizer.model_max_length = 8192
    tokenizer.save_pretrained(folder)
    config = GemmaConfig(vocab_size=8, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=4)  # fmt: skip
    config.save_pretrained(folder)


def llama2_tokenizer(model_max_length: int = 2048):
    """A Llama (2) tokenizer: SentencePiece-style BPE with byte fallback, `<s>` prepended, ids far below 32000."""
    from transformers import LlamaTokenizerFast

    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{byte:02X}>" for byte in range(256)]
    pieces += ["▁"] + list(string.ascii_letters + string.digits + string.punctuation)
    merges: list[tuple[str, str]] = []  # no merges: characters are pieces, byte fallback covers everything else
    tokenizer = LlamaTokenizerFast(vocab={p: i for i, p in enumerate(pieces)}, merges=merges, add_bos_token=True)
    tokenizer.model_max_length = model_max_length
    return tokenizer


@standin(
    "hf-internal-testing/tiny-random-LlamaForCausalLM",
    "LlamaForCausalLM (hidden 16, 2 layers, vocab 32000); Llama BPE tokenizer with byte fallback",
)
def write_tiny_random_llama(folder: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    llama2_tokenizer().save_pretrained(folder)
    config = LlamaConfig(vocab_size=32000, hidden_size=16, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                         bos_token_id=1, eos_token_id=2, pad_token_id=None, tie_word_embeddings=False)  # fmt: skip
    _eval_seeded(LlamaForCausalLM, config).save_pretrained(folder)


@standin(
    "finetrainers/dummy-hunyaunvideo",
    "tokenizer/: a Llama 3 style byte-level BPE (ids < 1000) whose words spell HunyuanVideo's prompt template",
)
def write_dummy_hunyuan_video(folder: Path) -> None:
    from runners.tiny.hunyuan_video import llama3_tokenizer

    llama3_tokenizer().save_pretrained(folder / "tokenizer")


def bert_vocab(size: int = 1124) -> list[str]:
    """A WordPiece vocabulary of `size` entries: BERT's specials at their usual ids, characters, `##` pieces, words."""
    chars = string.ascii_lowercase + string.digits + string.punctuation
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += list(chars) + [f"##{c}" for c in chars] + T5_WORDS
    fill = (f"{lead}{a}{b}" for lead in ("", "##") for a in string.ascii_lowercase for b in string.ascii_lowercase)
    seen = set(vocab)
    while len(vocab) < size:
        piece = next(fill)
        if piece not in seen:
            vocab.append(piece)
    return vocab[:size]


@standin(
    "hf-internal-testing/tiny-random-BertModel",
    "BertModel (hidden 32, 5 layers, vocab 1124); WordPiece tokenizer of 1124 entries",
)
def write_tiny_random_bert(folder: Path) -> None:
    from transformers import BertConfig, BertModel, BertTokenizer

    (folder / "vocab.txt").write_text("\n".join(bert_vocab()) + "\n")
    BertTokenizer(vocab=str(folder / "vocab.txt"), model_max_length=512).save_pretrained(folder)
    config = BertConfig(vocab_size=1124, hidden_size=32, num_hidden_layers=5, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=512, type_vocab_size=16)  # fmt: skip
    _eval_seeded(BertModel, config).save_pretrained(folder)


@standin("hf-internal-testing/llama-tokenizer", "Llama BPE tokenizer with byte fallback, a tiny Llama config.json")
def write_llama_tokenizer(folder: Path) -> None:
    from transformers import LlamaConfig

    llama2_tokenizer().save_pretrained(folder)
    # AutoTokenizer reads config.json first, whatever tokenizer_config.json says
    LlamaConfig(vocab_size=32000, hidden_size=16, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4).save_pretrained(folder)  # fmt: skip


@standin(
    "Qwen/Qwen3-Embedding-0.6B",
    "tokenizer files and a tiny Qwen3 config.json (the fast test reads just the tokenizer of this 0.6B model)",
)
def write_qwen3_embedding_tokenizer(folder: Path) -> None:
    from transformers import Qwen3Config

    qwen2_tokenizer().save_pretrained(folder)
    Qwen3Config(vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=8).save_pretrained(folder)  # fmt: skip


@standin(
    "hf-internal-testing/tiny-random-SiglipVisionModel",
    "SiglipVisionModel (hidden 32, 2 layers, 30x30, patch 2: HunyuanVideo Framepack's image_proj_dim 32); image processor",
)
def write_tiny_random_siglip_vision(folder: Path) -> None:
    from transformers import SiglipImageProcessorPil, SiglipVisionConfig, SiglipVisionModel

    SiglipImageProcessorPil(size={"height": 30, "width": 30}).save_pretrained(folder)
    config = SiglipVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                                image_size=30, patch_size=2, num_channels=3)  # fmt: skip
    _eval_seeded(SiglipVisionModel, config).save_pretrained(folder)


@standin(
    "hf-internal-testing/tiny-random-Gemma3ForCausalLM",
    "a Gemma BPE tokenizer with byte fallback of 360 tokens (Stable Audio 3 sizes its encoder to it), a config.json",
)
def write_tiny_random_gemma3_tokenizer(folder: Path) -> None:
    from transformers import Gemma3TextConfig

    from runners.tiny.sana import gemma_tokenizer

    gemma_tokenizer().save_pretrained(folder)
    Gemma3TextConfig(vocab_size=384, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=1, head_dim=8).save_pretrained(folder)  # fmt: skip


@standin(
    "hf-internal-testing/tiny-gemma3",
    "Gemma3ForConditionalGeneration (text hidden 32, 2 layers, vocab 384; SigLIP vision 16 at 28x28); Gemma BPE",
)
def write_tiny_gemma3(folder: Path) -> None:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    from runners.tiny.sana import gemma_tokenizer

    gemma_tokenizer().save_pretrained(folder)
    config = Gemma3Config(
        text_config=dict(vocab_size=384, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=16,
                         max_position_embeddings=1024),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=28, patch_size=14),
        mm_tokens_per_image=4, image_token_index=383, boi_token_index=381, eoi_token_index=382,
    )  # fmt: skip
    _eval_seeded(Gemma3ForConditionalGeneration, config).save_pretrained(folder)


@standin(
    "hf-internal-testing/tiny-random-DPTForDepthEstimation",
    "DPTForDepthEstimation (hidden 32, 4 layers, 32x32, patch 16); image processor resizing to 32x32",
)
def write_tiny_random_dpt(folder: Path) -> None:
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessorPil

    DPTImageProcessorPil(
        size={"height": 32, "width": 32}, keep_aspect_ratio=False, ensure_multiple_of=1
    ).save_pretrained(folder)
    config = DPTConfig(image_size=32, patch_size=16, num_channels=3, hidden_size=32, num_hidden_layers=4,
                       num_attention_heads=4, intermediate_size=37, backbone_out_indices=(0, 1, 2, 3),
                       neck_hidden_sizes=[16, 32, 64, 64], fusion_hidden_size=32)  # fmt: skip
    _eval_seeded(DPTForDepthEstimation, config).save_pretrained(folder)
