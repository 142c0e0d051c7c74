"""The v1 job and result payloads (DESIGN §6), in both directions: the bot writes jobs and reads results, the runner
the reverse; both sides are held to the same golden files, so neither imports the other."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from harness import DDPM, REPO, open_pr, queue_job, with_eta

from bot.handlers.issue_comment import contract_job
from bot.results import render_section, validate
from bot.store import JobQueue, Keys
from runners.worker import ContractRunner, RunnerKeys, validate_job


GOLDEN = Path(__file__).resolve().parent / "golden"
JOB = json.loads((GOLDEN / "job_payload.v1.json").read_text())
RESULT = json.loads((GOLDEN / "result_payload.v1.json").read_text())
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def shape(value):
    """The payload with every leaf replaced by its type's name (lists by the shapes of their items)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__


# -- jobs: the bot writes them, the runner reads them


async def test_the_bot_builds_and_queues_the_golden_job(prefixed_redis):
    client, prefix = prefixed_redis
    keys = Keys(prefix)
    job = contract_job(JOB["repo"], JOB["pr"], JOB["head_sha"], tuple(JOB["pipelines"]), JOB["requested_by"],
                       "https://api.github.com", JOB["requested_at"])  # fmt: skip
    assert job == JOB
    queue = JobQueue(client, keys)
    entry = await queue.enqueue(job, 7)
    ((entry_id, fields),) = await client.xrange(keys.jobs)
    assert entry == entry_id.decode() and fields[b"job_id"].decode() == JOB["job_id"]
    assert json.loads(fields[b"payload"]) == JOB
    record = json.loads(await client.get(keys.job(JOB["job_id"])))
    assert record == {"job_id": JOB["job_id"], "repo": JOB["repo"], "pr": JOB["pr"], "head_sha": JOB["head_sha"],
                      "installation": 7, "requested_by": JOB["requested_by"], "entry": entry}  # fmt: skip
    assert (await client.get(keys.job_head(JOB["repo"], JOB["pr"]))).decode() == JOB["head_sha"]
    assert await queue.enqueue(job, 7) is None and await client.xlen(keys.jobs) == 1  # once per job id
    assert validate_job(fields[b"payload"]) == JOB  # and the runner takes it as it is


async def test_a_contracts_command_writes_a_job_of_the_golden_shape(harness, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)})
    github.set_permission(REPO, "maintainer", "write")
    job = await queue_job(harness, github, "FluxPipeline")
    assert shape(job) == shape(JOB) and STAMP.match(job["requested_at"])
    head = github.pull(REPO, 1)["head"]["sha"]
    assert job == {**JOB, "job_id": JOB["job_id"].replace(JOB["head_sha"], head), "head_sha": head,
                   "tarball_url": f"{github.url}/repos/{REPO}/tarball/{head}", "requested_at": job["requested_at"]}  # fmt: skip


# -- results: the runner writes them, the bot reads them


@pytest.fixture
def package_files(diffusers_dir) -> dict[str, bytes]:
    """The pinned diffusers package as a repository's `src/diffusers/` (what a PR tarball holds)."""
    return {
        f"src/diffusers/{path.relative_to(diffusers_dir).as_posix()}": path.read_bytes()
        for path in diffusers_dir.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def assert_golden_result(result: dict) -> None:
    """Same top-level keys and types as the golden result, rows of the golden row's shape, and the golden runner
    facts (a runner may add diagnostics there; the bot keeps only these)."""
    assert {k: type(v).__name__ for k, v in result.items()} == {k: type(v).__name__ for k, v in RESULT.items()}
    assert result["results"] and all(shape(row) == shape(RESULT["results"][0]) for row in result["results"])
    assert {k: shape(result["runner"][k]) for k in RESULT["runner"]} == shape(RESULT["runner"])


async def test_the_runner_writes_a_golden_result_on_a_successful_run(prefixed_redis, github, package_files):
    client, prefix = prefixed_redis
    github.add_repo(REPO, installation_id=1, files=package_files, private=False)
    head = github.add_pull(REPO, 1, head_files={"README.md": "x\n"})["head"]["sha"]
    job = {**JOB, "job_id": f"{REPO}#1@{head}:contracts:StableDiffusionPipeline", "head_sha": head,
           "tarball_url": f"{github.url}/repos/{REPO}/tarball/{head}", "pipelines": ["StableDiffusionPipeline"],
           "contracts": ["DRC007"], "timeout_s": 300}  # fmt: skip
    job = validate_job(json.dumps(job).encode())
    result = await ContractRunner(client, RunnerKeys(prefix)).execute(job)  # the real sandbox, on the PR's tarball
    assert result["status"] == "passed", result["log_tail"]
    assert [(r["contract"], r["outcome"]) for r in result["results"]] == [("DRC007", "passed")]
    assert_golden_result(result)
    assert (result["job_id"], result["head_sha"], result["limit"]) == (job["job_id"], head, None)
    kept = validate(json.dumps(result).encode(), job)  # the bot keeps all of it but the runner's diagnostics
    assert kept == {**result, "runner": {k: result["runner"][k] for k in RESULT["runner"]}}


async def test_the_runner_writes_a_golden_result_when_it_cannot_fetch_the_pr(prefixed_redis):
    client, prefix = prefixed_redis
    job = {**JOB, "tarball_url": "http://127.0.0.1:1/unreachable.tar.gz"}  # fails fast: an `error` result
    result = await ContractRunner(client, RunnerKeys(prefix)).execute(job)
    assert result["status"] == "error" and "could not fetch the PR" in result["log_tail"]
    assert set(result) == set(RESULT) and result["version"] == 1 and result["job_id"] == JOB["job_id"]
    assert {"host", "device"} <= set(result["runner"])


def test_the_bot_keeps_exactly_the_golden_result():
    assert validate(json.dumps(RESULT).encode(), JOB) == RESULT
    # a field outside the v1 shape changes nothing: it is dropped, not kept or trusted
    assert validate(json.dumps({**RESULT, "duration_s": 1.5, "extra": "<b>x</b>"}).encode(), JOB) == RESULT


def test_the_bot_renders_golden_results():
    section = render_section(RESULT)
    assert "### Contract tests: failed" in section and "| ` FluxPipeline ` | DRC001 |" in section


def test_bot_and_runner_name_the_job_head_key_alike():
    assert Keys("p:").job_head("o/r", 7) == RunnerKeys("p:").latest("o/r", 7)


def test_bot_and_runner_name_a_runners_result_key_alike():
    assert Keys("p:").runner_result("gpu-1", "o/r#7@abc:contracts") == RunnerKeys("p:").result(
        "gpu-1", "o/r#7@abc:contracts"
    )
