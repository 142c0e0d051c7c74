"""`drbot worker` end to end: a job the bot enqueues runs on the PR's own code from its tarball, in the sandbox,
and comes back as a check run and a summary section; a killed runner's job is claimed and reported once; a job
over its time limit is reported as a timeout and the runner goes on."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from fast_test_module import checkout_tests
from harness import DDPM, REPO, open_pr, with_eta
from redis.exceptions import ResponseError

from bot.results import RESULT_PERMISSIONS, ResultConsumer, publish_result
from bot.store import PullLock
from runners.worker import ContractRunner, RunnerKeys


ROOT = Path(__file__).resolve().parents[2]
SD = "src/diffusers/pipelines/stable_diffusion/pipeline_stable_diffusion.py"


@pytest.fixture
def package_files(diffusers_dir) -> dict[str, bytes]:
    """The pinned diffusers package as a repository's `src/diffusers/` (what a PR tarball holds)."""
    return {
        f"src/diffusers/{path.relative_to(diffusers_dir).as_posix()}": path.read_bytes()
        for path in diffusers_dir.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def job(github, head: str, job_id: str, pipelines=("StableDiffusionPipeline",), contracts=("DRC006",), timeout_s=300):
    return {
        "version": 1, "job_id": job_id, "repo": REPO, "pr": 1, "head_sha": head,
        "tarball_url": f"{github.url}/repos/{REPO}/tarball/{head}", "pipelines": list(pipelines),
        "contracts": list(contracts), "requested_by": "maintainer", "requested_at": "2026-11-26T00:00:00Z",
        "timeout_s": timeout_s,
    }  # fmt: skip


async def enqueue(harness, payload: dict) -> None:
    await harness.redis.xadd(harness.keys.jobs, {"job_id": payload["job_id"], "payload": json.dumps(payload)})


async def reported(harness, runner: str) -> list[dict]:
    """The results runner `runner` announced, read from its own keys (where the bot reads them)."""
    out = []
    for _, fields in await harness.redis.xrange(harness.keys.results):
        if fields[b"runner"].decode() == runner:
            raw = await harness.redis.get(harness.keys.runner_result(runner, fields[b"job_id"].decode()))
            out.append(json.loads(raw))
    return out


async def test_a_job_the_bot_enqueues_runs_on_the_prs_code_and_lands_in_the_pr(harness, github, package_files):
    github.add_repo(REPO, installation_id=1, files=package_files, private=False)
    marked = package_files[SD].decode() + "\n# drbot-test: this PR's own copy of diffusers\n"
    github.add_pull(REPO, 1, head_files={SD: marked})
    github.set_permission(REPO, "maintainer", "write")
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    github.advance_clock(2)
    await harness.deliver("issue_comment", github.issue_comment_payload(REPO, 1, "/drbot contracts StableDiffusionPipeline", "maintainer"))  # fmt: skip
    await harness.run()

    runner = ContractRunner(harness.redis, RunnerKeys(harness.keys.prefix), name="gpu-1")
    assert await runner.run_burst() == 1
    (result,) = await reported(harness, "gpu-1")
    # DRC008: SD 1.x does not cast user latents (DRB501 says so statically)
    assert result["status"] == "failed", result["log_tail"]
    assert result["runner"]["diffusers_path"].startswith("/job/src/diffusers/")  # the PR's tarball, in the sandbox
    outcomes = {r["contract"]: r["outcome"] for r in result["results"]}
    assert outcomes["DRC008"] == "failed" and outcomes["DRC001"] == "passed"

    dispatcher = harness.worker.handler
    consumer = ResultConsumer(dispatcher.store, dispatcher.client_for)
    assert await consumer.run_burst() == 1 and consumer.outcomes == ["published: failed"]
    (check,) = [c for c in github.check_runs(REPO) if c["name"] == "drbot contracts"]
    assert check["conclusion"] == "failure" and check["output"]["title"] == "1 contract failed"
    summary = next(c for c in github.comments(REPO, 1) if c["body"].startswith("<!-- drbot:summary -->"))
    assert "### Contract tests: failed" in summary["body"] and "DRC008" in summary["body"]
    assert await runner.run_burst() == 0  # the bot settled the job: nothing left to claim


async def test_a_job_builds_pipelines_from_the_prs_own_fast_tests_in_the_sandbox(harness, github, package_files):
    github.add_repo(REPO, installation_id=1, files=package_files, private=False)
    # the PR's own fast test module: a planted defect (`latents` dropped) in a pipeline it defines, and the
    # `PipelineTesterMixin` idiom loading a tiny tokenizer from the Hub (a stand-in, offline)
    head = github.add_pull(REPO, 1, head_files=checkout_tests())["head"]["sha"]
    pipelines = ("LatentsIgnoredPipeline", "StableDiffusionPipeline", "SanaPipeline")
    await enqueue(harness, job(github, head, "from-tests", pipelines=pipelines, contracts=("DRC003",)))
    runner = ContractRunner(harness.redis, RunnerKeys(harness.keys.prefix), name="r")
    assert runner.sandbox.sandboxed  # the PR's tests are code too: they run only inside the sandbox
    assert await runner.run_burst() == 1
    (result,) = await reported(harness, "r")
    outcomes = {r["pipeline"]: (r["outcome"], r["message"]) for r in result["results"]}
    # the defect planted in the PR's test module is found: tests/ was unpacked and built from, in the sandbox
    assert outcomes["LatentsIgnoredPipeline"][0] == "failed", result["log_tail"]
    assert "two different `latents` gave identical outputs" in outcomes["LatentsIgnoredPipeline"][1]
    # its tokenizer came from the read-only stand-in cache, offline
    assert outcomes["StableDiffusionPipeline"] == ("passed", ""), result["log_tail"]
    # a pipeline with no fast test in the PR falls back to drbot's own tiny factory
    assert outcomes["SanaPipeline"][0] == "passed", result["log_tail"]
    assert (
        "built from the checkout's fast tests: LatentsIgnoredPipeline, StableDiffusionPipeline" in result["log_tail"]
    )
    assert result["runner"]["diffusers_path"].startswith("/job/src/diffusers/")


async def test_a_killed_runners_job_is_claimed_and_reported_once(harness, github, package_files):
    github.add_repo(REPO, installation_id=1, files=package_files, private=False)
    head = github.add_pull(REPO, 1, head_files={"README.md": "x\n"})["head"]["sha"]
    await enqueue(harness, job(github, head, f"{REPO}#1@{head}:kill", contracts=("DRC001",)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "drbot", "worker", "--burst", "--key-prefix", harness.keys.prefix,
         "--visibility-timeout", "1", "--name", "doomed"], env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until the job is taken (pending), then kill the whole runner
        try:
            if (await harness.redis.xpending(harness.keys.jobs, "runners"))["pending"]:
                break
        except ResponseError:  # the runner has not created its group yet
            pass
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    assert await harness.redis.xlen(harness.keys.results) == 0
    await asyncio.sleep(1.1)  # past the visibility timeout
    survivor = ContractRunner(harness.redis, RunnerKeys(harness.keys.prefix), visibility_timeout_s=1, name="survivor")
    assert await survivor.run_burst() == 1
    (result,) = await reported(harness, "survivor")
    assert result["status"] == "passed" and [r["contract"] for r in result["results"]] == ["DRC001"]
    assert await survivor.run_burst() == 0  # still pending for the bot to settle, but not run or reported twice
    assert await harness.redis.xlen(harness.keys.results) == 1


async def test_a_job_over_its_time_limit_is_a_timeout_and_the_runner_goes_on(harness, github, package_files):
    github.add_repo(REPO, installation_id=1, files=package_files, private=False)
    head = github.add_pull(REPO, 1, head_files={"README.md": "x\n"})["head"]["sha"]
    await enqueue(harness, job(github, head, "slow", pipelines=(), contracts=(), timeout_s=2))
    await enqueue(harness, job(github, head, "quick"))
    runner = ContractRunner(harness.redis, RunnerKeys(harness.keys.prefix), name="r")
    assert await runner.run_burst() == 2
    slow, quick = await reported(harness, "r")
    assert (slow["job_id"], slow["status"]) == ("slow", "timeout")
    assert (quick["job_id"], quick["status"]) == ("quick", "passed")


async def test_a_job_for_an_older_head_is_cancelled(harness, github, package_files):
    github.add_repo(REPO, installation_id=1, files=package_files, private=False)
    head = github.add_pull(REPO, 1, head_files={"README.md": "x\n"})["head"]["sha"]
    await harness.redis.set(harness.keys.job_head(REPO, 1), "f" * 40)
    await enqueue(harness, job(github, head, f"old-{uuid.uuid4().hex[:6]}"))
    runner = ContractRunner(harness.redis, RunnerKeys(harness.keys.prefix), name="r")
    assert await runner.run_burst() == 1
    (result,) = await reported(harness, "r")
    assert result["status"] == "cancelled" and result["results"] == []


async def test_a_result_edits_the_summary_only_while_no_review_of_the_pr_runs(harness, github, sources):
    # a review rewrites the summary; a result published meanwhile would read the old body and write it back over
    # the new one: the summary's read-change-write takes the PR's lock, as reviews do
    open_pr(github, sources, {DDPM: with_eta(sources)})
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    (summary,) = github.comments(REPO, 1)
    head = github.pull(REPO, 1)["head"]["sha"]
    job = {"job_id": "j-lock", "repo": REPO, "pr": 1, "head_sha": head, "installation": 1}
    result = {"version": 1, "job_id": "j-lock", "head_sha": head, "status": "passed", "runner": {}, "limit": None,
              "log_tail": "", "results": [{"pipeline": "DDPMPipeline", "contract": "DRC006", "pattern": 6,
                                           "outcome": "passed", "message": "", "duration_s": 0.1}]}  # fmt: skip
    gh = await harness.worker.handler.client_for(1, REPO, RESULT_PERMISSIONS)
    edits = rf"/issues/comments/{summary['id']}$"
    async with PullLock(harness.redis, harness.keys.pr_lock(REPO, 1)):  # a review of this PR is running
        publishing = asyncio.create_task(publish_result(gh, harness.worker.handler.store, job, result))
        await asyncio.sleep(0.5)
        assert not publishing.done()
        assert github.requests("PATCH", edits) == [] and github.requests("GET", edits) == []
    await asyncio.wait_for(publishing, timeout=10)
    assert len(github.requests("PATCH", edits)) == 1
    assert "### Contract tests: passed" in github.comments(REPO, 1)[0]["body"]


def test_a_new_result_replaces_the_summary_section_and_nothing_else():
    from bot.results import render_section, with_section

    def section(status: str) -> str:
        return render_section({"status": status, "results": [], "runner": {}, "limit": None, "log_tail": ""})

    body = "<!-- drbot:summary -->\nfindings\r\n\n<sub>drbot checks …</sub>\n"
    first = with_section(body, section("failed"))
    assert first.index("### Contract tests: failed") < first.index("<sub>drbot checks")  # above the footer
    second = with_section(first, section("passed"))
    assert "tests: failed" not in second and second == body.replace("<sub>", section("passed") + "<sub>", 1)
    assert with_section(second, section("passed")) == second
