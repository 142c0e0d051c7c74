"""`drbot fix` on a copy of the whole installed diffusers package: its time (cold cache, then warm on a fresh copy,
then again on the fixed copy, which must change nothing), and what it did: per rule with a fix, the findings before
and after; every file still compiling; the findings any rule gained (by rule, path, scope and symbol).

Run: `.venv/bin/python bench/fix.py [--record]`. The package is copied to a temporary directory (the copies are
fixed there) and the cache lives there too, so nothing outside it is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analyzers.core import all_rules  # noqa: E402
from analyzers.scan import installed_diffusers  # noqa: E402
from bench._record import record  # noqa: E402


def drbot(cache_dir: str, *args: str) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "drbot", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "DRBOT_CACHE_DIR": cache_dir},
    )
    if result.returncode not in (0, 1):
        raise SystemExit(f"drbot {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return time.perf_counter() - start, result


def findings(cache_dir: str, tree: Path) -> list[dict]:
    _, result = drbot(cache_dir, "analyze", str(tree), "--format", "json")
    return json.loads(result.stdout)["findings"]


def copy(tmp: str, name: str) -> Path:
    tree = Path(tmp, name, "diffusers")
    shutil.copytree(installed_diffusers(), tree, ignore=shutil.ignore_patterns("__pycache__"))
    return tree


def not_compiling(tree: Path) -> list[str]:
    bad = []
    for file in sorted(tree.rglob("*.py")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compile(file.read_text(encoding="utf-8"), str(file), "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as error:
            bad.append(f"{file.relative_to(tree.parent)}: {error}")
    return bad


def texts(tree: Path) -> dict[str, str]:
    return {str(f.relative_to(tree)): f.read_text(encoding="utf-8") for f in sorted(tree.rglob("*.py"))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--record", action="store_true", help="write the result into BENCHMARKS.md")
    args = parser.parse_args()
    load_before = os.getloadavg()
    fixable = sorted(rule.code for rule in all_rules() if rule.fixable and not rule.DRIFT_FIX)
    with tempfile.TemporaryDirectory(prefix="drbot-bench-fix-") as tmp:
        cold_cache, warm_cache = str(Path(tmp, "cache-cold")), str(Path(tmp, "cache-warm"))
        original = copy(tmp, "original")
        files = len(list(original.rglob("*.py")))
        cold_tree = copy(tmp, "cold")
        cold, cold_run = drbot(cold_cache, "fix", str(cold_tree))
        warm_tree = copy(tmp, "warm")
        drbot(warm_cache, "analyze", str(original), "--format", "json")  # fills the cache for the unfixed texts
        warm, warm_run = drbot(warm_cache, "fix", str(warm_tree))
        assert texts(cold_tree) == texts(warm_tree), "a cold and a warm run fixed differently"
        fixed_texts = texts(warm_tree)
        again, again_run = drbot(warm_cache, "fix", str(warm_tree))
        idempotent = texts(warm_tree) == fixed_texts
        before, after = findings(warm_cache, original), findings(warm_cache, warm_tree)
        changed = sum(1 for path, text in texts(original).items() if fixed_texts[path] != text)
        broken = not_compiling(warm_tree)
    load_after = os.getloadavg()

    count_before = Counter(f["code"] for f in before)
    count_after = Counter(f["code"] for f in after)
    with_fix = Counter(f["code"] for f in before if "fix" in f)
    rows = "\n".join(
        f"| {code} | {count_before[code]} | {with_fix[code]} | {count_after[code]} | "
        f"{f'{1 - count_after[code] / count_before[code]:.0%}' if count_before[code] else 'none to fix'} |"
        for code in fixable
    )
    key = lambda f: (f["code"], f["path"], f["scope"], f["symbol"])  # noqa: E731
    gained = Counter(map(key, after)) - Counter(map(key, before))
    summary = cold_run.stderr.strip().splitlines()[0] if cold_run.stderr.strip() else ""
    body = (
        "## `drbot fix` on the whole diffusers package\n\n"
        f"A copy of the installed diffusers ({files} files), all {len(all_rules())} rules run, the fixes of "
        f"{', '.join(fixable)} applied (and DRB801's, for `# Copied from` copies the run put out of step). Whole "
        "command (`drbot fix DIR`, interpreter and workers included), all cores:\n\n"
        "| run | wall s |\n|---|---|\n"
        f"| cold (empty cache) | {cold:.1f} |\n"
        f"| warm (the cache holds the unfixed package's results), a fresh copy | {warm:.1f} |\n"
        f"| again on the fixed copy (must change nothing) | {again:.1f} |\n\n"
        f"`{summary}` (the count includes the copies DRB801 synced with a source the run fixed); {changed} files "
        "changed. The cold and the warm run fixed identically.\n\n"
        "| rule | findings before | with a fix | after | removed |\n|---|---|---|---|---|\n"
        f"{rows}\n\n"
        f"All findings: {len(before)} before, {len(after)} after. Files that no longer compile: {len(broken)}. "
        f"Findings gained by any rule (rule, path, scope, symbol): {sum(gained.values())}"
        + (f" ({', '.join(f'{c} {p} {s}' for (c, p, s, _) in gained)})" if gained else "")
        + f". A second `drbot fix` changed {'nothing' if idempotent else 'SOMETHING (not idempotent)'} "
        f"(exit status {again_run.returncode}: {'findings without a fix remain' if again_run.returncode else 'clean'}).\n\n"
        f"Load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (other work shares this machine)."
    )
    print(body)
    for line in broken:
        print("does not compile:", line, file=sys.stderr)
    if args.record:
        record("fix", "python bench/fix.py --record", body)
    return 0 if not broken and not gained and idempotent else 1


if __name__ == "__main__":
    sys.exit(main())
