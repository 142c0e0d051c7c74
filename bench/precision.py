"""Sample findings per pattern group (seeded), and write docs/precision.md with their verdicts.

Patterns 1-9 are sampled from the full scan of the installed diffusers 0.42.1 package; pattern 10 (test
coverage) from a scan of a diffusers repository checkout, which is kept outside this project
(`--checkout PATH`; without it the pattern 10 section is left as it was). Verdicts live in
docs/precision-judgments.json ({fingerprint: {"verdict": "TP"|"FP", "reason": "..."}}), each judged by
reading the code. Run: `.venv/bin/python bench/precision.py [--checkout PATH] [--sample-only]`.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analyzers.scan import installed_diffusers, scan  # noqa: E402


SEED = 13656
JUDGMENTS = ROOT / "docs" / "precision-judgments.json"
PAGE = ROOT / "docs" / "precision.md"
#: (section id, title, patterns, sample size, source); the first group is the rule engine issue's 40-sample
GROUPS = [
    ("engine", "Patterns 1, 2, 5, 6 and 7", frozenset({1, 2, 5, 6, 7}), 40, "wheel"),
    ("p3", "Pattern 3: masks", frozenset({3}), 10, "wheel"),
    ("p4", "Pattern 4: optional parameters", frozenset({4}), 10, "wheel"),
    ("p8", "Pattern 8: copy-paste divergence", frozenset({8}), 10, "wheel"),
    ("p9", "Pattern 9: shared infrastructure", frozenset({9}), 10, "wheel"),
    ("p10", "Pattern 10: test coverage (diffusers checkout)", frozenset({10}), 20, "checkout"),
]
#: the engine issue's group keeps its original size name for the test that reads it
SIZE = 40


def sample(findings, patterns=GROUPS[0][2], size=SIZE):
    """A seeded sample of the findings of `patterns`, ordered by fingerprint first so it is reproducible."""
    ordered = sorted((f for f in findings if f.pattern in patterns), key=lambda f: f.fingerprint)
    return random.Random(SEED).sample(ordered, min(size, len(ordered)))


def _section(group, findings, files, judgments) -> tuple[str, Counter]:
    key, title, patterns, size, source = group
    picked = sample(findings, patterns, size)
    verdicts: Counter = Counter()
    rows = []
    for i, f in enumerate(picked, start=1):
        judged = judgments.get(f.fingerprint, {"verdict": "?", "reason": "not judged yet"})
        verdicts[judged["verdict"]] += 1
        rows.append(
            f"| {i} | {f.code} | `{f.path}:{f.line}` | `{f.scope}` | `{f.symbol}` | **{judged['verdict']}** | "
            f"{judged['reason'].replace('|', '/')} |"
        )
    total = sum(1 for f in findings if f.pattern in patterns)
    by_code = Counter(f.code for f in findings if f.pattern in patterns)
    where = "the installed diffusers 0.42.1 package" if source == "wheel" else "a diffusers repository checkout"
    judged = verdicts["TP"] + verdicts["FP"]
    share = f"{100 * verdicts['TP'] / judged:.0f}%" if judged else "n/a"
    lines = [
        f"<!-- precision:{key}:start -->",
        f"## {title}",
        "",
        f"{len(picked)} of {total} findings sampled from {where} ({files} files scanned). "
        f"**{verdicts['TP']} true positives, {verdicts['FP']} false positives ({share})"
        + (f", {verdicts['?']} not judged" if verdicts["?"] else "")
        + "**.",
        "",
        "| # | rule | where | scope | symbol | verdict | reason |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Findings by rule: " + (", ".join(f"{c} {n}" for c, n in sorted(by_code.items())) or "none") + ".",
        f"<!-- precision:{key}:end -->",
    ]
    return "\n".join(lines), verdicts


HEADER = """# Precision

Findings sampled at random (`random.Random({seed}).sample` over the group's findings ordered by
fingerprint) and judged true or false positive by reading the code; each reason is one line from that
reading. Targets: at least 34 of 40 for patterns 1, 2, 5, 6 and 7; at least 85% per pattern for 3, 4, 8,
9 and 10. Regenerate with `.venv/bin/python bench/precision.py --checkout PATH`; a finding whose
fingerprint changes must be judged again (`docs/precision-judgments.json`).
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkout", type=Path, help="a diffusers repository checkout, for pattern 10")
    parser.add_argument("--sample-only", action="store_true", help="print the unjudged sampled findings as JSON lines")
    args = parser.parse_args()
    judgments = json.loads(JUDGMENTS.read_text()) if JUDGMENTS.exists() else {}
    wheel = scan([installed_diffusers()])
    checkout = scan([args.checkout]) if args.checkout else None
    if args.sample_only:
        for group in GROUPS:
            report = wheel if group[4] == "wheel" else checkout
            if report is None:
                continue
            for f in sample(report.findings, group[2], group[3]):
                if f.fingerprint not in judgments:
                    print(json.dumps(f.to_dict()))
        return 0
    old = PAGE.read_text() if PAGE.exists() else ""
    sections = []
    for group in GROUPS:
        report = wheel if group[4] == "wheel" else checkout
        if report is None:
            kept = re.search(rf"<!-- precision:{group[0]}:start -->.*?<!-- precision:{group[0]}:end -->", old, re.S)
            if kept:
                sections.append(kept.group(0))
            continue
        text, verdicts = _section(group, report.findings, report.files, judgments)
        sections.append(text)
        print(f"{group[1]}: {verdicts['TP']} TP, {verdicts['FP']} FP, {verdicts['?']} unjudged")
    PAGE.write_text(HEADER.format(seed=SEED) + "\n" + "\n\n".join(sections) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
