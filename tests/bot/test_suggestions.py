"""Fixes in the App: a one-click `suggestion` in the inline comment of a fixable finding (committed as GitHub would,
on the fake GitHub that checks every request against GitHub's OpenAPI description), the summary's count, and
`/drbot fix` replying with the whole diff. drbot never pushes."""

from __future__ import annotations

import subprocess

import pytest
from harness import DDPM, REPO, open_pr
from test_commands import comment, replies

from analyzers.findings import Edit, Finding, Fix
from analyzers.render import Links
from bot.publish import fix_reply, inline_comment, suggestion_block


PIPELINE_UTILS = "src/diffusers/pipelines/pipeline_utils.py"
EXECUTION = "        device = self._execution_device\n"


def with_self_device(sources) -> str:
    """DDPM as it was before huggingface/diffusers#13671: tensors placed with `self.device` (DRB504)."""
    text = sources(DDPM)
    assert text.count(EXECUTION) == 1
    return text.replace(EXECUTION, "        device = self.device\n")


@pytest.fixture
def pr(github, sources):
    # DiffusionPipeline (with `_execution_device`) is in the repository: DRB504 offers its fix only then
    open_pr(github, sources, {DDPM: with_self_device(sources)}, base_extra={PIPELINE_UTILS: sources(PIPELINE_UTILS)})
    github.set_permission(REPO, "maintainer", "write")
    return github


def _no_push(github) -> None:
    """drbot wrote nothing to the repository's git data: no contents, commits, refs or merges."""
    assert github.requests("PUT", r"/contents/") == []
    assert github.requests("POST", r"/git/(commits|refs|trees|blobs)") == []
    assert github.requests("PATCH", r"/git/refs/") == []
    assert github.requests("PUT", r"/merge$") == []


async def test_a_fixable_finding_gets_a_suggestion_that_commits_the_fix(harness, pr, sources):
    assert await harness.deliver("pull_request", pr.pull_request_payload(REPO, 1, "opened")) == 202
    assert await harness.run() == 1
    (inline,) = pr.review_comments(REPO, 1)
    head = with_self_device(sources)
    line = head.splitlines().index("        device = self.device") + 1
    assert inline["body"].startswith("**DRB504**")
    assert (inline["path"], inline["line"], inline["start_line"]) == (DDPM, line, None)
    assert "```suggestion\n        device = self._execution_device\n```" in inline["body"]
    # committing the suggestion, as GitHub's button does, gives the file with the fix and nothing else changed
    assert pr.commit_suggestion(REPO, inline) == sources(DDPM)
    (summary,) = pr.comments(REPO, 1)
    assert "1 of the new findings has a fix" in summary["body"]
    _no_push(pr)


async def test_drbot_fix_replies_with_the_whole_diff_collapsed(harness, pr, sources, tmp_path):
    payload, _ = await comment(harness, pr, "/drbot fix", user="stranger")
    (reply,) = replies(pr, payload)
    body = reply["body"]
    assert "Preparing" not in body and "1 fix in 1 file" in body and "never pushes" in body
    assert "<details><summary>the diff</summary>" in body
    diff = body.split("```diff\n", 1)[1].rsplit("```", 1)[0]
    assert "-        device = self.device\n+        device = self._execution_device\n" in diff
    # the diff applies to the PR's head with git, and gives the fixed file
    (tmp_path / DDPM).parent.mkdir(parents=True)
    (tmp_path / DDPM).write_text(with_self_device(sources))
    (tmp_path / "fix.diff").write_text(diff)
    subprocess.run(["git", "apply", "fix.diff"], cwd=tmp_path, check=True)
    assert (tmp_path / DDPM).read_text() == sources(DDPM)
    assert pr.reviews(REPO, 1) == []  # the command replies; it posts no review
    _no_push(pr)


async def test_drbot_fix_says_so_when_nothing_has_a_fix(harness, github, sources):
    open_pr(
        github,
        sources,
        {
            DDPM: sources(DDPM).replace(
                "return_dict: bool = True,", "return_dict: bool = True,\n        eta: float = 0.0,", 1
            )
        },
    )
    payload, _ = await comment(harness, github, "/drbot fix", user="stranger")
    (reply,) = replies(github, payload)
    assert "has a mechanical fix" in reply["body"]


def _finding(line: int, fix: Fix | None) -> Finding:
    return Finding("DRB602", 6, "diffusers/p.py", line, line, "P.__call__", "return X", "m.", "error", "f" * 16, fix)


