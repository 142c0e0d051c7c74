"""Tokenizers built offline from tiny vocabularies (no Hub access): CLIP byte-level BPE and T5 Unigram."""

from __future__ import annotations

import functools
import json
import string
import tempfile
from pathlib import Path


def _byte_alphabet() -> list[str]:
    """GPT-2/CLIP's reversible byte -> unicode table, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


@functools.lru_cache(maxsize=1)
def _clip_files() -> Path:
    """vocab.json + merges.txt of a tiny CLIP BPE: every byte, every byte closing a word, two merges."""
    alphabet = _byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["th", "the</w>", "<|startoftext|>", "<|endoftext|>"]
    folder = Path(tempfile.mkdtemp(prefix="drbot-clip-tokenizer-"))
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(tokens)}))
    # every merge names tokens of the vocabulary (transformers 5 rejects a merge that does not)
    (folder / "merges.txt").write_text("#version: 0.2\nt h\nth e</w>\n")
    return folder


def clip_tokenizer(model_max_length: int = 77):
    """A CLIPTokenizer of 518 tokens (a text encoder needs vocab_size >= 518)."""
    from transformers import CLIPTokenizer

    folder = _clip_files()
    return CLIPTokenizer(
        vocab=str(folder / "vocab.json"),  # file paths: transformers 5 rejects a dict vocab with a list of merges
        merges=str(folder / "merges.txt"),
        model_max_length=model_max_length,
        pad_token="<|endoftext|>",
    )


CLIP_VOCAB_SIZE = 2 * 256 + 4  # every byte, every byte ending a word, two merges, two specials


def t5_tokenizer(model_max_length: int = 512):
    """A T5 (Unigram) tokenizer: specials, the ASCII letters and digits, and a few words; 100 extra ids."""
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(f"▁{w}", -1.0) for w in ("a", "the", "cat", "dog", "photo", "of", "video", "red", "blue")]
    pieces += [(c, -3.0) for c in string.ascii_letters + string.digits + string.punctuation]
    tokenizer = T5TokenizerFast(vocab=pieces, extra_ids=100)
    tokenizer.model_max_length = model_max_length
    return tokenizer


T5_VOCAB_SIZE = 256  # >= len(t5_tokenizer()): 4 + 9 + 94 pieces + 100 extra ids
