"""Webhook deliveries for tests: real example payloads patched to a repository and PR, signed as GitHub signs them."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from typing import Any

from . import objects
from .objects import API, EXAMPLE_REPO, WEB, example, examples, iso, node_id, rewrite


__all__ = [
    "delivery",
    "example",
    "examples",
    "issue_comment_payload",
    "pull_request_payload",
    "sign",
]


def sign(body: bytes, secret: str | bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for `body`: "sha256=" + HMAC-SHA256 hex digest."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def delivery(
    event: str, payload: dict | bytes, secret: str | bytes, delivery_id: str | None = None
) -> tuple[dict, bytes]:
    """Headers and body of a signed delivery, as GitHub POSTs it to the app's webhook URL."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/fake",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "1",
        "X-GitHub-Hook-Installation-Target-Type": "integration",
        "X-Hub-Signature-256": sign(body, secret),
    }
    return headers, body


def _moved(payload: dict, repo: str, api_url: str) -> dict:
    """The example's URLs and names moved from Codertocat/Hello-World on api.github.com to `repo` on `api_url`."""
    return rewrite(
        payload, {f"{API}/repos/{EXAMPLE_REPO}": f"{api_url}/repos/{repo}", API: api_url, EXAMPLE_REPO: repo}
    )


def _ids(repo: str) -> tuple[int, dict, dict]:
    """Stand-in ids and objects for a repository the caller did not supply (deterministic per name)."""
    repo_id = int(hashlib.sha1(repo.encode()).hexdigest()[:7], 16)
    owner = objects.user(repo.split("/")[0], repo_id + 1, "Organization")
    return repo_id, owner, objects.repository(repo, repo_id, owner, private=False, default_branch="main")


def pull_request_payload(
    repo: str,
    number: int,
    action: str = "opened",
    *,
    pull_request: dict | None = None,
    repository: dict | None = None,
    installation_id: int = 1,
    sender: dict | None = None,
    organization_obj: dict | None = None,
    api_url: str = API,
    **fields: Any,
) -> dict:
    """A `pull_request` delivery built from GitHub's real example for `action`.

    Args:
        pull_request: the PR object to carry (the fake passes its own); without it the example's is renumbered.
        fields: extra top-level keys, e.g. `before`/`after` for synchronize or `label` for labeled.
    """
    payload = _moved(example("pull_request", action), repo, api_url)
    if repository is None:
        _, _, repository = _ids(repo)
    if pull_request is None:
        pull_request = payload["pull_request"]
        base_url = f"{api_url}/repos/{repo}"
        pull_request = rewrite(pull_request, {f"/pulls/{pull_request['number']}": f"/pulls/{number}"})
        pull_request = rewrite(pull_request, {f"/issues/{pull_request['number']}": f"/issues/{number}"})
        pull_request = rewrite(pull_request, {f"/pull/{pull_request['number']}": f"/pull/{number}"})
        pull_request.update(number=number, url=f"{base_url}/pulls/{number}", html_url=f"{WEB}/{repo}/pull/{number}")
        for side in ("head", "base"):
            pull_request[side]["repo"] = repository
    payload.update(action=action, number=number, pull_request=pull_request, repository=repository)
    payload["installation"] = {"id": installation_id, "node_id": node_id("IntegrationInstallation", installation_id)}
    payload["sender"] = sender or pull_request["user"]
    if organization_obj is not None:
        payload["organization"] = organization_obj
    else:
        payload.pop("organization", None)
    payload.update(fields)
    return payload


def issue_comment_payload(
    repo: str,
    number: int,
    body: str,
    user: str = "alice",
    user_type: str = "User",
    action: str = "created",
    *,
    comment: dict | None = None,
    issue: dict | None = None,
    repository: dict | None = None,
    installation_id: int = 1,
    organization_obj: dict | None = None,
    api_url: str = API,
    **fields: Any,
) -> dict:
    """An `issue_comment` delivery for a comment on pull request `number`.

    None of GitHub's issue_comment examples is on a pull request, so this takes a real one and fills in
    `issue.pull_request`, which is how a handler tells a PR comment from an issue comment.
    """
    payload = _moved(example("issue_comment", action), repo, api_url)
    if repository is None:
        _, _, repository = _ids(repo)
    base_url = f"{api_url}/repos/{repo}"
    author = objects.user(user, int(hashlib.sha1(user.encode()).hexdigest()[:7], 16), user_type, api_url)
    if issue is None:
        issue = payload["issue"]
        issue = rewrite(issue, {f"/issues/{issue['number']}": f"/issues/{number}"})
        issue.update(number=number, html_url=f"{WEB}/{repo}/pull/{number}", labels=[], assignee=None, assignees=[])
        issue.update(milestone=None)
    issue = dict(issue)
    issue["pull_request"] = {
        "url": f"{base_url}/pulls/{number}",
        "html_url": f"{WEB}/{repo}/pull/{number}",
        "diff_url": f"{WEB}/{repo}/pull/{number}.diff",
        "patch_url": f"{WEB}/{repo}/pull/{number}.patch",
        "merged_at": None,
    }
    if comment is None:
        comment = payload["comment"]
        comment_id = comment["id"]
        now = iso()
        comment.update(
            url=f"{base_url}/issues/comments/{comment_id}",
            html_url=f"{WEB}/{repo}/pull/{number}#issuecomment-{comment_id}",
            issue_url=f"{base_url}/issues/{number}",
            user=author,
            body=body,
            created_at=now,
            updated_at=now,
            author_association="NONE",
            performed_via_github_app=None,
        )
    payload.update(action=action, issue=issue, comment=comment, repository=repository)
    payload["installation"] = {"id": installation_id, "node_id": node_id("IntegrationInstallation", installation_id)}
    payload["sender"] = comment["user"]
    if organization_obj is not None:
        payload["organization"] = organization_obj
    else:
        payload.pop("organization", None)
    if action == "edited" and "changes" not in fields:
        payload["changes"] = {"body": {"from": payload.get("changes", {}).get("body", {}).get("from", "")}}
    payload.update(fields)
    return payload
