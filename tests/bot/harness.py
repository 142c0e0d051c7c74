"""Shared pieces of the App's end-to-end tests (the fixtures that use them live in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field

import aiohttp
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from fakegithub import delivery

from bot.app import make_app
from bot.metrics import Metrics
from bot.service import Dispatcher, Store
from bot.settings import Settings
from bot.store import EventQueue, Keys
from bot.worker import EventWorker


REPO = "huggingface/diffusers"
SECRET = "webhook-secret"
DDPM = "src/diffusers/pipelines/ddpm/pipeline_ddpm.py"
UNCLIP = "src/diffusers/pipelines/stable_diffusion/pipeline_stable_unclip_img2img.py"
ETA_OLD = "return_dict: bool = True,"
ETA_NEW = "return_dict: bool = True,\n        eta: float = 0.0,"


@dataclass
class Harness:
    github: object
    web: TestClient
    worker: EventWorker
    redis: aioredis.Redis
    keys: Keys
    metrics: Metrics
    outcomes: list = field(default_factory=list)

    async def deliver(self, event: str, payload: dict, delivery_id: str | None = None) -> int:
        headers, body = delivery(event, payload, SECRET, delivery_id)
        response = await self.web.post("/webhook", data=body, headers=headers)
        return response.status

    async def run(self) -> int:
        return await self.worker.run_burst()

    async def until_dead(self, timeout_s: float = 60.0) -> None:
        """Run the worker until an event failing on every attempt is dead-lettered: each retry waits out the
        visibility timeout, and a loaded machine takes longer than an idle one, so this waits by time, not by a
        fixed number of bursts."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            await self.run()
            if await self.redis.xlen(self.keys.dead):
                return
            await asyncio.sleep(0.06)

    def writes(self) -> list:
        """Requests that change something on the repository (token requests to /app/ are not content)."""
        return [
            c
            for c in self.github.calls
            if c.method in ("POST", "PATCH", "PUT", "DELETE") and not c.path.startswith("/app/")
        ]


def make_settings(github, prefix: str, **overrides) -> Settings:
    values = dict(
        webhook_secret=SECRET,
        app_id=github.app_id,
        private_key=github.private_key_pem,
        api_url=github.url,
        key_prefix=prefix,
        write_spacing_s=0.0,
        visibility_timeout_s=0.05,
        max_attempts=3,
        # kept merge bases start empty for each harness (tests/conftest.py removes the parent at the end)
        workdir=tempfile.mkdtemp(prefix="work-", dir=os.environ.get("DRBOT_WORKDIR")),
    )
    values.update(overrides)
    return Settings(**values)


def open_pr(github, sources, head: dict, base_extra: dict | None = None, **kwargs) -> dict:
    github.add_repo(
        REPO, installation_id=1, files={DDPM: sources(DDPM), UNCLIP: sources(UNCLIP), **(base_extra or {})}
    )
    return github.add_pull(REPO, 1, head_files=head, **kwargs)


def with_eta(sources) -> str:
    text = sources(DDPM)
    assert ETA_OLD in text
    return text.replace(ETA_OLD, ETA_NEW, 1)


@contextlib.asynccontextmanager
async def app_harness(github, settings, redis: aioredis.Redis):
    """The App's pieces on `redis` (a client of any Redis user): web app, event queue and worker, dispatcher."""
    keys = Keys(settings.key_prefix)
    metrics = Metrics()
    outcomes: list = []
    async with aiohttp.ClientSession() as session:
        dispatcher = Dispatcher(settings, session, Store(redis, keys), metrics, outcomes=outcomes)
        queue = EventQueue(redis, keys, visibility_timeout_s=settings.visibility_timeout_s, max_attempts=3,
                           secret=settings.webhook_secret)  # fmt: skip
        worker = EventWorker(queue, dispatcher, metrics=metrics)
        web = TestClient(TestServer(make_app(settings, redis=redis, metrics=metrics)))
        await web.start_server()
        try:
            yield Harness(github, web, worker, redis, keys, metrics, outcomes)
        finally:
            await web.close()


async def queue_job(harness, github, pipelines: str = "StableDiffusionPipeline") -> dict:
    """Review PR 1, then have `maintainer` ask for contracts on it; returns the queued job payload."""
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    github.advance_clock(2)
    comment = github.issue_comment_payload(REPO, 1, f"/drbot contracts {pipelines}", "maintainer")
    await harness.deliver("issue_comment", comment)
    await harness.run()
    ((_, fields),) = await harness.redis.xrange(harness.keys.jobs)
    return json.loads(fields[b"payload"])
