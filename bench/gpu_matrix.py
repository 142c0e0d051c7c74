"""The contract matrix on an accelerator: every covered pipeline of a diffusers checkout, built from its fast test
class, under fp32 and bf16, each with and without model CPU offload; the same contracts on a CPU are the baseline.

    python bench/gpu_matrix.py run --source CHECKOUT --jobs 16 --concurrent --mps --results gpu.jsonl # GPU machine
    python bench/gpu_matrix.py run --source CHECKOUT --jobs 2 --config 'cpu fp32' --results cpu.jsonl  # any machine
    python bench/gpu_matrix.py record gpu.jsonl cpu.jsonl --write                                      # BENCHMARKS.md

`run` takes the pipelines that `docs/contracts-coverage.md` lists as covered (or those named) and runs each
configuration (default: the four accelerator ones) with `--jobs` worker processes, cost-balanced by an earlier
run's times (`--costs`); `--concurrent` runs the configurations at once instead of one after another, `--jobs`
workers in all, shared out by what each configuration cost. Every event
is appended to `--results` as one JSON line tagged with its configuration: first a `matrix` line with the
versions, then each configuration's wall time as it ends. `--mps` starts a CUDA MPS daemon for the run: without
it the workers' CUDA contexts time-slice the GPU and a tiny pipeline's contract takes seconds instead of a tenth of
one. `record` summarises the files: outcomes per configuration, the wall time, and the GPU-only failures (a
contract that failed on the accelerator but passed on the CPU for the same pipeline)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
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


def load_costs(path: Path) -> dict[tuple[str | None, str], float]:
    """Seconds each pipeline took in an earlier run (its `pipeline` events), per configuration, and under
    `(None, pipeline)` the most of any configuration (for a configuration that run lacks)."""
    costs: dict[tuple[str | None, str], float] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        event = json.loads(line) if line.strip() else {}
        if event.get("event") == "pipeline":
            seconds = event.get("wall_s") or (240.0 if event.get("status") == "timeout" else 0.0)
            for key in ((event.get("config"), event["pipeline"]), (None, event["pipeline"])):
                costs[key] = max(costs.get(key, 0.0), seconds)
    return costs


def config_costs(costs: dict[tuple[str | None, str], float], config: str) -> dict[str, float]:
    """One configuration's costs: its own where the earlier run had it, else the most of any configuration."""
    found = {name: seconds for (where, name), seconds in costs.items() if where is None}
    found.update({name: seconds for (where, name), seconds in costs.items() if where == config})
    return found


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


@contextlib.contextmanager
def mps_daemon() -> Iterator[dict[str, str]]:
    """CUDA MPS for the run: the worker processes' kernels share the GPU instead of time-slicing it context by
    context (without it each contract of 14 workers took 5-23 s). Yields the environment the workers need."""
    folder = Path(tempfile.mkdtemp(prefix="drbot-mps-"))
    env = {"CUDA_MPS_PIPE_DIRECTORY": str(folder / "pipe"), "CUDA_MPS_LOG_DIRECTORY": str(folder / "log")}
    for path in env.values():
        Path(path).mkdir()
    control = {**os.environ, **env}
    subprocess.run(["nvidia-cuda-mps-control", "-d"], env=control, check=True)
    try:
        yield env
    finally:
        subprocess.run(["nvidia-cuda-mps-control"], input=b"quit\n", env=control, check=False)


