"""Review latency of the App on a repository of diffusers' size: a first pull request on a new merge base, and a push
to it (`synchronize`), each timed from the signed delivery to the summary comment.

The fake GitHub of the test suite (over HTTP) serves the installed diffusers 0.42.1 package as `src/diffusers/` of
the base branch, as bench/review_app.py does. Each round moves the base branch on (one commit), opens a pull request
changing 10 pipeline files (5 with a new ignored `__call__` argument), then pushes to it `--pushes` times (each push
rewrites `--push-files` of the 10 files, one with a new ignored argument named after the push, so every summary
changes). One `drbot serve` subprocess
serves every round, as deployed; a first round warms it up and is reported apart. `--before DIR` times a checkout
of the code before the change (e.g. `git worktree add /tmp/drbot-before HEAD`) in turn with this one, and
`DRBOT_REVIEW_STATE=0` in the environment times this code's tarball path.

Targets (issue 14): a synchronize p50 <= 3 s and p95 <= 5 s, a first PR on a new base <= 5 s.

Run: `.venv/bin/python bench/review_latency.py [--rounds N] [--pushes N] [--before DIR] [--record]`
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fakegithub import FakeGitHub  # noqa: E402
from served import Served  # noqa: E402

from bench.review import CHANGED  # noqa: E402
from bench.review_app import REPO, SECRET, Server, _commit, _package_files  # noqa: E402


SYNC_P50, SYNC_P95, FIRST_MAX = 3.0, 5.0, 5.0
#: a file the base branch's new commits touch (not one the pull requests change)
MOVED = "src/diffusers/pipelines/ddpm/pipeline_ddpm.py"


def _head(base: dict[str, bytes], tag: str, extra_argument: str = "", files_touched: int = 10) -> dict[str, bytes]:
    """The 10 changed files: 5 with a new ignored argument; with `extra_argument`, the first gets that one too. A push
    (`files_touched` < 10) rewrites only the first `files_touched` of them: the others stay as the PR had them."""
    files = {}
    for i, rel in enumerate(CHANGED[:files_touched]):
        path = f"src/diffusers/{rel}"
        text = base[path].decode()
        added = "        bench_unused_arg: int = 0,\n" if i % 2 == 0 else ""
        if i == 0 and extra_argument:
            added += f"        {extra_argument}: int = 0,\n"
        if added:
            text = text.replace("return_dict: bool = True,\n", "return_dict: bool = True,\n" + added, 1)
        files[path] = (text + f"\n# touched by bench/review_latency.py, {tag}\n").encode()
    return files


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


class Timed(Server):
    def __init__(self, code: Path, github, label: str) -> None:
        # a workdir of its own: no merge base or cached result from an earlier run
        self.workdir = tempfile.mkdtemp(prefix="drbot-bench-work-")
        Served.__init__(self, github, SECRET, code=code, DRBOT_KEY_PREFIX=f"drbot-bench-{uuid.uuid4().hex[:8]}:",
                        DRBOT_WORKDIR=self.workdir, DRBOT_CACHE_DIR=os.path.join(self.workdir, "cache"))  # fmt: skip
        self.code, self.label = code, label
        self.times: list[float] = []
        self.summary = ""
        self.first: list[float] = []
        self.sync: list[float] = []
        self.warmup: list[float] = []

    def timed(self, github, number: int, action: str, until: str) -> float:
        """Deliver PR `number`'s `action` event; the seconds until its summary comment holds `until`."""
        start = time.perf_counter()
        assert self.deliver("pull_request", github.pull_request_payload(REPO, number, action)) == 202

        def posted() -> bool:
            comments = github.comments(REPO, number)
            return bool(comments) and until in comments[0]["body"]

        self.wait_for(posted, timeout=300)
        elapsed = time.perf_counter() - start
        self.summary = next(line for line in github.comments(REPO, number)[0]["body"].splitlines() if line[:2] == "**")
        return elapsed


