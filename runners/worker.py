"""`drbot worker`: consume contract jobs from `drbot:jobs` (group `runners`), run each in a sandbox on the PR's own
code at exactly the commit a maintainer approved, and report the result. The runner holds no GitHub token.

Trust (DESIGN §7): the runner reaches Redis as its own ACL user, which may read the jobs stream, write the results
stream and its own `runner:{name}:` keys, and nothing else; the job's code runs in `runners.sandbox` with no
network, no view of the runner's processes or secrets, and hard limits. What the job prints is untrusted: only
schema-checked lines become results, and the bot checks them again.

The protocol: the runner claims a job entry (consumer `{runner}/{instance}`), writes its result to
`runner:{runner}:result:{job_id}`, and announces it on `drbot:results`. The bot accepts the result only while
this runner holds the job's claim, then acknowledges the job entry; the runner never acknowledges jobs itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from common.archive import ArchiveError, Caps, extract
from common.streams import Entry, Poison, StreamConsumer, as_text, wait_for_redis


log = logging.getLogger("drbot.runner")
GROUP = "runners"
RESULT_TTL_S = 7 * 24 * 3600
RUNNER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
PIPELINE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
CONTRACT_CODE = re.compile(r"^DRC\d{3}$")
REPO_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$")
SHA = re.compile(r"^[0-9a-f]{40}$")
MAX_JOB_BYTES = 64 * 1024
MAX_TIMEOUT_S = 3 * 3600
#: what a job may send back: one line, all lines, rows, one message, the log tail
MAX_LINE_BYTES = 64 * 1024
MAX_ROWS = 2000
MAX_MESSAGE = 1000
MAX_LOG_TAIL = 4000
#: the largest tarball a runner downloads, and what it may expand to under src/
MAX_TARBALL_BYTES = 512 * 1024 * 1024
SRC_CAPS = Caps(max_bytes=1 << 30, max_files=100_000, max_file_bytes=16 << 20)
#: environment variables whose values never appear in a report (defence in depth: the sandbox cannot read them)
SECRET_NAMES = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL|AUTH|REDIS_URL|DSN", re.I)


@dataclass(frozen=True)
class RunnerKeys:
    prefix: str = "drbot:"

    @property
    def jobs(self) -> str:
        return f"{self.prefix}jobs"

    @property
    def results(self) -> str:
        return f"{self.prefix}results"

    def latest(self, repo: str, pr: int) -> str:
        """The newest head sha contracts were requested for on a PR (older jobs are cancelled); the bot writes it
        (bot.store.Keys.job_head: the two packages never import each other)."""
        return f"{self.prefix}jobhead:{repo}#{pr}"

    def result(self, runner: str, job_id: str) -> str:
        """This runner's result of a job (bot.store.Keys.runner_result); its ACL user may write only here."""
        return f"{self.prefix}runner:{runner}:result:{job_id}"


def validate_job(raw: bytes) -> dict:
    """A job payload as the runner trusts it (only the bot can write jobs, but a runner checks anyway)."""
    if len(raw) > MAX_JOB_BYTES:
        raise Poison(f"job over {MAX_JOB_BYTES} bytes")
    try:
        job = json.loads(raw)
    except (ValueError, RecursionError):
        raise Poison("job is not JSON") from None
    if not isinstance(job, dict) or job.get("version") != 1:
        raise Poison("job is not a version 1 object")
    problems = []
    if not isinstance(job.get("job_id"), str) or not 0 < len(job["job_id"]) <= 1024:
        problems.append("job_id")
    if not isinstance(job.get("repo"), str) or not REPO_NAME.match(job["repo"]):
        problems.append("repo")
    if not isinstance(job.get("pr"), int) or isinstance(job.get("pr"), bool) or job["pr"] <= 0:
        problems.append("pr")
    if not isinstance(job.get("head_sha"), str) or not SHA.match(job["head_sha"]):
        problems.append("head_sha")
    pipelines = job.get("pipelines")
    if (
        not isinstance(pipelines, list)
        or len(pipelines) > 100
        or not all(isinstance(p, str) and PIPELINE_NAME.match(p) for p in pipelines)
    ):
        problems.append("pipelines")
    contracts = job.get("contracts")
    if contracts != "all" and not (
        isinstance(contracts, list) and all(isinstance(c, str) and CONTRACT_CODE.match(c) for c in contracts)
    ):
        problems.append("contracts")
    timeout = job.get("timeout_s", 1800)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout <= MAX_TIMEOUT_S:
        problems.append("timeout_s")
    url = job.get("tarball_url")
    # the runner fetches exactly the approved commit: the URL must name it, not a branch
    if not problems and not (
        isinstance(url, str)
        and url.startswith(("https://", "http://"))
        and url.endswith(f"/repos/{job['repo']}/tarball/{job['head_sha']}")
    ):
        problems.append("tarball_url")
    if problems:
        raise Poison(f"job fields malformed: {', '.join(problems)}")
    return job