def plan(pipelines: list[str], configs: list[str], jobs: int, costs: dict[tuple[str | None, str], float],
         shared: bool = False) -> list[tuple[str, list[str]]]:  # fmt: skip
    """(configuration, pipelines) for each worker stream, cost-balanced: `jobs` streams per configuration, or, when
    the configurations run at once (`shared`), `jobs` streams in all, given to each configuration in proportion to
    what its pipelines cost (at least one each)."""
    per_config = {config: config_costs(costs, config) for config in configs}
    if shared and len(configs) > 1:
        totals = {c: sum(per_config[c].get(p, 1.0) for p in pipelines) for c in configs}
        workers = {c: 1 for c in configs}
        for _ in range(max(0, jobs - len(configs))):  # each next worker to the configuration that most needs one
            neediest = max(configs, key=lambda c: totals[c] / workers[c])
            workers[neediest] += 1
    else:
        workers = {c: jobs for c in configs}
    return [(c, part) for c in configs for part in split(pipelines, workers[c], per_config[c]) if part]


def run(args: argparse.Namespace) -> int:
    import torch

    from runners.coverage import merged
    from runners.standins import populate

    pipelines = args.pipelines or covered_pipelines()
    configs = args.config or [c for c in CONFIGS if CONFIGS[c][0] == "cuda"]
    if any(CONFIGS[c][0] == "cuda" for c in configs) and not torch.cuda.is_available():
        print("no CUDA device: run the cpu configuration alone (--config 'cpu fp32')", file=sys.stderr)
        return 2
    costs = load_costs(args.costs) if args.costs else {}
    populate()  # once, before the workers: each worker stream would otherwise write the same stand-ins at once
    with contextlib.ExitStack() as stack, args.results.open("a", encoding="utf-8") as log:
        if args.mps:
            os.environ.update(stack.enter_context(mps_daemon()))  # the workers inherit it

        def write(event: dict) -> None:
            log.write(json.dumps(event) + "\n")
            log.flush()

        # written first, and each configuration's wall time as it ends: a run cut off at a limit still says both
        write({"event": "matrix", "versions": versions(), "jobs": args.jobs, "cpus": os.cpu_count(),
               "pipelines": len(pipelines), "concurrent": args.concurrent, "mps": args.mps})  # fmt: skip
        batches = [configs] if args.concurrent else [[config] for config in configs]
        for batch in batches:
            started = time.monotonic()
            streams = plan(pipelines, batch, args.jobs, costs, shared=args.concurrent)
            left = Counter(config for config, _ in streams)
            for event in merged([functools.partial(_tagged, args.source, config, part, args.timeout)
                                 for config, part in streams]):  # fmt: skip
                if event["event"] == "stream-done":
                    left[event["config"]] -= 1
                    if not left[event["config"]]:
                        wall = time.monotonic() - started
                        write({"event": "config-done", "config": event["config"], "wall_s": wall})
                        print(f"{event['config']}: {wall:.0f} s", flush=True)
                    continue
                write(event)
            if args.concurrent:
                write({"event": "matrix-done", "configs": batch, "wall_s": time.monotonic() - started})
    return 0


def _tagged(checkout: Path, config: str, part: list[str], timeout_s: float) -> Iterator[dict]:
    """One worker stream's events, tagged with its configuration, then a `stream-done` event."""
    from runners.checkout import stream

    device, dtype, offload = CONFIGS[config]
    for event in stream(checkout, part, timeout_s=timeout_s, device=device, dtype=dtype, offload=offload):
        yield {**event, "config": config}
    yield {"event": "stream-done", "config": config}


def summarise(lines: list[dict]) -> dict:
    """Outcomes per configuration, and GPU-only failures: failed on an accelerator, passed on the CPU."""
    matrices = [e for e in lines if e["event"] == "matrix"]  # the accelerator's run names the hardware
    matrix = next(
        (e for e in reversed(matrices) if e.get("versions", {}).get("gpu")), matrices[-1] if matrices else {}
    )
    walls = {e["config"]: e["wall_s"] for e in lines if e["event"] == "config-done"}
    together = next((e["wall_s"] for e in reversed(lines) if e["event"] == "matrix-done"), None)
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
    return {
        "matrix": matrix,
        "walls": walls,
        "together": together,
        "outcomes": outcomes,
        "statuses": statuses,
        "gpu_only": gpu_only,
    }


