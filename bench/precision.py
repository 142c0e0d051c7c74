"""Sample 40 findings of the full diffusers 0.42.1 scan (seeded) and write docs/precision.md with their verdicts.

Verdicts live in docs/precision-judgments.json ({fingerprint: {"verdict": "TP"|"FP", "reason": "..."}}), each
judged by reading the code. Run: `.venv/bin/python bench/precision.py [--sample-only]`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analyzers.scan import installed_diffusers, scan  # noqa: E402


SEED = 13656
SIZE = 40
JUDGMENTS = ROOT / "docs" / "precision-judgments.json"
PAGE = ROOT / "docs" / "precision.md"


def sample(findings):
    ordered = sorted(findings, key=lambda f: f.fingerprint)
    return random.Random(SEED).sample(ordered, min(SIZE, len(ordered)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sample-only", action="store_true", help="print the sample as JSON lines and stop")
    args = parser.parse_args()
    report = scan([installed_diffusers()])
    picked = sample(report.findings)
    if args.sample_only:
        for f in picked:
            print(json.dumps(f.to_dict()))
        return 0
    judgments = json.loads(JUDGMENTS.read_text()) if JUDGMENTS.exists() else {}
    verdicts = Counter()
    rows = []
    for i, f in enumerate(picked, start=1):
        judged = judgments.get(f.fingerprint, {"verdict": "?", "reason": "not judged yet"})
        verdicts[judged["verdict"]] += 1
        rows.append(
            f"| {i} | {f.code} | `{f.path}:{f.line}` | `{f.scope}` | `{f.symbol}` | **{judged['verdict']}** | "
            f"{judged['reason'].replace('|', '/')} |"
        )
    by_code = Counter(f.code for f in report.findings)
    page = [
        "# Precision on diffusers 0.42.1",
        "",
        f"{SIZE} findings sampled at random (`random.Random({SEED}).sample`, findings ordered by fingerprint) from the "
        f"full scan of the installed diffusers 0.42.1 package: {len(report.findings)} findings in {report.files} files, "
        f"{len(report.errors)} errors. Each was judged by reading the code; the reason is one line from that reading.",
        "",
        f"**Result: {verdicts['TP']} true positives, {verdicts['FP']} false positives"
        + (f", {verdicts['?']} not judged" if verdicts["?"] else "")
        + f" (target: at least 34 of {SIZE}).**",
        "",
        "| # | rule | where | scope | symbol | verdict | reason |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Findings of the whole scan by rule: " + ", ".join(f"{code} {n}" for code, n in sorted(by_code.items())) + ".",
        "",
        "Regenerate: `.venv/bin/python bench/precision.py` (verdicts in `docs/precision-judgments.json`, keyed by "
        "fingerprint; a finding whose fingerprint changes must be judged again).",
    ]
    PAGE.write_text("\n".join(page) + "\n")
    print(f"{verdicts['TP']} TP, {verdicts['FP']} FP, {verdicts['?']} unjudged -> {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
