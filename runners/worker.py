"""`drbot worker`: consume contract jobs from `drbot:jobs` (group `runners`), run each in a sandboxed subprocess
on the PR's own code, and report the result to `drbot:results`. The runner holds no GitHub token."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError


log = logging.getLogger("drbot.runner")
GROUP = "runners"
RESULT_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True)
class RunnerKeys:
    prefix: str = "drbot:"

    @property
    def jobs(self) -> str:
        return f"{self.prefix}jobs"

    @property
    def results(self) -> str:
        return f"{self.prefix}results"

    def reported(self, job_id: str) -> str:
        return f"{self.prefix}reported:{job_id}"

    def latest(self, repo: str, pr: int) -> str:
        """The newest head sha contracts were requested for on a PR (older jobs are cancelled)."""
        return f"{self.prefix}jobhead:{repo}#{pr}"


def extract_src(tarball: bytes, target: Path) -> Path:
    """Unpack the tarball's `src/` (GitHub's top directory stripped), refusing links and paths outside `target`."""
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:*") as archive:
        for member in archive:
            parts = member.name.split("/", 1)
            if len(parts) != 2 or not member.isfile() or not parts[1].startswith("src/"):
                continue
            relative = parts[1]
            if relative.startswith("/") or ".." in relative.split("/"):
                continue
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.extractfile(member) as source, open(destination, "wb") as handle:  # type: ignore[union-attr]
                shutil.copyfileobj(source, handle)
    return target / "src"


def scrubbed_env(src: Path, home: Path) -> dict[str, str]:
    """Only what Python needs: no tokens, no cloud credentials, no Redis URL reach the PR's code."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        # the PR's src/ first, so its diffusers is the one imported; then drbot's own code (the suite)
        "PYTHONPATH": os.pathsep.join([str(src), str(Path(__file__).resolve().parent.parent)]),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(home / "hf"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for name in ("CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


class ContractRunner:
    """One consumer of `drbot:jobs`. A job it dies holding stays pending and another runner claims it after
    the visibility timeout; a job's result is reported once (`drbot:reported:{job_id}`)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: RunnerKeys = RunnerKeys(),
        *,
        visibility_timeout_s: float = 900.0,
        device: str = "cpu",
        dtype: str | None = None,
        name: str | None = None,
        workdir: str | None = None,
        python: str = sys.executable,
    ) -> None:
        self.redis, self.keys = redis, keys
        self.visibility_ms = max(1, int(visibility_timeout_s * 1000))
        self.device, self.dtype = device, dtype
        self.name = name or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self.workdir, self.python = workdir, python

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.keys.jobs, GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def _next(self, block_ms: int | None):
        _, claimed, _ = await self.redis.xautoclaim(
            self.keys.jobs, GROUP, self.name, min_idle_time=self.visibility_ms, start_id="0-0", count=1
        )
        entries = [e for e in claimed if e[1] is not None]
        if entries:
            return entries[0]
        reply = await self.redis.xreadgroup(GROUP, self.name, {self.keys.jobs: ">"}, count=1, block=block_ms)
        for _, batch in reply or []:
            for entry in batch:
                return entry
        return None

    async def run_burst(self) -> int:
        """Run jobs until none is left to read or claim (tests, one-shot use); returns how many were handled."""
        await self.ensure_group()
        handled = 0
        while (entry := await self._next(None)) is not None:
            await self.process(*entry)
            handled += 1
        return handled

    async def run(self, stop: asyncio.Event) -> None:
        await self.ensure_group()
        while not stop.is_set():
            try:
                entry = await self._next(1000)
                if entry is not None:
                    await self.process(*entry)
            except (RedisError, OSError) as error:
                log.warning("redis unavailable (%s); retrying", error)
                await asyncio.sleep(1)

    async def process(self, message_id, fields) -> str:
        payload = json.loads(fields[b"payload"])
        job_id = payload["job_id"]
        if await self.redis.exists(self.keys.reported(job_id)):
            await self._ack(message_id)
            return "duplicate"
        latest = await self.redis.get(self.keys.latest(payload["repo"], payload["pr"]))
        if latest is not None and latest.decode() != payload["head_sha"]:
            log.info("job %s cancelled: a newer head %s was requested", job_id, latest.decode()[:7])
            await self._ack(message_id)
            return "cancelled"
        result = await self.execute(payload)
        # report once, even if two runners raced on a claimed job
        if await self.redis.set(self.keys.reported(job_id), result["status"], nx=True, ex=RESULT_TTL_S):
            await self.redis.xadd(self.keys.results, {"job_id": job_id, "payload": json.dumps(result, sort_keys=True)})
        await self._ack(message_id)
        return result["status"]

    async def _ack(self, message_id) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.keys.jobs, GROUP, message_id)
            pipe.xdel(self.keys.jobs, message_id)
            await pipe.execute()

    async def execute(self, payload: dict) -> dict:
        """Download the PR at its pinned sha, run the suite in a subprocess with a time limit, build the result."""
        import aiohttp

        started = time.monotonic()
        base = {"version": 1, "job_id": payload["job_id"], "results": [], "log_tail": ""}
        runner = {"host": socket.gethostname(), "device": self.device}
        folder = Path(tempfile.mkdtemp(prefix="drbot-job-", dir=self.workdir))
        try:
            try:
                async with aiohttp.ClientSession() as session:  # no token: public tarballs only (DESIGN §7)
                    async with session.get(payload["tarball_url"]) as response:
                        if response.status != 200:
                            raise RuntimeError(f"tarball: HTTP {response.status}")
                        tarball = await response.read()
                src = extract_src(tarball, folder)
            except Exception as error:  # noqa: BLE001 - reported as the job's error
                return {**base, "status": "error", "runner": runner, "log_tail": f"could not fetch the PR: {error}"}
            command = [self.python, "-m", "runners.job", "--pipelines", ",".join(payload.get("pipelines") or []),
                       "--device", self.device]  # fmt: skip
            contracts = payload.get("contracts")
            if isinstance(contracts, list) and contracts:
                command += ["--contracts", ",".join(contracts)]
            if self.dtype:
                command += ["--dtype", self.dtype]
            proc = await asyncio.create_subprocess_exec(
                *command, cwd=folder, env=scrubbed_env(src, folder), stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            lines: list[str] = []
            timed_out = False

            async def read() -> None:
                assert proc.stdout is not None
                async for raw in proc.stdout:
                    lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

            try:
                await asyncio.wait_for(
                    asyncio.gather(read(), proc.wait()), timeout=float(payload.get("timeout_s", 1800))
                )
            except TimeoutError:
                timed_out = True
                proc.kill()
                await proc.wait()
            results, done = [], False
            for line in lines:
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "runner" in item:
                    runner.update(item["runner"])
                elif "result" in item:
                    results.append(item["result"])
                elif item.get("done"):
                    done = True
            if timed_out:
                status = "timeout"
            elif not done or proc.returncode != 0:
                status = "error"
            elif any(r["outcome"] == "failed" for r in results):
                status = "failed"
            else:
                status = "passed"
            tail = "\n".join(line for line in lines if not line.startswith("{"))[-4000:]
            return {**base, "status": status, "results": results, "runner": runner, "log_tail": tail,
                    "duration_s": round(time.monotonic() - started, 2)}  # fmt: skip
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def main(args) -> int:
    """Entry of `drbot worker`."""
    import signal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def serve() -> None:
        redis = aioredis.from_url(args.redis_url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runner = ContractRunner(redis, RunnerKeys(args.key_prefix), visibility_timeout_s=args.visibility_timeout,
                                device=args.device, dtype=args.dtype)  # fmt: skip
        try:
            if args.burst:
                await runner.run_burst()
            else:
                await runner.run(stop)
        finally:
            await redis.aclose()

    asyncio.run(serve())
    return 0
