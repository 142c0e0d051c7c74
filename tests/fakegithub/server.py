"""A stateful fake of GitHub's REST API on loopback that checks every request against GitHub's OpenAPI description.

One `FakeGitHub` serves a whole pytest session from its own thread and event loop, so any test's loop (and the
real `gidgethub.aiohttp.GitHubAPI`) can reach it over HTTP at `fake.url`; `reset()` empties it between tests.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode

import jwt as pyjwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from . import objects, webhooks
from .git import Commit, blob_sha, changed_files, diff_lines, make_commit, tarball
from .objects import WEB, iso, node_id
from .spec import OpenAPI, Operation, load_openapi


# GitHub's documented limits (FACTS.md, "GitHub's limits").
COMMENT_MAX = 65_536
CHECK_TEXT_MAX = 65_535
ANNOTATIONS_PER_REQUEST = 50
PR_FILES_CAP = 3_000
#: a ```suggestion block of a review comment (fence of 3 or more backticks): its fence and its lines
SUGGESTION_RE = re.compile(r"^(`{3,})suggestion\n(.*?)^\1$", re.MULTILINE | re.DOTALL)
CONTENTS_INLINE_MAX = 1_048_576  # over 1 MB the contents API returns no inline content
JWT_MAX_LIFETIME = 660  # exp - iat: 10 minutes plus the 60 s back-dating gidgethub applies to iat
TOKEN_LIFETIME = 3_600
RATE_LIMIT = 5_000
ANONYMOUS_RATE_LIMIT = 60
PERMISSIONS = ("admin", "maintain", "write", "triage", "read", "none")
DOCS = "https://docs.github.com/rest"
SECONDARY_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out "
    "to GitHub Support for help, please include the request ID FAKE:0000:0000000:0000000:00000000."
)
REASONS = {
    403: SECONDARY_LIMIT_MESSAGE,
    429: SECONDARY_LIMIT_MESSAGE,
    500: "Server Error",
    502: "Server Error",
    503: "Service Unavailable",
    504: "We couldn't respond to your request in time. Sorry about that. Please try resubmitting your request "
    "and contact us if the problem persists.",
}


class Call(NamedTuple):
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    time: float  # time.monotonic() on arrival


@dataclass
class Fault:
    """A queued failure: the next `times` requests matching `method` and `pattern` get it instead of an answer."""

    method: str
    pattern: re.Pattern
    status: int | None  # None: answer normally, after `delay`
    times: int | None  # None: forever
    headers: dict[str, str]
    body: Any
    delay: float
    hits: int = 0


class GitHubError(Exception):
    """An error answer in GitHub's shape: {"message", "documentation_url", "errors"?, "status"}."""

    def __init__(self, status: int, message: str, errors: list | None = None, doc: str = DOCS, headers=None):
        super().__init__(f"{status} {message}")
        self.status, self.headers = status, headers or {}
        self.body: dict[str, Any] = {"message": message, "documentation_url": doc}
        if errors is not None:
            self.body["errors"] = errors
        self.body["status"] = str(status)


@dataclass
class Reply:
    status: int
    body: Any  # JSON-able, or bytes for a raw answer
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json; charset=utf-8"


@dataclass
class Token:
    token: str
    installation_id: int
    expires_at: float
    repositories: set[str] | None  # None: every repository of the installation
    permissions: dict[str, str] | None = None  # None: every permission the App has


@dataclass
class Pull:
    number: int
    id: int
    user: dict
    title: str
    body: str | None
    draft: bool
    state: str
    base_ref: str
    head_ref: str
    base_sha: str
    heads: list[str]  # head SHAs in push order; the last is the current head
    created_at: str
    updated_at: str
    labels: list[str] = field(default_factory=list)
    comment_ids: list[int] = field(default_factory=list)
    reviews: list[dict] = field(default_factory=list)
    review_comments: list[dict] = field(default_factory=list)

    @property
    def head_sha(self) -> str:
        return self.heads[-1]


@dataclass
class Repo:
    full_name: str
    json: dict
    installation_id: int
    default_branch: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    trees: dict[str, list] = field(default_factory=dict)
    pulls: dict[int, Pull] = field(default_factory=dict)
    comments: dict[int, dict] = field(default_factory=dict)  # id -> issue comment JSON
    comment_issue: dict[int, int] = field(default_factory=dict)  # comment id -> issue number
    reactions: dict[int, list[dict]] = field(default_factory=dict)  # comment id -> reactions
    labels: dict[str, dict] = field(default_factory=dict)  # lower-cased name -> label JSON
    check_runs: dict[int, dict] = field(default_factory=dict)
    annotations: dict[int, list[dict]] = field(default_factory=dict)
    check_suites: dict[str, int] = field(default_factory=dict)  # head sha -> suite id
    permissions: dict[str, str] = field(default_factory=dict)
    diffs: dict[tuple[str, str], list[dict]] = field(default_factory=dict)  # (base, head) -> diff entries
    issues: dict[int, dict] = field(default_factory=dict)  # number -> a plain issue (not a PR): title, body, user, …

    @property
    def id(self) -> int:
        return self.json["id"]


@dataclass
class Context:
    """What a route handler sees of a request."""

    method: str
    path: str
    params: dict[str, str]
    query: dict[str, str]
    body: Any
    accept: str
    op: Operation
    repo: Repo | None = None
    token: Token | None = None


ROUTES: dict[tuple[str, str], str] = {}


#: permission levels, lowest first
LEVELS = {"read": 1, "write": 2, "admin": 3}
_ISSUE_OR_PULL_READ = (("issues", "read"), ("pull_requests", "read"))
_ISSUE_OR_PULL_WRITE = (("issues", "write"), ("pull_requests", "write"))
#: what an installation token needs for each operation the fake serves (any one alternative suffices), from
#: GitHub's "Permissions required for GitHub Apps" page; enforced only on tokens asked for with `permissions`
REQUIRED_PERMISSIONS: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    ("GET", "/repos/{owner}/{repo}"): (("metadata", "read"),),
    ("GET", "/repos/{owner}/{repo}/installation"): (("metadata", "read"),),
    ("GET", "/repos/{owner}/{repo}/pulls"): (("pull_requests", "read"),),
    ("GET", "/repos/{owner}/{repo}/pulls/{pull_number}"): (("pull_requests", "read"),),
    ("GET", "/repos/{owner}/{repo}/pulls/{pull_number}/files"): (("pull_requests", "read"),),
    ("GET", "/repos/{owner}/{repo}/pulls/{pull_number}/commits"): (("pull_requests", "read"),),
    ("GET", "/repos/{owner}/{repo}/issues/{issue_number}"): _ISSUE_OR_PULL_READ,
    ("PATCH", "/repos/{owner}/{repo}/issues/{issue_number}"): _ISSUE_OR_PULL_WRITE,
    ("GET", "/repos/{owner}/{repo}/contents/{path}"): (("contents", "read"),),
    ("GET", "/repos/{owner}/{repo}/git/trees/{tree_sha}"): (("contents", "read"),),
    ("GET", "/repos/{owner}/{repo}/git/blobs/{file_sha}"): (("contents", "read"),),
    ("GET", "/repos/{owner}/{repo}/compare/{base}...{head}"): (("contents", "read"),),
    ("GET", "/repos/{owner}/{repo}/tarball/{ref}"): (("contents", "read"),),
    ("GET", "/repos/{owner}/{repo}/issues/{issue_number}/comments"): _ISSUE_OR_PULL_READ,
    ("POST", "/repos/{owner}/{repo}/issues/{issue_number}/comments"): _ISSUE_OR_PULL_WRITE,
    ("GET", "/repos/{owner}/{repo}/issues/comments/{comment_id}"): _ISSUE_OR_PULL_READ,
    ("PATCH", "/repos/{owner}/{repo}/issues/comments/{comment_id}"): _ISSUE_OR_PULL_WRITE,
    ("POST", "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions"): _ISSUE_OR_PULL_WRITE,
    ("GET", "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions"): _ISSUE_OR_PULL_READ,
    ("GET", "/repos/{owner}/{repo}/pulls/{pull_number}/reviews"): (("pull_requests", "read"),),
    ("GET", "/repos/{owner}/{repo}/pulls/{pull_number}/comments"): (("pull_requests", "read"),),
    ("POST", "/repos/{owner}/{repo}/pulls/{pull_number}/reviews"): (("pull_requests", "write"),),
    ("POST", "/repos/{owner}/{repo}/check-runs"): (("checks", "write"),),
    ("PATCH", "/repos/{owner}/{repo}/check-runs/{check_run_id}"): (("checks", "write"),),
    ("GET", "/repos/{owner}/{repo}/check-runs/{check_run_id}"): (("checks", "read"),),
    ("GET", "/repos/{owner}/{repo}/check-runs/{check_run_id}/annotations"): (("checks", "read"),),
    ("GET", "/repos/{owner}/{repo}/commits/{ref}/check-runs"): (("checks", "read"),),
    ("GET", "/repos/{owner}/{repo}/labels"): _ISSUE_OR_PULL_READ,
    ("GET", "/repos/{owner}/{repo}/labels/{name}"): _ISSUE_OR_PULL_READ,
    ("POST", "/repos/{owner}/{repo}/labels"): _ISSUE_OR_PULL_WRITE,
    ("GET", "/repos/{owner}/{repo}/issues/{issue_number}/labels"): _ISSUE_OR_PULL_READ,
    ("POST", "/repos/{owner}/{repo}/issues/{issue_number}/labels"): _ISSUE_OR_PULL_WRITE,
    ("PUT", "/repos/{owner}/{repo}/issues/{issue_number}/labels"): _ISSUE_OR_PULL_WRITE,
    ("DELETE", "/repos/{owner}/{repo}/issues/{issue_number}/labels/{name}"): _ISSUE_OR_PULL_WRITE,
    ("GET", "/repos/{owner}/{repo}/collaborators/{username}/permission"): (("metadata", "read"),),
}


def route(method: str, template: str):
    """Register a handler for an operation of the OpenAPI description (method + path template, verbatim)."""

    def register(function):
        ROUTES[method, template] = function.__name__
        return function

    return register


def _files(files: dict[str, str | bytes | None] | None) -> dict[str, bytes | None]:
    return {path: data.encode() if isinstance(data, str) else data for path, data in (files or {}).items()}


def _b64(data: bytes) -> str:
    # The contents and blobs APIs wrap base64 at 60 characters a line.
    text = base64.b64encode(data).decode()
    return "".join(text[i : i + 60] + "\n" for i in range(0, len(text), 60))


