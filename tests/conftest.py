"""Shared fixtures: the installed diffusers 0.42.1 package, one full scan of it, older releases from PyPI; the one fake
GitHub of the suite and the App harness (signed delivery -> web app -> Redis stream -> worker -> fake GitHub)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis


ROOT = Path(__file__).resolve().parent.parent
PINNED_DIFFUSERS = "0.42.1"


@pytest.fixture(scope="session")
def diffusers_dir() -> Path:
    from analyzers.scan import installed_diffusers

    path = installed_diffusers()
    version = next(path.parent.glob("diffusers-*.dist-info")).name.removesuffix(".dist-info").split("-")[1]
    assert version == PINNED_DIFFUSERS, f"tests pin diffusers {PINNED_DIFFUSERS}, found {version}"
    return path


@pytest.fixture(scope="session")
def full_scan(diffusers_dir):
    """One scan of the whole installed package with every rule, shared by the tests that read it."""
    from analyzers.scan import scan

    return scan([diffusers_dir])


@pytest.fixture(scope="session")
def diffusers_release():
    from bench.releases import release

    return release


# `fakegithub` lives in tests/; pytest's default import mode puts that on sys.path, --import-mode=importlib does not.
# (and `harness`, next to this file)
for directory in (Path(__file__).resolve().parent, Path(__file__).resolve().parent / "bot"):
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))

from fakegithub import FakeGitHub  # noqa: E402
from harness import app_harness, make_settings  # noqa: E402


VIOLATIONS_OK = "github_violations_ok"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"{VIOLATIONS_OK}: the test sends requests GitHub's OpenAPI description rejects, on purpose"
    )
    # `drbot analyze` and `drbot review` keep a result cache; the suite's commands use one of their own, removed at
    # the end, never the user's ~/.cache/drbot (subprocesses inherit the variable)
    _CACHE_DIR[:] = [tempfile.mkdtemp(prefix="drbot-test-cache-")]
    os.environ["DRBOT_CACHE_DIR"] = _CACHE_DIR[0]
    # the App keeps merge bases and scratch files under its workdir: the suite's servers use one of their own (each
    # in-process harness a fresh directory under it), never the system temp dir's `drbot-bases/`
    _CACHE_DIR.append(tempfile.mkdtemp(prefix="drbot-test-work-"))
    os.environ["DRBOT_WORKDIR"] = _CACHE_DIR[1]


_CACHE_DIR: list[str] = []


def pytest_unconfigure(config):
    for directory in _CACHE_DIR:
        shutil.rmtree(directory, ignore_errors=True)


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
async def prefixed_redis():
    """A client of the shared Redis and a key prefix of this test's own; its keys are removed afterwards."""
    client = aioredis.from_url("redis://127.0.0.1:6379/0")
    prefix = f"drbot-test-{uuid.uuid4().hex[:8]}:"
    yield client, prefix
    async for key in client.scan_iter(match=f"{prefix}*"):
        await client.delete(key)
    await client.aclose()


@pytest.fixture
async def harness(github, request):
    marker = request.node.get_closest_marker("settings")
    prefix = f"drbot-test-{uuid.uuid4().hex[:8]}:"
    settings = make_settings(github, prefix, **(marker.kwargs if marker else {}))
    redis = aioredis.from_url("redis://127.0.0.1:6379/0")
    async with app_harness(github, settings, redis) as harness:
        yield harness
    async for key in redis.scan_iter(match=f"{prefix}*"):
        await redis.delete(key)
    await redis.aclose()
