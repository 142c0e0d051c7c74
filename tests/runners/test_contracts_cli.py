"""`drbot contracts`: usage errors name the bad value before torch runs; exit 1 on a failed contract, 2 when the
harness could not run one."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from runners.suite import ContractResult


ROOT = Path(__file__).resolve().parents[2]


def contracts(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "drbot", "contracts", *args], capture_output=True, text=True, cwd=ROOT
    )


@pytest.mark.parametrize(
    "args, named",
    [
        (["NoSuchPipeline"], ["NoSuchPipeline", "FluxPipeline"]),
        (["FluxPipeline", "--contract", "DRC001,DRC999"], ["DRC999", "DRC001"]),
        (["FluxPipeline", "--device", "tpu"], ["tpu", "cuda"]),
    ],
    ids=["pipeline", "contract", "device"],
)
def test_unknown_values_are_usage_errors_naming_what_is_valid(args, named):
    result = contracts(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "error" in line and all(name in line for name in named), result.stderr


def row(outcome: str) -> ContractResult:
    return ContractResult("FluxPipeline", "DRC001", 1, outcome, "", 0.0)


@pytest.mark.parametrize(
    "outcomes, status",
    [
        (["passed", "skipped"], 0),
        (["passed", "failed"], 1),
        (["passed", "error"], 2),
        (["failed", "error"], 2),  # a harness that could not run a contract makes the whole run unreliable
    ],
)
def test_exit_status_follows_the_worst_outcome(monkeypatch, capsys, outcomes, status):
    import runners.suite
    from runners.cli import main

    monkeypatch.setattr(runners.suite, "run_suite", lambda *args, **kwargs: [row(o) for o in outcomes])
    args = argparse.Namespace(pipelines=["FluxPipeline"], device="cpu", dtype=None, contract=None, format="text",
                              threads=1, offload=False)  # fmt: skip
    assert main(args) == status
    if "error" in outcomes:
        assert "could not run" in capsys.readouterr().err
