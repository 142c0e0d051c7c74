"""PR reviews end to end: signed delivery -> web app -> Redis stream -> worker -> the fake GitHub over HTTP.

Real diffusers 0.42.1 files, real Redis, GitHub's OpenAPI description checking every request (the conftest
fails a test on any violation).
"""

from __future__ import annotations

import uuid

import pytest
from harness import DDPM, REPO, UNCLIP, open_pr, with_eta

from analyzers.render import SUMMARY_MARKER


async def test_an_opened_pr_gets_a_check_run_a_summary_one_review_and_a_label(harness, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)})
    assert await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened")) == 202
    assert await harness.run() == 1
    assert [o.status for o in harness.outcomes] == ["reviewed"]

    (summary,) = github.comments(REPO, 1)
    assert summary["body"].startswith(SUMMARY_MARKER)
    assert "**1 new finding**" in summary["body"] and "`eta`" in summary["body"]
    assert summary["user"]["type"] == "Bot"

    (review,) = github.reviews(REPO, 1)
    assert review["state"] == "COMMENTED"
    (inline,) = github.review_comments(REPO, 1)
    eta_line = with_eta(sources).splitlines().index("        eta: float = 0.0,") + 1
    assert inline["path"] == DDPM and inline["line"] == eta_line
    assert inline["body"].startswith("**DRB201** `unused-call-argument`")

    (check,) = github.check_runs(REPO)
    assert check["status"] == "completed" and check["conclusion"] == "neutral"
    assert check["output"]["title"] == "1 new finding"
    (note,) = github.annotations(REPO, check["id"])
    assert (note["path"], note["start_line"]) == (DDPM, eta_line)

    assert github.labels(REPO, 1) == ["drbot: pattern 2"]
    assert "drbot: pattern 2" in github.labels(REPO)
    text = await (await harness.web.get("/metrics")).text()
    assert 'drbot_findings_posted_total{code="DRB201"} 1.0' in text
    assert 'drbot_event_processing_seconds_count{event="pull_request",outcome="done"} 1.0' in text


async def test_a_note_goes_to_the_summary_collapsed_with_no_inline_comment_annotation_or_label(
    harness, github, sources
):
    # the change adds an ignored argument (DRB201, an error) and a placeholder in a public docstring (DRB803, a note)
    head = with_eta(sources).replace("Pipeline for image generation.", "Pipeline for image generation. TODO", 1)
    open_pr(github, sources, {DDPM: head})
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()

    (summary,) = github.comments(REPO, 1)
    body = summary["body"]
    assert "**1 new finding** · 1 new note" in body
    collapsed = body.index("<details><summary>1 new note: maintenance, documentation and feature gaps</summary>")
    assert body.index("**DRB201**") < collapsed < body.index("**DRB803**")
    (inline,) = github.review_comments(REPO, 1)
    assert inline["body"].startswith("**DRB201** `unused-call-argument` (error): ")
    (check,) = github.check_runs(REPO)
    assert check["output"]["title"] == "1 new finding · 1 new note"
    (annotation,) = github.annotations(REPO, check["id"])
    assert annotation["title"].startswith("DRB201 ") and annotation["annotation_level"] == "failure"
    assert github.labels(REPO, 1) == ["drbot: pattern 2"]


async def test_replayed_and_redelivered_events_post_nothing_twice(harness, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)})
    payload = github.pull_request_payload(REPO, 1, "opened")
    delivery_id = str(uuid.uuid4())
    assert await harness.deliver("pull_request", payload, delivery_id) == 202
    await harness.run()
    writes = len(harness.writes())
    # the same delivery again (GitHub's "redeliver" keeps the id): refused at the door
    assert await harness.deliver("pull_request", payload, delivery_id) == 200
    assert await harness.run() == 0
    # the same event under a new delivery id: reviewed again, but nothing new is written
    assert await harness.deliver("pull_request", payload) == 202
    assert await harness.run() == 1
    assert len(github.comments(REPO, 1)) == 1 and len(github.reviews(REPO, 1)) == 1
    assert len(github.check_runs(REPO)) == 1
    assert harness.outcomes[-1].summary == "unchanged" and harness.outcomes[-1].review == "exists"
    new_writes = harness.writes()[writes:]
    assert [(c.method, c.path) for c in new_writes if "/comments" in c.path or "/reviews" in c.path] == []


async def test_a_push_that_fixes_the_finding_edits_the_summary_and_removes_only_drbots_label(harness, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)}, labels=("needs review",))
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    assert sorted(github.labels(REPO, 1)) == ["drbot: pattern 2", "needs review"]
    github.push(
        REPO, 1, {DDPM: sources(DDPM).replace("num_inference_steps: int = 1000,", "num_inference_steps: int = 999,")}
    )
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "synchronize"))
    await harness.run()
    (summary,) = github.comments(REPO, 1)
    assert "No new findings." in summary["body"] and "**0 new findings**" in summary["body"]
    assert harness.outcomes[-1].summary == "edited"
    assert github.labels(REPO, 1) == ["needs review"]
    assert len(github.check_runs(REPO)) == 2  # one per head sha
    assert github.check_runs(REPO, github.pull(REPO, 1)["head"]["sha"])[0]["conclusion"] == "success"


async def test_a_draft_is_skipped_until_it_is_ready(harness, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)}, draft=True)
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    assert harness.outcomes[-1].status == "skipped-draft"
    assert harness.writes() == [] and github.comments(REPO, 1) == []
    github.update_pull(REPO, 1, draft=False)
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "ready_for_review"))
    await harness.run()
    assert harness.outcomes[-1].status == "reviewed" and len(github.comments(REPO, 1)) == 1


