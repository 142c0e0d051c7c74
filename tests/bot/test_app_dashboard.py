"""The App's pattern dashboard (GET /dashboard) and the tracking issue's section, on real Redis and the fake GitHub."""

from __future__ import annotations

import html
import json
import re

import pytest
from harness import DDPM, REPO, UNCLIP, open_pr, with_eta
from test_triage import CLIP_SKIP, ETA_FP, fixed_unclip, track

from analyzers.dashboard import TRACKING_END, TRACKING_START
from analyzers.patterns import PATTERNS
from bot.app import SETTINGS
from bot.known import KnownRegistry


TRACKING = 4242
MAINTAINERS_TEXT = "The meta issue, kept by maintainers.\r\n\r\n- [x] #13635 fixed\r\n- [ ] #13649\r\n"
CONFIG = {".github/drbot.yml": f"tracking_issue: {TRACKING}\n"}


def _page_data(page: str) -> dict:
    match = re.search(r'<script id="dashboard-data" type="application/json">(.*?)</script>', page, re.S)
    assert match, "the page carries its data"
    return json.loads(match.group(1))


async def test_the_dashboard_is_served_from_the_registry_read_only_and_cached(harness, github):
    registry = KnownRegistry(harness.redis, harness.keys, REPO)
    await track(harness, CLIP_SKIP, 13635)
    await registry.update(ETA_FP, CLIP_SKIP.__class__(**{**CLIP_SKIP.to_dict(), "symbol": "eta",
                          "path": "diffusers/pipelines/ddpm/pipeline_ddpm.py", "fingerprint": ETA_FP}),
                          status="fixed", fixed_by=7)  # fmt: skip
    before = await harness.redis.hgetall(registry.key)

    response = await harness.web.get("/dashboard")
    assert response.status == 200 and response.content_type == "text/html"
    page = await response.text()
    data = _page_data(page)
    assert data["registry"] == {"open": 0, "tracked": 1, "suppressed": 0, "fixed": 1}
    assert data["cells"] == [{"release": "main", "family": "stable_diffusion", "pattern": 2, "count": 1}]
    assert [f["symbol"] for f in data["fixed"]] == ["eta"] and data["tracking_issues"] == {"2": [13635]}
    assert 'src="dashboard/plotly.min.js"' in page
    served = await (await harness.web.get("/dashboard/data.json")).json()
    assert served == data
    tracking = await (await harness.web.get("/dashboard/tracking.md")).text()
    assert sum(1 for line in tracking.splitlines() if re.match(r"\| \d+\. ", line)) == len(PATTERNS)
    assert "#13635" in tracking
    script = await harness.web.get("/dashboard/plotly.min.js")
    assert script.status == 200 and len(await script.read()) > 1_000_000
    assert (await harness.web.get("/dashboard?repo=someone/private")).status == 404

    # read-only: the registry is as it was; and cached: a change shows after the cache window, not per request
    assert await harness.redis.hgetall(registry.key) == before
    await registry.update(CLIP_SKIP.fingerprint, status="fixed", fixed_by=8)
    again = _page_data(await (await harness.web.get("/dashboard")).text())
    assert again["registry"]["fixed"] == 1


@pytest.mark.settings(dashboard_cache_s=0.0)
async def test_the_dashboard_shows_nothing_secret_and_follows_the_registry(harness, github):
    await track(harness, CLIP_SKIP, 13635)
    page = await (await harness.web.get("/dashboard")).text()
    assert _page_data(page)["registry"]["tracked"] == 1
    settings = harness.web.server.app[SETTINGS]
    for secret in settings.secrets() | {settings.webhook_secret, settings.private_key}:
        assert secret not in page and html.escape(secret) not in page
    await KnownRegistry(harness.redis, harness.keys, REPO).update(CLIP_SKIP.fingerprint, status="fixed", fixed_by=3)
    assert _page_data(await (await harness.web.get("/dashboard")).text())["registry"]["fixed"] == 1


