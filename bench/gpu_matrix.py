"""The contract matrix on an accelerator: every covered pipeline of a diffusers checkout, built from its fast test
class, under fp32 and bf16, each with and without model CPU offload, plus the same contracts on the machine's CPU.

    python bench/gpu_matrix.py run --source CHECKOUT --jobs 12 --results matrix.jsonl   # on the GPU machine
    python bench/gpu_matrix.py record matrix.jsonl                                      # here: BENCHMARKS.md

`run` takes the pipelines that `docs/contracts-coverage.md` lists as covered (or those named), runs every
configuration with `--jobs` worker processes sharing the one GPU, and appends every event (one JSON line, tagged
with its configuration) to `--results`, then one `matrix` line with the versions and the wall time of each
configuration. `record` summarises that file: outcomes per configuration, the wall time, and the GPU-only
failures (a contract that failed on the accelerator but passed on the CPU for the same pipeline).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: name -> (device, dtype, offload); the CPU row is the baseline GPU-only failures are told from
CONFIGS = {
    "cpu fp32": ("cpu", None, False),
    "cuda fp32": ("cuda", None, False),
    "cuda bf16": ("cuda", "bf16", False),
    "cuda fp32 offload": ("cuda", None, True),
    "cuda bf16 offload": ("cuda", "bf16", True),
}
COVERAGE = ROOT / "docs" / "contracts-coverage.md"


def covered_pipelines(report: Path = COVERAGE) -> list[str]:
    """The pipelines the CPU coverage report lists as covered (its "Every pipeline" table)."""
    names = []
    for line in report.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\| (\w+) \| covered \|", line)
        if match:
            names.append(match.group(1))
    return names


def _events(checkout: Path, config: str, parts: list[list[str]], timeout_s: float) -> Iterator[dict]:
    """Every event of one configuration, from one worker stream per part."""
    from runners.coverage import parallel

    device, dtype, offload = CONFIGS[config]
    yield from parallel(parts, checkout, timeout_s, device=device, dtype=dtype, offload=offload)


def load_costs(path: Path) -> dict[str, float]:
    """Seconds each pipeline took in an earlier run (its `pipeline` events), the most of any configuration."""
    costs: dict[str, float] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        event = json.loads(line) if line.strip() else {}
        if event.get("event") == "pipeline":
            seconds = event.get("wall_s") or (240.0 if event.get("status") == "timeout" else 0.0)
            costs[event["pipeline"]] = max(costs.get(event["pipeline"], 0.0), seconds)
    return costs


def split(pipelines: list[str], jobs: int, costs: dict[str, float]) -> list[list[str]]:
    """One list per worker: the costliest pipeline first onto the least loaded worker (unknown ones cost the
    median), so no worker is left with several slow pipelines while the others idle."""
    known = sorted(costs.values())
    typical = known[len(known) // 2] if known else 1.0
    parts: list[list[str]] = [[] for _ in range(jobs)]
    loads = [0.0] * jobs
    for pipeline in sorted(pipelines, key=lambda name: -costs.get(name, typical)):
        worker = loads.index(min(loads))
        parts[worker].append(pipeline)
        loads[worker] += costs.get(pipeline, typical)
    return parts


def versions() -> dict:
    import torch
    import transformers

    found = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
             "transformers": transformers.__version__}  # fmt: skip
    if torch.cuda.is_available():
        found["gpu"] = torch.cuda.get_device_name(0)
    return found


def run(args: argparse.Namespace) -> int:
    import torch

    pipelines = args.pipelines or covered_pipelines()
    configs = args.config or list(CONFIGS)
    if any(CONFIGS[c][0] == "cuda" for c in configs) and not torch.cuda.is_available():
        print("no CUDA device: run the cpu configuration alone (--config 'cpu fp32')", file=sys.stderr)
        return 2
    costs = load_costs(args.costs) if args.costs else {}
    with args.results.open("a", encoding="utf-8") as log:

        def write(event: dict) -> None:
            log.write(json.dumps(event) + "\n")
            log.flush()

        # written first, and each configuration's wall time as it ends: a run cut off at a limit still says both
        write({"event": "matrix", "versions": versions(), "jobs": args.jobs, "cpus": os.cpu_count(),
               "pipelines": len(pipelines)})  # fmt: skip
        for config in configs:
            started = time.monotonic()
            for event in _events(args.source, config, split(pipelines, args.jobs, costs), args.timeout):
                write({**event, "config": config})
            wall = time.monotonic() - started
            write({"event": "config-done", "config": config, "wall_s": wall})
            print(f"{config}: {wall:.0f} s", flush=True)
    return 0


def summarise(lines: list[dict]) -> dict:
    """Outcomes per configuration, and GPU-only failures: failed on an accelerator, passed on the CPU."""
    matrix = next((e for e in reversed(lines) if e["event"] == "matrix"), {})
    walls = {e["config"]: e["wall_s"] for e in lines if e["event"] == "config-done"}
    outcomes: dict[str, Counter] = defaultdict(Counter)
    statuses: dict[str, Counter] = defaultdict(Counter)
    results: dict[tuple[str, str, str], dict] = {}
    for event in lines:
        config = event.get("config")
        if event["event"] == "result":
            outcomes[config][event["outcome"]] += 1
            results[(config, event["pipeline"], event["contract"])] = event
        elif event["event"] == "pipeline":
            statuses[config][event["status"]] += 1
    gpu_only = []
    for (config, pipeline, contract), event in sorted(results.items()):
        if not config.startswith("cuda") or event["outcome"] not in ("failed", "error"):
            continue
        on_cpu = results.get(("cpu fp32", pipeline, contract))
        if on_cpu is not None and on_cpu["outcome"] == "passed":
            gpu_only.append({"config": config, "pipeline": pipeline, "contract": contract,
                             "outcome": event["outcome"], "message": event.get("message", "")})  # fmt: skip
    return {"matrix": matrix, "walls": walls, "outcomes": outcomes, "statuses": statuses, "gpu_only": gpu_only}


def render(summary: dict) -> str:
    matrix = summary["matrix"]
    versions = matrix.get("versions", {})
    walls = summary["walls"]
    lines = [
        "## Contracts on an H100: fp32/bf16 x model CPU offload over every covered pipeline",
        "",
        f"{matrix.get('pipelines', '?')} pipelines (those `docs/contracts-coverage.md` lists as covered), each built "
        "from its fast test class of the checkout, every contract run under each configuration; "
        f"{matrix.get('jobs', '?')} worker processes share the one GPU ({matrix.get('cpus', '?')} CPU cores). "
        f"{versions.get('gpu', 'GPU ?')}, torch {versions.get('torch', '?')} (CUDA {versions.get('cuda', '?')}), "
        f"transformers {versions.get('transformers', '?')}, Python {versions.get('python', '?')}.",
        "",
        "| configuration | wall s | pipelines built | not built (crash, timeout, build error) | passed | failed | skipped "
        "| error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    cut_off = []
    for config in CONFIGS:
        if config not in summary["outcomes"] and config not in walls:
            continue
        counts, statuses = summary["outcomes"][config], summary["statuses"][config]
        wall = f"{walls[config]:.0f}" if config in walls else "cut off"
        if config not in walls:
            cut_off.append(config)
        lines.append(
            f"| {config} | {wall} | {statuses['built']} | {sum(statuses.values()) - statuses['built']} | "
            f"{counts['passed']} | {counts['failed']} | {counts['skipped']} | {counts['error']} |"
        )
    gpu = [c for c in CONFIGS if c.startswith("cuda")]
    if all(c in walls for c in gpu):
        total = sum(walls[c] for c in gpu)
        verdict = "met" if total < 600 else "NOT met"
        lines += ["", f"The four accelerator configurations together: **{total:.0f} s** (target under 10 minutes: "
                  f"{verdict}).", ""]  # fmt: skip
    else:
        missing = ", ".join(c for c in gpu if c not in walls)
        lines += ["", f"Target (the four accelerator configurations in under 10 minutes): **NOT met**: not finished "
                  f"({missing}); a configuration marked cut off ran until the command's time limit, its row counts "
                  "what finished by then.", ""]  # fmt: skip
    gpu_only = summary["gpu_only"]
    lines.append(f"GPU-only failures (failed or errored on the accelerator, passed on the CPU): **{len(gpu_only)}**.")
    if gpu_only:
        lines += ["", "| configuration | pipeline | contract | message |", "|---|---|---|---|"]
        for row in gpu_only:
            message = " ".join(row["message"].split()).replace("|", "\\|")[:200]
            lines.append(f"| {row['config']} | {row['pipeline']} | {row['contract']} | {message} |")
    if summary["matrix"].get("note"):
        lines += ["", f"Note: {summary['matrix']['note']}."]
    return "\n".join(lines)


def record(args: argparse.Namespace) -> int:
    from bench._record import record as write

    lines = [json.loads(line) for path in args.results for line in path.read_text(encoding="utf-8").splitlines()
             if line.strip()]  # fmt: skip
    text = render(summarise(lines))
    print(text)
    if args.write:
        names = " ".join(str(path) for path in args.results)
        write("gpu-matrix", f"python bench/gpu_matrix.py record {names} --write", text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    go = verbs.add_parser("run", help="run the matrix (on the machine with the GPU)")
    go.add_argument("--source", type=Path, required=True, help="a diffusers checkout (src/ and tests/)")
    go.add_argument("--results", type=Path, required=True, help="JSON lines, appended")
    go.add_argument("--jobs", type=int, default=8, help="worker processes per configuration (default: 8)")
    go.add_argument("--timeout", type=float, default=240.0, help="seconds per pipeline (default: 240)")
    go.add_argument("--costs", type=Path, help="an earlier results file: its times balance the workers")
    go.add_argument("--config", action="append", choices=list(CONFIGS), help="only these (default: all)")
    go.add_argument("pipelines", nargs="*", help="only these (default: the covered ones)")
    summary = verbs.add_parser("record", help="summarise a results file")
    summary.add_argument("results", type=Path, nargs="+", help="results files of one matrix (several calls)")
    summary.add_argument("--write", action="store_true", help="replace the section in BENCHMARKS.md")
    args = parser.parse_args(argv)
    return run(args) if args.verb == "run" else record(args)


if __name__ == "__main__":
    sys.exit(main())
