"""Hostile pull request files never stop the App: they are reported as not analysed, and everything else goes on.

The review's attacks: a 4 KB file nested 2,000 brackets deep segfaulted libcst's native parser and with it `drbot
serve` (7 restarts in a row); an 8 KB `1+1+…` line parsed for 41 s, uncancellable; a 50 MB `.py` file took 320 s
and 6.3 GB; a 362 KB tarball expanded to 360 MB, and tarballs were read whole into memory. Each test below mounts
one of these against the real component (libcst, worker processes, `drbot serve`, Redis, the fake GitHub over
HTTP) and fails without the control it names.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import aiohttp
import libcst
import pytest
import redis
from aiohttp import web
from harness import DDPM, REPO, SECRET, UNCLIP, open_pr, with_eta
from served import Served

from analyzers.render import review_markdown
from bot import workspace
from bot.github import DownloadTooLarge, GitHub
from engine.isolation import Failure, Limits, Pool
from engine.review import review


ROOT = Path(__file__).resolve().parents[2]
PIPELINE = "class EvilPipeline(DiffusionPipeline):\n    pass\n\n"  # so the rules' prefilters send it to the parser
#: libcst 1.x's native parser overflows its stack on this (SIGSEGV), a 4 KB file
SEGFAULT = PIPELINE + "x = " + "(" * 2000 + "1" + ")" * 2000 + "\n"
#: and parses this for minutes (then crashes too), a 40 KB file
SLOW = PIPELINE + "x = " + "+".join(["1"] * 20000) + "\n"
HUGE_BYTES = 50 << 20
SEGV_PATH = "src/diffusers/pipelines/evil/pipeline_segv.py"
SLOW_PATH = "src/diffusers/pipelines/evil/pipeline_slow.py"
HUGE_PATH = "src/diffusers/pipelines/evil/pipeline_huge.py"


def huge_source(size: int = HUGE_BYTES) -> str:
    line = "x = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n"
    return PIPELINE + line * (size // len(line))


def _parse_in_subprocess(source: str, timeout: float) -> subprocess.CompletedProcess:
    code = "import sys, libcst; libcst.parse_module(sys.stdin.read())"
    return subprocess.run([sys.executable, "-c", code], input=source, text=True, capture_output=True, timeout=timeout)


def test_the_inputs_really_crash_and_stall_libcst_here():
    """The attack inputs are real on the installed libcst: if this fails, pick new ones (the tests lean on them)."""
    assert _parse_in_subprocess(SEGFAULT, 60).returncode == -signal.SIGSEGV
    with pytest.raises(subprocess.TimeoutExpired):
        _parse_in_subprocess(SLOW, 5)


# -- the pool: a worker's death, a timeout, the memory limit ---------------------------------------------------


def test_a_crash_in_a_worker_is_a_failure_and_the_pool_replaces_the_worker():
    with Pool(Limits(timeout_s=30)) as pool:
        first = pool.outcome(pool.submit(os.getpid))
        assert pool.outcome(pool.submit(libcst.parse_module, SEGFAULT)) == Failure("the parser crashed (SIGSEGV)")
        replaced = pool.outcome(pool.submit(os.getpid))
        assert isinstance(replaced, int) and replaced not in (first, os.getpid())
        assert isinstance(pool.outcome(pool.submit(libcst.parse_module, "x = 1\n")), libcst.Module)


def test_a_task_past_its_time_limit_is_stopped():
    with Pool(Limits(timeout_s=2)) as pool:
        pool.warm()
        start = time.monotonic()
        assert pool.outcome(pool.submit(libcst.parse_module, SLOW)) == Failure("analysis took longer than 2 s")
        assert time.monotonic() - start < 10  # the worker was killed, not waited for (the parse runs for minutes)
        assert pool.outcome(pool.submit(len, "after")) == 5


def test_a_parse_past_the_memory_limit_fails_in_the_worker():
    # a 20 MB file needs about 2.5 GB in libcst; under 512 MiB its allocator aborts the worker, and the worker's
    # log tells that abort from a crash
    limits = Limits(timeout_s=60, memory_bytes=512 << 20)
    with Pool(limits) as pool:
        start = time.monotonic()
        assert pool.outcome(pool.submit(libcst.parse_module, huge_source(20 << 20))) == Failure(
            "over the 512 MiB memory limit"
        )
        assert time.monotonic() - start < 30
        assert pool.outcome(pool.submit(len, "after")) == 5


def test_a_review_whose_time_budget_runs_out_reports_the_rest_as_not_analysed():
    limits = Limits(timeout_s=30, budget_s=2)
    with Pool(limits) as pool:
        jobs = [pool.submit(libcst.parse_module, SLOW) for _ in range(3)]
        deadline = time.monotonic() + limits.budget_s
        start = time.monotonic()
        outcomes = [pool.outcome(job, deadline) for job in jobs]
        assert outcomes == [Failure("the review's analysis time budget (2 s) ran out")] * 3
        assert time.monotonic() - start < 10


def test_a_pool_that_pebble_gave_up_on_is_replaced():
    # a worker that dies while idle makes pebble mark the whole pool broken (it finds no task to blame); the next
    # task must get a fresh pool, not an exception
    with Pool(Limits()) as pool:
        assert pool.outcome(pool.submit(signal.alarm, 1)) == 0  # SIGALRM ends the idle worker a second later
        time.sleep(1.5)
        assert pool.outcome(pool.submit(len, "after")) == 5


# -- `drbot review` (what the App runs): hostile files among real diffusers files -------------------------------


def _git(repo: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t.invalid"}
    env.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t.invalid")
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


def _write(repo: Path, files: dict[str, str]) -> None:
    for path, text in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)


def test_a_review_reports_hostile_files_as_not_analysed_and_reviews_the_rest(tmp_path, sources):
    _git(tmp_path, "init", "-q", "-b", "main")
    _write(tmp_path, {DDPM: sources(DDPM), UNCLIP: sources(UNCLIP)})
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "base")
    # UNCLIP has known findings in base; its head is made to crash the parser: had its base findings been kept,
    # they would read as fixed by this change
    head = {DDPM: with_eta(sources), UNCLIP: SEGFAULT, SLOW_PATH: SLOW, HUGE_PATH: huge_source()}
    _write(tmp_path, head)
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "head")
    start = time.monotonic()
    data = review(tmp_path, "HEAD~1", "HEAD", jobs=1, limits=Limits(timeout_s=5))
    assert time.monotonic() - start < 60
    assert dict(data.not_analysed) == {
        UNCLIP.removeprefix("src/"): "the parser crashed (SIGSEGV)",
        SLOW_PATH.removeprefix("src/"): "analysis took longer than 5 s",
        HUGE_PATH.removeprefix("src/"): "over the 2 MiB size limit (50.0 MiB)",
    }
    assert [(f.code, f.symbol) for f in data.new] == [("DRB201", "eta")]
    assert data.comparison.fixed == ()
    body = review_markdown(data)
    assert "### Not analysed" in body
    assert "- `diffusers/pipelines/evil/pipeline_huge.py`: over the 2 MiB size limit (50.0 MiB)" in body


def test_a_hostile_file_name_stays_inside_its_code_span_in_the_summary():
    from analyzers.review import Comparison, ReviewData

    name = "diffusers/pipelines/x``</details><img src=x>@maintainer``.py"
    data = ReviewData(comparison=Comparison(), not_analysed=((name, "the parser crashed (SIGSEGV)"),))
    (line,) = [line for line in review_markdown(data).splitlines() if "SIGSEGV" in line]
    # a fence longer than any run of backticks in the name: the span cannot be closed early
    assert line == f"- ``` {name} ```: the parser crashed (SIGSEGV)"


def test_the_size_limit_is_checked_before_a_file_is_read(tmp_path):
    # a 50 MB file under a 1 s time limit and a 256 MiB memory limit: only a check made before reading it gives
    # the size as the reason
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "commit", "-q", "--allow-empty", "-m", "base")
    _write(tmp_path, {HUGE_PATH: huge_source()})
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "head")
    data = review(tmp_path, "HEAD~1", "HEAD", jobs=1, limits=Limits(timeout_s=1, memory_bytes=256 << 20))
    assert data.not_analysed == ((HUGE_PATH.removeprefix("src/"), "over the 2 MiB size limit (50.0 MiB)"),)


# -- tarballs: extraction caps -----------------------------------------------------------------------------------


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def make_tarball(path: Path, files: dict[str, bytes | int], pax: dict[str, str] | None = None) -> Path:
    """A gzip tarball as GitHub makes one (a top directory); an int stands for that many zero bytes."""
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT, compresslevel=1) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"huggingface-diffusers-abc1234/{name}")
            if pax:
                info.pax_headers = dict(pax)
            if isinstance(data, int):
                info.size = data
                tar.addfile(info, _Zeros(data))
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def test_a_tarball_that_expands_past_the_cap_is_refused(tmp_path):
    # 256 KB compressed, 256 MiB expanded, in a file the review would not even extract
    bomb = make_tarball(tmp_path / "bomb.tar.gz", {"src/diffusers/a.py": b"x = 1\n", "docs/bomb.bin": 256 << 20})
    assert bomb.stat().st_size < 2 << 20
    start = time.monotonic()
    with pytest.raises(workspace.LimitExceeded, match="expands to more than 32 MiB"):
        workspace.extract(bomb, tmp_path / "out", caps=workspace.Caps(max_bytes=32 << 20))
    assert time.monotonic() - start < 5


def test_a_tarball_with_too_many_entries_is_refused(tmp_path):
    many = make_tarball(tmp_path / "many.tar.gz", {f"docs/{i}.md": b"." for i in range(300)})
    with pytest.raises(workspace.LimitExceeded, match="holds more than 100 entries"):
        workspace.extract(many, tmp_path / "out", caps=workspace.Caps(max_files=100))


def test_an_oversized_tar_header_record_is_refused(tmp_path):
    # tarfile loads a pax record whole: one of 64 MiB compresses to almost nothing
    tarball = make_tarball(
        tmp_path / "pax.tar.gz", {"src/diffusers/a.py": b"x = 1\n"}, pax={"comment": "x" * (64 << 20)}
    )
    with pytest.raises(workspace.LimitExceeded, match="holds a 64.0 MiB tar header record"):
        workspace.extract(tarball, tmp_path / "out")


def test_only_python_files_of_the_package_and_tests_are_extracted_and_a_huge_one_is_left_out(tmp_path):
    files = {
        "src/diffusers/a.py": b"x = 1\n",
        "src/diffusers/huge.py": 3 << 20,
        "tests/test_a.py": b"def test(): pass\n",
        "src/diffusers/data.json": b"{}",
        "docs/index.md": b"# docs",
        "setup.py": b"",
    }
    tarball = make_tarball(tmp_path / "t.tar.gz", files)
    skipped: dict[str, int] = {}
    target = tmp_path / "out"
    assert workspace.extract(tarball, target, skipped=skipped) == 2
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == [
        "src/diffusers/a.py",
        "tests/test_a.py",
    ]
    assert skipped == {"src/diffusers/huge.py": 3 << 20}


# -- downloads: streamed to disk, capped, following GitHub's redirect -------------------------------------------


@pytest.fixture
async def codeload():
    """An API host that redirects tarballs to another origin (as api.github.com sends them to codeload), which
    streams them without a Content-Length; records what each side was sent."""
    seen: list[tuple[str, str | None]] = []
    state = {"size": 0, "fail_first": False}

    async def tarball(request: web.Request) -> web.StreamResponse:
        seen.append(("api", request.headers.get("Authorization")))
        if state.pop("fail_first", False):
            return web.Response(status=502, headers={"retry-after": "0"})
        port = request.url.port
        raise web.HTTPFound(f"http://localhost:{port}/codeload/{request.match_info['sha']}")

    async def stream(request: web.Request) -> web.StreamResponse:
        seen.append(("codeload", request.headers.get("Authorization")))
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        left = state["size"]
        while left:
            chunk = min(left, 64 << 10)
            await response.write(b"\0" * chunk)
            left -= chunk
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/repos/o/r/tarball/{sha}", tarball)
    app.router.add_get("/codeload/{sha}", stream)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield url, state, seen
    await runner.cleanup()


async def _no_sleep(_seconds: float) -> None:
    pass


async def test_a_download_streams_to_disk_follows_the_redirect_and_stops_at_the_cap(codeload, tmp_path):
    url, state, seen = codeload
    async with aiohttp.ClientSession() as session:
        gh = GitHub(session, token="ghs_secret", api_url=url, sleep=_no_sleep)
        state.update(size=3 << 20, fail_first=True)
        assert await gh.download("/repos/o/r/tarball/abc", tmp_path / "ok.tar.gz", 4 << 20) == 200
        assert (tmp_path / "ok.tar.gz").stat().st_size == 3 << 20
        assert gh.waited == [0.0]  # the 502 was retried, as `_request` retries
        # the token went to the API only: aiohttp drops it when the redirect leaves the API's origin
        assert seen == [("api", "token ghs_secret"), ("api", "token ghs_secret"), ("codeload", None)]
        state["size"] = 64 << 20
        with pytest.raises(DownloadTooLarge):
            await gh.download("/repos/o/r/tarball/abc", tmp_path / "big.tar.gz", 4 << 20)
        assert not (tmp_path / "big.tar.gz").exists()


# -- the App: a tarball over a cap is a final, explained outcome ------------------------------------------------


@pytest.mark.settings(max_tarball_bytes=4096)
async def test_a_tarball_over_the_download_cap_ends_with_a_check_run_not_a_retry(harness, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)})
    assert await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened")) == 202
    await harness.run()
    assert [o.status for o in harness.outcomes] == ["too-large"]
    (check,) = github.check_runs(REPO)
    assert check["status"] == "completed" and check["conclusion"] == "neutral"
    assert check["output"]["title"] == "Not reviewed: too large"
    assert "is over the 4 KiB download limit" in check["output"]["summary"]
    assert len(github.requests("GET", r"/tarball/")) == 1
    assert github.comments(REPO, 1) == []
    await asyncio.sleep(0.1)
    assert await harness.run() == 0  # nothing left to retry
    assert await harness.redis.xlen(harness.keys.dead) == 0


@pytest.mark.settings(max_extract_bytes=8 << 20, review_state=False)
async def test_a_tarball_that_expands_past_the_cap_ends_with_a_check_run(harness, github, sources):
    """The two-tarball path (DRBOT_REVIEW_STATE=0, and the fallback for huge or truncated trees) keeps its cap."""
    open_pr(github, sources, {DDPM: with_eta(sources), "docs/bomb.bin": bytes(32 << 20)})
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    assert [o.status for o in harness.outcomes] == ["too-large"]
    (check,) = github.check_runs(REPO)
    assert check["conclusion"] == "neutral"
    assert "the head commit's tarball expands to more than 8 MiB" in check["output"]["summary"]
    assert len(github.requests("GET", r"/tarball/")) == 2
    assert await harness.redis.xlen(harness.keys.dead) == 0


@pytest.mark.settings(max_extract_bytes=8 << 20)
async def test_a_head_built_from_its_tree_never_downloads_a_blob_it_does_not_analyse(harness, github, sources):
    """With merge bases kept, the head is the base plus the changed blobs drbot reviews: a 32 MiB changed file
    outside the reviewed Python sources is never fetched, so it can neither fill the disk nor stop the review."""
    open_pr(github, sources, {DDPM: with_eta(sources), "docs/bomb.bin": bytes(32 << 20)})
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    assert [o.status for o in harness.outcomes] == ["reviewed"]
    (summary,) = github.comments(REPO, 1)
    assert "**1 new finding**" in summary["body"]
    assert len(github.requests("GET", r"/git/blobs/")) == 1  # the changed pipeline file, and nothing else
    assert len(github.requests("GET", r"/tarball/")) == 1  # the base, once
    assert await harness.redis.xlen(harness.keys.dead) == 0


# -- end to end: `drbot serve` as deployed, under attack ---------------------------------------------------------


@pytest.fixture
def served(github, tmp_path):
    running: list[Served] = []

    def start(**env: str) -> Served:
        server = Served(github, SECRET, log=tmp_path / f"serve-{len(running)}.log", **env)
        running.append(server)
        server.start(watch=True)
        return server

    yield start
    for server in running:
        server.stop()


def test_drbot_serve_reports_hostile_files_and_goes_on_reviewing(served, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources), SEGV_PATH: SEGFAULT, SLOW_PATH: SLOW, HUGE_PATH: huge_source()})
    github.add_pull(REPO, 2, head_files={DDPM: with_eta(sources).replace("eta: float", "eta2: float")})
    server = served(DRBOT_ANALYSIS_TIMEOUT="5")

    assert server.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened")) == 202
    server.wait_for(lambda: github.comments(REPO, 1), timeout=120)
    (summary,) = github.comments(REPO, 1)
    body = summary["body"]
    assert "### Not analysed" in body
    assert "- `diffusers/pipelines/evil/pipeline_segv.py`: the parser crashed (SIGSEGV)" in body
    assert "- `diffusers/pipelines/evil/pipeline_slow.py`: analysis took longer than 5 s" in body
    assert "- `diffusers/pipelines/evil/pipeline_huge.py`: over the 2 MiB size limit (50.0 MiB)" in body
    assert "**1 new finding**" in body and "`eta`" in body  # the normal file is still reviewed
    (check,) = github.check_runs(REPO, github.pull(REPO, 1)["head"]["sha"])
    assert check["output"]["title"] == "1 new finding · 3 files not analysed"

    # the same process reviews the next pull request normally
    assert server.deliver("pull_request", github.pull_request_payload(REPO, 2, "opened")) == 202
    server.wait_for(lambda: github.comments(REPO, 2), timeout=60)
    (second,) = github.comments(REPO, 2)
    assert "**1 new finding**" in second["body"] and "`eta2`" in second["body"]
    assert "Not analysed" not in second["body"]

    # /healthz answered 200 throughout, and each event was taken once and acknowledged (no retry, no dead letter)
    assert server.process.poll() is None
    assert len(server.health) > 20 and set(server.health) == {200}, sorted(set(server.health))
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        # the summary is posted before the handler returns (labels, state): the last ack comes a moment later
        server.wait_for(lambda: client.xpending(f"{server.prefix}events", "bot")["pending"] == 0, timeout=30)
        assert client.xlen(f"{server.prefix}dead") == 0
    finally:
        client.close()
    # each head was fetched once (as its tree and changed blobs, the base being kept): no retry fetched it again
    heads = [github.pull(REPO, n)["head"]["sha"] for n in (1, 2)]
    for head in heads:
        assert (
            len(github.requests("GET", rf"/tarball/{head}$")) + len(github.requests("GET", rf"/git/trees/{head}")) == 1
        )