async def _merge(harness, github, number: int, delivery: str | None = None) -> dict:
    payload = github.pull_request_payload(REPO, number, "closed")
    payload["pull_request"]["merged"] = True
    assert await harness.deliver("pull_request", payload, delivery) == 202
    await harness.run()
    return harness.outcomes[-1]


def _section(body: str) -> str:
    start, end = body.index(TRACKING_START), body.index(TRACKING_END) + len(TRACKING_END)
    return body[start:end]


async def test_a_merge_that_fixes_and_adds_findings_edits_the_tracking_section_in_place_once(harness, github, sources):
    await track(harness, CLIP_SKIP, 13635)
    open_pr(github, sources, {UNCLIP: fixed_unclip(sources), DDPM: with_eta(sources)}, base_extra=CONFIG)
    github.add_issue(REPO, TRACKING, title="Pattern tracking", body=MAINTAINERS_TEXT)
    assert await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened")) == 202
    await harness.run()
    assert github.requests("PATCH", rf"/issues/{TRACKING}$") == []

    outcome = await _merge(harness, github, 1)
    assert outcome["fixed_known"] == 1 and outcome["added_known"] == 1 and outcome["tracking"] == "edited"
    body = github.issue(REPO, TRACKING)["body"]
    assert body.startswith(MAINTAINERS_TEXT)  # the maintainers' text, CRLFs and all, untouched
    section = _section(body)
    assert body == MAINTAINERS_TEXT + "\n" + section + "\n"
    p2 = next(line for line in section.splitlines() if line.startswith("| 2. "))
    # open 1 (the eta the merge brought in), fixed 1 (clip_skip, by the merge), new 1 (eta), its tracking issue gone
    assert [cell.strip() for cell in p2.split("|")[2:5]] == ["1", "1", "1"]
    assert "#13635" not in p2
    entry = (await KnownRegistry(harness.redis, harness.keys, REPO).get_many([ETA_FP]))[ETA_FP]
    assert entry["status"] == "open" and entry["added_by"] == 1
    assert len(github.requests("PATCH", rf"/issues/{TRACKING}$")) == 1

    # a maintainer edits around the section; the same state again (a redelivered merge that re-marks the fix)
    # leaves the body alone: no second edit
    github.repo(REPO).issues[TRACKING]["body"] = "Edited intro.\n\n" + section + "\n\nA note below.\n"
    await KnownRegistry(harness.redis, harness.keys, REPO).update(CLIP_SKIP.fingerprint, status="tracked")
    outcome = await _merge(harness, github, 1, delivery="redelivered-merge")
    assert outcome["fixed_known"] == 1 and outcome["tracking"] == "unchanged"
    assert github.issue(REPO, TRACKING)["body"] == "Edited intro.\n\n" + section + "\n\nA note below.\n"
    assert len(github.requests("PATCH", rf"/issues/{TRACKING}$")) == 1
    # the issue requests are GitHub's as its OpenAPI description has them, and so are the fake's answers
    assert github.violations == []
    assert [v for v in github.response_violations if f"/issues/{TRACKING}" in v] == []


async def test_a_stale_section_is_replaced_and_only_it(harness, github, sources):
    await track(harness, CLIP_SKIP, 13635)
    open_pr(github, sources, {UNCLIP: fixed_unclip(sources)}, base_extra=CONFIG)
    old = f"Before.\n{TRACKING_START}\n| an old table |\n{TRACKING_END}\nAfter.\n"
    github.add_issue(REPO, TRACKING, body=old)
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    assert (await _merge(harness, github, 1))["tracking"] == "edited"
    body = github.issue(REPO, TRACKING)["body"]
    assert body.startswith("Before.\n" + TRACKING_START) and body.endswith(TRACKING_END + "\nAfter.\n")
    assert "an old table" not in body and body.count(TRACKING_START) == 1


