"""The App's review of a pull request end to end: signed webhook -> `drbot serve` -> summary comment.

The fake GitHub of the test suite (over HTTP) serves the installed diffusers 0.42.1 package as `src/diffusers/` of
the base branch; each run opens a new pull request changing 10 pipeline files (5 with a new ignored `__call__`
argument) and times from the signed delivery of its `opened` event to the summary comment. One `drbot serve`
subprocess serves every run, as in production (a first, cold run is timed apart). `--code DIR` serves from another
checkout (e.g. `git worktree add /tmp/drbot-before HEAD`) through PYTHONPATH, so the same script times the code
before and after a change: the two servers take turns, so both see the same load, and `--record` writes both to
BENCHMARKS.md.

Run: `.venv/bin/python bench/review_app.py [--repeat N] [--before DIR [--record]]`
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fakegithub import FakeGitHub  # noqa: E402
from served import Served  # noqa: E402

from bench.review import CHANGED  # noqa: E402


REPO = "huggingface/diffusers"
SECRET = "bench-secret"
TARGET = 1.10  # after / before, at most


def _package_files() -> dict[str, bytes]:
    from analyzers.scan import installed_diffusers

    root = installed_diffusers()
    return {
        f"src/diffusers/{path.relative_to(root).as_posix()}": path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def _head_files(base: dict[str, bytes], run: int) -> dict[str, bytes]:
    files = {}
    for i, rel in enumerate(CHANGED):
        path = f"src/diffusers/{rel}"
        text = base[path].decode()
        if i % 2 == 0:  # a new ignored argument: one new finding per such file
            text = text.replace(
                "return_dict: bool = True,", "return_dict: bool = True,\n        bench_unused_arg: int = 0,", 1
            )
        files[path] = (text + f"\n# touched by bench/review_app.py, run {run}\n").encode()
    return files


class Server(Served):
    """One `drbot serve` subprocess running the code of `code`, with its own port and key prefix."""

    def __init__(self, code: Path, github, label: str) -> None:
        super().__init__(github, SECRET, code=code, DRBOT_KEY_PREFIX=f"drbot-bench-{uuid.uuid4().hex[:8]}:")
        self.code, self.label = code, label
        self.times: list[float] = []
        self.summary = ""

    def wait_ready(self) -> None:
        self.start()

    def review(self, github, number: int) -> float:
        """Deliver PR `number`'s `opened` event and wait for its summary comment; returns the seconds."""
        start = time.perf_counter()
        assert self.deliver("pull_request", github.pull_request_payload(REPO, number, "opened")) == 202
        self.wait_for(lambda: github.comments(REPO, number), timeout=300)
        elapsed = time.perf_counter() - start
        self.times.append(elapsed)
        body_lines = github.comments(REPO, number)[0]["body"].splitlines()
        self.summary = next(line for line in body_lines if line.startswith("**"))
        return elapsed

    def result(self) -> dict:
        warm = self.times[1:]
        return {"code": str(self.code), "cold": self.times[0], "warm": warm, "median": statistics.median(warm),
                "summary": self.summary}  # fmt: skip


def _commit(code: Path) -> str:
    result = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return f"`{result.stdout.strip()}`" if result.returncode == 0 else "?"


def measure(codes: dict[str, Path], repeat: int) -> dict[str, dict]:
    """Time `repeat` warm reviews (after a cold one) by a server of each checkout, the servers taking turns (so
    both see the same load on a shared machine)."""
    base = _package_files()
    with FakeGitHub() as github:
        github.add_repo(REPO, installation_id=1, files=base, private=False)
        servers = [Server(code, github, label) for label, code in codes.items()]
        try:
            for server in servers:
                server.wait_ready()
            number = 0
            for run in range(repeat + 1):
                for server in servers:
                    number += 1
                    github.add_pull(REPO, number, head_files=_head_files(base, number))
                    elapsed = server.review(github, number)
                    kind = "cold" if run == 0 else "warm"
                    print(f"{server.label} run {run} ({kind}): {elapsed:.2f} s  {server.summary}", flush=True)
        finally:
            for server in servers:
                server.stop()
    return {server.label: server.result() for server in servers}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7, help="warm runs (after one cold run)")
    parser.add_argument("--before", type=Path, help="a checkout of the code before the change, timed in turn")
    parser.add_argument("--record", action="store_true", help="write BENCHMARKS.md (needs --before)")
    args = parser.parse_args()
    codes = {"after": ROOT} if args.before is None else {"before": args.before.resolve(), "after": ROOT}
    results = measure(codes, args.repeat)
    for label, data in results.items():
        print(f"{label}: median of {args.repeat} warm runs {data['median']:.2f} s; cold run {data['cold']:.2f} s")
    if args.record:
        from bench._record import record

        before, after = results["before"], results["after"]
        ratio = after["median"] / before["median"]

        def row(label: str, data: dict) -> str:
            warm = data["warm"]
            return f"| {label} | **{data['median']:.2f}** | {min(warm):.2f} | {max(warm):.2f} | {data['cold']:.2f} |"

        body = (
            "## The App's review of a pull request, webhook to summary comment\n\n"
            "`drbot serve` (one process, as deployed) against the suite's fake GitHub over HTTP, whose base branch"
            " holds the installed diffusers 0.42.1 package as `src/diffusers/`; each run opens a new pull request"
            " changing 10 pipeline files (5 with a new ignored `__call__` argument) and times from the signed delivery"
            " to the summary comment (write pacing off). A server of the code before the change and one of the code"
            " after it take turns on the same fake, one review at a time. Seconds; warm runs follow one cold run"
            " (the first review of a fresh process). The fake builds each 5 MB tarball on request (about 2 s of each"
            " run, the same on both sides).\n\n"
            "| code | median | min | max | cold run |\n|---|---|---|---|---|\n"
            f"{row(f'before ({_commit(args.before)}): analysis in the serving process, tarballs in memory', before)}\n"
            f"{row(f'after ({_commit(ROOT)} + this change): analysis in worker processes, tarballs on disk', after)}\n\n"
            f"After / before: **{ratio:.2f}x** (target: at most {TARGET:.2f}x): "
            f"{'met' if ratio <= TARGET else 'NOT met'}. Summary line of both: {after['summary']}"
        )
        print(body)
        record("review-app", f"python bench/review_app.py --before DIR --repeat {args.repeat} --record", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
