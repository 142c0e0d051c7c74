"""The shared fake GitHub, driven by gidgethub's real aiohttp client as the bot drives it."""

from __future__ import annotations

import base64
import calendar
import gzip
import hashlib
import io
import json
import tarfile
import time

import aiohttp
import gidgethub
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fakegithub import delivery, example, examples, issue_comment_payload, load_openapi, sign
from fakegithub.server import ROUTES
from gidgethub import apps, sansio
from gidgethub.aiohttp import GitHubAPI


REPO = "huggingface/diffusers"
PIPELINE = "src/diffusers/pipelines/flux/pipeline_flux.py"
OLD = "".join(f"line {i}\n" for i in range(1, 41))
NEW = OLD.replace("line 10\n", "line 10 changed\n").replace("line 30\n", "")


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def gh(github, http):
    """A client for installation 1 of the App, authenticated with a fresh installation token."""
    return GitHubAPI(http, "drbot-tests", base_url=github.url, oauth_token=github.issue_token(1))


@pytest.fixture(autouse=True)
def _fake_answers_as_github_documents(github):
    # The fake's own answers must fit the response schemas of the description, or bot tests learn wrong shapes.
    yield
    assert github.response_violations == []


def pr(github, number=1, **kwargs):
    github.add_repo(REPO, files={PIPELINE: OLD, "README.md": "# diffusers\n"})
    return github.add_pull(REPO, number, head_files={PIPELINE: NEW}, **kwargs)


def test_every_route_is_an_operation_of_the_description():
    templates = {(op.method, op.template) for ops in load_openapi().operations.values() for op in ops}
    assert set(ROUTES) <= templates


