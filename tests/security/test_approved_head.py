"""What the maintainer approved is what runs: `/drbot contracts` pins the head the PR had when the comment was
written, refuses (naming both SHAs) when the head moved since, takes an explicit `@sha`, and the runner takes a
tarball only when it is that commit.

The review's attack: a maintainer typed `/drbot contracts` at head A, the author pushed B before the runner
started, and the job ran B."""

from __future__ import annotations

import json

import pytest
from harness import DDPM, REPO, open_pr, with_eta

from bot.handlers.issue_comment import reply_marker
from common.archive import ArchiveError, extract
from common.streams import Poison
from runners.worker import validate_job


@pytest.fixture
def pr(github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)})
    github.set_permission(REPO, "maintainer", "write")
    return github


async def command(harness, github, body: str) -> str:
    payload = github.issue_comment_payload(REPO, 1, body, "maintainer")
    await harness.deliver("issue_comment", payload)
    await harness.run()
    marker = reply_marker(payload["comment"]["id"])
    (reply,) = [c["body"] for c in github.comments(REPO, 1) if c["body"].startswith(marker)]
    return reply


async def jobs(harness) -> list[dict]:
    return [json.loads(fields[b"payload"]) for _, fields in await harness.redis.xrange(harness.keys.jobs)]


async def opened(harness, github) -> str:
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    github.advance_clock(2)
    return github.pull(REPO, 1)["head"]["sha"]


async def test_a_push_after_the_comment_is_refused_naming_both_heads(harness, pr):
    head_a = await opened(harness, pr)
    # the maintainer comments at A; the author pushes B a second later, before drbot handles the comment
    payload = pr.issue_comment_payload(REPO, 1, "/drbot contracts StableDiffusionPipeline", "maintainer")
    pr.advance_clock(1)
    head_b = pr.push(REPO, 1, {"src/diffusers/__init__.py": "import os  # reads the runner's secrets\n"})
    await harness.deliver("issue_comment", payload)
    await harness.deliver("pull_request", pr.pull_request_payload(REPO, 1, "synchronize"))
    await harness.run()
    reply = next(
        c["body"] for c in pr.comments(REPO, 1) if c["body"].startswith(reply_marker(payload["comment"]["id"]))
    )
    assert f"`{head_a[:12]}`" in reply and f"`{head_b[:12]}`" in reply and "moved after your comment" in reply
    assert await jobs(harness) == []

    # naming the new head is an explicit approval of it
    pr.advance_clock(2)
    reply = await command(harness, pr, f"/drbot contracts @{head_b[:10]} StableDiffusionPipeline")
    assert f"`{head_b[:7]}`" in reply and "Queued" in reply
    (job,) = await jobs(harness)
    assert job["head_sha"] == head_b and job["tarball_url"].endswith(f"/tarball/{head_b}")


async def test_the_comment_runs_the_head_it_was_written_on(harness, pr):
    head = await opened(harness, pr)
    reply = await command(harness, pr, "/drbot contracts StableDiffusionPipeline")
    assert "Queued" in reply
    (job,) = await jobs(harness)
    assert job["head_sha"] == head


async def test_a_push_in_the_same_second_as_the_comment_is_not_taken_as_seen(harness, pr):
    await opened(harness, pr)
    pr.freeze_clock()  # the push and the comment below happen in the same second
    head_b = pr.push(REPO, 1, {"README.md": "b\n"})
    await harness.deliver("pull_request", pr.pull_request_payload(REPO, 1, "synchronize"))
    await harness.run()
    reply = await command(harness, pr, "/drbot contracts StableDiffusionPipeline")
    assert "moved after your comment" in reply and f"`{head_b[:12]}`" in reply
    assert await jobs(harness) == []


async def test_without_a_record_of_the_head_drbot_asks_which_commit(harness, pr):
    reply = await command(harness, pr, "/drbot contracts StableDiffusionPipeline")  # no pull_request event seen
    assert "cannot tell which commit you reviewed" in reply and await jobs(harness) == []


async def test_a_sha_that_is_not_a_commit_of_the_pull_request_is_refused(harness, pr):
    await opened(harness, pr)
    base = pr.pull(REPO, 1)["base"]["sha"]  # a real commit of the repository, but not one of the PR
    reply = await command(harness, pr, f"/drbot contracts @{base[:12]} StableDiffusionPipeline")
    assert "is not a commit of this pull request" in reply and await jobs(harness) == []


def test_the_runner_takes_only_a_tarball_of_the_approved_commit(github, tmp_path):
    github.add_repo(REPO, installation_id=1, files={"src/diffusers/__init__.py": "A = 1\n"}, private=False)
    pull = github.add_pull(REPO, 1, head_files={"src/diffusers/__init__.py": "B = 2\n"})
    head, base = pull["head"]["sha"], pull["base"]["sha"]
    token = github.issue_token(1)
    import urllib.request

    def fetch(sha: str):
        request = urllib.request.Request(
            f"{github.url}/repos/{REPO}/tarball/{sha}", headers={"Authorization": f"token {token}"}
        )
        target = tmp_path / f"{sha}.tar.gz"
        target.write_bytes(urllib.request.urlopen(request).read())
        return target

    assert extract(fetch(head), tmp_path / "ok", lambda p: p.startswith("src/"), commit=head).files == 1
    with pytest.raises(ArchiveError, match=f"not commit {head[:12]}"):
        extract(fetch(base), tmp_path / "wrong", lambda p: p.startswith("src/"), commit=head)
    assert not (tmp_path / "wrong").exists()


def test_a_job_must_name_its_commit_in_the_tarball_url():
    job = {"version": 1, "job_id": "j", "repo": REPO, "pr": 1, "head_sha": "a" * 40, "pipelines": ["FluxPipeline"],
           "contracts": "all", "timeout_s": 60, "tarball_url": f"https://api.github.com/repos/{REPO}/tarball/{'a' * 40}"}  # fmt: skip
    assert validate_job(json.dumps(job).encode())["head_sha"] == "a" * 40
    for url in (f"https://api.github.com/repos/{REPO}/tarball/main", f"https://api.github.com/repos/x/y/tarball/{'a' * 40}",
                f"file:///repos/{REPO}/tarball/{'a' * 40}"):  # fmt: skip
        with pytest.raises(Poison, match="tarball_url"):
            validate_job(json.dumps({**job, "tarball_url": url}).encode())
