"""A real contract job on a GPU, bare and in the sandbox: does CUDA work there, and what does the sandbox cost?

Runs `python -m runners.job --pipelines P… --device cuda` (the runner's own subprocess) once as a plain subprocess
and once through `runners.sandbox.Sandbox` with the GPU passed through, N times each, interleaved; prints a
Markdown section and writes the raw numbers as JSON. Meant for a GPU host (the device tool's H100); the job needs
`diffusers` importable from `--site` (a directory shown read-only in the sandbox).

    python bench/sandbox_gpu.py --site /opt/site --out results.json [--runs 3] [--pipelines StableDiffusionPipeline,FluxPipeline]
    python bench/sandbox_gpu.py --record results.json      # write the section into BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._record import record  # noqa: E402


def job_argv(pipelines: str) -> list[str]:
    return [sys.executable, "-m", "runners.job", "--pipelines", pipelines, "--device", "cuda"]


def summarize(output: str) -> dict:
    rows = [json.loads(line)["result"] for line in output.splitlines() if line.startswith('{"result"')]
    return {
        "rows": len(rows),
        "outcomes": {k: sum(r["outcome"] == k for r in rows) for k in ("passed", "failed", "skipped", "error")},
        "done": '{"done": true}' in output,
    }


def bare(pipelines: str, site: str) -> dict:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{site}:{ROOT}", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HOME": "/tmp"}  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(job_argv(pipelines), env=env, capture_output=True, text=True, cwd="/tmp", timeout=900)
    return {"seconds": time.perf_counter() - start, "returncode": proc.returncode, **summarize(proc.stdout)}


def sandboxed(box, pipelines: str, site: str) -> dict:
    env = {"PYTHONPATH": f"{site}:{ROOT}", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    binds = [(site, site), (str(ROOT / "runners"), str(ROOT / "runners"))]
    start = time.perf_counter()
    outcome = asyncio.run(box.run(job_argv(pipelines), ro_binds=binds, env=env, wall_seconds=900))
    return {"seconds": time.perf_counter() - start, "returncode": outcome.returncode, "limit": outcome.limit,
            "peak_memory_mib": (outcome.peak_memory_bytes or 0) >> 20, "tail": outcome.text[-1500:],
            **summarize(outcome.text)}  # fmt: skip


def measure(args) -> dict:
    import torch

    from runners.sandbox import Limits, Sandbox

    box = Sandbox(Limits(), gpu=True)
    box.check()
    runs = {"bare": [], "sandboxed": []}
    for _ in range(args.runs):
        runs["bare"].append(bare(args.pipelines, args.site))
        runs["sandboxed"].append(sandboxed(box, args.pipelines, args.site))
    return {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "isolation": box.describe(),
            "pipelines": args.pipelines, "runs": runs}  # fmt: skip


def section(data: dict) -> str:
    bare_s = statistics.median(r["seconds"] for r in data["runs"]["bare"])
    box_s = statistics.median(r["seconds"] for r in data["runs"]["sandboxed"])
    first = data["runs"]["sandboxed"][0]
    lines = [
        "## A contract job on a GPU, bare and in the sandbox",
        "",
        f"`python -m runners.job --pipelines {data['pipelines']} --device cuda` on {data['device']} (torch "
        f"{data['torch']}), median of {len(data['runs']['bare'])} interleaved runs each, wall seconds including "
        "the interpreter's start and CUDA's initialisation.",
        "",
        f"Isolation: {data['isolation']}.",
        "",
        "| job | seconds | outcomes (passed/failed/skipped/error) | peak memory (cgroup) |",
        "|---|---|---|---|",
    ]
    for name, seconds in (("bare", bare_s), ("sandboxed", box_s)):
        run = data["runs"][name][0]
        o = run["outcomes"]
        peak = f"{run['peak_memory_mib']} MiB" if run.get("peak_memory_mib") else "—"
        lines.append(f"| {name} | {seconds:.2f} | {o['passed']}/{o['failed']}/{o['skipped']}/{o['error']} | {peak} |")
    same = all(
        b["outcomes"] == s["outcomes"] for b, s in zip(data["runs"]["bare"], data["runs"]["sandboxed"], strict=True)
    )
    lines += ["", f"Sandbox overhead: {box_s - bare_s:+.2f} s; outcomes {'identical' if same else 'DIFFER'} bare and "
              f"sandboxed; the sandboxed job finished: {first['done']} (limit hit: {first['limit']})."]  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", help="a directory holding diffusers (shown read-only in the sandbox)")
    parser.add_argument("--pipelines", default="StableDiffusionPipeline,FluxPipeline")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the raw measurement here (JSON)")
    parser.add_argument("--record", type=Path, help="a JSON written by --out: put its section into BENCHMARKS.md")
    args = parser.parse_args()
    if args.record:
        data = json.loads(args.record.read_text())
        text = section(data)
        command = "python bench/sandbox_gpu.py --site DIR --out FILE (on the device tool's GPU), then --record FILE"
        record("sandbox-gpu", command, text)
        print(text)
        return 0
    data = measure(args)
    if args.out:
        args.out.write_text(json.dumps(data, indent=2, default=str))
    print(section(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
