"""The runner's subprocess: run the suite for one job and stream one JSON line per result, then a summary line.

`python -m runners.job --pipelines A,B [--device cpu] [--dtype bf16] [--source CHECKOUT]`. Run with
`PYTHONPATH=<PR checkout>/src` so the PR's own `diffusers` is the one imported (the first line says which one was).
With `--source` (the PR's `src/` and `tests/`), a pipeline whose fast test class the checkout has is built the way
that class builds it (`runners.checkout`, with the hub stand-ins of `HF_HUB_CACHE`); the others use drbot's
hand-written tiny factories, as without it.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pipelines", default="")
    parser.add_argument("--contracts", default="")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--source", default=None, help="a checkout with src/ and tests/")
    args = parser.parse_args(argv)
    from runners.cli import quiet

    quiet()
    import diffusers
    import torch

    torch.set_num_threads(1)
    from runners.suite import run_suite
    from runners.tiny import factories

    print(json.dumps({"runner": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                                 "diffusers_path": diffusers.__file__, "device": args.device}}), flush=True)  # fmt: skip
    pipelines = [p for p in args.pipelines.split(",") if p] or list(factories())
    codes = [c for c in args.contracts.split(",") if c] or None

    def emit(result) -> None:
        print(json.dumps({"result": result.to_dict()}), flush=True)

    if args.source:
        from pathlib import Path

        from runners.checkout import index
        from runners.cli import checkout_rows

        tested = index(Path(args.source))
        from_tests = [p for p in pipelines if p in tested]
        print(f"built from the checkout's fast tests: {', '.join(from_tests) or 'none'}", file=sys.stderr, flush=True)
        for result in checkout_rows(Path(args.source), from_tests, codes or [], args.device, args.dtype):
            emit(result)
        pipelines = [p for p in pipelines if p not in tested]
    run_suite(pipelines, codes, args.device, args.dtype, emit)
    print(json.dumps({"done": True}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
