"""bench/gpu_matrix.py's planning and summary: what decides whether the H100 matrix fits its 10 minutes, and what
counts as a GPU-only failure."""

from __future__ import annotations

import json

from bench.gpu_matrix import load_costs, plan, render, summarise
from runners.coverage import merged


def _costs(tmp_path, rows):
    path = tmp_path / "costs.jsonl"
    path.write_text("".join(json.dumps({"event": "pipeline", "status": "built", **row}) + "\n" for row in rows))
    return load_costs(path)


def test_configurations_run_at_once_share_the_workers_by_what_they_cost(tmp_path):
    pipelines = [f"P{i}" for i in range(12)]
    costs = _costs(
        tmp_path,
        [{"pipeline": p, "config": "cuda fp32", "wall_s": 30.0} for p in pipelines]
        + [{"pipeline": p, "config": "cuda bf16", "wall_s": 10.0} for p in pipelines],
    )
    streams = plan(pipelines, ["cuda fp32", "cuda bf16"], 8, costs, shared=True)
    workers = {c: sum(1 for config, _ in streams if config == c) for c in ("cuda fp32", "cuda bf16")}
    assert workers == {"cuda fp32": 6, "cuda bf16": 2}
    for config in workers:  # every pipeline once per configuration
        assert sorted(p for c, part in streams if c == config for p in part) == sorted(pipelines)
    # one after another: --jobs workers each
    assert len(plan(pipelines, ["cuda fp32", "cuda bf16"], 3, costs)) == 6


def test_the_costliest_pipeline_goes_first_to_the_least_loaded_worker(tmp_path):
    costs = _costs(tmp_path, [{"pipeline": "Slow", "wall_s": 100.0}] + [
        {"pipeline": f"Fast{i}", "wall_s": 10.0} for i in range(10)
    ])  # fmt: skip
    streams = plan(["Slow", *(f"Fast{i}" for i in range(10))], ["cuda bf16"], 2, costs)
    assert ["Slow"] in [part for _, part in streams]


def test_a_gpu_only_failure_is_one_that_passed_on_the_cpu_and_the_concurrent_wall_time_counts_once():
    def result(config, pipeline, outcome):
        return {"event": "result", "config": config, "pipeline": pipeline, "contract": "DRC008", "outcome": outcome}

    lines = [
        {"event": "matrix", "versions": {"gpu": "H100", "torch": "2"}, "jobs": 16, "concurrent": True, "mps": True},
        result("cpu fp32", "A", "passed"),
        result("cpu fp32", "B", "failed"),
        *(result(config, pipeline, "failed") for config in ("cuda fp32", "cuda bf16", "cuda fp32 offload",
                                                             "cuda bf16 offload") for pipeline in "AB"),
        *({"event": "config-done", "config": c, "wall_s": w} for c, w in (("cuda fp32", 300.0), ("cuda bf16", 350.0),
                                                                          ("cuda fp32 offload", 380.0),
                                                                          ("cuda bf16 offload", 390.0))),
        {"event": "matrix-done", "wall_s": 391.0},
    ]  # fmt: skip
    summary = summarise(lines)
    assert {(row["config"], row["pipeline"]) for row in summary["gpu_only"]} == {
        (c, "A") for c in ("cuda fp32", "cuda bf16", "cuda fp32 offload", "cuda bf16 offload")
    }
    text = render(summary)
    assert "**391 s** (target under 10 minutes: met)" in text
    assert "CUDA MPS" in text


def test_merged_yields_every_item_of_every_source():
    items = sorted(merged([lambda: iter([1, 2]), lambda: iter([]), lambda: iter([3])]))
    assert items == [1, 2, 3]