def parse_output(lines: list[str]) -> tuple[dict, list[dict], bool, str]:
    """What the job's stdout says: runner facts, result rows, whether it finished, and the rest as a log.

    Every line is untrusted: anything but a JSON object of a known shape is log text; rows are checked field by
    field and capped."""
    info: dict[str, str] = {}
    rows: list[dict] = []
    done = False
    log_lines: list[str] = []
    for line in lines:
        item = None
        if line.startswith("{") and len(line) <= MAX_LINE_BYTES:
            try:
                item = json.loads(line)
            except (ValueError, RecursionError):
                item = None
        if not isinstance(item, dict):
            log_lines.append(line)
            continue
        if isinstance(item.get("runner"), dict):
            info = {
                k: str(v)[:100] for k, v in item["runner"].items() if k in ("torch", "diffusers", "diffusers_path")
            }
        elif isinstance(item.get("result"), dict) and len(rows) < MAX_ROWS:
            row = _row(item["result"])
            if row is not None:
                rows.append(row)
        elif item.get("done") is True:
            done = True
    return info, rows, done, "\n".join(log_lines)


def _row(raw: dict) -> dict | None:
    pipeline, contract, outcome, pattern = (
        raw.get("pipeline"),
        raw.get("contract"),
        raw.get("outcome"),
        raw.get("pattern"),
    )
    duration = raw.get("duration_s", 0.0)
    if not (
        isinstance(pipeline, str)
        and 0 < len(pipeline) <= 200
        and isinstance(contract, str)
        and CONTRACT_CODE.match(contract)
    ):
        return None
    if outcome not in ("passed", "failed", "skipped", "error"):
        return None
    if not isinstance(pattern, int) or isinstance(pattern, bool) or not 1 <= pattern <= 10:
        return None
    if not isinstance(duration, (int, float)) or isinstance(duration, bool):
        duration = 0.0
    return {"pipeline": pipeline, "contract": contract, "pattern": pattern, "outcome": outcome,
            "message": str(raw.get("message", ""))[:MAX_MESSAGE], "duration_s": round(float(duration), 3)}  # fmt: skip


def redact(text: str, environ=os.environ) -> str:
    """Blank out the values of the runner's secret-looking variables, should one ever reach a report."""
    for name, value in environ.items():
        if len(value) >= 8 and SECRET_NAMES.search(name):
            text = text.replace(value, f"<{name}>")
    return text


async def runner_identity(redis, configured: str | None = None) -> str:
    """The runner's name: its Redis ACL user (what binds a result to the runner that claimed the job), or, on a
    Redis without ACL users (development), the configured name or the host's."""
    try:
        who = await redis.execute_command("ACL", "WHOAMI")
    except Exception:  # noqa: BLE001 - an old Redis without ACLs
        who = b"default"
    who = who.decode() if isinstance(who, bytes) else str(who)
    if who != "default":
        if not RUNNER_NAME.match(who):
            raise ValueError(f"the runner's Redis user {who!r} is not a valid runner name ([A-Za-z0-9_.-]{{1,64}})")
        return who
    name = configured or re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:64] or "runner"
    if not RUNNER_NAME.match(name):
        raise ValueError(f"runner name {name!r} is not valid ([A-Za-z0-9_.-]{{1,64}})")
    return name


