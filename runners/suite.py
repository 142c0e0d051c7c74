"""Run the contract suite over tiny pipelines: pipeline x contract -> passed | failed | skipped | error."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import pytest

from runners.contracts import Contract, all_contracts, test_method
from runners.contracts._base import ContractFailure, TinyConfig
from runners.tiny import NoTinyFactory, get_factory


@dataclass(frozen=True)
class ContractResult:
    pipeline: str
    contract: str
    pattern: int
    outcome: str  # passed | failed | skipped | error
    message: str
    duration_s: float

    def to_dict(self) -> dict:
        return asdict(self)


def dtype_of(name: str | None):
    import torch

    return {None: None, "fp32": None, "float32": None, "fp16": torch.float16, "float16": torch.float16,
            "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}[name]  # fmt: skip


def test_case(factory, contract: type[Contract], device: str, dtype, offload: bool = False) -> object:
    """An instance of `TinyConfig + contract` for this factory, as pytest would build the test class."""
    cls = type(f"{factory.pipeline_class}{contract.__name__}", (TinyConfig, contract), {})
    case = cls()
    case.factory, case.torch_device, case.dtype, case.offload = factory, device, dtype, offload
    return case


def full_precision(device: str) -> None:
    """On CUDA, float32 is float32: no TF32 in matrix products or convolutions (cuDNN convolutions default to TF32
    on Ampere and later). The contracts compare runs (batched against single-prompt, fused against unfused
    attention), so both must compute in the precision the configuration names. The first full H100 matrix, run with
    the defaults, had 22 float32 failures the CPU does not show, differences of 1e-3 to 2e-1 in convolutional
    pipelines (bench/results/gpu_matrix_h100_mps.jsonl); TF32 is the likely cause, not yet confirmed by a re-run."""
    if str(device).startswith("cuda"):
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def run_one(
    pipeline, contract: type[Contract], device: str = "cpu", dtype: str | None = None, offload: bool = False
) -> ContractResult:
    """One contract on one pipeline (a class name, or a `Factory` itself)."""
    start = time.perf_counter()
    name = pipeline if isinstance(pipeline, str) else pipeline.pipeline_class

    def result(outcome: str, message: str = "") -> ContractResult:
        return ContractResult(name, contract.code, contract.pattern, outcome, message, time.perf_counter() - start)

    try:
        factory = get_factory(pipeline) if isinstance(pipeline, str) else pipeline
    except NoTinyFactory as error:
        return result("skipped", str(error))
    try:
        full_precision(device)
        case = test_case(factory, contract, device, dtype_of(dtype), offload)
        getattr(case, test_method(contract))()
    except pytest.skip.Exception as skip:
        return result("skipped", str(skip.msg if hasattr(skip, "msg") else skip))
    except ContractFailure as failure:
        return result("failed", str(failure))
    except AssertionError as failure:
        return result("failed", str(failure) or "assertion failed")
    except Exception as error:  # noqa: BLE001 - a broken factory or harness, not a finding
        tail = traceback.format_exception_only(type(error), error)[-1].strip()
        return result("error", tail[:500])
    return result("passed")


def run_suite(
    pipelines: Sequence[str],
    codes: Sequence[str] | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    progress: Callable[[ContractResult], None] | None = None,
    offload: bool = False,
) -> list[ContractResult]:
    contracts = [c for c in all_contracts() if not codes or c.code in set(codes)]
    results = []
    for pipeline in pipelines:
        for contract in contracts:
            outcome = run_one(pipeline, contract, device, dtype, offload)
            results.append(outcome)
            if progress is not None:
                progress(outcome)
    return results