class FakeGitHub:
    """GitHub's REST API for one App, with repositories, pull requests and their files set up by tests.

    Test-side helpers (`add_repo`, `add_pull`, `push`, `set_permission`, `fail`, ...) may be called from any
    thread; the server runs in its own. Requests are recorded in `calls`, requests the OpenAPI description
    rejects in `violations`, and answers the fake gave in a shape the description does not allow (a bug of the
    fake) in `response_violations`.
    """

    def __init__(self, *, app_id: str = "424242", app_slug: str = "drbot", spec: OpenAPI | None = None):
        self.spec = spec or load_openapi()
        self.app_id = app_id
        self.app_slug = app_slug
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        # GitHub hands out PKCS#1 ("BEGIN RSA PRIVATE KEY") .pem files for Apps.
        self.private_key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ).decode()
        self._public_key = key.public_key()
        self.url = ""
        self.check_responses = True
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        # Not reset: a token a bot cached in an earlier test must not come back to life in a later one.
        self._token_serial = itertools.count(1)
        self.reset()

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def start(self) -> FakeGitHub:
        """Serve on 127.0.0.1 at a free port from a background thread; `url` is then the API base URL."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-github", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=30)
        return self

    async def _serve(self) -> None:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        self._rebase_objects()

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(timeout=30)
        self._loop.close()
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every repository, token, call, violation and fault; ids and SHAs start over, so tests repeat."""
        with self._lock:
            self.calls: list[Call] = []
            self.violations: list[str] = []
            self.response_violations: list[str] = []
            self.errors: list[str] = []  # error answers the fake gave on its own (not injected faults)
            self.faults: list[Fault] = []
            self.repos: dict[str, Repo] = {}
            self.installations: dict[int, dict] = {}
            self.tokens: dict[str, Token] = {}
            self._users: dict[str, dict] = {}
            self._ids = itertools.count(1001)
            self._rate: dict[str, list] = {}  # key -> [limit, used, reset epoch]
            objects.CLOCK[:] = [0.0, None]
            self._rebase_objects()

    def advance_clock(self, seconds: float = 1.0) -> None:
        """Move the timestamps the fake writes (created_at, updated_at) forward: GitHub's are whole seconds, so
        two things a test does in a row may otherwise share one. Token lifetimes keep the real clock."""
        with self._lock:
            if objects.CLOCK[1] is not None:
                objects.CLOCK[1] += seconds
            else:
                objects.CLOCK[0] += seconds

    def freeze_clock(self, frozen: bool = True) -> None:
        """Stop (or restart) the clock of the timestamps the fake writes: two things a test does in a row then share
        one second for sure, as they may on GitHub."""
        with self._lock:
            if frozen:
                objects.CLOCK[1] = objects.now()
            else:
                objects.CLOCK[0], objects.CLOCK[1] = objects.CLOCK[1] - objects.time.time(), None

    def _rebase_objects(self) -> None:
        with self._lock:
            self.bot_login = f"{self.app_slug}[bot]"
            self._users.clear()
            self.app_json = self._app_json()
            for repo in self.repos.values():
                repo.json = self._repo_json(repo.full_name, repo.json["id"], repo.json["owner"]["login"], repo)
                repo.diffs.clear()

    @property
    def api(self) -> str:
        return self.url or objects.API

    # -- auth helpers for tests -----------------------------------------------------------------------------------

    def jwt(self, **claims: Any) -> str:
        """An App JWT as gidgethub makes it (iat 60 s back, exp 10 min after iat); `claims` override fields."""
        now = int(time.time())
        payload = {"iat": now - 60, "exp": now + 540, "iss": self.app_id, **claims}
        return pyjwt.encode(payload, self.private_key_pem, algorithm="RS256")

    def issue_token(
        self, installation_id: int = 1, *, expires_in: float = TOKEN_LIFETIME, repositories=None, permissions=None
    ) -> str:
        """A live installation token, as POST /app/installations/{id}/access_tokens would give."""
        with self._lock:
            serial = next(self._token_serial)
            token = "ghs_" + hashlib.sha1(f"{installation_id}:{serial}".encode()).hexdigest()[:36]
            names = None if repositories is None else set(repositories)
            granted = None if permissions is None else {**permissions, "metadata": "read"}
            self.tokens[token] = Token(token, installation_id, time.time() + expires_in, names, granted)
            return token

    def expire_token(self, token: str | None = None) -> None:
        """Make one token (or every token) expire now, as if its hour had passed."""
        with self._lock:
            for item in self.tokens.values():
                if token is None or item.token == token:
                    item.expires_at = time.time() - 1

    def set_rate_limit(
        self, installation_id: int, *, remaining: int, reset_in: float = 3600, limit=RATE_LIMIT
    ) -> None:
        """Set an installation's primary rate limit; with remaining=0 it gets 403s until `reset_in` seconds pass."""
        with self._lock:
            self._rate[f"installation:{installation_id}"] = [limit, limit - remaining, time.time() + reset_in]

    # -- faults -------------------------------------------------------------------------------------------------

    def fail(
        self,
        method: str,
        path_regex: str,
        status: int | None = 502,
        times: int | None = 1,
        headers: dict[str, str] | None = None,
        body: Any = None,
        delay: float = 0,
    ) -> Fault:
        """Answer the next `times` matching requests with `status` (after `delay` s) instead of normally.

        `method` is an HTTP method or "*"; `path_regex` is searched in the decoded path. Without `body`, 403 and
        429 get GitHub's secondary-rate-limit answer with a `retry-after: 60` header, 422 GitHub's "Unprocessable
        Entity", 5xx a server error. `status=None` answers normally, only `delay` seconds late.
        """
        defaults: dict[str, str] = {}
        if body is None and status is not None:
            if status in (403, 429):
                body = {"message": SECONDARY_LIMIT_MESSAGE, "documentation_url": f"{DOCS}/overview/rate-limits"}
                defaults["retry-after"] = "60"
            elif status == 422:
                body = GitHubError(422, "Unprocessable Entity", ["Line could not be resolved"]).body
            else:
                body = {"message": REASONS.get(status, "Error"), "documentation_url": DOCS}
        fault = Fault(
            method.upper(), re.compile(path_regex), status, times, {**defaults, **(headers or {})}, body, delay
        )
        with self._lock:
            self.faults.append(fault)
        return fault

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.method in ("*", method) and fault.pattern.search(path) and fault.times != 0:
                    fault.hits += 1
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    # -- state set-up -------------------------------------------------------------------------------------------

    def _user(self, login: str, user_type: str = "User") -> dict:
        with self._lock:
            if login not in self._users:
                self._users[login] = objects.user(login, next(self._ids) + 5_000_000, user_type, self.api)
            return self._users[login]

    def _app_json(self) -> dict:
        template = objects.example("check_run", "created")["check_run"]["app"]
        app = objects.rewrite(template, {objects.API: self.api})
        app_id = int(self.app_id) if self.app_id.isdigit() else 1
        owner = objects.user("drbot-owner", 9_000_001, "Organization", self.api)
        app.update(
            id=app_id,
            slug=self.app_slug,
            node_id=node_id("Integration", app_id),
            owner=owner,
            name=self.app_slug,
            description="drbot test App",
            external_url="https://example.invalid/drbot",
            html_url=f"{WEB}/apps/{self.app_slug}",
            permissions={"checks": "write", "contents": "read", "issues": "write", "pull_requests": "write"},
            events=["issue_comment", "pull_request"],
        )
        return app

    def _repo_json(self, full_name: str, repo_id: int, owner_login: str, repo: Repo | None = None) -> dict:
        owner = objects.user(owner_login, repo_id + 7_000_000, "Organization", self.api)
        private = repo.private if repo else True
        branch = repo.default_branch if repo else "main"
        return objects.repository(full_name, repo_id, owner, private=private, default_branch=branch, api_url=self.api)

    def add_repo(
        self,
        full_name: str,
        *,
        installation_id: int = 1,
        files: dict[str, str | bytes] | None = None,
        default_branch: str = "main",
        private: bool = True,
    ) -> dict:
        """Create a repository of `installation_id` whose default branch holds `files`; returns its JSON.

        A public repository (`private=False`) also answers GET requests that carry no token, as GitHub does
        (the runners download tarballs that way); every other request needs the installation's token.
        """
        with self._lock:
            if full_name in self.repos:
                raise ValueError(f"{full_name} exists; call reset() between tests")
            repo_id = next(self._ids) + 100_000_000
            owner = full_name.split("/")[0]
            self.installations.setdefault(installation_id, {"account": owner, "created_at": iso()})
            repo = Repo(full_name, {}, installation_id, default_branch, private)
            repo.json = self._repo_json(full_name, repo_id, owner, repo)
            self.repos[full_name] = repo
            commit = self._commit(repo, {}, _files(files), [], "Initial commit")
            repo.branches[default_branch] = commit.sha
            return repo.json

    def _commit(
        self, repo: Repo, start: dict[str, bytes], overlay: dict[str, bytes | None], parents, message
    ) -> Commit:
        """Commit `start` with `overlay` applied (a path mapped to None is deleted) and store its objects."""
        files = dict(start)
        for path, data in overlay.items():
            if data is None:
                files.pop(path, None)
            else:
                files[path] = data
        commit = make_commit(files, parents, message)
        repo.commits[commit.sha] = commit
        repo.trees.update(commit.trees)
        for data in files.values():
            repo.blobs[blob_sha(data)] = data
        return commit

    def repo(self, full_name: str) -> Repo:
        try:
            return self.repos[full_name]
        except KeyError:
            raise KeyError(f"no repository {full_name!r}; add it with add_repo()") from None

    def add_pull(
        self,
        repo: str,
        number: int | None = None,
        base_files: dict[str, str | bytes | None] | None = None,
        head_files: dict[str, str | bytes | None] | None = None,
        *,
        draft: bool = False,
        user: str = "alice",
        user_type: str = "User",
        title: str | None = None,
        body: str | None = "",
        base_ref: str | None = None,
        head_ref: str | None = None,
        labels: tuple[str, ...] = (),
    ) -> dict:
        """Open a pull request; returns its JSON.

        File maps are overlays: `base_files` is committed on top of the base branch (which moves to it), and
        `head_files` on top of that base as the PR's head commit; a path mapped to None is deleted.
        """
        with self._lock:
            state = self.repo(repo)
            number = number or max([0, *state.pulls]) + 1
            if number in state.pulls:
                raise ValueError(f"{repo}#{number} exists")
            base_ref = base_ref or state.default_branch
            base = state.commits[state.branches[base_ref]]
            if base_files:
                base = self._commit(state, base.files, _files(base_files), [base.sha], f"Base of #{number}")
                state.branches[base_ref] = base.sha
            head = self._commit(state, base.files, _files(head_files), [base.sha], f"#{number}: head 1")
            head_ref = head_ref or f"pr-{number}"
            state.branches[head_ref] = head.sha
            now = iso(objects.now() - 60)  # opened a minute ago: comments on it come later, as on GitHub
            author = self._user(user, user_type)
            pull = Pull(
                number=number,
                id=next(self._ids) + 200_000_000,
                user=author,
                title=title or f"Pull request {number}",
                body=body,
                draft=draft,
                state="open",
                base_ref=base_ref,
                head_ref=head_ref,
                base_sha=base.sha,
                heads=[head.sha],
                created_at=now,
                updated_at=now,
            )
            state.pulls[number] = pull
            for name in labels:
                pull.labels.append(self._ensure_label(state, name)["name"])
            return self._pull_json(state, pull)

    def commit_to_branch(self, repo: str, files: dict[str, str | bytes | None], branch: str | None = None) -> str:
        """Commit an overlay onto a branch (the default one): the base branch moving on under an open PR."""
        with self._lock:
            state = self.repo(repo)
            branch = branch or state.default_branch
            parent = state.commits[state.branches[branch]]
            commit = self._commit(state, parent.files, _files(files), [parent.sha], f"Commit to {branch}")
            state.branches[branch] = commit.sha
            return commit.sha

    def push(self, repo: str, number: int, head_files: dict[str, str | bytes | None]) -> str:
        """Push a commit onto the PR's head (an overlay on the current head); returns the new head SHA."""
        with self._lock:
            state = self.repo(repo)
            pull = state.pulls[number]
            previous = state.commits[pull.head_sha]
            message = f"#{number}: head {len(pull.heads) + 1}"
            head = self._commit(state, previous.files, _files(head_files), [previous.sha], message)
            pull.heads.append(head.sha)
            state.branches[pull.head_ref] = head.sha
            pull.updated_at = iso()
            return head.sha

    def update_pull(self, repo: str, number: int, **fields: Any) -> dict:
        """Change `draft`, `state`, `title` or `body` of a pull request; returns its JSON."""
        with self._lock:
            state = self.repo(repo)
            pull = state.pulls[number]
            for name, value in fields.items():
                if name not in ("draft", "state", "title", "body"):
                    raise TypeError(f"update_pull() cannot change {name!r}")
                setattr(pull, name, value)
            pull.updated_at = iso()
            return self._pull_json(state, pull)

    def set_permission(self, repo: str, login: str, permission: str) -> None:
        """Give `login` a role on `repo`: admin, maintain, write, triage, read or none."""
        if permission not in PERMISSIONS:
            raise ValueError(f"permission must be one of {PERMISSIONS}")
        with self._lock:
            self.repo(repo).permissions[login] = permission

    def add_comment(self, repo: str, number: int, body: str, *, user: str = "alice", user_type: str = "User") -> dict:
        """A comment on PR `number` by someone other than the App; returns its JSON."""
        with self._lock:
            state = self.repo(repo)
            return self._create_comment(state, number, body, self._user(user, user_type), via_app=False)

    def add_issue(
        self,
        repo: str,
        number: int | None = None,
        *,
        title: str = "An issue",
        body: str | None = "",
        user: str = "alice",
    ) -> dict:
        """Open a plain issue (not a pull request; numbers are shared with them); returns its JSON."""
        with self._lock:
            state = self.repo(repo)
            number = number or max([0, *state.pulls, *state.issues]) + 1
            if number in state.pulls or number in state.issues:
                raise ValueError(f"{repo}#{number} exists")
            stamp = iso(objects.now() - 60)
            state.issues[number] = {
                "id": next(self._ids) + 300_000_000, "number": number, "title": title, "body": body,
                "user": self._user(user), "state": "open", "created_at": stamp, "updated_at": stamp,
            }  # fmt: skip
            return self._plain_issue_json(state, number)

    def issue(self, repo: str, number: int) -> dict:
        """A plain issue's JSON, as GET /repos/{owner}/{repo}/issues/{number} answers."""
        with self._lock:
            state = self.repo(repo)
            return self._plain_issue_json(state, number)

    def add_label(self, repo: str, name: str, color: str = "ededed", description: str | None = None) -> dict:
        """Create a label in `repo`; returns its JSON."""
        with self._lock:
            return self._ensure_label(self.repo(repo), name, color, description)

    # -- views for assertions -----------------------------------------------------------------------------------

    def pull(self, repo: str, number: int) -> dict:
        with self._lock:
            state = self.repo(repo)
            return self._pull_json(state, state.pulls[number])

    def files(self, repo: str, number: int) -> list[dict]:
        """Every changed file of the PR (without the API's 3000-file cap)."""
        with self._lock:
            state = self.repo(repo)
            return self._diff_entries(state, state.pulls[number], state.pulls[number].head_sha)

    def comments(self, repo: str, number: int) -> list[dict]:
        with self._lock:
            state = self.repo(repo)
            return [self._comment_json(state, cid) for cid in state.pulls[number].comment_ids]

    def reactions(self, repo: str, comment_id: int) -> list[dict]:
        with self._lock:
            return list(self.repo(repo).reactions.get(comment_id, []))

    def reviews(self, repo: str, number: int) -> list[dict]:
        with self._lock:
            return list(self.repo(repo).pulls[number].reviews)

    def review_comments(self, repo: str, number: int) -> list[dict]:
        with self._lock:
            return list(self.repo(repo).pulls[number].review_comments)

    def commit_suggestion(self, repo: str, comment: dict) -> str:
        """The text of a review comment's file once its ```suggestion is committed, as GitHub's "Commit suggestion"
        does: lines `start_line` (or `line`) to `line` of the file at the comment's commit, replaced by the block's
        lines. ValueError when the body holds no suggestion block, or more than one."""
        blocks = SUGGESTION_RE.findall(comment["body"])
        if len(blocks) != 1:
            raise ValueError(f"{len(blocks)} suggestion blocks in the comment")
        with self._lock:
            text = self.repo(repo).commits[comment["commit_id"]].files[comment["path"]]
        lines = (text or b"").decode().splitlines(keepends=True)
        first, last = comment.get("start_line") or comment["line"], comment["line"]
        return "".join(lines[: first - 1]) + blocks[0][1] + "".join(lines[last:])

    def check_runs(self, repo: str, head_sha: str | None = None) -> list[dict]:
        with self._lock:
            runs = self.repo(repo).check_runs.values()
            return [run for run in runs if head_sha is None or run["head_sha"] == head_sha]

    def annotations(self, repo: str, check_run_id: int) -> list[dict]:
        with self._lock:
            return list(self.repo(repo).annotations.get(check_run_id, []))

    def labels(self, repo: str, number: int | None = None) -> list[str]:
        """Label names on PR `number`, or every label of the repository."""
        with self._lock:
            state = self.repo(repo)
            if number is None:
                return [label["name"] for label in state.labels.values()]
            return list(state.pulls[number].labels)

    def requests(self, method: str | None = None, path_regex: str | None = None) -> list[Call]:
        """The recorded calls with this method and a path that `path_regex` is found in."""
        return [
            call
            for call in list(self.calls)
            if (method is None or call.method == method.upper())
            and (path_regex is None or re.search(path_regex, call.path))
        ]

    # -- webhook payloads ---------------------------------------------------------------------------------------

    def pull_request_payload(self, repo: str, number: int, action: str = "opened", **fields: Any) -> dict:
        """A `pull_request` delivery for the PR as the fake holds it, from GitHub's real example of `action`.

        synchronize gets `before`/`after` from the last push; labeled/unlabeled the PR's last label.
        """
        with self._lock:
            state = self.repo(repo)
            pull = state.pulls[number]
            if action == "synchronize":
                fields.setdefault("before", pull.heads[-2] if len(pull.heads) > 1 else pull.base_sha)
                fields.setdefault("after", pull.head_sha)
            if action in ("labeled", "unlabeled") and pull.labels and "label" not in fields:
                fields["label"] = state.labels[pull.labels[-1].lower()]
            return webhooks.pull_request_payload(
                repo,
                number,
                action,
                pull_request=self._pull_json(state, pull),
                repository=state.json,
                installation_id=state.installation_id,
                sender=fields.pop("sender", pull.user),
                organization_obj=self._organization(state),
                api_url=self.api,
                **fields,
            )

    def issue_comment_payload(
        self,
        repo: str,
        number: int,
        body: str,
        user: str = "alice",
        user_type: str = "User",
        action: str = "created",
        *,
        comment_id: int | None = None,
        **fields: Any,
    ) -> dict:
        """An `issue_comment` delivery on PR `number`; the comment is created (or edited) in the fake too.

        With `comment_id`, "edited" changes that comment's body and reports the old one under `changes`.
        """
        with self._lock:
            state = self.repo(repo)
            pull = state.pulls[number]
            if comment_id is None:
                comment = self._create_comment(state, number, body, self._user(user, user_type), via_app=False)
                old = body
            else:
                comment = state.comments[comment_id]
                old = comment["body"]
                comment.update(body=body, updated_at=iso())
            if action == "edited":
                fields.setdefault("changes", {"body": {"from": old}})
            return webhooks.issue_comment_payload(
                repo,
                number,
                body,
                user,
                user_type,
                action,
                comment=self._comment_json(state, comment["id"]),
                issue=self._issue_json(state, pull),
                repository=state.json,
                installation_id=state.installation_id,
                organization_obj=self._organization(state),
                api_url=self.api,
                **fields,
            )

    def _organization(self, repo: Repo) -> dict | None:
        owner = repo.json["owner"]
        if owner["type"] != "Organization":
            return None
        return objects.organization(owner["login"], owner["id"], self.api)

    # -- the HTTP side ------------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        method, path = request.method.upper(), request.path
        query = {key: request.query.get(key, "") for key in request.query}
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                bad_json = True
        call = Call(method, path, query, body, time.monotonic())
        with self._lock:
            self.calls.append(call)
        where = f"{method} {path}" + (f"?{urlencode(query)}" if query else "")
        matched = self.spec.match(method, request.rel_url.raw_path)
        errors: list[str] = []
        if matched is not None:
            op, params = matched
            errors = self.spec.check_request(op, params, query, body, bool(raw), request.headers.get("content-type"))
            if bad_json:
                errors.insert(0, "the body is not JSON")

        fault = self._take_fault(method, path)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status is not None:
                reply = Reply(fault.status, fault.body, dict(fault.headers))
                return self._respond(request, reply, None, self._caller(request.headers.get("authorization")))

        if matched is None:
            self._violation(f"{where}: no operation of GitHub's REST API has this method and path")
            reply = Reply(404, GitHubError(404, "Not Found").body)
            return self._respond(request, reply, None, self._caller(request.headers.get("authorization")))
        op, params = matched
        if errors:
            self._violation(f"{where} ({op.operation_id}): " + "; ".join(errors))
            message = "Invalid request.\n\n" + "\n".join(errors)
            reply = Reply(422, GitHubError(422, message, doc=op.doc_url).body)
            return self._respond(request, reply, op, self._caller(request.headers.get("authorization")))

        handler = ROUTES.get((method, op.template))
        rate_key = "anonymous"
        try:
            with self._lock:
                context = Context(method, path, params, query, body, request.headers.get("accept", ""), op)
                rate_key = self._authenticate(context, request.headers.get("authorization"))
                self._count(rate_key)
                if handler is None:
                    self._violation(f"{where} ({op.operation_id}): valid, but the fake does not implement it yet")
                    raise GitHubError(404, f"fake GitHub does not implement {op.operation_id}")
                reply = getattr(self, handler)(context)
        except GitHubError as error:
            with self._lock:
                self.errors.append(f"{where}: {error.status} {error.body['message']}")
            reply = Reply(error.status, error.body, error.headers)
        if self.check_responses and 200 <= reply.status < 300 and not isinstance(reply.body, bytes):
            problems = self.spec.check_response(op, reply.status, reply.body)
            with self._lock:
                self.response_violations += [f"{where} -> {reply.status} ({op.operation_id}): {p}" for p in problems]
        return self._respond(request, reply, op, rate_key)

    def _violation(self, text: str) -> None:
        with self._lock:
            self.violations.append(text)

    def _respond(self, request: web.Request, reply: Reply, op: Operation | None, rate_key: str) -> web.Response:
        headers = {
            "x-github-api-version-selected": "2022-11-28",
            "x-github-request-id": f"FAKE:{len(self.calls):08X}",
            **self._rate_headers(rate_key),
            **reply.headers,
        }
        if isinstance(reply.body, bytes):
            data, content_type = reply.body, reply.content_type
        elif reply.body is None:
            data, content_type = b"", None
        else:
            data, content_type = json.dumps(reply.body).encode(), reply.content_type
        if request.method == "GET" and reply.status == 200:
            # Conditional requests: gidgethub's cache sends If-None-Match, and GitHub answers 304 Not Modified.
            etag = 'W/"' + hashlib.sha1(data).hexdigest() + '"'
            headers["etag"] = etag
            if request.headers.get("if-none-match") == etag:
                return web.Response(status=304, headers=headers)
        response = web.Response(status=reply.status, body=data, headers=headers)
        if content_type:
            response.headers["content-type"] = content_type
        return response

    def _rate_headers(self, key: str) -> dict[str, str]:
        limit, used, reset = self._rate_state(key)
        return {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(max(0, limit - used)),
            "x-ratelimit-reset": str(int(reset)),
            "x-ratelimit-used": str(used),
            "x-ratelimit-resource": "core",
        }

    def _rate_state(self, key: str) -> list:
        with self._lock:
            state = self._rate.get(key)
            if state is None or state[2] <= time.time():
                limit = ANONYMOUS_RATE_LIMIT if key == "anonymous" else RATE_LIMIT
                state = self._rate[key] = [limit, 0, time.time() + 3600]
            return state

    def _count(self, key: str) -> None:
        state = self._rate_state(key)
        if state[1] >= state[0]:
            what = "installation ID " + key.split(":")[1] if key.startswith("installation:") else key
            raise GitHubError(403, f"API rate limit exceeded for {what}.", doc=f"{DOCS}/overview/rate-limits")
        state[1] += 1

    def _authenticate(self, ctx: Context, header: str | None) -> str:
        """Check the Authorization header for this operation; returns the rate-limit bucket of the caller."""
        scheme, _, credential = (header or "").partition(" ")
        credential = credential.strip()
        needs_jwt = ctx.op.template.startswith("/app/") or ctx.op.template in (
            "/app",
            "/repos/{owner}/{repo}/installation",
        )
        if "owner" in ctx.params and "repo" in ctx.params:
            ctx.repo = self.repos.get(f"{ctx.params['owner']}/{ctx.params['repo']}")
        if needs_jwt:
            if scheme.lower() != "bearer" or not credential:
                raise GitHubError(401, "A JSON web token could not be decoded")
            self._verify_jwt(credential)
            if ctx.op.template.startswith("/repos/") and ctx.repo is None:
                raise GitHubError(404, "Not Found")
            return "app"
        if not header:
            if ctx.repo is not None and not ctx.repo.private and ctx.method == "GET":
                return "anonymous"
            if ctx.op.template.startswith("/repos/"):
                raise GitHubError(401, "Requires authentication")
            return "anonymous"
        if scheme.lower() not in ("token", "bearer"):
            raise GitHubError(401, "Bad credentials")
        token = self.tokens.get(credential)
        if token is None or token.expires_at <= time.time():
            # An expired installation token gets the same answer as a wrong one.
            raise GitHubError(401, "Bad credentials")
        ctx.token = token
        if ctx.op.template.startswith("/repos/"):
            if ctx.repo is None:
                raise GitHubError(404, "Not Found")
            allowed = token.repositories is None or ctx.repo.full_name.split("/")[1] in token.repositories
            if ctx.repo.installation_id != token.installation_id or not allowed:
                raise GitHubError(403, "Resource not accessible by integration")
            if not self._permitted(token, ctx.method, ctx.op.template):
                raise GitHubError(403, "Resource not accessible by integration")
        return f"installation:{token.installation_id}"

    def _permitted(self, token: Token, method: str, template: str) -> bool:
        """Whether the token's permissions cover the operation (GitHub's "permissions required for GitHub Apps")."""
        if token.permissions is None:
            return True
        alternatives = REQUIRED_PERMISSIONS.get((method, template))
        if alternatives is None:
            return False  # an operation this table does not know: a narrowed token gets no benefit of the doubt
        return any(LEVELS.get(token.permissions.get(name, ""), 0) >= LEVELS[level] for name, level in alternatives)

    def _caller(self, header: str | None) -> str:
        """The rate-limit bucket of a request that is answered before authentication (faults, 404, 422)."""
        credential = (header or "").partition(" ")[2].strip()
        with self._lock:
            token = self.tokens.get(credential)
        if token is not None:
            return f"installation:{token.installation_id}"
        return "app" if credential.count(".") == 2 else "anonymous"

    def _verify_jwt(self, credential: str) -> dict:
        try:
            claims = pyjwt.decode(
                credential,
                self._public_key,
                algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"], "verify_iss": False},
            )
        except pyjwt.ExpiredSignatureError:
            raise GitHubError(
                401,
                "'Expiration time' claim ('exp') must be a numeric value representing the future time at which "
                "the assertion expires",
            ) from None
        except pyjwt.ImmatureSignatureError:
            raise GitHubError(
                401, "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued"
            ) from None
        except pyjwt.InvalidTokenError:
            raise GitHubError(401, "A JSON web token could not be decoded") from None
        if claims["exp"] - claims["iat"] > JWT_MAX_LIFETIME or claims["exp"] - time.time() > 600 + 5:
            raise GitHubError(401, "'Expiration time' claim ('exp') is too far in the future")
        if str(claims["iss"]) != str(self.app_id):
            raise GitHubError(401, f"'Issuer' claim ('iss') {claims['iss']!r} is not this App's id {self.app_id!r}")
        return claims

    # -- helpers for handlers -----------------------------------------------------------------------------------

    def _page(self, ctx: Context, items: list) -> tuple[list, dict[str, str]]:
        """One page of `items` for ?per_page=&page=, with the Link header GitHub sends when there are more pages."""
        per_page = min(max(int(ctx.query.get("per_page", 30)), 1), 100)
        page = max(int(ctx.query.get("page", 1)), 1)
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]
        if last == 1:
            return chunk, {}

        def link(number: int, rel: str) -> str:
            query = {**ctx.query, "per_page": str(per_page), "page": str(number)}
            return f'<{self.api}{quote(ctx.path)}?{urlencode(query)}>; rel="{rel}"'

        links = []
        if page > 1:
            links.append(link(page - 1, "prev"))
        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links.append(link(1, "first"))
        return chunk, {"link": ", ".join(links)}

    def _need_repo(self, ctx: Context) -> Repo:
        if ctx.repo is None:
            raise GitHubError(404, "Not Found")
        return ctx.repo

    def _need_pull(self, ctx: Context, key: str = "pull_number") -> tuple[Repo, Pull]:
        repo = self._need_repo(ctx)
        pull = repo.pulls.get(int(ctx.params[key]))
        if pull is None:
            raise GitHubError(404, "Not Found")
        return repo, pull

    def _resolve(self, repo: Repo, ref: str | None) -> Commit:
        """The commit a branch name, full or abbreviated SHA, or refs/heads/<branch> names."""
        ref = ref or repo.default_branch
        ref = ref.removeprefix("refs/heads/")
        if ref in repo.branches:
            return repo.commits[repo.branches[ref]]
        if ref in repo.commits:
            return repo.commits[ref]
        if re.fullmatch(r"[0-9a-f]{7,39}", ref):
            found = [sha for sha in repo.commits if sha.startswith(ref)]
            if len(found) == 1:
                return repo.commits[found[0]]
        raise GitHubError(404, f"No commit found for the ref {ref}")

    def _actor(self, ctx: Context) -> dict:
        return self._user(self.bot_login, "Bot") if ctx.token is not None else self._user("anonymous")

    def _ensure_label(self, repo: Repo, name: str, color: str = "ededed", description: str | None = None) -> dict:
        key = name.lower()
        if key not in repo.labels:
            label_id = next(self._ids) + 300_000_000
            repo.labels[key] = {
                "id": label_id,
                "node_id": node_id("Label", label_id),
                "url": f"{self.api}/repos/{repo.full_name}/labels/{quote(name, safe='')}",
                "name": name,
                "color": color,
                "default": False,
                "description": description,
            }
        return repo.labels[key]

    # -- JSON shapes --------------------------------------------------------------------------------------------

    def _pull_json(self, repo: Repo, pull: Pull) -> dict:
        api = f"{self.api}/repos/{repo.full_name}"
        html = f"{WEB}/{repo.full_name}/pull/{pull.number}"
        entries = self._diff_entries(repo, pull, pull.head_sha)

        def side(ref: str, sha: str) -> dict:
            return {
                "label": f"{repo.json['owner']['login']}:{ref}",
                "ref": ref,
                "sha": sha,
                "user": repo.json["owner"],
                "repo": repo.json,
            }

        return {
            "url": f"{api}/pulls/{pull.number}",
            "id": pull.id,
            "node_id": node_id("PullRequest", pull.id),
            "html_url": html,
            "diff_url": f"{html}.diff",
            "patch_url": f"{html}.patch",
            "issue_url": f"{api}/issues/{pull.number}",
            "number": pull.number,
            "state": pull.state,
            "locked": False,
            "title": pull.title,
            "user": pull.user,
            "body": pull.body,
            "created_at": pull.created_at,
            "updated_at": pull.updated_at,
            "closed_at": None,
            "merged_at": None,
            "merge_commit_sha": None,
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
            "labels": [repo.labels[name.lower()] for name in pull.labels],
            "milestone": None,
            "draft": pull.draft,
            "commits_url": f"{api}/pulls/{pull.number}/commits",
            "review_comments_url": f"{api}/pulls/{pull.number}/comments",
            "review_comment_url": f"{api}/pulls/comments{{/number}}",
            "comments_url": f"{api}/issues/{pull.number}/comments",
            "statuses_url": f"{api}/statuses/{pull.head_sha}",
            "head": side(pull.head_ref, pull.head_sha),
            "base": side(pull.base_ref, pull.base_sha),
            "_links": {
                "self": {"href": f"{api}/pulls/{pull.number}"},
                "html": {"href": html},
                "issue": {"href": f"{api}/issues/{pull.number}"},
                "comments": {"href": f"{api}/issues/{pull.number}/comments"},
                "review_comments": {"href": f"{api}/pulls/{pull.number}/comments"},
                "review_comment": {"href": f"{api}/pulls/comments{{/number}}"},
                "commits": {"href": f"{api}/pulls/{pull.number}/commits"},
                "statuses": {"href": f"{api}/statuses/{pull.head_sha}"},
            },
            "author_association": self._association(repo, pull.user["login"]),
            "auto_merge": None,
            "active_lock_reason": None,
            "merged": False,
            "mergeable": True,
            "rebaseable": True,
            "mergeable_state": "clean",
            "merged_by": None,
            "comments": len(pull.comment_ids),
            "review_comments": len(pull.review_comments),
            "maintainer_can_modify": False,
            "commits": len(pull.heads),
            "additions": sum(entry["additions"] for entry in entries),
            "deletions": sum(entry["deletions"] for entry in entries),
            "changed_files": len(entries),
        }

    def _association(self, repo: Repo, login: str) -> str:
        role = repo.permissions.get(login, "none")
        if login == repo.json["owner"]["login"]:
            return "OWNER"
        return "COLLABORATOR" if role in ("admin", "maintain", "write", "triage") else "CONTRIBUTOR"

    def _issue_fields(self, repo: Repo, number: int, html_url: str, id_: int, fields: dict) -> dict:
        """An issue's JSON as GitHub's REST API has it: what every issue says the same way, then `fields` (title,
        user, labels, state, comments, times, body, and for a pull request its `draft` and `pull_request`)."""
        api = f"{self.api}/repos/{repo.full_name}"
        user = fields["user"]
        data = {
            "url": f"{api}/issues/{number}",
            "repository_url": api,
            "labels_url": f"{api}/issues/{number}/labels{{/name}}",
            "comments_url": f"{api}/issues/{number}/comments",
            "events_url": f"{api}/issues/{number}/events",
            "html_url": html_url,
            "id": id_,
            "node_id": node_id("Issue", id_),
            "number": number,
            "locked": False,
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "closed_at": None,
            "author_association": self._association(repo, user["login"]),
            "active_lock_reason": None,
            "reactions": self._rollup(f"{api}/issues/{number}/reactions", []),
        }
        return {**data, **fields}

    def _issue_json(self, repo: Repo, pull: Pull) -> dict:
        api = f"{self.api}/repos/{repo.full_name}"
        return self._issue_fields(repo, pull.number, f"{WEB}/{repo.full_name}/pull/{pull.number}", pull.id + 1, {
            "title": pull.title,
            "user": pull.user,
            "labels": [repo.labels[name.lower()] for name in pull.labels],
            "state": pull.state,
            "comments": len(pull.comment_ids),
            "created_at": pull.created_at,
            "updated_at": pull.updated_at,
            "draft": pull.draft,
            "body": pull.body,
            "pull_request": {
                "url": f"{api}/pulls/{pull.number}",
                "html_url": f"{WEB}/{repo.full_name}/pull/{pull.number}",
                "diff_url": f"{WEB}/{repo.full_name}/pull/{pull.number}.diff",
                "patch_url": f"{WEB}/{repo.full_name}/pull/{pull.number}.patch",
                "merged_at": None,
            },
        })  # fmt: skip

    def _plain_issue_json(self, repo: Repo, number: int) -> dict:
        issue = repo.issues[number]
        return self._issue_fields(repo, number, f"{WEB}/{repo.full_name}/issues/{number}", issue["id"], {
            "title": issue["title"],
            "user": issue["user"],
            "labels": [],
            "state": issue["state"],
            "comments": 0,
            "created_at": issue["created_at"],
            "updated_at": issue["updated_at"],
            "body": issue["body"],
        })  # fmt: skip

    @staticmethod
    def _rollup(url: str, reactions: list[dict]) -> dict:
        rollup = {"url": url, "total_count": len(reactions)}
        for content in ("+1", "-1", "laugh", "hooray", "confused", "heart", "rocket", "eyes"):
            rollup[content] = sum(1 for reaction in reactions if reaction["content"] == content)
        return rollup

    def _create_comment(self, repo: Repo, number: int, body: str, author: dict, *, via_app: bool) -> dict:
        pull = repo.pulls.get(number)
        if pull is None:
            raise GitHubError(404, "Not Found")
        comment_id = next(self._ids) + 400_000_000
        now = iso()
        api = f"{self.api}/repos/{repo.full_name}"
        repo.comments[comment_id] = {
            "url": f"{api}/issues/comments/{comment_id}",
            "html_url": f"{WEB}/{repo.full_name}/pull/{number}#issuecomment-{comment_id}",
            "issue_url": f"{api}/issues/{number}",
            "id": comment_id,
            "node_id": node_id("IssueComment", comment_id),
            "user": author,
            "created_at": now,
            "updated_at": now,
            "author_association": "NONE" if via_app else self._association(repo, author["login"]),
            "body": body,
            "performed_via_github_app": self.app_json if via_app else None,
        }
        repo.comment_issue[comment_id] = number
        pull.comment_ids.append(comment_id)
        return self._comment_json(repo, comment_id)

    def _comment_json(self, repo: Repo, comment_id: int) -> dict:
        comment = dict(repo.comments[comment_id])
        comment["reactions"] = self._rollup(f"{comment['url']}/reactions", repo.reactions.get(comment_id, []))
        return comment

    def _diff_entries(self, repo: Repo, pull: Pull, head_sha: str) -> list[dict]:
        # Diffing thousands of files for every page of /files would be slow; commits never change, so cache.
        key = (pull.base_sha, head_sha)
        if key not in repo.diffs:
            repo.diffs[key] = self._diff(repo, pull.base_sha, head_sha)
        return list(repo.diffs[key])

    def _diff(self, repo: Repo, base_sha: str, head_sha: str) -> list[dict]:
        base, head = repo.commits[base_sha], repo.commits[head_sha]
        entries = []
        for change in changed_files(base.files, head.files):
            at = base_sha if change.status == "removed" else head_sha
            data = change.old if change.status == "removed" else change.new
            entry = {
                "sha": blob_sha(data),
                "filename": change.filename,
                "status": change.status,
                "additions": change.additions,
                "deletions": change.deletions,
                "changes": change.additions + change.deletions,
                "blob_url": f"{WEB}/{repo.full_name}/blob/{at}/{quote(change.filename)}",
                "raw_url": f"{WEB}/{repo.full_name}/raw/{at}/{quote(change.filename)}",
                "contents_url": f"{self.api}/repos/{repo.full_name}/contents/{quote(change.filename)}?ref={at}",
            }
            if change.patch is not None:
                entry["patch"] = change.patch
            if change.previous_filename is not None:
                entry["previous_filename"] = change.previous_filename
            entries.append(entry)
        return entries

    # -- routes: the App ----------------------------------------------------------------------------------------

    @route("GET", "/app")
    def _get_app(self, ctx: Context) -> Reply:
        return Reply(200, self.app_json)

    def _installation_json(self, installation_id: int) -> dict:
        account = self._user(self.installations[installation_id]["account"], "Organization")
        return {
            "id": installation_id,
            "account": account,
            "repository_selection": "all",
            "access_tokens_url": f"{self.api}/app/installations/{installation_id}/access_tokens",
            "repositories_url": f"{self.api}/installation/repositories",
            "html_url": f"{WEB}/organizations/{account['login']}/settings/installations/{installation_id}",
            "app_id": self.app_json["id"],
            "app_slug": self.app_slug,
            "target_id": account["id"],
            "target_type": "Organization",
            "permissions": self.app_json["permissions"],
            "events": self.app_json["events"],
            "created_at": self.installations[installation_id]["created_at"],
            "updated_at": self.installations[installation_id]["created_at"],
            "single_file_name": None,
            "suspended_at": None,
            "suspended_by": None,
        }

    @route("GET", "/repos/{owner}/{repo}/installation")
    def _get_repo_installation(self, ctx: Context) -> Reply:
        return Reply(200, self._installation_json(self._need_repo(ctx).installation_id))

    @route("POST", "/app/installations/{installation_id}/access_tokens")
    def _create_token(self, ctx: Context) -> Reply:
        installation_id = int(ctx.params["installation_id"])
        if installation_id not in self.installations:
            raise GitHubError(404, "Not Found")
        body = ctx.body or {}
        names = body.get("repositories")
        if names is not None:
            known = {
                repo.full_name.split("/")[1] for repo in self.repos.values() if repo.installation_id == installation_id
            }
            if not set(names) <= known:
                raise GitHubError(422, "There is at least one repository that does not exist or is not accessible")
        wanted = body.get("permissions")
        if wanted is not None:
            # GitHub refuses a permission the App was not granted, or a higher level of one
            have = self.app_json["permissions"]
            for name, level in wanted.items():
                if (name, level) == ("metadata", "read"):
                    continue  # every installation has it
                if name not in have or LEVELS.get(level, 9) > LEVELS.get(have[name], 0):
                    raise GitHubError(422, f"The permissions requested are not granted to this installation: {name}")
        token = self.issue_token(installation_id, repositories=names, permissions=wanted)
        reply = {
            "token": token,
            "expires_at": iso(self.tokens[token].expires_at),
            "permissions": self.tokens[token].permissions or self.app_json["permissions"],
            "repository_selection": "all" if names is None else "selected",
        }
        return Reply(201, reply)

    # -- routes: repositories and pull requests -----------------------------------------------------------------

    @route("GET", "/repos/{owner}/{repo}")
    def _get_repo(self, ctx: Context) -> Reply:
        repo = self._need_repo(ctx)
        return Reply(200, {**repo.json, "has_discussions": False, "network_count": 0, "subscribers_count": 0})

    @route("GET", "/repos/{owner}/{repo}/pulls")
    def _list_pulls(self, ctx: Context) -> Reply:
        repo = self._need_repo(ctx)
        state = ctx.query.get("state", "open")
        pulls = [pull for number, pull in sorted(repo.pulls.items(), reverse=True) if state in ("all", pull.state)]
        page, headers = self._page(ctx, pulls)
        simple = []
        for pull in page:
            data = self._pull_json(repo, pull)
            simple.append(
                {
                    key: value
                    for key, value in data.items()
                    if key
                    not in (
                        "merged",
                        "mergeable",
                        "rebaseable",
                        "mergeable_state",
                        "merged_by",
                        "comments",
                        "review_comments",
                        "maintainer_can_modify",
                        "commits",
                        "additions",
                        "deletions",
                        "changed_files",
                    )
                }
            )
        return Reply(200, simple, headers)

    @route("GET", "/repos/{owner}/{repo}/pulls/{pull_number}")
    def _get_pull(self, ctx: Context) -> Reply:
        repo, pull = self._need_pull(ctx)
        if "diff" in ctx.accept or "patch" in ctx.accept:
            # application/vnd.github.diff: the whole diff as `git diff` prints it.
            text = ""
            for entry in self._diff_entries(repo, pull, pull.head_sha):
                old = entry.get("previous_filename", entry["filename"])
                text += f"diff --git a/{old} b/{entry['filename']}\n"
                text += f"--- {'/dev/null' if entry['status'] == 'added' else 'a/' + old}\n"
                text += f"+++ {'/dev/null' if entry['status'] == 'removed' else 'b/' + entry['filename']}\n"
                text += entry.get("patch", "") + "\n"
            return Reply(200, text.encode(), content_type="application/vnd.github.diff; charset=utf-8")
        return Reply(200, self._pull_json(repo, pull))

    @route("GET", "/repos/{owner}/{repo}/pulls/{pull_number}/files")
    def _list_pull_files(self, ctx: Context) -> Reply:
        repo, pull = self._need_pull(ctx)
        # GitHub lists at most 3000 files of a pull request, whatever the page.
        entries = self._diff_entries(repo, pull, pull.head_sha)[:PR_FILES_CAP]
        page, headers = self._page(ctx, entries)
        return Reply(200, page, headers)

    @route("GET", "/repos/{owner}/{repo}/pulls/{pull_number}/commits")
    def _list_pull_commits(self, ctx: Context) -> Reply:
        repo, pull = self._need_pull(ctx)
        # the head's ancestors that the base does not have, oldest first; GitHub lists at most 250
        base = set(self._ancestors(repo, pull.base_sha))
        commits = [sha for sha in reversed(self._ancestors(repo, pull.head_sha)) if sha not in base][:250]
        page, headers = self._page(ctx, [self._commit_json(repo, repo.commits[sha]) for sha in commits])
        return Reply(200, page, headers)

    @route("GET", "/repos/{owner}/{repo}/issues/{issue_number}")
    def _get_issue(self, ctx: Context) -> Reply:
        repo = self._need_repo(ctx)
        if int(ctx.params["issue_number"]) in repo.issues:
            return Reply(200, self._plain_issue_json(repo, int(ctx.params["issue_number"])))
        repo, pull = self._need_pull(ctx, "issue_number")
        return Reply(200, self._issue_json(repo, pull))

    @route("PATCH", "/repos/{owner}/{repo}/issues/{issue_number}")
    def _edit_issue(self, ctx: Context) -> Reply:
        """Edit a plain issue's title, body or state (what drbot's tracking section needs of it)."""
        repo = self._need_repo(ctx)
        number = int(ctx.params["issue_number"])
        if number not in repo.issues:
            raise GitHubError(404, "Not Found")
        issue = repo.issues[number]
        if (ctx.body.get("body") or "").strip():  # an issue may have an empty body; never an overlong one
            self._check_body(ctx.body["body"], "Issue")
        for name in ("title", "body", "state"):
            if name in ctx.body:
                issue[name] = ctx.body[name]
        issue["updated_at"] = iso()
        return Reply(200, self._plain_issue_json(repo, number))

    # -- routes: contents, trees, blobs, tarballs ---------------------------------------------------------------

    def _content_links(self, repo: Repo, path: str, sha: str, kind: str, ref: str) -> dict:
        api = f"{self.api}/repos/{repo.full_name}"
        git = f"{api}/git/{'trees' if kind == 'dir' else 'blobs'}/{sha}"
        html = f"{WEB}/{repo.full_name}/{'tree' if kind == 'dir' else 'blob'}/{ref}/{quote(path)}"
        url = f"{api}/contents/{quote(path)}?ref={ref}"
        return {"url": url, "git_url": git, "html_url": html, "_links": {"self": url, "git": git, "html": html}}

    @route("GET", "/repos/{owner}/{repo}/contents/{path}")
    def _get_contents(self, ctx: Context) -> Reply:
        repo = self._need_repo(ctx)
        ref = ctx.query.get("ref") or repo.default_branch
        commit = self._resolve(repo, ref)
        path = ctx.params["path"].strip("/")
        data = commit.files.get(path)
        if data is not None:
            if "application/vnd.github.raw" in ctx.accept or "application/vnd.github.v3.raw" in ctx.accept:
                return Reply(200, data, content_type="application/vnd.github.raw; charset=utf-8")
            sha = blob_sha(data)
            inline = len(data) <= CONTENTS_INLINE_MAX
            return Reply(
                200,
                {
                    "type": "file",
                    # Over 1 MB GitHub sends no content and encoding "none": use the raw media type or blobs.
                    "encoding": "base64" if inline else "none",
                    "size": len(data),
                    "name": path.rsplit("/", 1)[-1],
                    "path": path,
                    "content": _b64(data) if inline else "",
                    "sha": sha,
                    **self._content_links(repo, path, sha, "file", ref),
                    "download_url": f"https://raw.githubusercontent.com/{repo.full_name}/{ref}/{quote(path)}",
                },
            )
        prefix = path + "/"
        children = [
            entry for entry in commit.entries if entry.path.startswith(prefix) and "/" not in entry.path[len(prefix) :]
        ]
        if not children:
            raise GitHubError(404, "Not Found", doc=ctx.op.doc_url)
        listing = []
        for entry in children:
            kind = "dir" if entry.type == "tree" else "file"
            listing.append(
                {
                    "type": kind,
                    "size": entry.size or 0,
                    "name": entry.path.rsplit("/", 1)[-1],
                    "path": entry.path,
                    "sha": entry.sha,
                    **self._content_links(repo, entry.path, entry.sha, kind, ref),
                    "download_url": None
                    if kind == "dir"
                    else f"https://raw.githubusercontent.com/{repo.full_name}/{ref}/{quote(entry.path)}",
                }
            )
        return Reply(200, listing)

    @route("GET", "/repos/{owner}/{repo}/git/trees/{tree_sha}")
    def _get_tree(self, ctx: Context) -> Reply:
        repo = self._need_repo(ctx)
        sha = ctx.params["tree_sha"]
        api = f"{self.api}/repos/{repo.full_name}/git"
        if sha in repo.trees:
            tree_sha = sha
        else:
            tree_sha = self._resolve(repo, sha).tree
        # GitHub recurses when `recursive` is present with any value, even "0" or "false".
        if "recursive" in ctx.query:
            commit = next(c for c in repo.commits.values() if tree_sha in c.trees)
            base = self._tree_path(commit, tree_sha)
            entries = [
                (entry.path[len(base) :], entry)
                for entry in commit.entries
                if entry.path.startswith(base) and entry.path != base.rstrip("/")
            ]
        else:
            entries = [(entry.path.rsplit("/", 1)[-1], entry) for entry in repo.trees[tree_sha]]
        tree = []
        for path, entry in entries:
            item = {"path": path, "mode": entry.mode, "type": entry.type, "sha": entry.sha}
            if entry.type == "blob":
                item["size"] = entry.size
            item["url"] = f"{api}/{'blobs' if entry.type == 'blob' else 'trees'}/{entry.sha}"
            tree.append(item)
        return Reply(200, {"sha": tree_sha, "url": f"{api}/trees/{tree_sha}", "tree": tree, "truncated": False})

    @staticmethod
    def _tree_path(commit: Commit, tree_sha: str) -> str:
        """The directory prefix ("" for the root, "src/" for a subtree) at which `tree_sha` sits in `commit`."""
        if tree_sha == commit.tree:
            return ""
        entry = next(entry for entry in commit.entries if entry.type == "tree" and entry.sha == tree_sha)
        return entry.path + "/"

    @route("GET", "/repos/{owner}/{repo}/git/blobs/{file_sha}")
    def _get_blob(self, ctx: Context) -> Reply:
        repo = self._need_repo(ctx)
        data = repo.blobs.get(ctx.params["file_sha"])
        if data is None:
            raise GitHubError(404, "Not Found", doc=ctx.op.doc_url)
        if "application/vnd.github.raw" in ctx.accept:
            return Reply(200, data, content_type="application/vnd.github.raw; charset=utf-8")
        sha = ctx.params["file_sha"]
        return Reply(
            200,
            {
                "sha": sha,
                "node_id": node_id("Blob", int(sha[:8], 16)),
                "size": len(data),
                "url": f"{self.api}/repos/{repo.full_name}/git/blobs/{sha}",
                "content": _b64(data),
                "encoding": "base64",
            },
        )

    def _ancestors(self, repo: Repo, sha: str) -> list[str]:
        """`sha` and every commit it descends from, nearest first."""
        seen: list[str] = []
        frontier = [sha]
        while frontier:
            current = frontier.pop(0)
            if current in seen or current not in repo.commits:
                continue
            seen.append(current)
            frontier.extend(repo.commits[current].parents)
        return seen

    def _commit_json(self, repo: Repo, commit: Commit) -> dict:
        api = f"{self.api}/repos/{repo.full_name}"
        person = {"name": "drbot test", "email": "test@example.invalid", "date": iso()}
        return {
            "url": f"{api}/commits/{commit.sha}",
            "sha": commit.sha,
            "node_id": node_id("Commit", int(commit.sha[:7], 16)),
            "html_url": f"{WEB}/{repo.full_name}/commit/{commit.sha}",
            "comments_url": f"{api}/commits/{commit.sha}/comments",
            "commit": {
                "author": person,
                "committer": person,
                "comment_count": 0,
                "message": commit.message,
                "tree": {"sha": commit.tree, "url": f"{api}/git/trees/{commit.tree}"},
                "url": f"{api}/git/commits/{commit.sha}",
            },
            "author": None,
            "committer": None,
            "parents": [{"sha": p, "url": f"{api}/commits/{p}"} for p in commit.parents],
        }

    @route("GET", "/repos/{owner}/{repo}/compare/{base}...{head}")
    def _compare(self, ctx: Context) -> Reply:
        """Only what a review needs: the merge base, ahead/behind counts and the commits (files are left out)."""
        repo = self._need_repo(ctx)
        base_ref, head_ref = ctx.params["base"], ctx.params["head"]
        basehead = f"{base_ref}...{head_ref}"
        base, head = self._resolve(repo, base_ref), self._resolve(repo, head_ref)
        base_line, head_line = self._ancestors(repo, base.sha), self._ancestors(repo, head.sha)
        merge_base = next((sha for sha in head_line if sha in base_line), None)
        if merge_base is None:
            raise GitHubError(404, f"No common ancestor between {base_ref} and {head_ref}.")
        ahead = head_line[: head_line.index(merge_base)]
        behind = base_line[: base_line.index(merge_base)]
        status = (
            "identical"
            if not ahead and not behind
            else "ahead"
            if not behind
            else "behind"
            if not ahead
            else "diverged"
        )
        api = f"{self.api}/repos/{repo.full_name}"
        web_url = f"{WEB}/{repo.full_name}/compare/{basehead}"
        return Reply(
            200,
            {
                "url": f"{api}/compare/{basehead}",
                "html_url": web_url,
                "permalink_url": web_url,
                "diff_url": f"{web_url}.diff",
                "patch_url": f"{web_url}.patch",
                "base_commit": self._commit_json(repo, base),
                "merge_base_commit": self._commit_json(repo, repo.commits[merge_base]),
                "status": status,
                "ahead_by": len(ahead),
                "behind_by": len(behind),
                "total_commits": len(ahead),
                "commits": [self._commit_json(repo, repo.commits[sha]) for sha in reversed(ahead)],
            },
        )

    @route("GET", "/repos/{owner}/{repo}/tarball/{ref}")
    def _get_tarball(self, ctx: Context) -> Reply:
        repo = self._need_repo(ctx)
        commit = self._resolve(repo, ctx.params["ref"])
        owner, name = repo.full_name.split("/")
        top = f"{owner}-{name}-{commit.sha[:7]}"
        # GitHub answers 302 to codeload.github.com; the fake serves the archive itself.
        headers = {"content-disposition": f"attachment; filename={top}.tar.gz"}
        return Reply(200, tarball(commit, top), headers, content_type="application/x-gzip")

    # -- routes: issue comments and reactions -------------------------------------------------------------------

    @route("GET", "/repos/{owner}/{repo}/issues/{issue_number}/comments")
    def _list_comments(self, ctx: Context) -> Reply:
        repo, pull = self._need_pull(ctx, "issue_number")
        comments = [self._comment_json(repo, cid) for cid in pull.comment_ids]
        if "since" in ctx.query:
            comments = [comment for comment in comments if comment["updated_at"] >= ctx.query["since"]]
        page, headers = self._page(ctx, comments)
        return Reply(200, page, headers)

    def _check_body(self, body: str, resource: str = "IssueComment") -> None:
        if not body.strip():
            raise GitHubError(
                422, "Validation Failed", [{"resource": resource, "code": "missing_field", "field": "body"}]
            )
        if len(body) > COMMENT_MAX:
            error = {
                "resource": resource,
                "code": "custom",
                "field": "body",
                "message": f"body is too long (maximum is {COMMENT_MAX} characters)",
            }
            raise GitHubError(422, "Validation Failed", [error])

    @route("POST", "/repos/{owner}/{repo}/issues/{issue_number}/comments")
    def _create_comment_route(self, ctx: Context) -> Reply:
        repo, _ = self._need_pull(ctx, "issue_number")
        self._check_body(ctx.body["body"])
        comment = self._create_comment(
            repo, int(ctx.params["issue_number"]), ctx.body["body"], self._actor(ctx), via_app=True
        )
        return Reply(201, comment, {"location": comment["url"]})

    def _need_comment(self, ctx: Context) -> tuple[Repo, int]:
        repo = self._need_repo(ctx)
        comment_id = int(ctx.params["comment_id"])
        if comment_id not in repo.comments:
            raise GitHubError(404, "Not Found")
        return repo, comment_id

    @route("GET", "/repos/{owner}/{repo}/issues/comments/{comment_id}")
    def _get_comment(self, ctx: Context) -> Reply:
        repo, comment_id = self._need_comment(ctx)
        return Reply(200, self._comment_json(repo, comment_id))

    @route("PATCH", "/repos/{owner}/{repo}/issues/comments/{comment_id}")
    def _edit_comment(self, ctx: Context) -> Reply:
        repo, comment_id = self._need_comment(ctx)
        self._check_body(ctx.body["body"])
        if repo.comments[comment_id]["user"]["login"] != self._actor(ctx)["login"]:
            raise GitHubError(403, "Resource not accessible by integration")
        repo.comments[comment_id].update(body=ctx.body["body"], updated_at=iso())
        return Reply(200, self._comment_json(repo, comment_id))

    @route("POST", "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions")
    def _react(self, ctx: Context) -> Reply:
        repo, comment_id = self._need_comment(ctx)
        actor = self._actor(ctx)
        reactions = repo.reactions.setdefault(comment_id, [])
        for reaction in reactions:
            if reaction["user"]["login"] == actor["login"] and reaction["content"] == ctx.body["content"]:
                return Reply(200, reaction)  # GitHub answers 200 with the existing reaction
        reaction_id = next(self._ids) + 500_000_000
        reaction = {
            "id": reaction_id,
            "node_id": node_id("Reaction", reaction_id),
            "user": actor,
            "content": ctx.body["content"],
            "created_at": iso(),
        }
        reactions.append(reaction)
        return Reply(201, reaction)

    @route("GET", "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions")
    def _list_reactions(self, ctx: Context) -> Reply:
        repo, comment_id = self._need_comment(ctx)
        reactions = [r for r in repo.reactions.get(comment_id, []) if ctx.query.get("content") in (None, r["content"])]
        page, headers = self._page(ctx, reactions)
        return Reply(200, page, headers)

    # -- routes: reviews ----------------------------------------------------------------------------------------

    @route("GET", "/repos/{owner}/{repo}/pulls/{pull_number}/reviews")
    def _list_reviews(self, ctx: Context) -> Reply:
        _, pull = self._need_pull(ctx)
        page, headers = self._page(ctx, pull.reviews)
        return Reply(200, page, headers)

    @route("GET", "/repos/{owner}/{repo}/pulls/{pull_number}/comments")
    def _list_review_comments(self, ctx: Context) -> Reply:
        _, pull = self._need_pull(ctx)
        page, headers = self._page(ctx, pull.review_comments)
        return Reply(200, page, headers)

    @route("POST", "/repos/{owner}/{repo}/pulls/{pull_number}/reviews")
    def _create_review(self, ctx: Context) -> Reply:
        repo, pull = self._need_pull(ctx)
        body = ctx.body or {}
        commit_id = body.get("commit_id") or pull.head_sha
        if commit_id not in pull.heads:
            raise GitHubError(422, "Unprocessable Entity", ["commit_id is not part of the pull request"])
        event = body.get("event")
        text = body.get("body") or ""
        comments = body.get("comments") or []
        if event == "REQUEST_CHANGES" and not text.strip() or event == "COMMENT" and not text.strip() and not comments:
            raise GitHubError(422, "Unprocessable Entity", ["Review body can't be blank"])
        if len(text) > COMMENT_MAX:
            raise GitHubError(422, "Unprocessable Entity", [f"Body is too long (maximum is {COMMENT_MAX} characters)"])
        patches = {entry["filename"]: entry.get("patch") for entry in self._diff_entries(repo, pull, commit_id)}
        placed = [self._place_comment(comment, patches) for comment in comments]
        review_id = next(self._ids) + 600_000_000
        api = f"{self.api}/repos/{repo.full_name}"
        html = f"{WEB}/{repo.full_name}/pull/{pull.number}"
        actor = self._actor(ctx)
        now = iso()
        states = {"APPROVE": "APPROVED", "REQUEST_CHANGES": "CHANGES_REQUESTED", "COMMENT": "COMMENTED"}
        review = {
            "id": review_id,
            "node_id": node_id("PullRequestReview", review_id),
            "user": actor,
            "body": text,
            "state": states.get(event, "PENDING"),
            "html_url": f"{html}#pullrequestreview-{review_id}",
            "pull_request_url": f"{api}/pulls/{pull.number}",
            "author_association": "NONE",
            "_links": {
                "html": {"href": f"{html}#pullrequestreview-{review_id}"},
                "pull_request": {"href": f"{api}/pulls/{pull.number}"},
            },
            "commit_id": commit_id,
        }
        if event:
            review["submitted_at"] = now
        pull.reviews.append(review)
        for comment, (diff_hunk, position) in zip(comments, placed, strict=True):
            comment_id = next(self._ids) + 700_000_000
            url = f"{api}/pulls/comments/{comment_id}"
            pull.review_comments.append(
                {
                    "url": url,
                    "pull_request_review_id": review_id,
                    "id": comment_id,
                    "node_id": node_id("PullRequestReviewComment", comment_id),
                    "diff_hunk": diff_hunk,
                    "path": comment["path"],
                    "position": position,
                    "original_position": position,
                    "commit_id": commit_id,
                    "original_commit_id": commit_id,
                    "user": actor,
                    "body": comment["body"],
                    "created_at": now,
                    "updated_at": now,
                    "html_url": f"{html}#discussion_r{comment_id}",
                    "pull_request_url": f"{api}/pulls/{pull.number}",
                    "author_association": "NONE",
                    "_links": {
                        "self": {"href": url},
                        "html": {"href": f"{html}#discussion_r{comment_id}"},
                        "pull_request": {"href": f"{api}/pulls/{pull.number}"},
                    },
                    "start_line": comment.get("start_line"),
                    "original_start_line": comment.get("start_line"),
                    "start_side": comment.get("start_side", comment.get("side", "RIGHT"))
                    if comment.get("start_line")
                    else None,
                    "line": comment.get("line"),
                    "original_line": comment.get("line"),
                    "side": comment.get("side", "RIGHT"),
                    "subject_type": "line",
                }
            )
        return Reply(200, review)

    @staticmethod
    def _place_comment(comment: dict, patches: dict[str, str | None]) -> tuple[str, int]:
        """Check an inline comment lands on the diff (as GitHub does); returns its diff hunk and position."""
        path = comment["path"]
        if path not in patches:
            raise GitHubError(422, "Unprocessable Entity", ["Path could not be resolved"])
        text = patches[path] or ""
        lines = text.split("\n")
        left, right, positions = diff_lines(text)
        if "line" in comment:
            side = comment.get("side", "RIGHT")
            if side not in ("LEFT", "RIGHT"):
                raise GitHubError(422, "Unprocessable Entity", [f"Side must be LEFT or RIGHT, not {side!r}"])
            valid = left if side == "LEFT" else right
            if comment["line"] not in valid:
                raise GitHubError(422, "Unprocessable Entity", ["Line could not be resolved"])
            if "start_line" in comment:
                start_side = comment.get("start_side", side)
                if comment["start_line"] >= comment["line"] or comment["start_line"] not in (
                    left if start_side == "LEFT" else right
                ):
                    raise GitHubError(422, "Unprocessable Entity", ["Start line could not be resolved"])
                # a multi-line comment (and so a multi-line suggestion) stays inside one hunk of the diff
                first = FakeGitHub._position(lines, start_side, comment["start_line"])
                last = FakeGitHub._position(lines, side, comment["line"])
                if any(lines[i].startswith("@@") for i in range(first + 1, last + 1)):
                    raise GitHubError(
                        422, "Unprocessable Entity", ["start_line must be part of the same hunk as the line"]
                    )
            position = FakeGitHub._position(lines, side, comment["line"])
        elif "position" in comment:
            position = comment["position"]
            if not 1 <= position <= positions:
                raise GitHubError(
                    422,
                    "Unprocessable Entity",
                    [
                        "Pull request review thread position is invalid",
                        "Pull request review thread diff hunk can't be blank",
                    ],
                )
        else:
            raise GitHubError(422, "Unprocessable Entity", ["Either line or position is required"])
        # The hunk as GitHub quotes it: from the hunk header down to the commented line.
        start = max(i for i in range(position + 1) if lines[i].startswith("@@"))
        return "\n".join(lines[start : position + 1]), position

    @staticmethod
    def _position(lines: list[str], side: str, target: int) -> int:
        old = new = 0
        for index, line in enumerate(lines):
            if line.startswith("@@"):
                header = line.split("@@")[1].split()
                old, new = int(header[0][1:].split(",")[0]), int(header[1][1:].split(",")[0])
                continue
            if line.startswith("\\"):
                continue
            if line.startswith("-"):
                if side == "LEFT" and old == target:
                    return index
                old += 1
            elif line.startswith("+"):
                if side == "RIGHT" and new == target:
                    return index
                new += 1
            else:
                if (side == "LEFT" and old == target) or (side == "RIGHT" and new == target):
                    return index
                old, new = old + 1, new + 1
        raise AssertionError("unreachable: the line was found by diff_lines")

    # -- routes: check runs -------------------------------------------------------------------------------------

    def _apply_check_run(self, repo: Repo, run: dict, body: dict) -> None:
        output = body.get("output")
        annotations = (output or {}).get("annotations", [])
        if len(annotations) > ANNOTATIONS_PER_REQUEST:
            raise GitHubError(422, "Validation Failed", ["Only 50 annotations are allowed per request"])
        for annotation in annotations:
            has_columns = "start_column" in annotation or "end_column" in annotation
            if has_columns and annotation["start_line"] != annotation["end_line"]:
                raise GitHubError(
                    422, "Unprocessable Entity", ["start_column and end_column need start_line == end_line"]
                )
        for key in ("summary", "text"):
            if len((output or {}).get(key) or "") > CHECK_TEXT_MAX:
                raise GitHubError(422, "Invalid request.", [f"output.{key} is too long (maximum is {CHECK_TEXT_MAX})"])
        status = body.get("status", run["status"])
        if body.get("conclusion"):
            status = "completed"
        if status == "completed" and not (body.get("conclusion") or run["conclusion"]):
            raise GitHubError(422, "Invalid request.\n\nconclusion is required when status is completed.")
        for key in ("name", "details_url", "external_id", "started_at"):
            if key in body:
                run[key] = body[key]
        run["status"] = status
        if status == "completed":
            run["conclusion"] = body.get("conclusion") or run["conclusion"]
            run["completed_at"] = body.get("completed_at") or run["completed_at"] or iso()
        if output is not None:
            for key in ("title", "summary", "text"):
                if key in output:
                    run["output"][key] = output[key]
            stored = repo.annotations.setdefault(run["id"], [])
            for annotation in annotations:
                stored.append(
                    {
                        "path": annotation["path"],
                        "start_line": annotation["start_line"],
                        "end_line": annotation["end_line"],
                        "start_column": annotation.get("start_column"),
                        "end_column": annotation.get("end_column"),
                        "annotation_level": annotation["annotation_level"],
                        "title": annotation.get("title"),
                        "message": annotation["message"],
                        "raw_details": annotation.get("raw_details"),
                        "blob_href": f"{WEB}/{repo.full_name}/blob/{run['head_sha']}/{quote(annotation['path'])}",
                    }
                )
            run["output"]["annotations_count"] = len(stored)

    @route("POST", "/repos/{owner}/{repo}/check-runs")
    def _create_check_run(self, ctx: Context) -> Reply:
        repo = self._need_repo(ctx)
        head_sha = ctx.body["head_sha"]
        if head_sha not in repo.commits:
            raise GitHubError(422, f"No commit found for SHA: {head_sha}")
        run_id = next(self._ids) + 800_000_000
        suite = repo.check_suites.setdefault(head_sha, next(self._ids) + 900_000_000)
        api = f"{self.api}/repos/{repo.full_name}"
        pulls = [
            {
                "id": pull.id,
                "number": pull.number,
                "url": f"{api}/pulls/{pull.number}",
                "head": {
                    "ref": pull.head_ref,
                    "sha": pull.head_sha,
                    "repo": {"id": repo.id, "url": api, "name": repo.json["name"]},
                },
                "base": {
                    "ref": pull.base_ref,
                    "sha": pull.base_sha,
                    "repo": {"id": repo.id, "url": api, "name": repo.json["name"]},
                },
            }
            for pull in repo.pulls.values()
            if pull.head_sha == head_sha
        ]
        run = {
            "id": run_id,
            "head_sha": head_sha,
            "node_id": node_id("CheckRun", run_id),
            "external_id": "",
            "url": f"{api}/check-runs/{run_id}",
            "html_url": f"{WEB}/{repo.full_name}/runs/{run_id}",
            "details_url": None,
            "status": "queued",
            "conclusion": None,
            "started_at": iso(),
            "completed_at": None,
            "output": {
                "title": None,
                "summary": None,
                "text": None,
                "annotations_count": 0,
                "annotations_url": f"{api}/check-runs/{run_id}/annotations",
            },
            "name": ctx.body["name"],
            "check_suite": {"id": suite},
            "app": self.app_json,
            "pull_requests": pulls,
        }
        self._apply_check_run(repo, run, ctx.body)
        repo.check_runs[run_id] = run
        return Reply(201, run)

    def _need_check_run(self, ctx: Context) -> tuple[Repo, dict]:
        repo = self._need_repo(ctx)
        run = repo.check_runs.get(int(ctx.params["check_run_id"]))
        if run is None:
            raise GitHubError(404, "Not Found")
        return repo, run

    @route("PATCH", "/repos/{owner}/{repo}/check-runs/{check_run_id}")
    def _update_check_run(self, ctx: Context) -> Reply:
        repo, run = self._need_check_run(ctx)
        self._apply_check_run(repo, run, ctx.body)
        return Reply(200, run)

    @route("GET", "/repos/{owner}/{repo}/check-runs/{check_run_id}")
    def _get_check_run(self, ctx: Context) -> Reply:
        return Reply(200, self._need_check_run(ctx)[1])

    @route("GET", "/repos/{owner}/{repo}/check-runs/{check_run_id}/annotations")
    def _list_annotations(self, ctx: Context) -> Reply:
        repo, run = self._need_check_run(ctx)
        page, headers = self._page(ctx, repo.annotations.get(run["id"], []))
        return Reply(200, page, headers)

    @route("GET", "/repos/{owner}/{repo}/commits/{ref}/check-runs")
    def _list_check_runs(self, ctx: Context) -> Reply:
        repo = self._need_repo(ctx)
        sha = self._resolve(repo, ctx.params["ref"]).sha
        runs = [run for run in repo.check_runs.values() if run["head_sha"] == sha]
        if "check_name" in ctx.query:
            runs = [run for run in runs if run["name"] == ctx.query["check_name"]]
        if "status" in ctx.query:
            runs = [run for run in runs if run["status"] == ctx.query["status"]]
        if ctx.query.get("filter", "latest") == "latest":
            latest: dict[str, dict] = {}
            for run in runs:
                latest[run["name"]] = run  # ids grow, so the last one seen is the most recent
            runs = list(latest.values())
        runs.sort(key=lambda run: run["id"], reverse=True)
        page, headers = self._page(ctx, runs)
        return Reply(200, {"total_count": len(runs), "check_runs": page}, headers)

    # -- routes: labels -----------------------------------------------------------------------------------------

    @route("GET", "/repos/{owner}/{repo}/labels")
    def _list_repo_labels(self, ctx: Context) -> Reply:
        page, headers = self._page(ctx, list(self._need_repo(ctx).labels.values()))
        return Reply(200, page, headers)

    @route("GET", "/repos/{owner}/{repo}/labels/{name}")
    def _get_label(self, ctx: Context) -> Reply:
        label = self._need_repo(ctx).labels.get(ctx.params["name"].lower())
        if label is None:
            raise GitHubError(404, "Not Found", doc=ctx.op.doc_url)
        return Reply(200, label)

    @route("POST", "/repos/{owner}/{repo}/labels")
    def _create_label(self, ctx: Context) -> Reply:
        repo = self._need_repo(ctx)
        name = ctx.body["name"]
        if name.lower() in repo.labels:
            raise GitHubError(
                422, "Validation Failed", [{"resource": "Label", "code": "already_exists", "field": "name"}]
            )
        color = ctx.body.get("color", "ededed").removeprefix("#")
        if not re.fullmatch(r"[0-9a-fA-F]{6}", color):
            raise GitHubError(422, "Validation Failed", [{"resource": "Label", "code": "invalid", "field": "color"}])
        return Reply(201, self._ensure_label(repo, name, color, ctx.body.get("description")))

    @route("GET", "/repos/{owner}/{repo}/issues/{issue_number}/labels")
    def _list_issue_labels(self, ctx: Context) -> Reply:
        repo, pull = self._need_pull(ctx, "issue_number")
        page, headers = self._page(ctx, [repo.labels[name.lower()] for name in pull.labels])
        return Reply(200, page, headers)

    def _label_names(self, body: Any) -> list[str]:
        items = body.get("labels", []) if isinstance(body, dict) else body or []
        return [item if isinstance(item, str) else item["name"] for item in items]

    @route("POST", "/repos/{owner}/{repo}/issues/{issue_number}/labels")
    def _add_issue_labels(self, ctx: Context) -> Reply:
        repo, pull = self._need_pull(ctx, "issue_number")
        for name in self._label_names(ctx.body):
            label = self._ensure_label(repo, name)  # adding an unknown label creates it, as GitHub does
            if label["name"] not in pull.labels:
                pull.labels.append(label["name"])
        return Reply(200, [repo.labels[name.lower()] for name in pull.labels])

    @route("PUT", "/repos/{owner}/{repo}/issues/{issue_number}/labels")
    def _set_issue_labels(self, ctx: Context) -> Reply:
        repo, pull = self._need_pull(ctx, "issue_number")
        pull.labels = [self._ensure_label(repo, name)["name"] for name in dict.fromkeys(self._label_names(ctx.body))]
        return Reply(200, [repo.labels[name.lower()] for name in pull.labels])

    @route("DELETE", "/repos/{owner}/{repo}/issues/{issue_number}/labels/{name}")
    def _remove_issue_label(self, ctx: Context) -> Reply:
        repo, pull = self._need_pull(ctx, "issue_number")
        wanted = ctx.params["name"].lower()
        kept = [name for name in pull.labels if name.lower() != wanted]
        if len(kept) == len(pull.labels):
            raise GitHubError(404, "Label does not exist", doc=ctx.op.doc_url)
        pull.labels = kept
        return Reply(200, [repo.labels[name.lower()] for name in pull.labels])

    # -- routes: permissions ------------------------------------------------------------------------------------

    @route("GET", "/repos/{owner}/{repo}/collaborators/{username}/permission")
    def _get_permission(self, ctx: Context) -> Reply:
        repo = self._need_repo(ctx)
        login = ctx.params["username"]
        role = repo.permissions.get(login, "none" if repo.private else "read")
        # `permission` keeps the legacy four values: maintain reads as write and triage as read; role_name is exact.
        legacy = {"maintain": "write", "triage": "read"}.get(role, role)
        ranks = PERMISSIONS[::-1]  # none < read < triage < write < maintain < admin
        rank = ranks.index(role)
        user = dict(self._user(login))
        user["role_name"] = role
        user["permissions"] = {
            "admin": rank >= ranks.index("admin"),
            "maintain": rank >= ranks.index("maintain"),
            "push": rank >= ranks.index("write"),
            "triage": rank >= ranks.index("triage"),
            "pull": rank >= ranks.index("read"),
        }
        return Reply(200, {"permission": legacy, "role_name": role, "user": user})
