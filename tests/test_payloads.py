"""The v1 job and result payloads (DESIGN §6): the bot writes jobs and reads results, the runner the reverse;
both sides are held to the same golden files, so neither imports the other."""

from __future__ import annotations

import json
from pathlib import Path

from bot.handlers.issue_comment import enqueue_contracts
from bot.results import render_section
from bot.service import Store
from bot.store import Keys
from runners.worker import ContractRunner, RunnerKeys


GOLDEN = Path(__file__).resolve().parent / "golden"
JOB = json.loads((GOLDEN / "job_payload.v1.json").read_text())
RESULT = json.loads((GOLDEN / "result_payload.v1.json").read_text())


def shape(value):
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    return type(value).__name__


async def test_the_bot_writes_jobs_of_the_golden_shape(prefixed_redis):
    client, prefix = prefixed_redis
    store = Store(client, Keys(prefix))
    pull = {"number": 1, "head": {"sha": JOB["head_sha"]}}
    await enqueue_contracts(store, JOB["repo"], pull, ("FluxPipeline",), "maintainer", "https://api.github.com", 7)
    ((_, fields),) = await client.xrange(store.keys.jobs)
    job = json.loads(fields[b"payload"])
    assert shape(job) == shape(JOB)
    assert {k: job[k] for k in ("version", "job_id", "repo", "pr", "head_sha", "tarball_url", "pipelines")} == {
        k: JOB[k] for k in ("version", "job_id", "repo", "pr", "head_sha", "tarball_url", "pipelines")
    }


async def test_the_runner_reads_golden_jobs_and_writes_golden_results(prefixed_redis):
    client, prefix = prefixed_redis
    runner = ContractRunner(client, RunnerKeys(prefix))
    job = {**JOB, "tarball_url": "http://127.0.0.1:1/unreachable.tar.gz"}  # fails fast: an `error` result
    result = await runner.execute(job)
    assert result["status"] == "error" and "could not fetch the PR" in result["log_tail"]
    assert set(result) == set(RESULT) and result["version"] == 1 and result["job_id"] == JOB["job_id"]
    assert {"host", "device"} <= set(result["runner"])


def test_the_bot_renders_golden_results():
    section = render_section(RESULT)
    assert "### Contract tests: failed" in section and "| ` FluxPipeline ` | DRC001 |" in section


def test_bot_and_runner_name_the_job_head_key_alike():
    assert Keys("p:").job_head("o/r", 7) == RunnerKeys("p:").latest("o/r", 7)


def test_bot_and_runner_name_a_runners_result_key_alike():
    assert Keys("p:").runner_result("gpu-1", "o/r#7@abc:contracts") == RunnerKeys("p:").result(
        "gpu-1", "o/r#7@abc:contracts"
    )


def test_the_bot_accepts_golden_results_for_the_golden_job():
    from bot.results import validate

    kept = validate(json.dumps(RESULT).encode(), JOB)
    assert set(kept) == set(RESULT) and kept["results"] == RESULT["results"] and kept["status"] == "failed"
