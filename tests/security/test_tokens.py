"""Least privilege for installation tokens: each is asked for one repository and the permissions its event's
handling needs, and the fake GitHub enforces both, as GitHub does (403 "Resource not accessible by integration").

The review: installation tokens were not narrowed to the repository they act on."""

from __future__ import annotations

import aiohttp
import pytest
from gidgethub import BadRequest
from harness import DDPM, REPO, open_pr, with_eta

from bot.github import AppAuth, GitHub
from bot.handlers.issue_comment import COMMAND_PERMISSIONS
from bot.handlers.pull_request import PERMISSIONS as REVIEW_PERMISSIONS
from bot.results import RESULT_PERMISSIONS


OTHER = "huggingface/other-repo"


@pytest.fixture
def two_repos(github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)})
    github.add_repo(OTHER, installation_id=1, files={"README.md": "secret plans\n"})
    github.set_permission(REPO, "maintainer", "write")
    return github


async def test_every_token_the_app_asks_for_names_one_repository_and_its_permissions(harness, two_repos):
    await harness.deliver("pull_request", two_repos.pull_request_payload(REPO, 1, "opened"))
    await harness.deliver("issue_comment", two_repos.issue_comment_payload(REPO, 1, "/drbot help", "maintainer"))
    await harness.run()
    asked = [call.json for call in two_repos.requests("POST", "/access_tokens")]
    assert asked and all(body["repositories"] == ["diffusers"] for body in asked)
    assert {tuple(sorted(body["permissions"].items())) for body in asked} == {
        tuple(sorted(REVIEW_PERMISSIONS.items())), tuple(sorted(COMMAND_PERMISSIONS.items()))
    }  # fmt: skip
    assert harness.outcomes[0].status == "reviewed" and harness.outcomes[1] == "help"


async def test_a_narrowed_token_reaches_neither_another_repository_nor_another_permission(two_repos):
    async with aiohttp.ClientSession() as session:
        auth = AppAuth(two_repos.app_id, two_repos.private_key_pem, two_repos.url, session)

        def client(token: str) -> GitHub:
            return GitHub(session, token=token, api_url=two_repos.url, max_retries=0)

        review = client(await auth.token(1, REPO, REVIEW_PERMISSIONS))
        assert (await review.getitem(f"/repos/{REPO}/pulls/1"))["number"] == 1
        with pytest.raises(BadRequest) as refused:  # the other repository of the same installation
            await review.getitem(f"/repos/{OTHER}/contents/README.md")
        assert refused.value.status_code == 403

        results = client(await auth.token(1, REPO, RESULT_PERMISSIONS))  # check run + summary comment only
        await results.post(
            f"/repos/{REPO}/check-runs", data={"name": "x", "head_sha": two_repos.pull(REPO, 1)["head"]["sha"]}
        )
        for path in (
            f"/repos/{REPO}/contents/README.md",
            f"/repos/{REPO}/tarball/main",
            f"/repos/{REPO}/pulls/1/files",
        ):
            with pytest.raises(BadRequest) as refused:
                await results.getitem(path)
            assert refused.value.status_code == 403, path

        # tokens are cached per scope: the same scope again asks GitHub for nothing new
        before = len(two_repos.requests("POST", "/access_tokens"))
        await auth.token(1, REPO, REVIEW_PERMISSIONS)
        assert len(two_repos.requests("POST", "/access_tokens")) == before


async def test_an_unnarrowed_token_would_reach_the_other_repository(two_repos):
    # the control's counterpart: without narrowing, the same installation's token reads the other repository
    async with aiohttp.ClientSession() as session:
        auth = AppAuth(two_repos.app_id, two_repos.private_key_pem, two_repos.url, session)
        wide = GitHub(session, token=await auth.token(1), api_url=two_repos.url, max_retries=0)
        assert (await wide.getitem(f"/repos/{OTHER}/contents/README.md"))["name"] == "README.md"
