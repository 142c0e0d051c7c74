"""Which exported pipeline classes of a diffusers checkout the contracts cover, and why the others are not covered.

`python -m runners.coverage --source CHECKOUT --output docs/contracts-coverage.md` lists every `*Pipeline` class the
checkout's `diffusers` exports, builds each real one from its fast test class (`runners.checkout`) and runs every
contract on it, then writes a Markdown report: covered (contracts ran) or why not (no fast test class, a stand-in
missing, a build error with the exception's one line, a crash or timeout).
"""

from __future__ import annotations

import json
import queue
import re
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path


NO_TEST = (
    "no test class in tests/pipelines names it as `pipeline_class` with `get_dummy_components`/`get_dummy_inputs`"
)
#: a pipeline counts as covered when at least this many contracts passed or failed on it (not skipped, not error)
COVERED_MIN = 5
RAN = ("passed", "failed")


@dataclass
class PipelineCoverage:
    name: str
    kind: str  # pipeline | modular | placeholder | other | import-error
    status: str = ""  # built | no-test | no-standin | build-error | test-skipped | crashed | timeout | not-a-pipeline
    message: str = ""
    test: dict | None = None
    outcomes: Counter = field(default_factory=Counter)
    results: list[dict] = field(default_factory=list)
    cpu_s: float = 0.0

    @property
    def ran(self) -> int:
        return sum(self.outcomes[o] for o in RAN)

    @property
    def covered(self) -> bool:
        return self.status == "built" and self.ran >= COVERED_MIN


def exported(checkout: Path) -> list[dict]:
    """[{name, kind}] for every `*Pipeline` name the checkout's diffusers exports (in a subprocess: its src/)."""
    from runners.checkout import worker_env

    done = subprocess.run([sys.executable, "-m", "runners.checkout", "exported", "--source", str(checkout)],
                          capture_output=True, text=True, env=worker_env(), cwd=str(checkout), timeout=900)  # fmt: skip
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)["pipelines"]
    tail = " | ".join(done.stderr.strip().splitlines()[-3:])
    raise RuntimeError(f"listing the checkout's pipelines failed (exit {done.returncode}): {tail}")


def collect(checkout: Path, names: Sequence[str] | None = None, timeout_s: float = 240.0,
            progress: Callable[[str], None] | None = None, results: Path | None = None,
            jobs: int = 1) -> list[PipelineCoverage]:  # fmt: skip
    """Every exported pipeline (or those of `names`) with its coverage: contracts run in one worker at a time.

    With `results` (a JSON-lines file), every event is appended there as it comes, and the pipelines it already
    finished are not run again: an interrupted run goes on where it stopped.
    """
    from runners.checkout import classify, index

    events = []
    if results is not None and results.exists():
        events = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines() if line.strip()]
    listing = next((e["pipelines"] for e in events if e["event"] == "exported"), None)
    log = results.open("a", encoding="utf-8") if results is not None else None

    def record(event: dict) -> None:
        if log is not None:
            log.write(json.dumps(event) + "\n")
            log.flush()

    if listing is None:
        listing = exported(checkout)
        record({"event": "exported", "pipelines": listing})
    rows = {row["name"]: PipelineCoverage(row["name"], row["kind"], message=row.get("message", ""))
            for row in listing if names is None or row["name"] in names}  # fmt: skip

    def apply(event: dict) -> None:
        row = rows.get(event["pipeline"])
        if row is None:
            return
        if event["event"] == "result":
            row.outcomes[event["outcome"]] += 1
            row.results.append(event)
        elif event["event"] == "pipeline":
            event = classify(event)
            row.status, row.message, row.test = event["status"], event.get("message", ""), event.get("test")
            row.cpu_s = event.get("cpu_s", 0.0)
            if progress is not None:
                progress(f"{row.name:50} {row.status:12} {row.ran:2} ran {row.message[:100]}")

    done: set[str] = set()
    pending: dict[str, list[dict]] = {}
    for event in events:  # a pipeline's rows count once it finished; a half-run one runs again from its start
        if event["event"] == "start":
            pending[event["pipeline"]] = []
        elif event["event"] == "result":
            pending.setdefault(event["pipeline"], []).append(event)
        elif event["event"] == "pipeline":
            for result in pending.pop(event["pipeline"], []):
                apply(result)
            apply(event)
            done.add(event["pipeline"])
    tests = index(checkout)
    runnable = []
    for row in rows.values():
        if row.kind != "pipeline":
            row.status = "not-a-pipeline"
        elif row.name not in tests:
            row.status, row.message = "no-test", NO_TEST
        elif row.name not in done:
            runnable.append(row.name)
    try:
        for event in parallel([runnable[i::jobs] for i in range(jobs)], checkout, timeout_s):
            record(event)
            apply(event)
    finally:
        if log is not None:
            log.close()
    return sorted(rows.values(), key=lambda r: r.name)


