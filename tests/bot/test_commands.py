"""Slash commands: parsing (pure), then each command end to end on real Redis and the fake GitHub."""

from __future__ import annotations

import ast
import inspect
import json
import uuid
from pathlib import Path

import pytest
from harness import DDPM, REPO, open_pr, with_eta

from bot import commands
from bot.commands import SlashCommand, parse, usage_error
from bot.handlers.issue_comment import RATE_LIMIT, reply_marker
from bot.known import KnownRegistry


HANDLERS = Path(__file__).resolve().parents[2] / "bot" / "handlers"


@pytest.mark.parametrize(
    "body, expected",
    [
        ("/drbot help", SlashCommand("help", (), "/drbot help")),
        ("/drbot", SlashCommand("help", (), "/drbot")),
        ("  /drbot   explain  DRB201  \nthanks!", SlashCommand("explain", ("DRB201",), "/drbot   explain  DRB201")),
        ("/drbot ignore 0123456789abcdef kept on purpose", SlashCommand("ignore", ("0123456789abcdef", "kept", "on", "purpose"), "/drbot ignore 0123456789abcdef kept on purpose")),
        ("/drbot REVIEW", SlashCommand("review", (), "/drbot REVIEW")),
        ("/drbot frobnicate now", SlashCommand("unknown", ("frobnicate", "now"), "/drbot frobnicate now")),
        ("please /drbot review", None),
        ("/drbotreview", None),
        ("LGTM", None),
        ("", None),
        (None, None),
    ],
)  # fmt: skip
def test_parse(body, expected):
    assert parse(body) == expected


def test_usage_errors():
    assert usage_error(parse("/drbot explain")) and usage_error(parse("/drbot explain banana"))
    assert usage_error(parse("/drbot ignore DRB201"))  # no reason
    assert usage_error(parse("/drbot ignore xyz because"))
    assert usage_error(parse("/drbot pause now"))
    assert usage_error(parse("/drbot ignore DRB201 intentional")) is None
    assert usage_error(parse("/drbot contracts FluxPipeline WanPipeline")) is None


async def comment(harness, github, body: str, user: str = "maintainer", user_type: str = "User", **kwargs):
    payload = github.issue_comment_payload(REPO, 1, body, user, user_type, **kwargs)
    status = await harness.deliver("issue_comment", payload, kwargs.get("delivery_id"))
    await harness.run()
    return payload, status


def replies(github, payload) -> list[dict]:
    marker = reply_marker(payload["comment"]["id"])
    return [c for c in github.comments(REPO, 1) if c["body"].startswith(marker)]


@pytest.fixture
def pr(github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)})
    github.set_permission(REPO, "maintainer", "write")
    github.set_permission(REPO, "reader", "read")
    return github


async def test_help_and_explain_answer_anyone_once_with_eyes(harness, pr):
    payload, _ = await comment(harness, pr, "/drbot help", user="stranger")
    (reply,) = replies(pr, payload)
    assert "**drbot commands**" in reply["body"]
    assert [r["content"] for r in pr.reactions(REPO, payload["comment"]["id"])] == ["eyes"]
    payload, _ = await comment(harness, pr, "/drbot explain drb201", user="stranger")
    (reply,) = replies(pr, payload)
    assert "**DRB201** `unused-call-argument`" in reply["body"] and "docs/rules/DRB201.md" in reply["body"]
    payload, _ = await comment(harness, pr, "/drbot explain DRB999")
    assert "There is no rule `DRB999`" in replies(pr, payload)[0]["body"]
    payload, _ = await comment(harness, pr, "/drbot dance")
    assert "Unknown command `dance`" in replies(pr, payload)[0]["body"]


async def test_review_runs_a_review_and_edits_its_one_reply(harness, pr):
    payload, _ = await comment(harness, pr, "/drbot review", user="stranger")
    (reply,) = replies(pr, payload)
    assert "1 new finding" in reply["body"] and "Reviewing" not in reply["body"]
    assert len(pr.requests("PATCH", rf"/issues/comments/{reply['id']}$")) == 1  # posted once, then edited
    assert any(c["body"].startswith("<!-- drbot:summary -->") for c in pr.comments(REPO, 1))


@pytest.mark.parametrize("verb", ["pause", "resume", "ignore DRB201 on purpose", "contracts FluxPipeline"])
async def test_write_commands_are_refused_for_readers_and_ignored_from_bots(harness, pr, verb):
    payload, _ = await comment(harness, pr, f"/drbot {verb}", user="reader")
    (reply,) = replies(pr, payload)
    assert "needs write access" in reply["body"]
    assert await harness.redis.xlen(harness.keys.jobs) == 0
    before, tokens = len(harness.outcomes), len(pr.requests("POST", "/access_tokens"))
    from_bot, _ = await comment(harness, pr, f"/drbot {verb}", user="helper-app[bot]", user_type="Bot")
    assert replies(pr, from_bot) == [] and pr.reactions(REPO, from_bot["comment"]["id"]) == []
    # not even dispatched: no installation token is asked for a comment drbot does nothing with
    assert len(harness.outcomes) == before and len(pr.requests("POST", "/access_tokens")) == tokens