class ContractRunner:
    """One consumer of `drbot:jobs` (DESIGN §6, §7). A job it dies holding stays pending and another runner claims
    it after the visibility timeout; a job claimed more than `max_attempts` times (its runners kept dying) is
    reported as an error instead of being run again."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: RunnerKeys = RunnerKeys(),
        *,
        visibility_timeout_s: float = 900.0,
        max_attempts: int = 3,
        device: str = "cpu",
        dtype: str | None = None,
        name: str | None = None,
        workdir: str | None = None,
        python: str = sys.executable,
        sandbox=None,
        max_tarball_bytes: int = MAX_TARBALL_BYTES,
    ) -> None:
        self.redis, self.keys = redis, keys
        self.device, self.dtype = device, dtype
        self.configured_name = name
        self._runner: str | None = None  # learned from Redis (runner_identity) on first use
        self.instance = f"{socket.gethostname()[:20]}-{uuid.uuid4().hex[:6]}"
        self.workdir, self.python = workdir, python
        self._sandbox = sandbox
        self.max_tarball_bytes = max_tarball_bytes
        self._standins: Path | None = None
        self._standins_tried = False
        self.jobs = StreamConsumer(
            redis, keys.jobs, GROUP, dead=None, visibility_timeout_s=visibility_timeout_s, max_attempts=max_attempts,
            delete_on_ack=False, exhausted=self._exhausted,
        )  # fmt: skip

    @property
    def sandbox(self):
        """The sandbox jobs run in (made on first use: reporting and claiming need none)."""
        if self._sandbox is None:
            self._sandbox = default_sandbox(self.device)
        return self._sandbox

    @property
    def runner(self) -> str:
        """This runner's name (its Redis ACL user); known once `ensure_group`/`run`/`run_burst` identified it."""
        if self._runner is None:
            raise RuntimeError("the runner has not identified itself to Redis yet")
        return self._runner

    @property
    def consumer(self) -> str:
        return f"{self.runner}/{self.instance}"

    async def _identify(self) -> None:
        if self._runner is None:
            self._runner = await runner_identity(self.redis, self.configured_name)

    async def ensure_group(self) -> None:
        await self._identify()
        await self.jobs.ensure_group()

    async def run_burst(self) -> int:
        """Run jobs until none is left to read or claim (tests, one-shot use); returns how many were handled."""
        await self._identify()
        return await self.jobs.run_burst(self.handle, self.consumer)

    async def run(self, stop: asyncio.Event) -> None:
        if not await wait_for_redis(self.redis, f"runner {self.configured_name or ''}".strip(), stop):
            return
        await self._identify()
        await self.jobs.run(self.handle, self.consumer, stop)

    async def standins(self) -> Path | None:
        """The hub stand-ins, written once per runner on the host (trusted code) and shown read-only to every job;
        None when they cannot be built here (a pipeline needing one is then reported as having no stand-in)."""
        if not self._standins_tried:
            from runners.standins import default_cache, populate

            self._standins_tried = True
            try:
                self._standins = await asyncio.to_thread(populate, default_cache())
            except Exception as error:  # noqa: BLE001 - no torch/transformers on this host, or a full disk
                log.warning("the hub stand-ins could not be written: %s: %s", type(error).__name__, error)
        return self._standins

    async def handle(self, entry: Entry) -> str:
        """Run one job and report it; the entry stays pending until the bot accepts the report."""
        payload = validate_job(entry.get("payload"))
        job_id = payload["job_id"]
        if await self.redis.exists(self.keys.result(self.runner, job_id)):
            # reported already, and the bot has not settled the job yet: announce it again (the first notice may
            # have been lost with a crash between writing the result and announcing it; the bot ignores repeats)
            await self.announce(entry, job_id)
            return "held"
        latest = await self.redis.get(self.keys.latest(payload["repo"], payload["pr"]))
        if latest is not None and as_text(latest) != payload["head_sha"]:
            log.info("job %s cancelled: a newer head %s was requested", job_id, as_text(latest)[:7])
            result = self._result(payload, "cancelled", log_tail="a newer head was requested")
        else:
            result = await self.execute(payload)
        await self.report(entry, payload, result)
        return "held"

    async def _exhausted(self, entry: Entry) -> str:
        """A job whose runners kept dying (a crash or an OOM kill of the runner itself): say so, run it no more."""
        try:
            payload = validate_job(entry.get("payload"))
        except Poison as poison:
            log.error("job entry %s is malformed and cannot be reported: %s", entry.id, poison)
            return "held"
        if await self.redis.exists(self.keys.result(self.runner, payload["job_id"])):
            await self.announce(entry, payload["job_id"])
        else:
            tail = f"the runners died {entry.attempts - 1} times running this job; it is not run again"
            await self.report(entry, payload, self._result(payload, "error", log_tail=tail))
        return "held"

    def _result(self, payload: dict, status: str, **fields) -> dict:
        return {"version": 1, "job_id": payload["job_id"], "head_sha": payload["head_sha"], "status": status,
                "results": [], "runner": {"host": socket.gethostname(), "device": self.device}, "limit": None,
                "log_tail": "", **fields}  # fmt: skip

    async def report(self, entry: Entry, payload: dict, result: dict) -> None:
        """Write the result under this runner's own keys, then announce it on the results stream."""
        result = {**result, "log_tail": redact(result.get("log_tail", ""))[-MAX_LOG_TAIL:]}
        await self.redis.set(self.keys.result(self.runner, payload["job_id"]), json.dumps(result, sort_keys=True),
                             ex=RESULT_TTL_S)  # fmt: skip
        await self.announce(entry, payload["job_id"])

    async def announce(self, entry: Entry, job_id: str) -> None:
        """Tell the bot this runner's result of the job is in its keys."""
        notice: dict[FieldT, EncodableT] = {"job_id": job_id, "runner": self.runner, "job_entry": entry.id}
        await self.redis.xadd(self.keys.results, notice, maxlen=100_000, approximate=True)

    async def execute(self, payload: dict) -> dict:
        """Fetch the PR at the pinned commit (checked), run the suite in the sandbox, build the result."""
        started = time.monotonic()
        folder = Path(tempfile.mkdtemp(prefix="drbot-job-", dir=self.workdir))
        try:
            try:
                tarball = folder / "pr.tar.gz"
                await download(payload["tarball_url"], tarball, self.max_tarball_bytes)
                src = folder / "checkout"
                # src/ is the package under test; tests/ builds pipelines the way its fast tests do
                extracted = extract(
                    tarball,
                    src,
                    lambda path: path.startswith(("src/", "tests/")),
                    SRC_CAPS,
                    commit=payload["head_sha"],
                )
                tarball.unlink()
                incomplete = {path: size for path, size in extracted.skipped.items() if path.startswith("src/")}
                if incomplete:  # the PR's package is incomplete: running it would test something else
                    path, size = next(iter(incomplete.items()))
                    raise ArchiveError(
                        f"{path} is over the {SRC_CAPS.max_file_bytes >> 20} MiB file limit ({size:,} bytes)"
                    )
            except (ArchiveError, DownloadError) as error:
                return self._result(payload, "error", log_tail=f"could not fetch the PR: {error}")
            argv = [self.python, "-m", "runners.job", "--pipelines", ",".join(payload["pipelines"]),
                    "--device", self.device]  # fmt: skip
            if isinstance(payload["contracts"], list) and payload["contracts"]:
                argv += ["--contracts", ",".join(payload["contracts"])]
            if self.dtype:
                argv += ["--dtype", self.dtype]
            # the sandbox shows the PR's src/ (and tests/), drbot's runners package and the hub stand-ins at fixed
            # paths; the unsandboxed twin (local development) sees the host's paths as they are
            sandboxed = getattr(self.sandbox, "sandboxed", True)
            root = JOB_ROOT if sandboxed else str(src)
            src_dir = JOB_SRC if sandboxed else str(src / "src")
            lib_dir = JOB_LIB if sandboxed else str(RUNNERS_PACKAGE.parent)
            binds = [(str(src / "src"), src_dir), (str(RUNNERS_PACKAGE), f"{lib_dir}/runners")]
            if not sandboxed:
                binds = [(str(src / "src"), src_dir), (lib_dir, lib_dir)]
            hub = await self.standins()
            hub_dir = JOB_HUB if sandboxed else str(hub)
            if (src / "tests" / "pipelines").is_dir():
                argv += ["--source", root]
                if sandboxed:
                    binds.append((str(src / "tests"), f"{JOB_ROOT}/tests"))
            if hub is not None and sandboxed:
                binds.append((str(hub), JOB_HUB))
            from runners.sandbox import SandboxUnavailable

            try:
                outcome = await self.sandbox.run(
                    argv,
                    ro_binds=binds,
                    env=job_env(self.device, src_dir, lib_dir, hub_dir if hub is not None else None),
                    cwd=src_dir,
                    wall_seconds=float(payload.get("timeout_s", 1800)),
                )
            except SandboxUnavailable as error:  # the host changed under the runner: refuse, never run it bare
                log.error("job %s refused: the sandbox cannot be set up: %s", payload["job_id"], error)
                return self._result(payload, "error", log_tail=f"the runner's sandbox could not be set up: {error}")
            lines = outcome.output.decode("utf-8", "replace").splitlines()
            info, rows, done, log_text = parse_output(lines)
            if outcome.limit == "wall_time":
                status = "timeout"
            elif outcome.limit is not None:
                status = "limit"
            elif not done or outcome.returncode != 0:
                status = "error"
            elif any(r["outcome"] == "failed" for r in rows):
                status = "failed"
            else:
                status = "passed"
            result = self._result(payload, status, results=rows, limit=outcome.limit if status == "limit" else None,
                                  log_tail=log_text[-MAX_LOG_TAIL:])  # fmt: skip
            result["runner"].update({k: v for k, v in info.items() if k in ("torch", "diffusers")})
            # the v1 result has no top-level duration (each row has its own): the job's wall time goes to the log
            log.info("job %s: %s in %.1f s", payload["job_id"], status, time.monotonic() - started)
            if "diffusers_path" in info:
                result["runner"]["diffusers_path"] = info["diffusers_path"]
            if outcome.peak_memory_bytes:
                result["runner"]["peak_memory_mib"] = str(outcome.peak_memory_bytes >> 20)
            return result
        finally:
            shutil.rmtree(folder, ignore_errors=True)