def parallel(parts: list[list[str]], checkout: Path, timeout_s: float, **options) -> Iterator[dict]:
    """The events of one worker stream per part, as they come (each stream in a thread; its worker is a process);
    `options` go to `runners.checkout.stream` (device, dtype, offload)."""
    from runners.checkout import stream

    parts = [part for part in parts if part]
    if len(parts) <= 1:
        yield from stream(checkout, parts[0] if parts else [], timeout_s=timeout_s, **options)
        return
    yield from merged([partial(stream, checkout, part, timeout_s=timeout_s, **options) for part in parts])


def merged(sources: Sequence[Callable[[], Iterable[dict]]]) -> Iterator[dict]:
    """The items of every source, as they come: each source is called and drained in a thread of its own."""
    events: queue.Queue = queue.Queue()
    done = object()

    def pump(source: Callable[[], Iterable[dict]]) -> None:
        try:
            for event in source():
                events.put(event)
        finally:
            events.put(done)

    threads = [threading.Thread(target=pump, args=(source,), daemon=True) for source in sources]
    for thread in threads:
        thread.start()
    finished = 0
    while finished < len(threads):
        event = events.get()
        if event is done:
            finished += 1
        else:
            yield event


def _version(checkout: Path) -> str:
    text = (checkout / "src" / "diffusers" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'__version__\s*=\s*"([^"]+)"', text)
    return match.group(1) if match else "unknown"