async def test_no_tracking_issue_configured_means_no_issue_request(harness, github, sources):
    await track(harness, CLIP_SKIP, 13635)
    open_pr(github, sources, {UNCLIP: fixed_unclip(sources)})
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    outcome = await _merge(harness, github, 1)
    assert outcome["fixed_known"] == 1 and outcome["tracking"] == "off"
    assert github.requests(None, r"/issues/\d+$") == []


@pytest.mark.parametrize("failure", ["missing", "error"])
async def test_a_missing_issue_or_a_github_error_never_fails_the_merge(harness, github, sources, failure):
    await track(harness, CLIP_SKIP, 13635)
    open_pr(github, sources, {UNCLIP: fixed_unclip(sources)}, base_extra=CONFIG)
    if failure == "error":
        github.add_issue(REPO, TRACKING, body="Kept.\n")
        github.fail("PATCH", rf"/issues/{TRACKING}$", status=422, times=None)
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    outcome = await _merge(harness, github, 1)
    assert outcome["tracking"] == failure and outcome["fixed_known"] == 1
    entry = await KnownRegistry(harness.redis, harness.keys, REPO).get_many([CLIP_SKIP.fingerprint])
    assert entry[CLIP_SKIP.fingerprint]["status"] == "fixed"  # the registry was still brought up to date
    assert await harness.redis.xlen(harness.keys.dead) == 0
    if failure == "error":
        assert github.issue(REPO, TRACKING)["body"] == "Kept.\n"


def test_tracking_issue_and_dashboard_settings_parse():
    from bot.config import ConfigError, parse_config
    from bot.settings import Settings

    assert parse_config("tracking_issue: 13656\n").tracking_issue == 13656
    assert parse_config("paths: [src/]\n").tracking_issue is None
    for bad in ("tracking_issue: true", "tracking_issue: '13656'", "tracking_issue: 0"):
        with pytest.raises(ConfigError, match="tracking_issue"):
            parse_config(bad)
    env = {"GITHUB_WEBHOOK_SECRET": "s"}
    assert Settings.from_env(env).dashboard_repos == ("huggingface/diffusers",)
    assert Settings.from_env({**env, "DRBOT_DASHBOARD_REPOS": "a/b, c/d"}).dashboard_repos == ("a/b", "c/d")
    assert Settings.from_env({**env, "DRBOT_DASHBOARD_REPOS": ""}).dashboard_repos == ()
    assert Settings.from_env({**env, "DRBOT_DASHBOARD_CACHE": "2.5"}).dashboard_cache_s == 2.5


@pytest.mark.settings(dashboard_repos=())
async def test_no_dashboard_repository_means_no_page(harness, github):
    assert (await harness.web.get("/dashboard")).status == 404
    assert (await harness.web.get("/dashboard/data.json")).status == 404


async def test_the_apps_page_draws_in_chromium_with_plotly_from_the_app(harness, github):
    import asyncio
    import shutil

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (make system-deps installs it)"
    await track(harness, CLIP_SKIP, 13635)
    url = str(harness.web.make_url("/dashboard"))
    process = await asyncio.create_subprocess_exec(
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    dom, _ = await asyncio.wait_for(process.communicate(), 120)  # the test server answers meanwhile
    page = dom.decode()
    assert 'data-rendered="yes"' in page
    assert '<tr data-family="stable_diffusion">' in page and 'class="main-svg"' in page  # plotly.js, from the App
    assert re.search(r'<div id="trend"[^>]*>plotly.min.js did not load', page) is None


async def test_an_unreachable_registry_is_a_503_that_names_no_host(github):
    import redis.asyncio as aioredis
    from aiohttp.test_utils import TestClient, TestServer
    from harness import make_settings

    from bot.app import make_app

    down = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    client = TestClient(TestServer(make_app(make_settings(github, "drbot-test-down:"), redis=down)))
    await client.start_server()
    try:
        response = await client.get("/dashboard")
        text = await response.text()
    finally:
        await client.close()
        await down.aclose()
    assert response.status == 503 and "unavailable" in text and "127.0.0.1" not in text