async def test_an_event_for_an_older_head_is_superseded(harness, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)})
    old = github.pull_request_payload(REPO, 1, "opened")
    github.push(REPO, 1, {UNCLIP: sources(UNCLIP) + "\n"})
    await harness.deliver("pull_request", old)
    await harness.run()
    assert harness.outcomes[-1].status == "superseded"
    assert harness.writes() == []


async def test_a_review_rejected_with_422_falls_back_to_the_summary(harness, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)})
    github.fail("POST", r"/pulls/1/reviews$", status=422)
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    assert harness.outcomes[-1].review == "rejected"
    assert github.reviews(REPO, 1) == []
    (summary,) = github.comments(REPO, 1)
    assert "`eta`" in summary["body"]
    assert await harness.redis.xlen(harness.keys.dead) == 0


async def test_5xx_and_a_secondary_rate_limit_are_retried_without_a_duplicate(harness, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)})
    github.fail("GET", r"/pulls/1/files$", status=502)
    limited = github.fail("POST", r"/issues/1/comments$", status=403, headers={"retry-after": "1"})
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    assert limited.hits == 1
    assert harness.outcomes[-1].status == "reviewed"
    assert len(github.comments(REPO, 1)) == 1
    assert len(github.requests("POST", r"/issues/1/comments$")) == 2  # the limited one, then the one that landed


async def test_a_failure_past_the_retries_is_retried_from_the_queue_then_dead_lettered(harness, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)})
    github.fail("GET", r"/pulls/1$", status=500, times=None, headers={"retry-after": "0"})
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.until_dead()
    dead = await harness.redis.xrange(harness.keys.dead)
    assert len(dead) == 1 and b"GitHubBroken" in dead[0][1][b"error"]
    assert dead[0][1][b"attempts"] == b"3"
    assert len(github.requests("GET", r"/pulls/1$")) == 3 * 6  # 3 deliveries from the queue x (1 try + 5 retries)
    assert github.comments(REPO, 1) == []


async def test_a_pr_with_3000_files_is_read_with_a_bounded_number_of_requests(harness, github, sources):
    many = {f"zz/notes/{i:04d}.md": f"note {i}\n" for i in range(3005)}
    open_pr(github, sources, {DDPM: with_eta(sources), **many})
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    assert len(github.requests("GET", r"/pulls/1/files$")) == 30
    (summary,) = github.comments(REPO, 1)
    assert "changes 3,006 files; GitHub lists only the first 3,000" in summary["body"]
    assert "**1 new finding**" in summary["body"]


async def test_repository_settings_come_from_the_default_branch(harness, github, sources):
    config = "inline_comments: false\nlabels:\n  patterns: {2: 'bug: ignored argument'}\n"
    open_pr(github, sources, {DDPM: with_eta(sources), ".github/drbot.yml": "inline_comments: true\n"},
            base_extra={".github/drbot.yml": config})  # fmt: skip
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    assert github.reviews(REPO, 1) == []  # the PR's own copy of the file is never read
    assert github.labels(REPO, 1) == ["bug: ignored argument"]


async def test_a_malformed_settings_file_is_reported_and_the_defaults_apply(harness, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)}, base_extra={".github/drbot.yml": "paths: [unclosed\n"})
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    (summary,) = github.comments(REPO, 1)
    assert ".github/drbot.yml is not valid YAML" in summary["body"] and "defaults were used" in summary["body"]
    assert len(github.reviews(REPO, 1)) == 1


async def test_the_merge_base_is_reviewed_not_the_moving_base_branch(harness, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)})
    # main moves on after the PR was opened: it edits a file the PR never touched
    github.commit_to_branch(REPO, {UNCLIP: sources(UNCLIP).replace("clip_skip", "clip_skip_renamed")})
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    (summary,) = github.comments(REPO, 1)
    assert "in 1 changed Python file." in summary["body"] and "Fixed by this change" not in summary["body"]


async def test_a_pr_without_reviewable_files_gets_a_quiet_check_run(harness, github, sources):
    open_pr(github, sources, {"docs/source/en/index.md": "# hello\n"})
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    assert harness.outcomes[-1].status == "nothing-to-review"
    assert github.comments(REPO, 1) == [] and github.reviews(REPO, 1) == []
    (check,) = github.check_runs(REPO)
    assert check["conclusion"] == "success" and check["output"]["title"] == "Nothing to review"


@pytest.mark.settings(write_spacing_s=1.0)
async def test_content_writes_of_an_installation_are_serial_and_a_second_apart(harness, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)})
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    times = [c.time for c in harness.writes()]
    assert len(times) >= 4
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 0.99, gaps


async def test_a_file_libcst_cannot_parse_is_listed_and_the_rest_is_reviewed(harness, github, sources):
    broken = "src/diffusers/pipelines/ddpm/broken.py"
    # a pipeline the rules want to read (files no rule wants are never parsed), cut off mid-signature
    code = "class BrokenPipeline(DiffusionPipeline):\n    def __call__(self, prompt, latents=None:\n        return latents\n"
    open_pr(github, sources, {DDPM: with_eta(sources), broken: code})
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    (summary,) = github.comments(REPO, 1)
    assert "**1 new finding**" in summary["body"]
    assert "1 file(s) could not be analysed" in summary["body"] and "broken.py" in summary["body"]
