"""Redis as separate trust zones: what a runner's ACL user can and cannot do, and what reaches GitHub when
anything but the bot or the claiming runner writes events or results into Redis (nothing).

The attacks of the review: PR code that reached Redis queued a forged `issue_comment` that paused another PR
"as a maintainer", and planted a job record and a result that turned another PR's `drbot contracts` check green;
result fields were rendered unescaped (an `@team` mention and a link landed in a PR comment)."""

from __future__ import annotations

import json

import pytest
from fakegithub import sign
from harness import REPO, SECRET, app_harness, make_settings, queue_job
from redis.exceptions import NoPermissionError

from bot.results import ResultConsumer, render_section, untrusted
from runners.worker import ContractRunner, RunnerKeys


def results_consumer(harness) -> ResultConsumer:
    dispatcher = harness.worker.handler
    return ResultConsumer(dispatcher.store, dispatcher.client_for, max_attempts=2, visibility_timeout_s=0.05)


def contract_checks(github) -> list[dict]:
    return [c for c in github.check_runs(REPO) if c["name"] == "drbot contracts"]


def summary(github, number: int = 1) -> str:
    return next(c["body"] for c in github.comments(REPO, number) if c["body"].startswith("<!-- drbot:summary -->"))


def passing(job: dict, **extra) -> dict:
    return {"version": 1, "job_id": job["job_id"], "head_sha": job["head_sha"], "status": "passed",
            "results": [{"pipeline": "StableDiffusionPipeline", "contract": "DRC001", "pattern": 1,
                         "outcome": "passed", "message": "", "duration_s": 0.1}],
            "runner": {"host": "gpu", "device": "cuda"}, "limit": None, "log_tail": "", **extra}  # fmt: skip


async def claim(runner: ContractRunner):
    """The runner takes the next job the way `drbot worker` does (its consumer name, its ACL user)."""
    await runner.ensure_group()
    (entry,) = await runner.jobs.read(runner.consumer)
    return entry


# -- the runner's ACL user -----------------------------------------------------------------------------------------


async def test_a_runner_user_reaches_only_jobs_results_and_its_own_keys(harness, acl_users):
    name, client = await acl_users.runner("a")
    _, other = await acl_users.runner("b")
    keys = harness.keys
    forbidden = [
        ("XADD", keys.events, "*", "event", "issue_comment", "body", "{}"),  # a forged slash command
        ("XADD", keys.jobs, "*", "job_id", "x", "payload", "{}"),  # a job nobody asked for
        ("SET", keys.job("o/r#1@x:contracts"), "{}"),  # a planted job record
        ("SET", keys.job_done("o/r#1@x:contracts"), "done"),
        ("HSET", keys.pr(REPO, 2), "paused", "1"),  # pausing a PR
        ("HGETALL", keys.known(REPO)),
        ("GET", keys.delivery("d")),
        ("XACK", keys.jobs, "runners", "1-0"),  # only the bot settles a job
        ("XRANGE", keys.events, "-", "+"),
        ("SET", RunnerKeys(keys.prefix).result(f"runner-b-{acl_users.tag}", "job"), "{}"),  # another runner's keys
        ("KEYS", "*"),
        ("CONFIG", "GET", "*"),
        ("ACL", "LIST"),
    ]
    for command in forbidden:
        with pytest.raises(NoPermissionError):
            await client.execute_command(*command)
    # what it needs works
    await client.execute_command("SET", RunnerKeys(keys.prefix).result(name, "job"), "{}")
    await client.execute_command("XADD", keys.results, "*", "job_id", "job", "runner", name, "job_entry", "1-0")
    assert await client.execute_command("GET", keys.job_head(REPO, 1)) is None
    assert await other.execute_command("ACL", "WHOAMI") == f"runner-b-{acl_users.tag}".encode()


async def test_the_bot_user_runs_the_app_and_nothing_administrative(harness, acl_users, reviewed_pr):
    bot = await acl_users.bot()
    for command in (
        ("FLUSHALL",),
        ("SET", "other-app:key", "1"),
        ("CONFIG", "SET", "appendonly", "no"),
        ("KEYS", "*"),
    ):
        with pytest.raises(NoPermissionError):
            await bot.execute_command(*command)
    # the whole App as the bot user: intake, event worker, review, a command, a contract result
    settings = make_settings(reviewed_pr, harness.keys.prefix)
    async with app_harness(reviewed_pr, settings, bot) as app:
        job = await queue_job(app, reviewed_pr)
        assert app.outcomes[0].status == "reviewed" and "new finding" in summary(reviewed_pr)
        name, client = await acl_users.runner("a")
        runner = ContractRunner(client, RunnerKeys(harness.keys.prefix))
        await runner.report(await claim(runner), job, passing(job))
        consumer = ResultConsumer(app.worker.handler.store, app.worker.handler.client_for)
        assert await consumer.run_burst() == 1 and consumer.outcomes == ["published: passed"]


# -- events in Redis ----------------------------------------------------------------------------------------------


