"""The full contract matrix on an accelerator: every pipeline with a tiny factory x every contract, in fp32 and
bf16, with and without model CPU offload; per-pipeline and total wall time and peak GPU memory.

On the GPU machine (its image has torch and transformers but no diffusers: bring the wheels along):
    pip install --no-deps --target /tmp/site .cache/wheels/*.whl
    PYTHONPATH=/tmp/site:. python bench/contracts_gpu.py --out $OUT/contracts_gpu.json
Back here: `.venv/bin/python bench/contracts_gpu.py --record FILE` writes the BENCHMARKS.md section.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIGS = [("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)]


def measure(out: Path) -> int:
    import torch

    from runners.cli import quiet
    from runners.suite import run_suite
    from runners.tiny import factories

    quiet()
    device = "cuda"
    start_all = time.perf_counter()
    rows = []
    for dtype, offload in CONFIGS:
        for pipeline in factories():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            results = run_suite([pipeline], None, device, dtype, offload=offload)
            torch.cuda.synchronize()
            rows.append({
                "pipeline": pipeline, "dtype": dtype, "offload": offload,
                "seconds": round(time.perf_counter() - start, 3),
                "peak_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
                "results": [r.to_dict() for r in results],
            })  # fmt: skip
            failed = [f"{r.contract}: {r.message[:120]}" for r in results if r.outcome in ("failed", "error")]
            print(f"{pipeline:34} {dtype} offload={offload!s:5} {rows[-1]['seconds']:6.2f}s "
                  f"{rows[-1]['peak_mib']:7.1f} MiB  {'; '.join(failed)}", flush=True)  # fmt: skip
    total = time.perf_counter() - start_all
    info = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "total_seconds": round(total, 1)}
    import diffusers
    import transformers

    info.update(diffusers=diffusers.__version__, transformers=transformers.__version__)
    out.write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    print(json.dumps(info))
    return 0


def record(path: Path) -> int:
    from bench._record import record as write

    data = json.loads(path.read_text())
    info, rows = data["info"], data["rows"]
    pipelines = sorted({r["pipeline"] for r in rows})
    lines = [
        "## Contract matrix on GPU",
        "",
        f"{info['device']}, torch {info['torch']}, diffusers {info['diffusers']}, transformers {info['transformers']}: "
        f"{len(pipelines)} pipelines x {len({x['contract'] for r in rows for x in r['results']})} contracts x "
        f"{{fp32, bf16}} x {{no offload, model CPU offload}} in **{info['total_seconds']:.0f} s** of wall time "
        "(target: under 5 minutes).",
        "",
        "| pipeline | fp32 s / MiB | bf16 s / MiB | fp32 offload s / MiB | bf16 offload s / MiB | failed contracts |",
        "|---|---|---|---|---|---|",
    ]
    for pipeline in pipelines:
        cells, failed = [], {}
        for dtype, offload in CONFIGS:
            row = next(
                r for r in rows if r["pipeline"] == pipeline and r["dtype"] == dtype and r["offload"] == offload
            )
            cells.append(f"{row['seconds']:.2f} / {row['peak_mib']:.0f}")
            for x in row["results"]:
                if x["outcome"] in ("failed", "error"):
                    failed.setdefault(x["contract"], []).append(f"{dtype}{' offload' if offload else ''}")
        described = [
            code if len(where) == len(CONFIGS) else f"{code} ({', '.join(where)})"
            for code, where in sorted(failed.items())
        ]
        lines.append(f"| `{pipeline}` | " + " | ".join(cells) + f" | {', '.join(described) or '-'} |")
    lines += [
        "",
        "Seconds include building each pipeline for every contract; MiB is peak GPU memory allocated. A failed contract",
        "listed without configurations failed in all four. Compare with `drbot contracts` on CPU (fp32) to tell",
        "GPU-only failures; see the issue note for this run's comparison.",
    ]
    write(
        "contracts-gpu", "python bench/contracts_gpu.py --out FILE (on the GPU), then --record FILE", "\n".join(lines)
    )
    print("\n".join(lines))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--record", type=Path)
    args = parser.parse_args()
    if args.record:
        return record(args.record)
    return measure(args.out or Path("contracts_gpu.json"))


if __name__ == "__main__":
    sys.exit(main())