def render(summary: dict) -> str:
    matrix = summary["matrix"]
    versions = matrix.get("versions", {})
    walls = summary["walls"]
    lines = [
        "## Contracts on an H100: fp32/bf16 x model CPU offload over every covered pipeline",
        "",
        f"{matrix.get('pipelines', '?')} pipelines (those `docs/contracts-coverage.md` lists as covered), each built "
        "from its fast test class of the checkout, every contract run under each configuration; "
        f"{matrix.get('jobs', '?')} worker processes "
        f"{'in all, shared out among the configurations,' if matrix.get('concurrent') else 'per configuration'} "
        "share the one GPU "
        f"({matrix.get('cpus', '?')} CPU cores{', CUDA MPS' if matrix.get('mps') else ''}). "
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
        concurrent = summary["together"] is not None
        total = summary["together"] if concurrent else sum(walls[c] for c in gpu)
        how = "run at once, each row's wall time counted from the common start" if concurrent else "one after another"
        verdict = "met" if total < 600 else "NOT met"
        lines += ["", f"The four accelerator configurations together ({how}): **{total:.0f} s** (target under 10 "
                  f"minutes: {verdict}).", ""]  # fmt: skip
    else:
        missing = ", ".join(c for c in gpu if c not in walls)
        lines += ["", f"Target (the four accelerator configurations in under 10 minutes): **NOT met**: not finished "
                  f"({missing}); a configuration marked cut off ran until the command's time limit, its row counts "
                  "what finished by then.", ""]  # fmt: skip
    gpu_only = summary["gpu_only"]
    lines.append(f"GPU-only failures (failed or errored on the accelerator, passed on the CPU): **{len(gpu_only)}**.")
    if gpu_only:
        grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
        for row in gpu_only:
            grouped[(row["pipeline"], row["contract"])].append(row)
        lines += [
            "",
            "| pipeline | contract | configurations | message (the first configuration's) |",
            "|---|---|---|---|",
        ]
        for (pipeline, contract), rows in sorted(grouped.items()):
            configs = ", ".join(c for c in CONFIGS if any(r["config"] == c for r in rows))
            message = " ".join(rows[0]["message"].split()).replace("|", "\\|")[:200]
            lines.append(f"| {pipeline} | {contract} | {configs} | {message} |")
    note = summary.get("note") or summary["matrix"].get("note")
    if note:
        lines += ["", f"Note: {note.rstrip('.')}."]
    return "\n".join(lines)


def record(args: argparse.Namespace) -> int:
    from bench._record import record as write

    lines = [json.loads(line) for path in args.results for line in path.read_text(encoding="utf-8").splitlines()
             if line.strip()]  # fmt: skip
    summary = summarise(lines)
    summary["note"] = args.note
    text = render(summary)
    print(text)
    if args.write:
        names = " ".join(str(path) for path in args.results)
        write("gpu-matrix", f"python bench/gpu_matrix.py record {names} --write --note TEXT", text)
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
    go.add_argument(
        "--config",
        action="append",
        choices=list(CONFIGS),
        help="only these (default: the four accelerator configurations)",
    )
    go.add_argument(
        "--concurrent",
        action="store_true",
        help="run the configurations at once, --jobs workers in all (default: one after another, --jobs each)",
    )
    go.add_argument("--mps", action="store_true", help="start a CUDA MPS daemon for the run (and stop it after)")
    go.add_argument("pipelines", nargs="*", help="only these (default: the covered ones)")
    summary = verbs.add_parser("record", help="summarise a results file")
    summary.add_argument("results", type=Path, nargs="+", help="results files of one matrix (several calls)")
    summary.add_argument("--write", action="store_true", help="replace the section in BENCHMARKS.md")
    summary.add_argument("--note", help="what the numbers alone do not say (printed under the table)")
    args = parser.parse_args(argv)
    return run(args) if args.verb == "run" else record(args)


if __name__ == "__main__":
    sys.exit(main())
