"""Contracts before and after real fixes: each case is a bug of the history corpus (`bench/history/`) that a
contract should show at run time. The pipeline is built from each release's own fast test class (`git archive`
of the tag's `src/` and `tests/`, `runners.checkout`), once in the release before the fix and once in the release
after it, and the contract runs on both: a bug is *shown* when the contract fails before and passes after.

    python bench/contracts_history.py            # prints the table
    python bench/contracts_history.py --record   # and writes it to BENCHMARKS.md

Checkouts come from the diffusers git mirror (`bench/releases.py`, DIFFUSERS_MIRROR). Releases before v0.36.0 do
not import with the transformers 5 this project pins (`FLAX_WEIGHTS_NAME` left transformers.utils), so cases start
there; older ones need a runner environment with transformers 4.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: (history pair id, pipeline, contract, last release with the bug, first release without it)
CASES = [
    ("p2-qwenimage-controlnet-encode-prompt-max-sequence-length-unused", "QwenImageControlNetPipeline", "DRC012",
     "v0.37.1", "v0.38.0"),
    ("p2-qwenimage-controlnet-inpaint-encode-prompt-max-sequence-length-unused", "QwenImageControlNetInpaintPipeline",
     "DRC012", "v0.37.1", "v0.38.0"),
    ("p6-ernie-image-latent-early-return", "ErnieImagePipeline", "DRC006", "v0.38.0", "v0.39.0"),
    ("p7-flux-controlnet-img2img-modulo-precedence", "FluxControlNetImg2ImgPipeline", "DRC007", "v0.38.0", "v0.39.0"),
    ("p3-qwenimage-negative-embeds-need-mask", "QwenImagePipeline", "DRC015", "v0.37.1", "v0.38.0"),
]  # fmt: skip


def outcome(checkout: Path, pipeline: str, contract: str) -> tuple[str, str]:
    """(outcome, message) of one contract on one pipeline built from `checkout`'s fast test class."""
    from runners.checkout import stream

    found = ("error", "no result")
    for event in stream(checkout, [pipeline], codes=[contract], timeout_s=300):
        if event["event"] == "result" and event["contract"] == contract:
            found = (event["outcome"], event.get("message", ""))
        elif event["event"] == "pipeline" and event.get("status") != "built":
            found = (event["status"], event.get("message", ""))
    return found


def measure() -> list[dict]:
    from bench.releases import git_release

    rows = []
    for pair, pipeline, contract, before, after in CASES:
        bad = outcome(git_release(before), pipeline, contract)
        good = outcome(git_release(after), pipeline, contract)
        shown = bad[0] == "failed" and good[0] == "passed"
        rows.append({"pair": pair, "pipeline": pipeline, "contract": contract, "before": before, "after": after,
                     "outcome_before": bad, "outcome_after": good, "shown": shown})  # fmt: skip
        print(
            f"{pipeline:40} {contract} {before} {bad[0]:8} {after} {good[0]:8} {'shown' if shown else ''}", flush=True
        )
    return rows


def render(rows: list[dict]) -> str:
    def cell(result: tuple[str, str]) -> str:
        text = " ".join(result[1].split()).replace("|", "\\|")
        return f"{result[0]}" + (f": {text[:150]}" if text and result[0] != "passed" else "")

    lines = [
        "## Contracts before and after real fixes",
        "",
        "Each case is a bug of the history corpus that a contract should show at run time; the pipeline is built from "
        "the release's own fast test class (git tags of the diffusers repository), in the last release with the bug "
        "and the first without it. Shown: the contract fails before and passes after. Releases before v0.36.0 do "
        "not import with transformers 5 (the version this project pins), so the cases start there.",
        "",
        "| history pair | pipeline | contract | before | after | shown |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| `{row['pair']}` | {row['pipeline']} | {row['contract']} | {row['before']}: "
            f"{cell(row['outcome_before'])} | {row['after']}: {cell(row['outcome_after'])} | "
            f"{'**yes**' if row['shown'] else 'no'} |"
        )
    shown = sum(row["shown"] for row in rows)
    lines += ["", f"Shown: **{shown} of {len(rows)}**."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", action="store_true", help="write the table to BENCHMARKS.md")
    args = parser.parse_args(argv)
    text = render(measure())
    print(text)
    if args.record:
        from bench._record import record

        record("contracts-history", "python bench/contracts_history.py --record", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
