"""Full scan of the installed diffusers against libcst parse-only time of the same files.

Target (issue: rule engine): the scan takes at most 1.5x the parse-only time, on a 2-core machine.
Run: `.venv/bin/python bench/scan.py [--repeat N] [--record]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import libcst as cst


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analyzers.core import all_rules  # noqa: E402
from analyzers.scan import discover, installed_diffusers, scan  # noqa: E402
from bench._record import record  # noqa: E402


def parse_only(files: list[Path]) -> float:
    start = time.perf_counter()
    for file in files:
        try:
            cst.parse_module(file.read_text(encoding="utf-8"))
        except cst.ParserSyntaxError:
            pass
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--record", action="store_true", help="write the result into BENCHMARKS.md")
    args = parser.parse_args()
    root = installed_diffusers()
    files = [file for _, file in discover([root])]
    lines = sum(len(f.read_text(encoding="utf-8").splitlines()) for f in files)
    parse_times, scan_times, scan_1_times, scan_all_times = [], [], [], []
    findings = errors = 0
    for _ in range(args.repeat):
        parse_times.append(parse_only(files))
        start = time.perf_counter()
        report = scan([root])
        scan_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        scan([root], jobs=1)
        scan_1_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        scan([root], include_frozen=True)
        scan_all_times.append(time.perf_counter() - start)
        findings, errors = len(report.findings), len(report.errors)
    p, s, s1 = statistics.median(parse_times), statistics.median(scan_times), statistics.median(scan_1_times)
    sa = statistics.median(scan_all_times)
    body = (
        "## Full scan of the installed diffusers vs libcst parse-only\n\n"
        f"{len(files)} files, {lines:,} lines (diffusers at `{root}`), {len(all_rules())} rules; median of {args.repeat}.\n\n"
        "| what | seconds | ratio to parse-only |\n|---|---|---|\n"
        f"| `libcst.parse_module` of every file, one process | {p:.1f} | 1.00 |\n"
        f"| `drbot analyze` scan, all cores | {s:.1f} | {s / p:.2f} |\n"
        f"| `drbot analyze` scan, `--jobs 1` | {s1:.1f} | {s1 / p:.2f} |\n"
        f"| `drbot analyze --include-deprecated` (also the {report.skipped} frozen files), all cores | {sa:.1f} | "
        f"{sa / p:.2f} |\n\n"
        "The scan parses only files that some rule's text prefilter accepts, and skips diffusers' frozen "
        "`pipelines/deprecated/` unless asked; the parse-only baseline parses every file.\n\n"
        f"Target: at most 1.5x parse-only. Result: {'met' if s <= 1.5 * p else 'NOT met'} ({s / p:.2f}x). "
        f"The scan reported {findings} findings and {errors} errors."
    )
    print(body)
    if args.record:
        record("scan", "python bench/scan.py --record", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
