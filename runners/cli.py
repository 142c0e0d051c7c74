"""`drbot contracts PIPELINE…`: run the contract suite locally and print pipeline x contract outcomes."""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path


def quiet() -> None:
    """Library chatter (deprecations, torchvision fallbacks, progress bars) would drown the report."""
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()


def usage_error(message: str) -> int:
    print(f"drbot contracts: error: {message}", file=sys.stderr)
    return 2


def main(args) -> int:
    from runners.contracts import all_contracts

    source = getattr(args, "source", None)
    # names are checked before torch loads: a typo must not become a table of skipped or error rows
    if source is not None:
        from runners.checkout import index as test_index
        from runners.checkout import is_checkout

        if not is_checkout(Path(source)):
            return usage_error(f"--source {source} is not a diffusers checkout (no src/diffusers or tests/pipelines)")
        known: Mapping[str, object] = test_index(Path(source))
        unknown = [name for name in args.pipelines if name not in known]
        if unknown:
            return usage_error(f"no fast test class for {', '.join(unknown)} in {source}/tests/pipelines")
    else:
        from runners.tiny import factories

        known = factories()
        unknown = [name for name in args.pipelines if name not in known]
        if unknown:
            return usage_error(f"no tiny pipeline {', '.join(unknown)}; drbot has {', '.join(known)}")
    contracts = [c.code for c in all_contracts()]
    codes = [c.strip().upper() for part in (args.contract or []) for c in part.split(",") if c.strip()]
    unknown = [code for code in codes if code not in contracts]
    if unknown:
        return usage_error(f"no contract {', '.join(unknown)}; the contracts are {', '.join(contracts)}")
    if source is not None:
        return report(checkout_results(args, Path(source), args.pipelines or list(known), codes), args)
    import torch

    quiet()
    if args.device == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        index, count = int(args.device.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count:
            found = f"{count} CUDA device{'s' * (count != 1)}" if count else "CUDA is not available"
            return usage_error(f"--device {args.device}, but {found}")
    from runners.suite import run_suite

    pipelines = args.pipelines or list(known)
    results = run_suite(pipelines, codes or None, args.device, args.dtype, progress(args), offload=args.offload)
    return report(results, args)


def progress(args):
    def show(result) -> None:
        if args.format == "text":
            message = f"  {result.message}" if result.message else ""
            print(f"{result.pipeline:40} {result.contract}  P{result.pattern:<2} {result.outcome:7} "
                  f"{result.duration_s:6.2f}s{message}", flush=True)  # fmt: skip

    return show


def checkout_results(args, source: Path, pipelines: list[str], codes: list[str]):
    """The contracts on pipelines built from the checkout's fast tests (`checkout_rows`), shown as they come."""
    show = progress(args)
    results = []
    for result in checkout_rows(source, pipelines, codes, args.device, args.dtype, args.offload, args.threads):
        results.append(result)
        show(result)
    return results


def checkout_rows(source: Path, pipelines: Sequence[str], codes: Sequence[str], device: str = "cpu",
                  dtype: str | None = None, offload: bool = False, threads: int = 1) -> Iterator:  # fmt: skip
    """The contracts on pipelines built from the checkout's fast tests, in a worker subprocess; a pipeline that could
    not be built gets an `error` row per contract, one without a stand-in for a checkpoint it loads `skipped` rows."""
    from runners.checkout import stream
    from runners.contracts import all_contracts
    from runners.suite import ContractResult

    contracts = [c for c in all_contracts() if not codes or c.code in set(codes)]
    seen = set()
    for event in stream(source, pipelines, codes or None, device, dtype, offload, threads):
        if event["event"] == "result":
            result = ContractResult(**{k: v for k, v in event.items() if k != "event"})
            seen.add((result.pipeline, result.contract))
            yield result
        elif event["event"] == "pipeline" and event["status"] != "built":
            outcome = "skipped" if event["status"] in ("no-standin", "no-test", "test-skipped") else "error"
            for contract in contracts:
                if (event["pipeline"], contract.code) not in seen:
                    message = f"{event['status']}: {event['message']}"
                    yield ContractResult(event["pipeline"], contract.code, contract.pattern, outcome, message, 0.0)


def report(results, args) -> int:
    if args.format == "json":
        json.dump({"results": [r.to_dict() for r in results]}, sys.stdout, indent=2)
        print()
    else:
        counts = {k: sum(r.outcome == k for r in results) for k in ("passed", "failed", "skipped", "error")}
        print(", ".join(f"{v} {k}" for k, v in counts.items()))
    return exit_status(results)


def exit_status(results) -> int:
    """2 when the harness could not run a contract (its other outcomes may not hold), 1 when one failed, else 0."""
    errors = sum(r.outcome == "error" for r in results)
    if errors:
        print(f"drbot contracts: {errors} of {len(results)} contracts could not run (outcome `error`): the harness "
              "or a tiny factory broke, so those pipelines were not tested", file=sys.stderr)  # fmt: skip
        return 2
    return 1 if any(r.outcome == "failed" for r in results) else 0
