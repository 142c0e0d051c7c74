"""Poison data never loops: an entry whose consumer dies every time is dead-lettered after the maximum (attempts
are counted when an entry is claimed, by Redis); a runner's garbage output is log text, not a crash.

The review's attacks: a file that segfaulted the analysis killed `drbot serve` 7 times in a row and the event
was never dead-lettered; a runner printing `0` on stdout killed `drbot worker` with a TypeError on every attempt."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from common.streams import StreamConsumer
from runners.worker import ContractRunner, RunnerKeys, parse_output


ROOT = Path(__file__).resolve().parents[2]

#: a consumer process that takes one entry and dies inside the handler (SIGKILL, as the OOM killer or a
#: segfault would end it), counting each run in Redis first
DYING_CONSUMER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    import redis.asyncio as aioredis
    from common.streams import StreamConsumer

    async def main(stream, counter):
        redis = aioredis.from_url("redis://127.0.0.1:6379/0")
        consumer = StreamConsumer(redis, stream, "g", dead=stream + ":dead", visibility_timeout_s=0.2, max_attempts=3)

        async def handler(entry):
            await redis.incr(counter)
            os.kill(os.getpid(), signal.SIGKILL)

        await consumer.run_burst(handler, f"dying-{os.getpid()}")

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_an_entry_whose_consumer_dies_every_time_is_dead_lettered_after_the_maximum(prefixed_redis):
    client, prefix = prefixed_redis
    stream, counter = f"{prefix}events", f"{prefix}runs"
    await client.xadd(stream, {"event": "pull_request", "body": "{}"})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(5):  # a service manager restarting the dead process, again and again
        proc = subprocess.run([sys.executable, "-c", DYING_CONSUMER, stream, counter], env=env, timeout=60)
        assert proc.returncode in (-9, 0)
        await asyncio.sleep(0.25)  # past the visibility timeout: the next one claims it
    # the handler ran exactly max_attempts times; the claim after that buried the entry without running it
    assert int(await client.get(counter)) == 3
    ((_, dead),) = await client.xrange(f"{stream}:dead")
    assert b"exhausted" in dead[b"error"] and dead[b"attempts"] == b"4"
    assert await client.xlen(stream) == 0


async def test_a_failing_handler_is_retried_then_buried_and_a_poison_one_at_once(prefixed_redis):
    client, prefix = prefixed_redis
    from common.streams import Poison

    consumer = StreamConsumer(
        client, f"{prefix}s", "g", dead=f"{prefix}dead", visibility_timeout_s=0.01, max_attempts=2
    )
    await client.xadd(f"{prefix}s", {"kind": b"flaky"})
    await client.xadd(f"{prefix}s", {"kind": b"poison"})
    runs: list[bytes] = []

    async def handler(entry):
        runs.append(entry.get("kind"))
        if entry.get("kind") == b"poison":
            raise Poison("malformed")
        raise RuntimeError("GitHub 502")

    for _ in range(4):
        await consumer.run_burst(handler, "c")
        await asyncio.sleep(0.02)
    assert runs.count(b"flaky") == 2 and runs.count(b"poison") == 1
    errors = sorted(fields[b"error"].split(b"\n")[0] for _, fields in await client.xrange(f"{prefix}dead"))
    assert errors[0].startswith(b"Traceback") and errors[1] == b"poison: malformed"


def test_runner_output_that_is_not_a_result_is_log_text():
    lines = ["0", "[]", '"x"', "null", "{", '{"result": 5}', '{"runner": "x"}', '{"result": {"pipeline": 1}}',
             "{" + '"a":' * 3000 + "1" + "}" * 3000, '{"done": "yes"}',
             json.dumps({"result": {"pipeline": "P", "contract": "DRC001", "pattern": 1, "outcome": "passed"}}),
             json.dumps({"done": True})]  # fmt: skip
    info, rows, done, log = parse_output(lines)
    assert rows == [
        {"pipeline": "P", "contract": "DRC001", "pattern": 1, "outcome": "passed", "message": "", "duration_s": 0.0}
    ]
    assert done and info == {} and log.splitlines()[:5] == ["0", "[]", '"x"', "null", "{"]


async def test_a_job_claimed_too_often_is_reported_as_an_error_not_run_again(prefixed_redis):
    client, prefix = prefixed_redis
    keys = RunnerKeys(prefix)
    head = "b" * 40
    job = {"version": 1, "job_id": "o/r#1@b:contracts", "repo": "o/r", "pr": 1, "head_sha": head, "pipelines": [],
           "contracts": "all", "timeout_s": 60, "tarball_url": f"http://127.0.0.1:1/repos/o/r/tarball/{head}"}  # fmt: skip
    await client.xadd(keys.jobs, {"job_id": job["job_id"], "payload": json.dumps(job)})
    runner = ContractRunner(client, keys, visibility_timeout_s=0.01, max_attempts=2, name="r1")
    await runner.ensure_group()
    for _ in range(2):  # two runners took it and died (nothing reported, the claim lapses)
        assert await runner.jobs.claim(runner.consumer) or await runner.jobs.read(runner.consumer)
        await asyncio.sleep(0.02)
    ran = []
    runner.execute = lambda payload: ran.append(payload)  # noqa: E731 - would run the job; must not be called
    assert await runner.run_burst() == 1 and ran == []
    result = json.loads(await client.get(keys.result("r1", job["job_id"])))
    assert result["status"] == "error" and "died 2 times" in result["log_tail"]
    ((_, notice),) = await client.xrange(keys.results)
    assert notice[b"runner"] == b"r1" and notice[b"job_id"] == job["job_id"].encode()


async def test_a_runner_whose_sandbox_fails_refuses_the_job_instead_of_running_it(prefixed_redis, github, tmp_path):
    from runners.sandbox import Sandbox

    client, prefix = prefixed_redis
    keys = RunnerKeys(prefix)
    github.add_repo("o/r", installation_id=1, files={"src/diffusers/__init__.py": "X = 1\n"}, private=False)
    head = github.add_pull("o/r", 1, head_files={"src/diffusers/__init__.py": "X = 2\n"})["head"]["sha"]
    job = {"version": 1, "job_id": "o/r#1@x:contracts", "repo": "o/r", "pr": 1, "head_sha": head, "pipelines": [],
           "contracts": "all", "timeout_s": 60, "tarball_url": f"{github.url}/repos/o/r/tarball/{head}"}  # fmt: skip
    await client.xadd(keys.jobs, {"job_id": job["job_id"], "payload": json.dumps(job)})
    broken = Sandbox(bwrap=str(tmp_path / "no-bwrap-here"))  # bubblewrap removed from the host after start-up
    runner = ContractRunner(client, keys, name="r1", sandbox=broken)
    assert await runner.run_burst() == 1
    result = json.loads(await client.get(keys.result("r1", job["job_id"])))
    assert result["status"] == "error" and "sandbox could not be set up" in result["log_tail"]
    assert "apt-get install bubblewrap" in result["log_tail"]


async def test_a_result_whose_notice_was_lost_is_announced_again_not_run_again(prefixed_redis):
    client, prefix = prefixed_redis
    keys = RunnerKeys(prefix)
    head = "c" * 40
    job = {"version": 1, "job_id": "o/r#1@c:contracts", "repo": "o/r", "pr": 1, "head_sha": head, "pipelines": [],
           "contracts": "all", "timeout_s": 60, "tarball_url": f"http://127.0.0.1:1/repos/o/r/tarball/{head}"}  # fmt: skip
    await client.xadd(keys.jobs, {"job_id": job["job_id"], "payload": json.dumps(job)})
    # the visibility timeout outlasts one handling even on a loaded machine, so the burst reclaims the entry once
    runner = ContractRunner(client, keys, visibility_timeout_s=1.0, max_attempts=5, name="r1")
    await runner.ensure_group()
    (entry,) = await runner.jobs.read(runner.consumer)
    # the runner wrote its result and died before announcing it
    await client.set(keys.result("r1", job["job_id"]), json.dumps({"status": "passed"}))
    await asyncio.sleep(1.1)
    ran = []
    runner.execute = lambda payload: ran.append(payload)  # noqa: E731 - would run the job again; must not be called
    assert await runner.run_burst() == 1 and ran == []
    ((_, notice),) = await client.xrange(keys.results)
    assert notice == {b"job_id": job["job_id"].encode(), b"runner": b"r1", b"job_entry": entry.id.encode()}