async def test_edited_comments_and_ordinary_comments_are_ignored(harness, pr):
    payload, _ = await comment(harness, pr, "nice work")
    await comment(harness, pr, "/drbot help", action="edited", comment_id=payload["comment"]["id"])
    assert harness.outcomes == [] and replies(pr, payload) == []
    assert pr.requests("POST", "/access_tokens") == []  # neither was dispatched


async def test_a_replayed_delivery_runs_the_command_once(harness, pr):
    delivery_id = str(uuid.uuid4())
    payload = pr.issue_comment_payload(REPO, 1, "/drbot pause", "maintainer")
    assert await harness.deliver("issue_comment", payload, delivery_id) == 202
    assert await harness.deliver("issue_comment", payload, delivery_id) == 200  # the same delivery again
    assert await harness.deliver("issue_comment", payload) == 202  # a new delivery of the same comment
    await harness.run()
    assert len(replies(pr, payload)) == 1
    assert harness.outcomes[-2:] == ["pause", "replay"]


async def test_pause_stops_reviews_until_resume(harness, pr):
    await comment(harness, pr, "/drbot pause")
    await harness.deliver("pull_request", pr.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    assert harness.outcomes[-1].status == "paused"
    assert not any(c["body"].startswith("<!-- drbot:summary -->") for c in pr.comments(REPO, 1))
    await comment(harness, pr, "/drbot resume")
    await harness.deliver("pull_request", pr.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    assert harness.outcomes[-1].status == "reviewed"


async def test_ignore_suppresses_the_finding_on_this_and_other_prs(harness, pr, sources):
    await harness.deliver("pull_request", pr.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    payload, _ = await comment(harness, pr, "/drbot ignore DRB201 kept for API compatibility")
    assert "Suppressed 1 finding" in replies(pr, payload)[0]["body"]
    entries = await KnownRegistry(harness.redis, harness.keys, REPO).all()
    (entry,) = entries.values()
    assert entry["status"] == "suppressed" and entry["suppressed_by"] == "maintainer"
    assert entry["reason"] == "kept for API compatibility"
    assert (await harness.redis.hgetall(harness.keys.feedback("DRB201")))[b"ignored"] == b"1"
    text = await (await harness.web.get("/metrics")).text()
    assert 'drbot_rule_feedback{code="DRB201",kind="posted"} 1.0' in text
    assert 'drbot_rule_feedback{code="DRB201",kind="ignored"} 1.0' in text

    # the same finding in another PR: known (suppressed), not posted, no label
    pr.add_pull(REPO, 2, head_files={DDPM: with_eta(sources) + "\n# another change\n"}, user="bob")
    await harness.deliver("pull_request", pr.pull_request_payload(REPO, 2, "opened"))
    await harness.run()
    (summary,) = [c for c in pr.comments(REPO, 2) if c["body"].startswith("<!-- drbot:summary -->")]
    assert "**0 new findings**" in summary["body"]
    assert "suppressed by maintainer: kept for API compatibility" in summary["body"]
    assert pr.reviews(REPO, 2) == [] and pr.labels(REPO, 2) == []


async def test_contracts_enqueues_one_job_per_head(harness, pr):
    await harness.deliver("pull_request", pr.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    payload, _ = await comment(harness, pr, "/drbot contracts FluxPipeline WanPipeline")
    assert "Queued contract tests of `FluxPipeline`, `WanPipeline`" in replies(pr, payload)[0]["body"]
    await comment(harness, pr, "/drbot contracts WanPipeline FluxPipeline")
    jobs = await harness.redis.xrange(harness.keys.jobs)
    assert len(jobs) == 1
    job = json.loads(jobs[0][1][b"payload"])
    head = pr.pull(REPO, 1)["head"]["sha"]
    assert job["version"] == 1 and job["job_id"] == f"{REPO}#1@{head}:contracts:FluxPipeline,WanPipeline"
    assert job["pipelines"] == ["FluxPipeline", "WanPipeline"] and job["requested_by"] == "maintainer"
    assert job["tarball_url"].endswith(f"/repos/{REPO}/tarball/{head}")


async def test_a_flood_from_one_user_is_rate_limited_without_stopping_others(harness, pr):
    for _ in range(50):
        payload = pr.issue_comment_payload(REPO, 1, "/drbot help", "spammer")
        await harness.deliver("issue_comment", payload)
    await harness.run()
    assert harness.outcomes.count("help") == RATE_LIMIT
    assert harness.outcomes.count("rate-limited") == 50 - RATE_LIMIT
    notices = [c for c in pr.comments(REPO, 1) if "Too many drbot commands" in c["body"]]
    assert len(notices) == 1
    payload, _ = await comment(harness, pr, "/drbot help", user="someone-else")
    assert harness.outcomes[-1] == "help" and len(replies(pr, payload)) == 1


async def test_contracts_without_names_runs_the_pipelines_the_pr_changes(harness, pr):
    await harness.deliver("pull_request", pr.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    payload, _ = await comment(harness, pr, "/drbot contracts")
    assert "Queued contract tests of `DDPMPipeline`" in replies(pr, payload)[0]["body"]
    (job,) = [json.loads(f[b"payload"]) for _, f in await harness.redis.xrange(harness.keys.jobs)]
    assert job["pipelines"] == ["DDPMPipeline"]


async def test_contracts_without_names_adds_the_pipelines_using_a_changed_scheduler(harness, github, sources):
    scheduler = "src/diffusers/schedulers/scheduling_ddpm.py"
    changed = sources(scheduler).replace("class DDPMScheduler(", "# a comment\nclass DDPMScheduler(", 1)
    open_pr(github, sources, {scheduler: changed}, base_extra={scheduler: sources(scheduler)})
    github.set_permission(REPO, "maintainer", "write")
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    payload, _ = await comment(harness, github, "/drbot contracts")
    body = replies(github, payload)[0]["body"]
    # the PR changes no pipeline: DDPMPipeline runs because it imports DDPMScheduler; the unCLIP pipeline does not
    assert "Queued contract tests of `DDPMPipeline` at" in body
    assert "1 of them use a model, scheduler or shared module this pull request changes" in body
    (job,) = [json.loads(f[b"payload"]) for _, f in await harness.redis.xrange(harness.keys.jobs)]
    assert job["pipelines"] == ["DDPMPipeline"]


# -- the shape of the handler: a table of verbs, Redis only through bot.store


def test_every_verb_is_one_entry_of_the_verb_table_with_one_signature():
    from bot.handlers.issue_comment import VERB_HANDLERS

    assert set(VERB_HANDLERS) == set(commands.VERBS)
    for verb, handler in VERB_HANDLERS.items():
        assert inspect.iscoroutinefunction(handler), verb
        assert list(inspect.signature(handler).parameters) == ["call"], verb


def redis_calls(tree: ast.AST) -> list[str]:
    """Calls made on a Redis client directly (`store.redis.set(...)`, `redis.xadd(...)`)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if name == "redis":
                found.append(f"line {node.lineno}: {ast.unparse(node.func)}")
    return found


@pytest.mark.parametrize("module", sorted(p.name for p in HANDLERS.glob("*.py") if p.name != "__init__.py"))
def test_handlers_reach_redis_only_through_the_store(module):
    """Key shapes, TTLs, Lua and the command guard live in bot/store.py (and the helpers over it), not in handlers."""
    source = (HANDLERS / module).read_text()
    assert redis_calls(ast.parse(source)) == []
    assert "redis.call(" not in source and "24 * 3600" not in source


def test_the_check_finds_a_direct_redis_write():
    assert redis_calls(ast.parse("async def f(store):\n    await store.redis.set('k', 'v', ex=7 * 24 * 3600)\n"))


async def test_the_command_guard_runs_a_comment_once_and_lets_its_own_delivery_retry(prefixed_redis):
    from bot.store import COMMAND_TTL_S, FIRST, REPLAY, RETRY, CommandGuard, Keys

    client, prefix = prefixed_redis
    guard = CommandGuard(client, Keys(prefix))
    assert await guard.claim(REPO, 7, "d1") == FIRST
    assert 0 < await client.ttl(Keys(prefix).command(REPO, 7)) <= COMMAND_TTL_S
    assert await guard.claim(REPO, 7, "d1") == RETRY  # the delivery that started it, handed out again
    assert await guard.claim(REPO, 7, "d2") == REPLAY  # another delivery of the same comment
    assert await guard.claim(REPO, 8, "") == FIRST and await guard.claim(REPO, 8, "") == REPLAY  # no id: no retry
    await guard.finish(REPO, 7)
    assert await guard.claim(REPO, 7, "d1") == REPLAY
    assert await client.get(Keys(prefix).command(REPO, 7)) == b"done"


async def test_the_rate_counter_counts_per_user_within_its_window(prefixed_redis):
    from bot.store import RATE_WINDOW_S, Keys, RateCounter

    client, prefix = prefixed_redis
    rate = RateCounter(client, Keys(prefix))
    assert [await rate.hit(REPO, "a") for _ in range(3)] == [1, 2, 3]
    assert await rate.hit(REPO, "b") == 1
    assert 0 < await client.ttl(Keys(prefix).rate(REPO, "a")) <= RATE_WINDOW_S
