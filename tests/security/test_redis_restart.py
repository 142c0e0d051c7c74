"""No lost command on a Redis restart, and no exit when Redis is away: a command either completes or is retried
from the stream; `drbot serve` and `drbot worker` wait for Redis instead of exiting.

The review: Redis restarting during `/drbot pause` left 👀, no reply, the PR not paused, and the event acked as a
replay; Redis unreachable at start-up made `serve` and `worker` exit 1. These tests run their own Redis with
append-only persistence on a spare port (the shared server keeps nothing on disk), as deployments must."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import DDPM, REPO, SECRET, app_harness, make_settings, open_pr, with_eta
from served import Served, free_port

from bot.handlers.issue_comment import reply_marker
from common.streams import connect


ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


class OwnRedis:
    """A redis-server with AOF (fsync always) on a spare port, killed and restarted at will."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(directory),
                        "--appendonly", "yes", "--appendfsync", "always", "--save", ""]  # fmt: skip
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()  # no clean shutdown: the append-only file is all that is left
            self.proc.wait()
            self.proc = None


@pytest.fixture
def own_redis(tmp_path):
    server = OwnRedis(tmp_path)
    yield server
    server.kill()


async def test_redis_restarting_in_the_middle_of_pause_still_pauses_and_replies_once(github, sources, own_redis):
    own_redis.start()
    open_pr(github, sources, {DDPM: with_eta(sources)})
    github.set_permission(REPO, "maintainer", "write")
    redis = connect(own_redis.url)
    settings = make_settings(github, "drbot:")
    async with app_harness(github, settings, redis) as app:
        payload = github.issue_comment_payload(REPO, 1, "/drbot pause", "maintainer")
        assert await app.deliver("issue_comment", payload) == 202
        # the 👀 reaction answers slowly; Redis dies while the command waits for it
        github.fail("POST", r"/reactions$", status=None, times=1, delay=1.0)
        stop = asyncio.Event()
        worker = asyncio.create_task(app.worker.run(stop))
        for _ in range(200):
            if github.requests("POST", r"/reactions$"):
                break
            await asyncio.sleep(0.02)
        own_redis.kill()
        await asyncio.sleep(2.0)  # the handler fails on Redis; the consumers back off
        own_redis.start()
        marker = reply_marker(payload["comment"]["id"])
        # (the write pacer's slot, held by the write Redis died under, frees itself after RedisWritePacer.HOLD_MS)
        for _ in range(600):
            if any(c["body"].startswith(marker) for c in github.comments(REPO, 1)):
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(worker, 10)
        replies = [c for c in github.comments(REPO, 1) if c["body"].startswith(marker)]
        assert len(replies) == 1 and "Paused" in replies[0]["body"]
        assert await redis.hget(app.keys.pr(REPO, 1), "paused") == b"1"
        assert [r["content"] for r in github.reactions(REPO, payload["comment"]["id"])] == ["eyes"]
        assert await redis.get(app.keys.command(REPO, payload["comment"]["id"])) == b"done"
        assert await redis.xlen(app.keys.events) == 0 and await redis.xlen(app.keys.dead) == 0
    await redis.aclose()


async def test_serve_waits_for_redis_instead_of_exiting_then_works(github, sources, tmp_path):
    server = OwnRedis(tmp_path)  # not started yet: Redis is down when drbot starts
    open_pr(github, sources, {DDPM: with_eta(sources)})
    served = Served(github, SECRET, redis_url=server.url, log=tmp_path / "serve.log", DRBOT_VISIBILITY_TIMEOUT="1")
    try:
        served.start(expect=503)  # up, and honest about Redis
        await asyncio.sleep(2)
        assert served.process.poll() is None, served.output()  # still running
        server.start()
        served.start(expect=200)
        assert served.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened")) == 202
        summary = "<!-- drbot:summary -->"
        served.wait_for(lambda: any(c["body"].startswith(summary) for c in github.comments(REPO, 1)), timeout=60)
    finally:
        served.stop()
        server.kill()


async def test_worker_waits_for_redis_instead_of_exiting(tmp_path):
    server = OwnRedis(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "drbot", "worker", "--redis-url", server.url, "--name", "r1"],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        await asyncio.sleep(3)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        server.start()
        client = connect(server.url)
        for _ in range(100):  # the worker made its consumer group once Redis answered
            try:
                if await client.xinfo_groups("drbot:jobs"):
                    break
            except Exception:  # noqa: BLE001 - the stream does not exist yet
                pass
            await asyncio.sleep(0.1)
        assert [g["name"] for g in await client.xinfo_groups("drbot:jobs")] == [b"runners"]
        await client.aclose()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
        server.kill()