def test_a_suggestion_spans_the_lines_its_fix_replaces_and_only_changed_lines():
    fix = Fix("return a tuple first", (Edit(4, 5, "    if not d:\n        return (x,)\n    return X(x)\n"),))
    comment = inline_comment([_finding(5, fix)], {}, Links(), {}, frozenset({4, 5}))
    assert (comment["start_line"], comment["start_side"], comment["line"], comment["side"]) == (4, "RIGHT", 5, "RIGHT")
    assert comment["body"].endswith("```suggestion\n    if not d:\n        return (x,)\n    return X(x)\n```")
    # line 4 is not part of the change: no suggestion (GitHub would refuse the range), the comment stays on its line
    plain = inline_comment([_finding(5, fix)], {}, Links(), {}, frozenset({5}))
    assert "suggestion" not in plain["body"] and plain["line"] == 5 and "start_line" not in plain
    # a fix elsewhere than the commented line is not offered either
    away = Fix("d", (Edit(9, 9, "y\n"),))
    assert "suggestion" not in inline_comment([_finding(5, away)], {}, Links(), {}, frozenset(range(1, 20)))["body"]


def test_suggestion_fences_outlast_the_code_and_the_reply_fits_a_comment():
    assert suggestion_block("x = '```'\n") == "````suggestion\nx = '```'\n````"
    assert suggestion_block("") == "```suggestion\n```"  # deletes the commented lines
    diff = "".join(f"--- a/f{i}.py\n+++ b/f{i}.py\n@@ -1 +1 @@\n-{'a' * 500}\n+b\n" for i in range(300))
    reply = fix_reply("0" * 40, diff, 300, 300)
    assert len(reply) < 65_536 and "cut short" in reply and reply.endswith("```\n\n</details>")


async def test_a_multi_line_suggestion_is_accepted_by_the_fake_github_and_commits_its_range(github):
    import aiohttp

    from bot.github import AppAuth, GitHub
    from bot.publish import post_review

    path = "src/diffusers/pipelines/toy/pipeline_toy.py"
    base = "".join(f"x{i} = {i}\n" for i in range(1, 31))
    head = base.replace("x5 = 5\nx6 = 6\n", "x5 = 50\nx6 = 60\n").replace("x25 = 25\n", "x25 = 250\n")
    github.add_repo("o/toy", installation_id=3, files={path: base})
    pull = github.add_pull("o/toy", 1, head_files={path: head})
    fix = Fix("restore", (Edit(5, 6, "x5 = 5\nx6 = 6\n"),))
    finding = Finding("DRB702", 7, path.removeprefix("src/"), 6, 6, "", "x", "m.", "warning", "f" * 16, fix)
    changed = frozenset({5, 6, 25})
    comment = inline_comment([finding], {}, Links(), {}, changed)
    assert (comment["start_line"], comment["line"]) == (5, 6)
    # a range across two hunks of the diff is refused, as GitHub refuses it
    across = {**comment, "start_line": 6, "line": 25, "body": "x"}
    async with aiohttp.ClientSession() as session:
        token = await AppAuth(github.app_id, github.private_key_pem, github.url, session).token(3)
        gh = GitHub(session, token=token, api_url=github.url, installation_id=3)
        assert await post_review(gh, "o/toy", 1, pull["head"]["sha"], [across]) == "rejected"
        assert await post_review(gh, "o/toy", 1, pull["head"]["sha"], [comment]) == "posted"
    (posted,) = github.review_comments("o/toy", 1)
    assert (posted["start_line"], posted["line"], posted["start_side"], posted["side"]) == (5, 6, "RIGHT", "RIGHT")
    assert github.commit_suggestion("o/toy", posted) == base.replace("x25 = 25\n", "x25 = 250\n")


async def test_drbot_fix_reads_a_file_over_1_mb_from_its_blob(harness, github, sources):
    padding = "".join(f"# padding {i:06d} {'x' * 64}\n" for i in range(14_000))  # past the contents API's 1 MB
    head = with_self_device(sources) + padding
    open_pr(github, sources, {DDPM: head}, base_extra={PIPELINE_UTILS: sources(PIPELINE_UTILS)})
    payload, _ = await comment(harness, github, "/drbot fix", user="stranger")
    (reply,) = replies(github, payload)
    assert "+        device = self._execution_device\n" in reply["body"], reply["body"][:300]
    assert github.requests("GET", r"/git/blobs/")
