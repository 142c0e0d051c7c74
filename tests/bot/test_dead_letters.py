"""`drbot dead-letters list|show|replay|drop` on real Redis, with the App harness and the fake GitHub.

A replayed event goes through the intake's checks (its signature first) and the worker verifies it again; a forged
dead letter is never replayed.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from harness import DDPM, REPO, SECRET, open_pr, with_eta


ROOT = Path(__file__).resolve().parents[2]


async def drbot(harness, *args: str, secret: str | None = SECRET) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": "redis://127.0.0.1:6379/0"}
    env.pop("GITHUB_WEBHOOK_SECRET", None)
    if secret is not None:
        env["GITHUB_WEBHOOK_SECRET"] = secret
    command = [sys.executable, "-m", "drbot", "dead-letters", *args, "--key-prefix", harness.keys.prefix]
    return await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, cwd=ROOT, env=env)


async def kill_one_review(harness, github, sources) -> tuple[str, object]:
    """A pull_request event that fails on every attempt until it is dead-lettered; (dead letter id, the fault)."""
    open_pr(github, sources, {DDPM: with_eta(sources)})
    broken = github.fail("GET", r"/pulls/1$", status=500, times=None, headers={"retry-after": "0"})
    assert await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened")) == 202
    await harness.until_dead()
    ((dead_id, _),) = await harness.redis.xrange(harness.keys.dead)
    return dead_id.decode(), broken


async def test_a_dead_event_is_listed_shown_and_replayed_through_verification(harness, github, sources):
    dead_id, broken = await kill_one_review(harness, github, sources)

    listed = await drbot(harness, "list")
    assert listed.returncode == 0, listed.stderr
    assert dead_id in listed.stdout and "pull_request delivery" in listed.stdout and "attempts 3" in listed.stdout
    assert "GitHubBroken" in listed.stdout  # the last line of the error says why
    shown = await drbot(harness, "show", dead_id, "--format", "json")
    (letter,) = [json.loads(shown.stdout)]
    assert letter["source"] == harness.keys.events and letter["body"]["action"] == "opened"

    broken.times = 0  # GitHub is back
    replayed = await drbot(harness, "replay", dead_id)
    assert replayed.returncode == 0, replayed.stderr
    assert f"{dead_id} -> {harness.keys.events} " in replayed.stdout
    assert await harness.redis.xlen(harness.keys.dead) == 0
    assert await harness.run() == 1
    assert harness.outcomes[-1].status == "reviewed"
    assert len(github.comments(REPO, 1)) == 1 and len(github.check_runs(REPO)) == 1


async def test_a_forged_dead_letter_is_refused_and_stays(harness, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)})
    payload = github.pull_request_payload(REPO, 1, "opened")
    forged = {
        "delivery": "f00d", "event": "pull_request", "body": json.dumps(payload), "received": "0",
        "signature": "sha256=" + "0" * 64, "error": "poison: forged", "attempts": 1, "source": harness.keys.events,
        "source_id": "1-0", "buried": "0",
    }  # fmt: skip
    dead_id = (await harness.redis.xadd(harness.keys.dead, forged)).decode()
    refused = await drbot(harness, "replay", dead_id)
    assert refused.returncode == 1
    assert "signature does not match" in refused.stderr
    assert await harness.redis.xlen(harness.keys.events) == 0
    assert [i.decode() for i, _ in await harness.redis.xrange(harness.keys.dead)] == [dead_id]
    assert await harness.run() == 0 and github.comments(REPO, 1) == []


async def test_replay_needs_the_webhook_secret_it_was_signed_with(harness, github, sources):
    dead_id, broken = await kill_one_review(harness, github, sources)
    broken.times = 0
    for secret, why in ((None, "GITHUB_WEBHOOK_SECRET is not set"), ("another-secret", "signature does not match")):
        refused = await drbot(harness, "replay", "--all", secret=secret)
        assert refused.returncode == 1 and why in refused.stderr
    assert await harness.redis.xlen(harness.keys.dead) == 1
    assert await harness.redis.xlen(harness.keys.events) == 0


async def test_a_dead_result_notice_goes_back_to_the_results_stream(harness):
    notice = {"job_id": "huggingface/diffusers#1@abc:all", "runner": "gpu-1", "job_entry": "1-0",
              "error": "x", "attempts": 5, "source": harness.keys.results, "source_id": "2-0", "buried": "0"}  # fmt: skip
    dead_id = (await harness.redis.xadd(harness.keys.dead, notice)).decode()
    replayed = await drbot(harness, "replay", dead_id)
    assert replayed.returncode == 0, replayed.stderr
    ((_, fields),) = await harness.redis.xrange(harness.keys.results)
    assert fields == {b"job_id": b"huggingface/diffusers#1@abc:all", b"runner": b"gpu-1", b"job_entry": b"1-0"}
    assert await harness.redis.xlen(harness.keys.dead) == 0


async def test_show_escapes_control_characters_and_drop_deletes(harness):
    hostile = {"delivery": "d\x1b]0;owned\x07", "event": "pull_request", "body": "{}", "signature": "",
               "error": "boom\x1b[2J", "attempts": 1, "source": harness.keys.events, "source_id": "1-0",
               "buried": "0"}  # fmt: skip
    dead_id = (await harness.redis.xadd(harness.keys.dead, hostile)).decode()
    for args in (("list",), ("show", dead_id)):
        shown = await drbot(harness, *args)
        assert shown.returncode == 0, shown.stderr
        assert "\x1b" not in shown.stdout and "\\x1b" in shown.stdout
    dropped = await drbot(harness, "drop", dead_id)
    assert dropped.returncode == 0 and "dropped 1 dead letter" in dropped.stdout
    assert await harness.redis.xlen(harness.keys.dead) == 0
    missing = await drbot(harness, "show", dead_id)
    assert missing.returncode == 1 and "no entry" in missing.stderr


async def test_a_review_failing_on_every_attempt_completes_its_check_run(harness, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)})
    # GitHub answers everything but the comparison the review needs after starting its check run
    github.fail("GET", r"/compare/", status=500, times=None, headers={"retry-after": "0"})
    assert await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened")) == 202
    await harness.run()
    (run,) = github.check_runs(REPO)
    assert run["status"] == "in_progress"  # a retry is still to come: the check run says it is being reviewed
    await harness.until_dead()
    assert await harness.redis.xlen(harness.keys.dead) == 1
    (run,) = github.check_runs(REPO)
    assert run["status"] == "completed" and run["conclusion"] == "neutral"
    assert run["output"]["title"] == "Not reviewed: failed"
    assert "failed 3 times" in run["output"]["summary"] and "/drbot review" in run["output"]["summary"]