def forged_comment(github, number: int, body: str, user: str = "maintainer") -> bytes:
    payload = github.issue_comment_payload(REPO, number, body, user)
    return json.dumps(payload).encode()


async def test_a_forged_event_written_into_the_stream_changes_nothing(harness, reviewed_pr):
    reviewed_pr.add_pull(REPO, 2, head_files={"README.md": "x\n"})
    body = forged_comment(reviewed_pr, 2, "/drbot pause")
    calls = len(reviewed_pr.calls)
    for signature in ("", "sha256=" + "0" * 64, sign(body, "not-the-webhook-secret")):
        fields = {"delivery": f"forged-{len(signature)}", "event": "issue_comment", "body": body,
                  "received": "0", "signature": signature}  # fmt: skip
        await harness.redis.xadd(harness.keys.events, fields)
    assert await harness.run() == 3
    assert reviewed_pr.calls[calls:] == []  # not even a token was asked for
    assert await harness.redis.hget(harness.keys.pr(REPO, 2), "paused") is None
    dead = await harness.redis.xrange(harness.keys.dead)
    assert len(dead) == 3 and all(b"forged event" in fields[b"error"] for _, fields in dead)


async def test_a_copy_of_an_accepted_event_is_a_replay_and_changes_nothing(harness, reviewed_pr):
    payload = reviewed_pr.issue_comment_payload(REPO, 1, "/drbot pause", "maintainer")
    assert await harness.deliver("issue_comment", payload) == 202
    ((_, original),) = await harness.redis.xrange(harness.keys.events)
    await harness.run()
    assert await harness.redis.hget(harness.keys.pr(REPO, 1), "paused") == b"1"
    await harness.redis.hset(harness.keys.pr(REPO, 1), "paused", "0")  # a maintainer resumed meanwhile
    calls = len(reviewed_pr.calls)
    await harness.redis.xadd(harness.keys.events, original)  # the same bytes, validly signed, written again
    assert await harness.run() == 1
    assert reviewed_pr.calls[calls:] == [] and await harness.redis.hget(harness.keys.pr(REPO, 1), "paused") == b"0"
    assert await harness.redis.xlen(harness.keys.dead) == 0  # a replay is dropped, not an error


async def test_a_genuine_delivery_still_works_with_its_signature_checked_twice(harness, reviewed_pr):
    payload = reviewed_pr.issue_comment_payload(REPO, 1, "/drbot pause", "maintainer")
    ((status),) = (await harness.deliver("issue_comment", payload),)
    assert status == 202
    ((_, fields),) = await harness.redis.xrange(harness.keys.events)
    assert fields[b"signature"] == sign(fields[b"body"], SECRET).encode()
    await harness.run()
    assert await harness.redis.hget(harness.keys.pr(REPO, 1), "paused") == b"1"


# -- results in Redis ---------------------------------------------------------------------------------------------


async def test_a_result_counts_once_and_only_from_the_runner_holding_the_claim(harness, reviewed_pr, acl_users):
    job = await queue_job(harness, reviewed_pr)
    name_a, client_a = await acl_users.runner("a")
    name_b, client_b = await acl_users.runner("b")
    runner_a = ContractRunner(client_a, RunnerKeys(harness.keys.prefix))
    runner_b = ContractRunner(client_b, RunnerKeys(harness.keys.prefix))
    entry = await claim(runner_a)
    consumer = results_consumer(harness)

    # runner B cannot write A's result; a result in B's own keys, announced as B's or A's, is refused
    with pytest.raises(NoPermissionError):
        await client_b.set(RunnerKeys(harness.keys.prefix).result(name_a, job["job_id"]), json.dumps(passing(job)))
    await runner_b._identify()
    await runner_b.report(entry, job, passing(job))
    await client_b.xadd(harness.keys.results, {"job_id": job["job_id"], "runner": name_a, "job_entry": entry.id})
    assert await consumer.run_burst() == 2
    assert contract_checks(reviewed_pr) == []
    assert consumer.outcomes == [f"rejected: runner {name_b!r} does not hold the job's claim",
                                 "rejected: the runner wrote no result for the job"]  # fmt: skip

    # A's genuine result for another head is refused; then its real one is published, once
    await runner_a.report(entry, job, passing(job, head_sha="f" * 40))
    assert await consumer.run_burst() == 1 and contract_checks(reviewed_pr) == []
    assert consumer.outcomes[-1] == "rejected: the result is for another head than the job's"
    await runner_a.report(entry, job, passing(job))
    assert await consumer.run_burst() == 1
    (check,) = contract_checks(reviewed_pr)
    assert check["conclusion"] == "success" and check["head_sha"] == job["head_sha"]
    assert (await harness.redis.xpending(harness.keys.jobs, "runners"))["pending"] == 0  # the bot settled the job

    # the same announcement again (a replay) changes nothing
    await client_a.xadd(harness.keys.results, {"job_id": job["job_id"], "runner": name_a, "job_entry": entry.id})
    assert await consumer.run_burst() == 1
    assert consumer.outcomes[-1] == "rejected: the job was reported already" and len(contract_checks(reviewed_pr)) == 1


