"""Shared pieces of the App's end-to-end tests (the fixtures that use them live in conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from fakegithub import delivery

from bot.metrics import Metrics
from bot.settings import Settings
from bot.store import Keys
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
