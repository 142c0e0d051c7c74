"""`drbot contracts PIPELINE…`: run the contract suite locally and print pipeline x contract outcomes."""

from __future__ import annotations

import json
import os
import sys
import warnings


def quiet() -> None:
    """Library chatter (deprecations, torchvision fallbacks, progress bars) would drown the report."""
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()


def main(args) -> int:
    import torch

    quiet()
    if args.device == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("drbot contracts: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    from runners.suite import run_suite
    from runners.tiny import factories

    pipelines = args.pipelines or list(factories())
    codes = [c.strip().upper() for part in (args.contract or []) for c in part.split(",") if c.strip()]

    def progress(result) -> None:
        if args.format == "text":
            message = f"  {result.message}" if result.message else ""
            print(f"{result.pipeline:40} {result.contract}  P{result.pattern:<2} {result.outcome:7} "
                  f"{result.duration_s:6.2f}s{message}", flush=True)  # fmt: skip

    results = run_suite(pipelines, codes or None, args.device, args.dtype, progress, offload=args.offload)
    if args.format == "json":
        json.dump({"results": [r.to_dict() for r in results]}, sys.stdout, indent=2)
        print()
    else:
        counts = {k: sum(r.outcome == k for r in results) for k in ("passed", "failed", "skipped", "error")}
        print(", ".join(f"{v} {k}" for k, v in counts.items()))
    return 1 if any(r.outcome == "failed" for r in results) else 0