async def test_results_for_jobs_nobody_queued_change_nothing(harness, reviewed_pr, acl_users):
    name, client = await acl_users.runner("a")
    job_id = f"{REPO}#1@{'a' * 40}:contracts"
    with pytest.raises(NoPermissionError):  # a planted job record, as in the review's attack
        await client.set(harness.keys.job(job_id), json.dumps({"job_id": job_id, "repo": REPO, "pr": 1}))
    await client.set(RunnerKeys(harness.keys.prefix).result(name, job_id), json.dumps({"job_id": job_id}))
    await client.xadd(harness.keys.results, {"job_id": job_id, "runner": name, "job_entry": "1-0"})
    consumer = results_consumer(harness)
    assert await consumer.run_burst() == 1
    assert consumer.outcomes == ["rejected: no such job"] and contract_checks(reviewed_pr) == []


async def test_a_malformed_result_goes_to_the_dead_letters_once_and_the_pr_hears_why(harness, reviewed_pr, acl_users):
    job = await queue_job(harness, reviewed_pr)
    name, client = await acl_users.runner("a")
    runner = ContractRunner(client, RunnerKeys(harness.keys.prefix))
    entry = await claim(runner)
    bad = passing(job)
    del bad["results"][0]["pipeline"]  # the review's row without `pipeline`, once retried every 60 s forever
    await runner.report(entry, job, bad)
    consumer = results_consumer(harness)
    assert await consumer.run_burst() == 1
    ((_, dead),) = await harness.redis.xrange(harness.keys.dead)
    assert b"results[0].pipeline" in dead[b"error"] and dead[b"source"] == harness.keys.results.encode()
    (check,) = contract_checks(reviewed_pr)
    assert check["conclusion"] == "neutral" and "results[0].pipeline" in check["output"]["summary"]
    assert await consumer.run_burst() == 0  # nothing left to retry


async def test_a_notice_that_is_not_even_well_formed_is_dead_lettered_without_retries(harness, reviewed_pr):
    await harness.redis.xadd(harness.keys.results, {"job_id": "x", "runner": "no spaces allowed", "job_entry": "?"})
    consumer = results_consumer(harness)
    assert await consumer.run_burst() == 1 and await consumer.run_burst() == 0
    ((_, dead),) = await harness.redis.xrange(harness.keys.dead)
    assert b"malformed result notice" in dead[b"error"]


# -- rendering untrusted result text --------------------------------------------------------------------------------


HOSTILE = "@huggingface/team see https://evil.example/x <img src=x onerror=alert(1)> [click](https://evil.example) #1 `` ``` |"


def test_result_text_is_rendered_inert():
    section = render_section({
        "status": "error", "limit": None, "log_tail": HOSTILE + "\n```\n@team outside?",
        "runner": {"device": "@team", "diffusers": "<b>0.42</b>", "torch": "https://evil.example"},
        "results": [{"pipeline": HOSTILE, "contract": "DRC001", "pattern": 1, "outcome": "failed", "message": HOSTILE}],
    })  # fmt: skip
    fenced = False
    for line in section.splitlines():
        if line.startswith("```"):
            fenced = not fenced  # the log's own backticks became quotes: only drbot's fences open and close
            continue
        if fenced:
            continue
        # every occurrence of attacker text sits inside a code span (GitHub renders nothing inside one)
        outside = _outside_code_spans(line)
        assert "@huggingface" not in outside and "@team" not in outside
        assert "evil.example" not in outside and "<img" not in outside and "<b>" not in outside


def test_untrusted_spans_survive_backticks_and_pipes():
    assert untrusted("a `` b") == "``` a `` b ```"
    assert untrusted("x | y") == r"` x \| y `"
    assert untrusted("line\nbreak\x00") == "` line break `"
    assert untrusted("") == ""
    assert len(untrusted("z" * 5000)) < 310


def _outside_code_spans(line: str) -> str:
    """The text of a Markdown line that is not inside a code span (CommonMark: equal-length backtick runs)."""
    out, i = [], 0
    while i < len(line):
        if line[i] == "`":
            j = i
            while j < len(line) and line[j] == "`":
                j += 1
            fence = line[i:j]
            end = line.find(fence, j)
            while end != -1 and (line[end + len(fence) : end + len(fence) + 1] == "`" or line[end - 1] == "`"):
                end = line.find(fence, end + 1)
            if end == -1:
                out.append(fence)
                i = j
                continue
            i = end + len(fence)
        else:
            out.append(line[i])
            i += 1
    return "".join(out)


def test_the_deploy_readme_shows_the_rules_drbot_redis_acl_writes():
    from pathlib import Path

    from bot.acl import bot_rules, runner_rules

    text = (Path(__file__).resolve().parents[2] / "deploy" / "README.md").read_text()
    assert " ".join(bot_rules()) in text and " ".join(runner_rules("gpu-1")) in text