#: where the job sees the PR's `src/` and `tests/`, drbot's `runners` package and the hub stand-ins (read-only)
JOB_ROOT = "/job"
JOB_SRC = f"{JOB_ROOT}/src"
JOB_LIB = f"{JOB_ROOT}/lib"
JOB_HUB = f"{JOB_ROOT}/hub"
RUNNERS_PACKAGE = Path(__file__).resolve().parent


def job_env(device: str, src_dir: str = JOB_SRC, lib_dir: str = JOB_LIB, hub_dir: str | None = None) -> dict[str, str]:
    """Only what Python needs: no tokens, no cloud credentials, no Redis URL reach the PR's code. With `hub_dir`,
    `from_pretrained` of a tiny checkpoint the fast tests load finds drbot's stand-in there, offline."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        # the PR's src/ first, so its diffusers is the one imported; then drbot's runners package (the suite)
        "PYTHONPATH": f"{src_dir}:{lib_dir}",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    if hub_dir is not None:
        from runners.standins import offline_env

        env.update(offline_env(Path(hub_dir)), DRBOT_STANDIN_CACHE=hub_dir)
    if device != "cpu" and "CUDA_VISIBLE_DEVICES" in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return env


def default_sandbox(device: str):
    from runners.sandbox import Sandbox

    return Sandbox(gpu=device != "cpu")


class DownloadError(Exception):
    """The tarball could not be downloaded, or was larger than allowed."""


async def download(url: str, path: Path, max_bytes: int) -> int:
    """Stream `url` to `path` (no token: public tarballs only, DESIGN §7), stopping past `max_bytes`."""
    import aiohttp

    written = 0
    timeout = aiohttp.ClientTimeout(total=600, sock_connect=30, sock_read=60)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
            if response.status != 200:
                raise DownloadError(f"tarball: HTTP {response.status}")
            if (response.content_length or 0) > max_bytes:
                raise DownloadError(f"tarball over {max_bytes / 2**20:,.0f} MiB ({response.content_length:,} bytes)")
            with open(path, "wb") as handle:
                async for chunk in response.content.iter_chunked(1024 * 1024):
                    written += len(chunk)
                    if written > max_bytes:
                        raise DownloadError(f"tarball over {max_bytes / 2**20:,.0f} MiB")
                    handle.write(chunk)
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        raise DownloadError(f"tarball: {type(error).__name__}: {error}") from None
    return written


def main(args) -> int:
    """Entry of `drbot worker`."""
    import signal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from runners.sandbox import Sandbox, SandboxUnavailable, Unsandboxed

    sandbox: Sandbox | Unsandboxed
    if args.unsandboxed:
        log.warning("running jobs WITHOUT a sandbox (--unsandboxed): the PR's code can read this user's files and "
                    "environment and reach the network; for local development only")  # fmt: skip
        sandbox = Unsandboxed()
    else:
        sandbox = Sandbox(gpu=args.device != "cpu")
        try:
            sandbox.check()
        except SandboxUnavailable as error:
            print(f"drbot worker: the job sandbox cannot be set up: {error}", file=sys.stderr)
            return 2

    async def serve() -> None:
        from common.streams import connect

        redis = connect(args.redis_url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runner = ContractRunner(redis, RunnerKeys(args.key_prefix), visibility_timeout_s=args.visibility_timeout,
                                device=args.device, dtype=args.dtype, name=args.name, sandbox=sandbox)  # fmt: skip
        try:
            if args.burst:
                await runner.run_burst()
            else:
                await runner.run(stop)
        finally:
            await redis.aclose()

    asyncio.run(serve())
    return 0
