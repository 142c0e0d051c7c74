"""The pattern dashboard over several diffusers releases: build it with `drbot dashboard`, then check that data.json's
per-pattern counts equal `drbot analyze --format json` on each release, and time both.

    python bench/dashboard.py [--record] [--out DIR] [--release 0.36.0 --release 0.40.0]

Releases come from PyPI wheels unpacked by bench/releases.py (`release(version)`), oldest first, then the installed
(pinned) diffusers as the last. Scans go through the result cache, as the command line's do.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _record import record  # noqa: E402
from releases import release  # noqa: E402

from analyzers.patterns import PATTERNS  # noqa: E402
from analyzers.scan import installed_diffusers  # noqa: E402


def _drbot(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drbot", *args], cwd=ROOT, capture_output=True, text=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", action="append", default=None, help="older releases (default: 0.36.0, 0.40.0)")
    parser.add_argument("--out", type=Path, default=ROOT / ".cache" / "dashboard", help="the site's directory")
    parser.add_argument("--record", action="store_true", help="write the result into BENCHMARKS.md")
    args = parser.parse_args()
    installed = installed_diffusers()
    pinned = next(installed.parent.glob("diffusers-*.dist-info")).name.removesuffix(".dist-info").split("-")[1]
    releases = [(version, release(version)) for version in args.release or ("0.36.0", "0.40.0")]
    releases.append((pinned, installed))

    start = time.perf_counter()
    built = _drbot("dashboard", "--out", str(args.out), *(f"{name}={path}" for name, path in releases))
    build_s = time.perf_counter() - start
    if built.returncode != 0:
        print(built.stderr, file=sys.stderr)
        return 1
    data = json.loads((args.out / "data.json").read_text())

    rows, mismatches, analyze_s = [], [], 0.0
    for name, path in releases:
        start = time.perf_counter()
        analyzed = _drbot("analyze", str(path), "--format", "json")
        analyze_s += time.perf_counter() - start
        expected = Counter(f["pattern"] for f in json.loads(analyzed.stdout)["findings"])
        totals = {t["pattern"]: t["count"] for t in data["totals"] if t["release"] == name}
        cells: Counter[int] = Counter()
        for cell in data["cells"]:
            if cell["release"] == name:
                cells[cell["pattern"]] += cell["count"]
        for pattern in sorted(set(PATTERNS) | set(expected)):
            if not (totals.get(pattern, 0) == cells[pattern] == expected[pattern]):
                mismatches.append(f"{name} P{pattern}: data.json {totals.get(pattern, 0)}/{cells[pattern]}, "
                                  f"analyze {expected[pattern]}")  # fmt: skip
        rows.append((name, [expected[p] for p in sorted(PATTERNS)], sum(expected.values())))

    head = "| release | " + " | ".join(f"P{p}" for p in sorted(PATTERNS)) + " | all |"
    table = [head, "|---" * (len(PATTERNS) + 2) + "|"]
    table += [f"| {name} | " + " | ".join(map(str, counts)) + f" | {total} |" for name, counts, total in rows]
    families = len(data["families"])
    # the rules that ran: a working tree with uncommitted rule edits counts differently from its commit
    tree = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
    body = "\n".join([
        "## The pattern dashboard over diffusers releases",
        "",
        f"`drbot dashboard` over {', '.join(name for name, _ in releases)} (PyPI wheels, then the installed pinned "
        f"release): {build_s:.1f} s to scan all and write the site; `drbot analyze --format json` on each, "
        f"{analyze_s:.1f} s in all (the result cache warm by then). Per-pattern findings, each equal in "
        "data.json's `totals`, the sum of its `cells`, and `drbot analyze`:",
        "",
        *table,
        "",
        f"Mismatches: {len(mismatches)}{': ' + '; '.join(mismatches) if mismatches else ''}. Families in "
        f"{releases[-1][0]}: {families}; new since {releases[-2][0]}: {len(data['new'])}, fixed: "
        f"{len(data['fixed'])}. The wheels hold no `tests/`, so pattern 10 (test coverage) reads 0. drbot at "
        f"`{tree.stdout.strip() or 'unknown'}`.",
    ])  # fmt: skip
    print(body)
    if args.record:
        record("dashboard", "python bench/dashboard.py --record", body)
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
