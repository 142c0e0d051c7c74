"""The history corpus (bench/history/pNN.json) is well formed: every pair parses, ids are unique, each pair sits in
its pattern's file, names rules of that pattern, and its fix comes after its `before` release."""

from __future__ import annotations

import json
import re

from analyzers.core import all_rules
from bench.history import CORPUS, Pair, load


def version(text: str) -> tuple[int, ...]:
    assert re.fullmatch(r"\d+\.\d+\.\d+", text), f"{text!r} is not a release version"
    return tuple(int(part) for part in text.split("."))


def test_every_pair_is_well_formed():
    pairs = load()  # raises on a missing or unknown key, or a duplicate id
    patterns = {rule.code: rule.pattern for rule in all_rules()}
    for path in sorted(CORPUS.glob("p*.json")):
        number = int(path.stem[1:])
        for data in json.loads(path.read_text()):
            pair = Pair.from_json(data, path.name)
            assert pair.pattern == number, f"{pair.id} is in {path.name} but says pattern {pair.pattern}"
            assert all(patterns.get(code) == number for code in pair.rules), f"{pair.id}: rules {pair.rules}"
            assert version(pair.before) < version(pair.after), f"{pair.id}: {pair.before} is not before {pair.after}"
            assert pair.file.startswith("diffusers/") and pair.file.endswith(".py"), pair.id
            assert pair.summary and pair.verified and pair.fix, pair.id
    assert pairs, "the corpus is empty"
