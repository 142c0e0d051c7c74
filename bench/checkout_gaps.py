"""Run the pattern 10 rules on a diffusers repository checkout and report the known test gaps of #13656.

The checkout stays outside this project (nothing of it is committed): clone huggingface/diffusers anywhere
and pass its root. Run: `.venv/bin/python bench/checkout_gaps.py PATH [--record]`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analyzers.core import all_rules  # noqa: E402
from analyzers.scan import scan  # noqa: E402
from bench._record import record  # noqa: E402


#: the test gaps the meta issue and its review items name: (test file, what the review found)
KNOWN_GAPS = [
    ("tests/pipelines/consisid/test_consisid.py", "integration test compares with `torch.randn` (placeholder)"),
    ("tests/pipelines/mochi/test_mochi.py", "integration and fast tests compare with `torch.randn`"),
    ("tests/pipelines/hunyuandit/test_hunyuan_dit.py", "skipped offload tests, `TODO(YiYi)` bodies of `pass`"),
    ("tests/pipelines/shap_e/test_shap_e.py", "sequential offload test skipped (known accelerate KeyError)"),
    ("tests/pipelines/allegro/test_allegro.py", "save/load, device_map, tiling tests skipped (not implemented)"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkout", type=Path)
    parser.add_argument("--record", action="store_true", help="write the result into BENCHMARKS.md")
    args = parser.parse_args()
    rules = [rule for rule in all_rules() if rule.pattern == 10]
    if not rules:
        print("no pattern 10 rules", file=sys.stderr)
        return 2
    start = time.perf_counter()
    report = scan([args.checkout], rules)
    seconds = time.perf_counter() - start
    head = subprocess.run(
        ["git", "-C", str(args.checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    by_path: dict[str, list] = {}
    for finding in report.findings:
        by_path.setdefault(finding.path, []).append(finding)
    lines = [
        "## Pattern 10 on a diffusers checkout",
        "",
        f"Checkout at commit `{head.stdout.strip() or '?'}`; rules {', '.join(r.code for r in rules)}; "
        f"{report.files} files in {seconds:.1f} s; {len(report.findings)} findings "
        f"({', '.join(f'{c} {n}' for c, n in sorted(Counter(f.code for f in report.findings).items()))}), "
        f"{len(report.errors)} errors.",
        "",
        "| known gap (#13656 review) | test file | drbot findings there |",
        "|---|---|---|",
    ]
    for path, what in KNOWN_GAPS:
        found = by_path.get(path, [])
        summary = ", ".join(sorted({f"{f.code} `{f.symbol}`" for f in found})) or "none"
        lines.append(f"| {what} | `{path}` | {summary} |")
    body = "\n".join(lines)
    print(body)
    if args.record:
        record("checkout", "python bench/checkout_gaps.py PATH --record", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
