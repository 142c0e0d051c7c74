"""Fixtures for bot tests: one fake GitHub for the whole session, emptied before each test that uses it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


# `fakegithub` lives in tests/; pytest's default import mode puts that on sys.path, --import-mode=importlib does not.
TESTS = str(Path(__file__).resolve().parents[1])
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from fakegithub import FakeGitHub  # noqa: E402


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