async def test_installation_token_from_an_app_jwt(github, http):
    github.add_repo(REPO, installation_id=7)
    app = GitHubAPI(http, "drbot-tests", base_url=github.url)
    token = await apps.get_installation_access_token(
        app, installation_id="7", app_id=github.app_id, private_key=github.private_key_pem
    )
    expires = calendar.timegm(time.strptime(token["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert token["token"].startswith("ghs_") and abs(expires - time.time() - 3600) < 5
    installation = GitHubAPI(http, "drbot-tests", base_url=github.url, oauth_token=token["token"])
    assert (await installation.getitem(f"/repos/{REPO}"))["full_name"] == REPO
    call = github.requests("POST", "access_tokens")[0]
    assert call.path == "/app/installations/7/access_tokens" and call.json is None


# claims relative to when the test runs, not to when pytest collected it (a busy run can be minutes apart)
@pytest.mark.parametrize(
    "claims, message",
    [
        (lambda now: {"exp": now - 10, "iat": now - 100}, "'Expiration time' claim"),
        (lambda now: {"iat": now - 60, "exp": now + 610}, "too far in the future"),
        (lambda now: {"iss": "999"}, "'Issuer' claim"),
    ],
    ids=["expired", "too-long", "wrong-issuer"],
)
async def test_bad_app_jwts_get_401(github, http, claims, message):
    github.add_repo(REPO)
    app = GitHubAPI(http, "drbot-tests", base_url=github.url)
    with pytest.raises(gidgethub.BadRequest) as caught:
        await app.post("/app/installations/1/access_tokens", data=b"", jwt=github.jwt(**claims(int(time.time()))))
    assert caught.value.status_code == 401 and message in str(caught.value)
    assert github.tokens == {}


async def test_jwt_signed_by_another_key_gets_401(github, http):
    github.add_repo(REPO)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    app = GitHubAPI(http, "drbot-tests", base_url=github.url)
    with pytest.raises(gidgethub.BadRequest) as caught:
        await app.post(
            "/app/installations/1/access_tokens", data=b"", jwt=apps.get_jwt(app_id=github.app_id, private_key=pem)
        )
    assert caught.value.status_code == 401


async def test_repo_requests_need_a_live_token_of_the_repos_installation(github, http):
    github.add_repo(REPO, installation_id=1)
    github.add_repo("someone/else", installation_id=2)
    url = f"/repos/{REPO}"

    async def status(token):
        try:
            await GitHubAPI(http, "t", base_url=github.url, oauth_token=token).getitem(url)
        except gidgethub.HTTPException as error:
            return error.status_code, str(error)
        return 200, ""

    live = github.issue_token(1)
    assert await status(live) == (200, "")
    assert await status(None) == (401, "Requires authentication")
    assert await status("ghs_not_a_token") == (401, "Bad credentials")
    assert await status(github.issue_token(2)) == (403, "Resource not accessible by integration")
    github.expire_token(live)
    assert await status(live) == (401, "Bad credentials")
    async with http.get(github.url + url, headers={"Authorization": f"Bearer {github.issue_token(1)}"}) as response:
        assert response.status == 200  # the "Bearer" scheme works as well as "token"
        body = await response.json()
    assert body["full_name"] == REPO and set(body) >= {"id", "node_id", "html_url", "owner", "default_branch"}


async def test_public_repository_answers_anonymous_reads_only(github, http):
    github.add_repo(REPO, private=False, files={"a.py": "x = 1\n"})
    async with http.get(f"{github.url}/repos/{REPO}/contents/a.py") as response:
        assert response.status == 200
        assert response.headers["x-ratelimit-limit"] == "60"
    async with http.post(f"{github.url}/repos/{REPO}/labels", json={"name": "bug"}) as response:
        assert response.status == 401


async def test_pull_request_and_its_files(github, gh):
    github.add_repo(REPO, files={PIPELINE: OLD, "old_name.py": OLD, "gone.py": "bye\n"})
    pull = github.add_pull(
        REPO, 5, head_files={PIPELINE: NEW, "old_name.py": None, "new_name.py": OLD, "gone.py": None, "new.py": "hi\n"}
    )
    got = await gh.getitem(f"/repos/{REPO}/pulls/5")
    assert got["head"]["sha"] == pull["head"]["sha"] and len(got["head"]["sha"]) == 40
    assert got["user"]["login"] == "alice" and got["user"]["type"] == "User" and got["draft"] is False
    files = {entry["filename"]: entry async for entry in gh.getiter(f"/repos/{REPO}/pulls/5/files")}
    assert {name: entry["status"] for name, entry in files.items()} == {
        PIPELINE: "modified",
        "new_name.py": "renamed",
        "gone.py": "removed",
        "new.py": "added",
    }
    assert files["new_name.py"]["previous_filename"] == "old_name.py" and "patch" not in files["new_name.py"]
    flux = files[PIPELINE]
    assert (flux["additions"], flux["deletions"], flux["changes"]) == (1, 2, 3)
    assert flux["patch"].startswith("@@ -7,7 +7,7 @@ line 6\n line 7\n")
    assert "\n-line 30\n" in flux["patch"]
    assert files["new.py"]["patch"] == "@@ -0,0 +1 @@\n+hi"
    diff = await gh.getitem(f"/repos/{REPO}/pulls/5", accept="application/vnd.github.diff")
    assert f"diff --git a/{PIPELINE} b/{PIPELINE}\n--- a/{PIPELINE}\n+++ b/{PIPELINE}\n@@ -7,7" in diff


async def test_files_pages_carry_a_link_header_on_the_fakes_base_url(github, gh, http):
    github.add_repo(REPO)
    github.add_pull(REPO, 1, head_files={f"f{i:03}.py": f"x = {i}\n" for i in range(250)})
    names = [entry["filename"] async for entry in gh.getiter(f"/repos/{REPO}/pulls/1/files?per_page=100")]
    assert names == [f"f{i:03}.py" for i in range(250)]
    assert [call.query for call in github.requests("GET", "/files$")] == [
        {"per_page": "100"},
        {"per_page": "100", "page": "2"},
        {"per_page": "100", "page": "3"},
    ]
    headers = {"Authorization": f"token {github.issue_token(1)}"}
    async with http.get(f"{github.url}/repos/{REPO}/pulls/1/files?per_page=100&page=2", headers=headers) as response:
        link = response.headers["link"]
    base = f"{github.url}/repos/{REPO}/pulls/1/files?per_page=100"
    assert link == (
        f'<{base}&page=1>; rel="prev", <{base}&page=3>; rel="next", '
        f'<{base}&page=3>; rel="last", <{base}&page=1>; rel="first"'
    )
    async with http.get(f"{github.url}/repos/{REPO}/pulls/1/files?per_page=500", headers=headers) as response:
        assert len(await response.json()) == 100  # GitHub clamps per_page to 100


async def test_files_are_capped_at_3000(github, gh):
    github.add_repo(REPO)
    github.add_pull(REPO, 1, head_files={f"d/f{i:04}.txt": "x\n" for i in range(3005)})
    listed = [entry async for entry in gh.getiter(f"/repos/{REPO}/pulls/1/files?per_page=100")]
    assert len(listed) == 3000
    assert (await gh.getitem(f"/repos/{REPO}/pulls/1"))["changed_files"] == 3005


async def test_contents_base64_raw_directories_and_404(github, gh):
    big = "x" * (1_048_576 + 1)
    github.add_repo(REPO, files={PIPELINE: OLD, "big.txt": big})
    pull = github.add_pull(REPO, 1, head_files={PIPELINE: NEW})
    base_sha, head_sha = pull["base"]["sha"], pull["head"]["sha"]
    at_head = await gh.getitem(f"/repos/{REPO}/contents/{PIPELINE}?ref={head_sha}")
    assert at_head["encoding"] == "base64" and base64.b64decode(at_head["content"]).decode() == NEW
    assert at_head["sha"] == hashlib.sha1(b"blob %d\0" % len(NEW) + NEW.encode()).hexdigest()
    raw = await gh.getitem(f"/repos/{REPO}/contents/{PIPELINE}?ref={base_sha}", accept="application/vnd.github.raw")
    assert raw == OLD
    by_branch = await gh.getitem(f"/repos/{REPO}/contents/{PIPELINE}?ref=main", accept="application/vnd.github.raw")
    assert by_branch == OLD  # the PR's head is not on main
    listing = await gh.getitem(f"/repos/{REPO}/contents/src/diffusers/pipelines")
    assert [(item["name"], item["type"]) for item in listing] == [("flux", "dir")]
    large = await gh.getitem(f"/repos/{REPO}/contents/big.txt")
    assert (large["encoding"], large["content"], large["size"]) == ("none", "", len(big))
    with pytest.raises(gidgethub.BadRequest) as caught:
        await gh.getitem(f"/repos/{REPO}/contents/missing.py?ref={head_sha}")
    assert caught.value.status_code == 404


async def test_trees_and_blobs_are_real_git_objects(github, gh):
    github.add_repo(REPO, files={"README": "hello", "src/y.txt": "z\n", "src/pkg/x.py": "a\nb\nc\n"})
    # The same three files committed with git 2.x give this root tree.
    tree = await gh.getitem(f"/repos/{REPO}/git/trees/main?recursive=1")
    assert tree["sha"] == "27e98612ad733385790c38da0bf494ed9f66f0dc" and tree["truncated"] is False
    assert [(e["path"], e["type"], e.get("size")) for e in tree["tree"]] == [
        ("README", "blob", 5),
        ("src", "tree", None),
        ("src/pkg", "tree", None),
        ("src/pkg/x.py", "blob", 6),
        ("src/y.txt", "blob", 2),
    ]
    top = await gh.getitem(f"/repos/{REPO}/git/trees/{tree['sha']}")
    assert [e["path"] for e in top["tree"]] == ["README", "src"]
    blob_sha = tree["tree"][3]["sha"]
    blob = await gh.getitem(f"/repos/{REPO}/git/blobs/{blob_sha}")
    assert blob_sha == "de980441c3ab03a8c07dda1ad27b8a11f39deb1e"
    assert base64.b64decode(blob["content"]) == b"a\nb\nc\n" and blob["size"] == 6


async def test_comments_create_edit_list_react_and_size_limit(github, gh):
    pr(github)
    github.add_comment(REPO, 1, "/drbot help", user="bob")
    created = await gh.post(f"/repos/{REPO}/issues/1/comments", data={"body": "<!-- drbot:summary -->\nfirst"})
    assert created["user"] == {**created["user"], "login": "drbot[bot]", "type": "Bot"}
    assert created["performed_via_github_app"]["slug"] == "drbot"
    assert created["html_url"].endswith(f"/pull/1#issuecomment-{created['id']}")
    edited = await gh.patch(f"/repos/{REPO}/issues/comments/{created['id']}", data={"body": "second"})
    assert edited["body"] == "second" and edited["created_at"] == created["created_at"]
    assert (await gh.getitem(f"/repos/{REPO}/issues/comments/{created['id']}"))["body"] == "second"
    bodies = [c["body"] async for c in gh.getiter(f"/repos/{REPO}/issues/1/comments?per_page=1")]
    assert bodies == ["/drbot help", "second"] and len(github.requests("GET", "/issues/1/comments")) == 2
    bob = github.comments(REPO, 1)[0]
    with pytest.raises(gidgethub.BadRequest) as caught:
        await gh.patch(f"/repos/{REPO}/issues/comments/{bob['id']}", data={"body": "not yours"})
    assert caught.value.status_code == 403
    first = await gh.post(f"/repos/{REPO}/issues/comments/{bob['id']}/reactions", data={"content": "eyes"})
    again = await gh.post(f"/repos/{REPO}/issues/comments/{bob['id']}/reactions", data={"content": "eyes"})
    assert first == again and [r["content"] for r in github.reactions(REPO, bob["id"])] == ["eyes"]
    assert github.comments(REPO, 1)[0]["reactions"]["eyes"] == 1
    with pytest.raises(gidgethub.ValidationError) as caught:
        await gh.post(f"/repos/{REPO}/issues/1/comments", data={"body": "x" * 65_537})
    assert caught.value.status_code == 422 and "body is too long (maximum is 65536" in str(caught.value)
    await gh.post(f"/repos/{REPO}/issues/1/comments", data={"body": "x" * 65_536})
    assert len(github.comments(REPO, 1)) == 3


async def test_review_comments_must_sit_on_the_diff(github, gh):
    pull = pr(github)
    url = f"/repos/{REPO}/pulls/1/reviews"
    review = await gh.post(
        url,
        data={
            "event": "COMMENT",
            "body": "drbot found 2 things",
            "comments": [
                {"path": PIPELINE, "line": 10, "side": "RIGHT", "body": "DRB002 ..."},
                {"path": PIPELINE, "line": 30, "side": "LEFT", "body": "a deleted line"},
                {"path": PIPELINE, "line": 12, "body": "context lines are in the diff too"},
            ],
        },
    )
    assert review["state"] == "COMMENTED" and review["commit_id"] == pull["head"]["sha"]
    comments = github.review_comments(REPO, 1)
    assert [c["line"] for c in comments] == [10, 30, 12]
    assert comments[0]["diff_hunk"].splitlines()[-1] == "+line 10 changed"
    for bad, reason in [
        ({"path": PIPELINE, "line": 20, "side": "RIGHT", "body": "x"}, "Line could not be resolved"),
        ({"path": PIPELINE, "line": 40, "side": "LEFT", "body": "x"}, "Line could not be resolved"),
        ({"path": "README.md", "line": 1, "body": "x"}, "Path could not be resolved"),
    ]:
        with pytest.raises(gidgethub.ValidationError) as caught:
            await gh.post(url, data={"event": "COMMENT", "body": "b", "comments": [bad]})
        assert caught.value.status_code == 422 and reason in str(caught.value)
    listed = [r async for r in gh.getiter(url)]
    assert [r["id"] for r in listed] == [review["id"]]


async def test_check_run_annotations_accumulate_up_to_50_a_request(github, gh):
    pull = pr(github)
    sha = pull["head"]["sha"]

    def notes(n):
        return [
            {
                "path": PIPELINE,
                "start_line": i + 1,
                "end_line": i + 1,
                "annotation_level": "warning",
                "message": f"m{i}",
            }
            for i in range(n)
        ]

    run = await gh.post(
        f"/repos/{REPO}/check-runs",
        data={
            "name": "drbot",
            "head_sha": sha,
            "status": "in_progress",
            "output": {"title": "t", "summary": "s", "annotations": notes(50)},
        },
    )
    assert run["status"] == "in_progress" and run["pull_requests"][0]["number"] == 1
    done = await gh.patch(
        f"/repos/{REPO}/check-runs/{run['id']}",
        data={"conclusion": "neutral", "output": {"title": "t", "summary": "s2", "annotations": notes(50)}},
    )
    assert (done["status"], done["conclusion"], done["output"]["annotations_count"]) == ("completed", "neutral", 100)
    assert len(github.annotations(REPO, run["id"])) == 100
    listed = await gh.getitem(f"/repos/{REPO}/commits/{sha}/check-runs")
    assert listed["total_count"] == 1 and listed["check_runs"][0]["output"]["summary"] == "s2"
    annotations = [a async for a in gh.getiter(f"/repos/{REPO}/check-runs/{run['id']}/annotations?per_page=100")]
    assert len(annotations) == 100


@pytest.mark.github_violations_ok
async def test_51_annotations_or_a_long_summary_are_refused(github, gh):
    sha = pr(github)["head"]["sha"]
    run = await gh.post(f"/repos/{REPO}/check-runs", data={"name": "drbot", "head_sha": sha})
    too_many = [{"path": "a", "start_line": 1, "end_line": 1, "annotation_level": "notice", "message": "m"}] * 51
    for output in ({"summary": "s", "annotations": too_many}, {"summary": "s" * 65_536}):
        with pytest.raises(gidgethub.BadRequest) as caught:
            await gh.patch(f"/repos/{REPO}/check-runs/{run['id']}", data={"output": output})
        assert caught.value.status_code == 422
    assert "$.output.annotations: fails maxItems=50" in github.violations[0]
    assert "$.output.summary: fails maxLength=65535" in github.violations[1]
    assert github.annotations(REPO, run["id"]) == []


async def test_labels(github, gh):
    pr(github)
    name = "drbot: fixes known finding"
    with pytest.raises(gidgethub.BadRequest) as caught:
        await gh.getitem(f"/repos/{REPO}/labels/{{name}}", {"name": name})
    assert caught.value.status_code == 404
    created = await gh.post(f"/repos/{REPO}/labels", data={"name": name, "color": "5319e7"})
    assert (await gh.getitem(f"/repos/{REPO}/labels/{{name}}", {"name": name}))["id"] == created["id"]
    with pytest.raises(gidgethub.InvalidField):
        await gh.post(f"/repos/{REPO}/labels", data={"name": name})
    on_pr = await gh.post(f"/repos/{REPO}/issues/1/labels", data={"labels": [name, "pattern 2"]})
    assert [label["name"] for label in on_pr] == [name, "pattern 2"]
    assert github.labels(REPO, 1) == [name, "pattern 2"] and "pattern 2" in github.labels(REPO)
    await gh.delete(f"/repos/{REPO}/issues/1/labels/{{name}}", {"name": name})
    assert [label["name"] async for label in gh.getiter(f"/repos/{REPO}/issues/1/labels")] == ["pattern 2"]
    with pytest.raises(gidgethub.BadRequest) as caught:
        await gh.delete(f"/repos/{REPO}/issues/1/labels/{{name}}", {"name": name})
    assert caught.value.status_code == 404


async def test_collaborator_permission(github, gh):
    github.add_repo(REPO)
    for login, role in [("ada", "admin"), ("mo", "maintain"), ("wu", "write"), ("tri", "triage"), ("ro", "read")]:
        github.set_permission(REPO, login, role)
    answers = {}
    for login in ("ada", "mo", "wu", "tri", "ro", "stranger"):
        got = await gh.getitem(f"/repos/{REPO}/collaborators/{login}/permission")
        answers[login] = (got["permission"], got["role_name"], got["user"]["login"])
    assert answers == {
        "ada": ("admin", "admin", "ada"),
        "mo": ("write", "maintain", "mo"),  # GitHub's legacy `permission` maps maintain to write
        "wu": ("write", "write", "wu"),
        "tri": ("read", "triage", "tri"),
        "ro": ("read", "read", "ro"),
        "stranger": ("none", "none", "stranger"),
    }


async def test_tarball_has_githubs_top_directory(github, http):
    pull = pr(github)
    sha = pull["head"]["sha"]
    headers = {"Authorization": f"token {github.issue_token(1)}"}
    async with http.get(f"{github.url}/repos/{REPO}/tarball/{sha}", headers=headers) as response:
        assert response.status == 200 and response.headers["content-type"] == "application/x-gzip"
        data = await response.read()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        top = f"huggingface-diffusers-{sha[:7]}"
        assert tar.pax_headers["comment"] == sha
        assert tar.extractfile(f"{top}/{PIPELINE}").read().decode() == NEW
        assert {member.name.split("/")[0] for member in tar.getmembers()} == {top}


@pytest.mark.github_violations_ok
async def test_requests_the_description_rejects_are_violations(github, gh, http):
    pr(github)
    with pytest.raises(gidgethub.BadRequest) as caught:
        await gh.post(f"/repos/{REPO}/issues/1/comments", data={"bdy": "typo"})
    assert caught.value.status_code == 422
    with pytest.raises(gidgethub.BadRequest):
        await gh.getitem(f"/repos/{REPO}/pulls/1/files?perpage=100")
    with pytest.raises(gidgethub.BadRequest):
        await gh.getitem(f"/repos/{REPO}/pulls/one")
    with pytest.raises(gidgethub.BadRequest) as caught:
        await gh.getitem(f"/repos/{REPO}/no-such-thing")
    assert caught.value.status_code == 404
    with pytest.raises(gidgethub.BadRequest):
        await gh.post(
            f"/repos/{REPO}/check-runs",
            data={"name": "drbot", "head_sha": "0" * 40, "started_at": "2026-01-01T00:00:00"},
        )
    assert len(github.violations) == 5
    comment, query, path_param, unknown, timestamp = github.violations
    assert comment.startswith(f"POST /repos/{REPO}/issues/1/comments (issues/create-comment): ")
    assert "'body' is a required property" in comment
    assert "'perpage' is not one of this operation's" in query
    assert "pull_number='one'" in path_param
    assert "no operation of GitHub's REST API" in unknown
    assert "RFC 3339" in timestamp or "date-time" in timestamp
    assert github.comments(REPO, 1) == []


async def test_calls_are_recorded_in_order(github, gh):
    pr(github)
    await gh.post(f"/repos/{REPO}/issues/1/comments", data={"body": "hi"})
    await gh.getitem(f"/repos/{REPO}/pulls/1/files?per_page=5")
    first, second = github.calls
    assert first[:4] == ("POST", f"/repos/{REPO}/issues/1/comments", {}, {"body": "hi"})
    assert second[:4] == ("GET", f"/repos/{REPO}/pulls/1/files", {"per_page": "5"}, None)
    assert first.time <= second.time <= time.monotonic()


async def test_server_errors_then_recovery(github, gh):
    pr(github)
    fault = github.fail("GET", r"/pulls/1$", status=502, times=2)
    for _ in range(2):
        with pytest.raises(gidgethub.GitHubBroken) as caught:
            await gh.getitem(f"/repos/{REPO}/pulls/1")
        assert caught.value.status_code == 502
    assert (await gh.getitem(f"/repos/{REPO}/pulls/1"))["number"] == 1
    assert fault.hits == 2 and fault.times == 0
    github.fail("*", "/comments", status=500)
    with pytest.raises(gidgethub.GitHubBroken):
        await gh.post(f"/repos/{REPO}/issues/1/comments", data={"body": "x"})
    assert github.comments(REPO, 1) == []


async def test_secondary_rate_limit_is_a_403_with_retry_after(github, http):
    pr(github)
    github.fail("POST", "/comments$", status=403)
    github.fail("POST", "/comments$", status=429, headers={"retry-after": "2"})
    url = f"{github.url}/repos/{REPO}/issues/1/comments"
    headers = {"Authorization": f"token {github.issue_token(1)}"}
    for status, retry_after in [(403, "60"), (429, "2"), (201, None)]:
        async with http.post(url, json={"body": "x"}, headers=headers) as response:
            assert response.status == status
            assert response.headers.get("retry-after") == retry_after
            body = await response.json()
        if status != 201:
            assert body["message"].startswith("You have exceeded a secondary rate limit")
            # remaining stays above 0, so gidgethub raises BadRequest, not RateLimitExceeded: the bot must look.
            assert int(response.headers["x-ratelimit-remaining"]) > 0


async def test_primary_rate_limit(github, gh):
    pr(github)
    await gh.getitem(f"/repos/{REPO}/pulls/1")
    assert gh.rate_limit.limit == 5000 and gh.rate_limit.remaining == 4999
    github.set_rate_limit(1, remaining=0, reset_in=30)
    with pytest.raises(gidgethub.RateLimitExceeded) as caught:
        await gh.getitem(f"/repos/{REPO}/pulls/1")
    assert 25 < caught.value.rate_limit.reset_datetime.timestamp() - time.time() <= 30


async def test_review_422_fault_and_slow_answer(github, gh):
    pr(github)
    github.fail("POST", "/reviews$", status=422)
    with pytest.raises(gidgethub.ValidationError) as caught:
        await gh.post(f"/repos/{REPO}/pulls/1/reviews", data={"event": "COMMENT", "body": "b"})
    assert "Line could not be resolved" in str(caught.value) and github.reviews(REPO, 1) == []
    github.fail("GET", "/pulls/1$", status=None, delay=0.3)
    start = time.monotonic()
    assert (await gh.getitem(f"/repos/{REPO}/pulls/1"))["number"] == 1
    assert time.monotonic() - start >= 0.3


async def test_conditional_get_answers_304(github, http):
    pr(github)
    cache: dict = {}
    gh = GitHubAPI(http, "t", base_url=github.url, oauth_token=github.issue_token(1), cache=cache)
    first = await gh.getitem(f"/repos/{REPO}/pulls/1")
    assert await gh.getitem(f"/repos/{REPO}/pulls/1") == first
    async with http.get(
        f"{github.url}/repos/{REPO}/pulls/1",
        headers={"Authorization": f"token {github.issue_token(1)}", "If-None-Match": next(iter(cache.values()))[0]},
    ) as response:
        assert response.status == 304


async def test_reset_forgets_everything_and_repeats_shas(github, gh):
    first = pr(github)
    await gh.post(f"/repos/{REPO}/issues/1/comments", data={"body": "x"})
    github.fail("GET", ".", status=500)
    github.reset()
    assert (github.calls, github.repos, github.tokens, github.faults) == ([], {}, {}, [])
    again = pr(github)
    assert (again["head"]["sha"], again["id"]) == (first["head"]["sha"], first["id"])


async def test_push_and_webhook_payloads(github, gh):
    pull = pr(github, draft=True)
    opened = github.pull_request_payload(REPO, 1, "opened")
    assert example("pull_request", "opened").keys() <= opened.keys() | {"organization"}
    assert opened["installation"]["id"] == 1 and opened["pull_request"]["draft"] is True
    assert opened["pull_request"]["head"]["sha"] == pull["head"]["sha"] and opened["repository"]["full_name"] == REPO
    assert opened["pull_request"]["url"] == f"{github.url}/repos/{REPO}/pulls/1"
    new_sha = github.push(REPO, 1, {"README.md": "changed\n"})
    sync = github.pull_request_payload(REPO, 1, "synchronize")
    assert (sync["before"], sync["after"]) == (pull["head"]["sha"], new_sha)
    assert {e["filename"] async for e in gh.getiter(f"/repos/{REPO}/pulls/1/files")} == {PIPELINE, "README.md"}
    assert "api.github.com" not in json.dumps(sync)


@pytest.mark.parametrize("action", ["opened", "synchronize", "reopened", "ready_for_review", "labeled"])
def test_pull_request_payloads_fit_githubs_webhook_schema(github, action):
    pr(github, labels=("bug",))
    github.push(REPO, 1, {"README.md": "changed\n"})
    schema = f"/x-webhooks/pull-request-{action.replace('_', '-')}/post/requestBody/content/application~1json/schema"
    payload = github.pull_request_payload(REPO, 1, action)
    assert [error.message for error in load_openapi().validator(schema).iter_errors(payload)] == []


@pytest.mark.parametrize("action", ["created", "edited", "deleted"])
def test_issue_comment_payloads_fit_githubs_webhook_schema(github, action):
    pr(github)
    schema = f"/x-webhooks/issue-comment-{action}/post/requestBody/content/application~1json/schema"
    payload = github.issue_comment_payload(REPO, 1, "/drbot review", action=action)
    assert [error.message for error in load_openapi().validator(schema).iter_errors(payload)] == []


async def test_issue_comment_payload_is_on_a_pull_request_and_signed(github, gh):
    pr(github)
    payload = github.issue_comment_payload(REPO, 1, "/drbot contracts FluxPipeline", user="bob")
    assert payload["issue"]["pull_request"]["url"].endswith("/pulls/1") and payload["sender"]["login"] == "bob"
    stored = await gh.getitem(f"/repos/{REPO}/issues/comments/{payload['comment']['id']}")
    assert stored["body"] == "/drbot contracts FluxPipeline" and stored["user"]["login"] == "bob"
    headers, body = delivery("issue_comment", payload, "s3cret")
    event = sansio.Event.from_http({k.lower(): v for k, v in headers.items()}, body, secret="s3cret")
    assert event.event == "issue_comment" and event.data["comment"]["id"] == payload["comment"]["id"]
    assert headers["X-Hub-Signature-256"] == sign(body, "s3cret")
    edited = github.issue_comment_payload(REPO, 1, "/drbot help", action="edited", comment_id=stored["id"])
    assert edited["changes"] == {"body": {"from": "/drbot contracts FluxPipeline"}}
    bare = issue_comment_payload("o/r", 3, "/drbot help", "carol", "Bot")
    assert bare["issue"]["number"] == 3 and bare["comment"]["user"]["type"] == "Bot"
    assert len(examples("issue_comment")) == 9
