"""Time what the contract-job sandbox adds to a job's start: `python -c pass` and `import torch, diffusers`, bare
(a plain subprocess) and sandboxed (runners.sandbox.Sandbox.run, cgroup set-up and removal included), the median of
N interleaved runs each, and record it in BENCHMARKS.md.

Run: `.venv/bin/python bench/sandbox.py [--runs 10] [--record]` (as root, or with unprivileged user namespaces).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._record import record  # noqa: E402
from runners.sandbox import Limits, Sandbox, sandbox_env  # noqa: E402


TARGET_S = 1.0
CASES = [("`python -c pass`", "pass"), ('`python -c "import torch, diffusers"`', "import torch, diffusers")]


async def measure(sandbox: Sandbox, code: str, runs: int) -> tuple[list[float], list[float], int | None]:
    """Interleave bare and sandboxed runs (after one warm-up of each), so drift hits both alike."""
    env = sandbox_env({"OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    argv = [sys.executable, "-c", code]
    bare, boxed, peak = [], [], None
    empty = tempfile.mkdtemp(prefix="drbot-bench-")  # like the sandbox's fresh scratch: `-c` imports from the cwd
    for i in range(runs + 1):
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=empty, capture_output=True)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"bare run failed: {done.stderr.decode()[-2000:]}")
        if i:
            bare.append(elapsed)
        start = time.perf_counter()
        outcome = await sandbox.run(argv, env=env, wall_seconds=300)
        elapsed = time.perf_counter() - start
        if outcome.returncode != 0:
            raise SystemExit(f"sandboxed run failed: {outcome.text[-2000:]}")
        if i:
            boxed.append(elapsed)
            peak = max(peak or 0, outcome.peak_memory_bytes or 0) or None
    os.rmdir(empty)
    return bare, boxed, peak


async def whole_job(sandbox: Sandbox) -> tuple[float, float, int | None, int]:
    """One run of the real job (every tiny pipeline on CPU), bare and sandboxed: the limits' headroom."""
    from runners.tiny import factories

    pipelines = list(factories())
    argv = [sys.executable, "-m", "runners.job", "--pipelines", ",".join(pipelines)]
    env = sandbox_env({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                       "PYTHONDONTWRITEBYTECODE": "1"})  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True)
    bare = time.perf_counter() - start
    runners = str(ROOT / "runners")
    start = time.perf_counter()
    outcome = await sandbox.run(argv, ro_binds=[(runners, runners)], env=env, wall_seconds=1800)
    boxed = time.perf_counter() - start
    if done.returncode != 0 or outcome.returncode != 0:
        raise SystemExit(f"the job failed: {done.stderr.decode()[-1000:]} {outcome.text[-1000:]}")
    return bare, boxed, outcome.peak_memory_bytes, len(pipelines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    sandbox = Sandbox(Limits())
    start = time.perf_counter()
    sandbox.check()
    check_s = time.perf_counter() - start
    rows, worst = [], 0.0
    for label, code in CASES:
        bare, boxed, peak = asyncio.run(measure(sandbox, code, args.runs))
        overhead = statistics.median(boxed) - statistics.median(bare)
        worst = max(worst, overhead)
        peak_text = f"{peak / 2**20:.0f} MiB" if peak else "n/a"
        rows.append(
            f"| {label} | {statistics.median(bare):.3f} | {statistics.median(boxed):.3f} | {overhead:+.3f} "
            f"| {min(boxed):.3f}–{max(boxed):.3f} | {peak_text} |"
        )
    job_bare, job_boxed, job_peak, job_pipelines = asyncio.run(whole_job(sandbox))
    job_peak_text = f"{job_peak / 2**20:.0f} MiB" if job_peak else "n/a"
    lines = [
        "## Sandbox start-up cost per contract job",
        "",
        f"`runners.sandbox.Sandbox.run` against a plain subprocess, median of {args.runs} interleaved runs each "
        "(after one warm-up), wall seconds. Sandboxed includes making and removing the job's cgroups, the "
        "seccomp filter and the synthesized /etc.",
        "",
        f"Isolation measured: {sandbox.describe()}.",
        "",
        "| job | bare | sandboxed | overhead | sandboxed range | peak memory (cgroup) |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"The real job, `python -m runners.job` over all {job_pipelines} tiny pipelines on CPU, one run: {job_bare:.1f} s "
        f"bare, {job_boxed:.1f} s sandboxed, peak memory {job_peak_text} (the default `Limits.memory_bytes` is "
        f"{Limits().memory_bytes / 2**30:.0f} GiB).",
        "",
        f"One-time `Sandbox.check()` (host probe, one empty sandbox): {check_s:.3f} s. Target: at most {TARGET_S:.0f} s "
        f"of start-up overhead per job: {'met' if worst <= TARGET_S else 'MISSED'} (worst {worst:+.3f} s).",
    ]
    print("\n".join(lines))
    if args.record:
        record("sandbox", "python bench/sandbox.py --record", "\n".join(lines))
    return 0 if worst <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