def _cell(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


STATUS_WORDS = {
    "built": "contracts run",
    "no-test": "no fast test class",
    "no-standin": "stand-in missing",
    "build-error": "build error",
    "crashed": "worker crashed",
    "timeout": "timed out",
    "test-skipped": "skipped by its test class",
    "": "not run yet (the run stopped before it)",
}


def render(rows: list[PipelineCoverage], checkout: Path, command: str, label: str, wall_s: float,
           cpu_s: float) -> str:  # fmt: skip
    pipelines = [r for r in rows if r.kind == "pipeline"]
    others = [r for r in rows if r.kind != "pipeline"]
    status = Counter(r.status for r in pipelines)
    covered = [r for r in pipelines if r.covered]
    totals: Counter[str] = Counter()
    for row in pipelines:
        totals.update(row.outcomes)
    lines = [
        "# Contract coverage of a diffusers checkout",
        "",
        f"Generated by `{command}` on diffusers {_version(checkout)} ({label or 'a checkout'}), on CPU, one torch "
        f"thread per worker process: {wall_s:.0f} s wall, {cpu_s:.0f} s CPU (the workers'). Each pipeline is built the "
        "way its fast test class in `tests/pipelines/` builds it (`get_dummy_components()`, `get_dummy_inputs()`), "
        "with the checkout's `src/`; the tiny Hub checkpoints those tests load come from drbot's stand-ins "
        "(`runners/standins.py`), read offline through `from_pretrained`.",
        "",
        f"A pipeline is **covered** when at least {COVERED_MIN} contracts passed or failed on it (skipped and error "
        "rows do not count). DRC010 needs an accelerator and is skipped on CPU.",
        "",
        "| exported pipeline classes (`DiffusionPipeline` subclasses) | count |",
        "| --- | ---: |",
        f"| all | {len(pipelines)} |",
        f"| covered: built from the fast test class, ≥{COVERED_MIN} contracts ran | {len(covered)} |",
    ]
    words = {**STATUS_WORDS, "built": "built and contracts run (the covered ones among them)"}
    lines += [f"| {words.get(s, s)} | {n} |" for s, n in sorted(status.items(), key=lambda x: -x[1])]
    lines += [
        "",
        f"Contract outcomes over the built pipelines: {totals['passed']} passed, {totals['failed']} failed, "
        f"{totals['skipped']} skipped, {totals['error']} error; building them and running their contracts took "
        f"{sum(r.cpu_s for r in pipelines):.0f} s CPU in the workers (imports not counted).",
        "",
    ]
    blocked: dict[str, list[str]] = {}
    for row in pipelines:
        if row.status == "no-standin":
            for repo in row.message.removeprefix("no stand-in for ").split(" (")[0].split(", "):
                blocked.setdefault(repo, []).append(row.name)
    if blocked:
        lines += ["## Stand-ins missing", "", "| checkpoint | pipelines it blocks |", "| --- | --- |"]
        for repo, names in sorted(blocked.items(), key=lambda x: (-len(x[1]), x[0])):
            lines.append(f"| `{repo}` | {len(names)}: {', '.join(names)} |")
        lines.append("")
    failures = [(row.name, r) for row in pipelines for r in row.results if r["outcome"] == "failed"]
    if failures:
        lines += ["## Failed contracts", "", "| pipeline | contract | message |", "| --- | --- | --- |"]
        lines += [f"| {name} | {r['contract']} | {_cell(r['message'], 300)} |" for name, r in failures]
        lines.append("")
    lines += [
        "## Every pipeline",
        "",
        "| pipeline | status | fast test class | passed | failed | skipped | error | CPU s | note |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in pipelines:
        test = f"`{row.test['path']}::{row.test['name']}`" if row.test else ""
        word = "covered" if row.covered else STATUS_WORDS.get(row.status, row.status)
        errors = [r["message"] for r in row.results if r["outcome"] == "error"]
        note = row.message or (f"error: {errors[0]}" if errors else "")
        lines.append(
            f"| {row.name} | {word} | {test} | {row.outcomes['passed']} | {row.outcomes['failed']} | "
            f"{row.outcomes['skipped']} | {row.outcomes['error']} | {row.cpu_s:.1f} | {_cell(note)} |"
        )
    if others:
        lines += ["", "## Other exported `*Pipeline` names", "",
                  "Not `DiffusionPipeline` subclasses: modular pipelines, auto classes, and placeholders for extras "
                  "that are not installed.", ""]  # fmt: skip
        kinds: dict[str, list[str]] = {}
        for row in others:
            kinds.setdefault(row.kind, []).append(row.name)
        lines += [f"- {kind} ({len(names)}): {', '.join(names)}" for kind, names in sorted(kinds.items())]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m runners.coverage", description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, type=Path, help="a diffusers checkout (src/ and tests/)")
    parser.add_argument("--output", type=Path, help="write the Markdown report here (default: stdout)")
    parser.add_argument("--json", type=Path, help="also write every row and contract result as JSON")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes at once (default: 1)")
    parser.add_argument("--results", type=Path, help="JSON lines of every event; a rerun resumes from it")
    parser.add_argument("--label", default="", help="what the checkout is, for the report (a commit, a date)")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per pipeline (default: 240)")
    parser.add_argument("pipelines", nargs="*", help="only these exported names (default: all)")
    args = parser.parse_args(argv)
    from runners.checkout import is_checkout

    if not is_checkout(args.source):
        parser.error(f"{args.source} is not a diffusers checkout (no src/diffusers or tests/pipelines)")
    start = time.perf_counter()
    rows = collect(
        args.source,
        args.pipelines or None,
        args.timeout,
        lambda line: print(line, file=sys.stderr, flush=True),
        args.results,
    )
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime
    if args.results:  # the report counts every invocation that added to the results file
        with args.results.open("a", encoding="utf-8") as log:
            log.write(json.dumps({"event": "run", "wall_s": wall, "cpu_s": cpu}) + "\n")
        runs = [json.loads(line) for line in args.results.read_text(encoding="utf-8").splitlines() if '"run"' in line]
        runs = [r for r in runs if r.get("event") == "run"]
        wall, cpu = sum(r["wall_s"] for r in runs), sum(r["cpu_s"] for r in runs)
        if len(runs) > 1:
            args.label += f"; {len(runs)} invocations adding to one `--results` file, the time summed over them"
    command = "python -m runners.coverage --source CHECKOUT" + (
        f" {' '.join(args.pipelines)}" if args.pipelines else ""
    )
    text = render(rows, args.source, command, args.label, wall, cpu)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    if args.json:
        data = [{**{k: v for k, v in vars(r).items() if k != "outcomes"}, "outcomes": dict(r.outcomes)} for r in rows]
        args.json.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
