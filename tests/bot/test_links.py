"""Every link the App posts is absolute: on GitHub a relative link in a PR comment resolves under `/pull/N/` (404)."""

from __future__ import annotations

import re

from harness import DDPM, REPO, open_pr, with_eta

from analyzers.render import DOCS_URL


#: the target of every Markdown link, and of the `Docs:` line of a check-run annotation
LINK = re.compile(r"\]\(([^)\s]+)\)|Docs: (\S+)")
RULE_PAGE = f"{DOCS_URL}DRB201.md"


def targets(text: str) -> list[str]:
    return [inline or docs for inline, docs in LINK.findall(text)]


async def test_every_link_in_a_review_is_absolute(harness, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)})
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()

    (summary,) = github.comments(REPO, 1)
    (inline,) = github.review_comments(REPO, 1)
    (check,) = github.check_runs(REPO)
    (note,) = github.annotations(REPO, check["id"])
    posted = {
        "summary": summary["body"],
        "inline comment": inline["body"],
        "check run summary": check["output"]["summary"],
        "annotation": note["message"],
    }
    for where, text in posted.items():
        relative = [url for url in targets(text) if not url.startswith("https://")]
        assert relative == [], f"{where} links {relative}"
    assert f"[unused-call-argument]({RULE_PAGE})" in summary["body"]
    assert f"([docs]({RULE_PAGE}))" in inline["body"]
    assert f"Docs: {RULE_PAGE}" in note["message"]


async def test_explain_links_the_absolute_rule_page(harness, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)})
    payload = github.issue_comment_payload(REPO, 1, "/drbot explain DRB201", "stranger", "User")
    await harness.deliver("issue_comment", payload)
    await harness.run()
    (reply,) = [c for c in github.comments(REPO, 1) if "**DRB201**" in c["body"]]
    assert f"Documentation: [DRB201]({RULE_PAGE})" in reply["body"]
    assert [url for url in targets(reply["body"]) if not url.startswith("https://")] == []
