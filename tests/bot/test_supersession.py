"""A review whose pull request moves on stops early and never leaves its check run in progress.

End to end on real Redis and the suite's fake GitHub: the push lands while the review is under way (the fake holds
one of the review's requests back for a moment, and the test pushes meanwhile).
"""

from __future__ import annotations

import asyncio

from harness import DDPM, REPO, UNCLIP, open_pr, with_eta


#: the review's read of the head commit: its tree (a head built on the kept merge base) or its tarball
HEAD_READ = "/(?:tarball|git/trees)/{}$"


async def _push_once_requested(github, method: str, path_regex: str, files: dict) -> str:
    """Push `files` onto PR 1 as soon as the bot has sent a request matching `method` and `path_regex`."""
    for _ in range(600):
        if github.requests(method, path_regex):
            return github.push(REPO, 1, files)
        await asyncio.sleep(0.01)
    raise AssertionError(f"the review never sent {method} {path_regex}")


def _assert_cancelled_as_superseded(github, old_head: str, new_head: str) -> None:
    (check,) = github.check_runs(REPO, old_head)
    assert check["status"] == "completed", check["status"]
    assert check["conclusion"] == "cancelled"
    assert check["output"]["title"] == "Superseded by a newer push"
    assert f"`{new_head[:7]}`" in check["output"]["summary"]
    assert github.check_runs(REPO, new_head) == []  # the new head's own event reviews it


async def test_a_push_during_the_analysis_cancels_the_check_run_and_publishes_nothing(harness, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)})
    old_head = github.pull(REPO, 1)["head"]["sha"]
    # the head's tree (or its tarball, when the review builds no head on a kept base) is the review's last read of
    # the head before the analysis: hold it back while the author pushes
    github.fail("GET", HEAD_READ.format(old_head), status=None, delay=0.5)
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    run = asyncio.ensure_future(harness.run())
    new_head = await _push_once_requested(github, "GET", HEAD_READ.format(old_head), {UNCLIP: sources(UNCLIP) + "\n"})
    assert await run == 1
    assert [o.status for o in harness.outcomes] == ["superseded"]
    _assert_cancelled_as_superseded(github, old_head, new_head)
    assert github.comments(REPO, 1) == [] and github.reviews(REPO, 1) == [] and github.labels(REPO, 1) == []


async def test_a_review_superseded_before_its_analysis_starts_downloads_nothing(harness, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)})
    old_head = github.pull(REPO, 1)["head"]["sha"]
    # the author pushes right after the review announced itself (the "Reviewing" check run), before its downloads
    github.fail("POST", r"/check-runs$", status=None, delay=0.5)
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    run = asyncio.ensure_future(harness.run())
    new_head = await _push_once_requested(github, "POST", r"/check-runs$", {UNCLIP: sources(UNCLIP) + "\n"})
    assert await run == 1
    assert [o.status for o in harness.outcomes] == ["superseded"]
    assert github.requests("GET", r"/tarball/|/git/") == []  # it stopped before the workspace
    _assert_cancelled_as_superseded(github, old_head, new_head)


async def test_a_retry_of_a_review_that_died_completes_its_check_run_once_superseded(harness, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)})
    old_head = github.pull(REPO, 1)["head"]["sha"]
    # the first attempt fails after its "Reviewing" check run (the compare request, retried by the client, fails)
    github.fail("GET", r"/compare/", status=500, times=6, headers={"retry-after": "0"})
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    (check,) = github.check_runs(REPO, old_head)
    assert check["status"] == "in_progress"
    new_head = github.push(REPO, 1, {UNCLIP: sources(UNCLIP) + "\n"})
    await asyncio.sleep(0.06)  # past the visibility timeout: the queue hands the event out again
    await harness.run()
    assert harness.outcomes[-1].status == "superseded"
    _assert_cancelled_as_superseded(github, old_head, new_head)


async def test_a_pr_closed_during_the_review_gets_a_completed_check_run(harness, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)})
    old_head = github.pull(REPO, 1)["head"]["sha"]
    github.fail("GET", HEAD_READ.format(old_head), status=None, delay=0.5)
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    run = asyncio.ensure_future(harness.run())
    for _ in range(600):
        if github.requests("GET", HEAD_READ.format(old_head)):
            break
        await asyncio.sleep(0.01)
    github.update_pull(REPO, 1, state="closed")
    assert await run == 1
    assert harness.outcomes[-1].status == "closed"
    (check,) = github.check_runs(REPO, old_head)
    assert (check["status"], check["conclusion"]) == ("completed", "cancelled")
    assert check["output"]["title"] == "Not reviewed: the pull request is closed"
    assert github.comments(REPO, 1) == []


async def test_an_old_event_for_a_head_never_reviewed_still_writes_nothing(harness, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)})
    old = github.pull_request_payload(REPO, 1, "opened")
    github.push(REPO, 1, {UNCLIP: sources(UNCLIP) + "\n"})
    await harness.deliver("pull_request", old)
    await harness.run()
    assert harness.outcomes[-1].status == "superseded"
    assert harness.writes() == [] and github.check_runs(REPO) == []
