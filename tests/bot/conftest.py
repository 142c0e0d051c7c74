"""Fixtures for bot tests: one fake GitHub for the whole session, emptied before each test that uses it."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer


# `fakegithub` lives in tests/; pytest's default import mode puts that on sys.path, --import-mode=importlib does not.
# (and `harness`, next to this file)
for directory in (Path(__file__).resolve().parents[1], Path(__file__).resolve().parent):
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))

from fakegithub import FakeGitHub  # noqa: E402
from harness import Harness, make_settings  # noqa: E402

from bot.app import make_app  # noqa: E402
from bot.metrics import Metrics  # noqa: E402
from bot.service import Dispatcher, Store  # noqa: E402
from bot.store import EventQueue, Keys  # noqa: E402
from bot.worker import EventWorker  # noqa: E402


VIOLATIONS_OK = "github_violations_ok"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"{VIOLATIONS_OK}: the test sends requests GitHub's OpenAPI description rejects, on purpose"
    )


@pytest.fixture(scope="session")
def fake_github():
    """The session's FakeGitHub, serving at `fake_github.url` (spec loaded and RSA key made once)."""
    with FakeGitHub() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh_fake_github(request):
    """Empty the shared fake before every test that uses it, so no state leaks from one test to the next."""
    if "fake_github" not in request.fixturenames:
        yield
        return
    fake = request.getfixturevalue("fake_github")
    fake.reset()
    yield
    # Every request a bot test makes must be one GitHub would accept; a test that breaks that on purpose says so.
    if request.node.get_closest_marker(VIOLATIONS_OK) is None and fake.violations:
        pytest.fail("requests GitHub's OpenAPI description rejects:\n" + "\n".join(fake.violations), pytrace=False)


@pytest.fixture
def github(fake_github) -> FakeGitHub:
    """The shared fake, empty: add repositories and pull requests, point the bot at `github.url`."""
    return fake_github


# -- the App end to end: signed delivery -> web app -> Redis stream -> worker -> this fake GitHub


@pytest.fixture
def sources(diffusers_dir):
    def read(path: str) -> str:
        return (diffusers_dir / path.removeprefix("src/diffusers/")).read_text()

    return read


@pytest.fixture
async def harness(github, request):
    marker = request.node.get_closest_marker("settings")
    prefix = f"drbot-test-{uuid.uuid4().hex[:8]}:"
    settings = make_settings(github, prefix, **(marker.kwargs if marker else {}))
    redis = aioredis.from_url("redis://127.0.0.1:6379/0")
    keys = Keys(prefix)
    metrics = Metrics()
    session = aiohttp.ClientSession()
    outcomes: list = []
    dispatcher = Dispatcher(settings, session, Store(redis, keys), metrics, outcomes=outcomes)
    queue = EventQueue(redis, keys, visibility_timeout_s=settings.visibility_timeout_s, max_attempts=3)
    worker = EventWorker(queue, dispatcher, metrics=metrics)
    web = TestClient(TestServer(make_app(settings, redis=redis, metrics=metrics)))
    await web.start_server()
    yield Harness(github, web, worker, redis, keys, metrics, outcomes)
    await web.close()
    await session.close()
    async for key in redis.scan_iter(match=f"{prefix}*"):
        await redis.delete(key)
    await redis.aclose()