def measure(codes: dict[str, Path], rounds: int, pushes: int, push_files: int) -> list[Timed]:
    base = _package_files()
    with FakeGitHub() as github:
        github.add_repo(REPO, installation_id=1, files=base, private=False)
        servers = [Timed(code, github, label) for label, code in codes.items()]
        try:
            for server in servers:
                server.wait_ready()
            number = 0
            for run in range(rounds + 1):
                for server in servers:
                    number += 1
                    moved = base[MOVED] + f"\n# base moved on, PR {number}\n".encode()
                    github.add_pull(REPO, number, base_files={MOVED: moved}, head_files=_head(base, f"PR {number}"))
                    elapsed = server.timed(github, number, "opened", "bench_unused_arg")
                    (server.first if run else server.warmup).append(elapsed)
                    print(
                        f"{server.label} round {run} PR {number} opened: {elapsed:.2f} s  {server.summary}", flush=True
                    )
                    for push in range(pushes):
                        argument = f"bench_push_{number}_{push}"
                        head = _head(base, f"PR {number} push {push}", argument, push_files)
                        github.push(REPO, number, head)
                        elapsed = server.timed(github, number, "synchronize", argument)
                        (server.sync if run else server.warmup).append(elapsed)
                        print(f"{server.label} round {run} PR {number} push {push}: {elapsed:.2f} s", flush=True)
        finally:
            for server in servers:
                server.stop()
                shutil.rmtree(server.workdir, ignore_errors=True)
    return servers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (after one warm-up round)")
    parser.add_argument("--pushes", type=int, default=4, help="synchronize events per round")
    parser.add_argument("--push-files", type=int, default=2, help="files of the 10 that each push rewrites (1-10)")
    parser.add_argument("--before", type=Path, help="a checkout of the code before the change, timed in turn")
    parser.add_argument("--record", action="store_true", help="write the review-latency section of BENCHMARKS.md")
    args = parser.parse_args()
    codes = {"after": ROOT} if args.before is None else {"before": args.before.resolve(), "after": ROOT}
    servers = measure(codes, args.rounds, args.pushes, args.push_files)
    rows, verdicts = [], []
    for server in servers:
        sync, first = server.sync, server.first
        p50, p95 = statistics.median(sync), _percentile(sync, 0.95)
        first_p50, first_max = statistics.median(first), max(first)
        commit = _commit(server.code)
        what = f"{server.label} ({commit}{' + this change' if server.code == ROOT else ''})"
        rows.append(
            f"| {what} | **{p50:.2f}** | **{p95:.2f}** | {max(sync):.2f} | **{first_p50:.2f}** | {first_max:.2f} |"
            f" {server.warmup[0]:.2f} |"
        )
        checks = [("synchronize p50", p50 <= SYNC_P50), ("p95", p95 <= SYNC_P95),
                  ("first PR p50", first_p50 <= FIRST_MAX), ("max", first_max <= FIRST_MAX)]  # fmt: skip
        verdicts.append(f"{server.label}: " + ", ".join(f"{what} {'met' if ok else 'NOT met'}" for what, ok in checks))
        print(f"{server.label}: synchronize p50 {p50:.2f} s, p95 {p95:.2f} s; first PR p50 {first_p50:.2f} s, "
              f"max {first_max:.2f} s; cold {server.warmup[0]:.2f} s")  # fmt: skip
    body = (
        "## Review latency on a diffusers-sized repository\n\n"
        "`drbot serve` (one process, as deployed) against the suite's fake GitHub over HTTP, whose base branch holds"
        " the installed diffusers 0.42.1 package as `src/diffusers/`. Each round moves the base branch on, opens a"
        " pull request changing 10 pipeline files (5 with a new ignored `__call__` argument) and pushes to it"
        f" {args.pushes} times, each push rewriting {args.push_files} of its 10 files (one more new ignored argument"
        " among them, so every summary changes); each is timed from the signed delivery to the summary comment that reflects it"
        f" (write pacing off). {args.rounds} rounds after a warm-up round (its first review, in a fresh process, is"
        " the cold column). Seconds.\n\n"
        "| code | synchronize p50 | p95 | max | first PR on a new base, p50 | max | cold |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"Targets: synchronize p50 <= {SYNC_P50:g} s and p95 <= {SYNC_P95:g} s, a first PR <= {FIRST_MAX:g} s. "
        + "; ".join(verdicts)
        + f". Summary line: {servers[-1].summary}"
    )
    print(body)
    if args.record:
        from bench._record import record

        before = " --before DIR" if args.before else ""
        record(
            "review-latency",
            f"python bench/review_latency.py --rounds {args.rounds} --pushes {args.pushes}"
            f" --push-files {args.push_files}{before} --record",
            body,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
