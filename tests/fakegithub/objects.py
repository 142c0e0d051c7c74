"""JSON shapes GitHub uses for users, organizations and repositories, cut from real webhook example payloads."""

from __future__ import annotations

import base64
import copy
import functools
import json
import time
from pathlib import Path
from typing import Any


API = "https://api.github.com"
WEB = "https://github.com"
EXAMPLES_PATH = (
    Path(__file__).resolve().parents[1]
    / "npm"
    / "node_modules"
    / "@octokit"
    / "webhooks-examples"
    / "api.github.com"
    / "index.json"
)
# The names the examples are written for; templates swap them for the fake's.
EXAMPLE_REPO = "Codertocat/Hello-World"
EXAMPLE_USER = "Codertocat"


@functools.cache
def _index() -> dict[str, list[dict]]:
    if not EXAMPLES_PATH.is_file():
        raise FileNotFoundError(f"{EXAMPLES_PATH} is missing: run `cd tests/npm && npm ci` (or `make setup-dev`)")
    with open(EXAMPLES_PATH, "rb") as file:
        return {event["name"]: event["examples"] for event in json.load(file)}


def examples(event: str) -> list[dict]:
    """Every real example payload of a webhook event (deep copies: callers may edit them)."""
    try:
        return copy.deepcopy(_index()[event])
    except KeyError:
        raise KeyError(f"no webhook examples for {event!r}; known: {sorted(_index())}") from None


def example(event: str, action: str | None = None) -> dict:
    """One real example of `event` (with `action`), preferring one delivered to an installation, as apps get."""
    found = [payload for payload in _index().get(event, []) if action is None or payload.get("action") == action]
    if not found:
        raise KeyError(f"no {event}/{action} example; actions: {sorted({p.get('action') for p in examples(event)})}")
    found.sort(key=lambda payload: "installation" not in payload)
    return copy.deepcopy(found[0])


@functools.cache
def _template(event: str, action: str, key: str) -> dict:
    # Callers only read it (rewrite() copies), so one parsed copy per session is enough.
    return example(event, action)[key]


#: the fake's clock for object timestamps: seconds ahead of the real one (FakeGitHub.advance_clock), and a moment
#: it stands still at (FakeGitHub.freeze_clock), or None
CLOCK: list = [0.0, None]


def now() -> float:
    return CLOCK[1] if CLOCK[1] is not None else time.time() + CLOCK[0]


def iso(moment: float | None = None) -> str:
    """A timestamp as GitHub writes it: 2026-11-26T19:00:00Z (whole seconds, as GitHub does)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now() if moment is None else moment))


def node_id(kind: str, number: int) -> str:
    """A legacy global node id, e.g. node_id("User", 1) == "MDQ6VXNlcjE=" as GitHub encodes it."""
    return base64.b64encode(f"{len(kind):02d}:{kind}{number}".encode()).decode()


def rewrite(value: Any, replacements: dict[str, str]) -> Any:
    """`value` with every string's substrings replaced, in order (to move example URLs onto the fake)."""
    text = json.dumps(value)
    for old, new in replacements.items():
        text = text.replace(json.dumps(old)[1:-1], json.dumps(new)[1:-1])
    return json.loads(text)


def user(login: str, user_id: int, user_type: str = "User", api_url: str = API) -> dict:
    """A simple-user object; a Bot's login ends in `[bot]` as an App's does."""
    obj = rewrite(_template("pull_request", "opened", "sender"), {API: api_url, f"/{EXAMPLE_USER}": f"/{login}"})
    obj.update(
        login=login,
        id=user_id,
        node_id=node_id("Bot" if user_type == "Bot" else user_type, user_id),
        avatar_url=f"https://avatars.githubusercontent.com/u/{user_id}?v=4",
        type=user_type,
        site_admin=False,
    )
    if user_type == "Bot":
        obj["html_url"] = f"{WEB}/apps/{login.removesuffix('[bot]')}"
    return obj


def organization(login: str, org_id: int, api_url: str = API) -> dict:
    """An organization-simple object, as webhook payloads carry under `organization`."""
    template = next(p["organization"] for p in _index()["pull_request"] if "organization" in p)
    obj = rewrite(template, {API: api_url, f"/{template['login']}": f"/{login}"})
    obj.update(
        login=login,
        id=org_id,
        node_id=node_id("Organization", org_id),
        avatar_url=f"https://avatars.githubusercontent.com/u/{org_id}?v=4",
    )
    return obj


def repository(
    full_name: str,
    repo_id: int,
    owner: dict,
    *,
    private: bool,
    default_branch: str,
    api_url: str = API,
    created_at: str | None = None,
) -> dict:
    """A repository object with every field the REST `repository` schema requires."""
    obj = rewrite(
        _template("pull_request", "opened", "repository"),
        {f"{API}/repos/{EXAMPLE_REPO}": f"{api_url}/repos/{full_name}", API: api_url},
    )
    obj = rewrite(obj, {EXAMPLE_REPO: full_name})
    stamp = created_at or iso()
    obj.update(
        id=repo_id,
        node_id=node_id("Repository", repo_id),
        name=full_name.split("/")[1],
        full_name=full_name,
        private=private,
        visibility="private" if private else "public",
        owner=owner,
        default_branch=default_branch,
        description=None,
        homepage=None,
        created_at=stamp,
        updated_at=stamp,
        pushed_at=stamp,
        license=None,
        has_discussions=False,
        topics=[],
        custom_properties={},
    )
    return obj
