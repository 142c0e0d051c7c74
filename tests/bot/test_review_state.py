"""State the App keeps per repository between reviews: merge bases unpacked once (heads built on them from the blobs
they change), and labels created once per repository. Real Redis, the fake GitHub over HTTP."""

from __future__ import annotations

import io
import os
import tarfile
import threading
import uuid

import redis.asyncio as aioredis
from harness import DDPM, REPO, UNCLIP, app_harness, make_settings, open_pr, with_eta

from bot import workspace


RENAMED = "src/diffusers/pipelines/ddpm/pipeline_ddpm_renamed.py"
ADDED = "src/diffusers/pipelines/ddpm/pipeline_ddpm_added.py"
MOVED, MOVED_TO = (
    "src/diffusers/pipelines/ddpm/pipeline_ddpm_old.py",
    "src/diffusers/pipelines/ddpm/pipeline_ddpm_new.py",
)


def _counts(body: str) -> str:
    """The summary's line of counts: "**1 new finding** · 0 fixed · 2 known — in 3 changed Python files"."""
    return next(line for line in body.splitlines() if line.startswith("**"))


async def test_a_second_review_of_the_same_base_downloads_no_tarball(harness, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)})
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    base = github.pull(REPO, 1)["base"]["sha"]
    # the merge base came as a tarball, once; the head as its tree and the one blob it changes
    assert [c.path for c in github.requests("GET", r"/tarball/")] == [f"/repos/{REPO}/tarball/{base}"]
    assert len(github.requests("GET", r"/git/blobs/")) == 1
    assert "**1 new finding**" in github.comments(REPO, 1)[0]["body"]

    # a push to the PR (same merge base) and a second PR on it: no tarball at all, only the blobs that differ
    github.push(REPO, 1, {UNCLIP: sources(UNCLIP) + "\n# pushed\n"})
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "synchronize"))
    github.add_pull(REPO, 2, head_files={DDPM: with_eta(sources)})
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 2, "opened"))
    await harness.run()
    assert [o.status for o in harness.outcomes] == ["reviewed"] * 3
    assert len(github.requests("GET", r"/tarball/")) == 1
    assert len(github.requests("GET", r"/git/blobs/")) == 1 + 2 + 1
    assert _counts(github.comments(REPO, 1)[0]["body"]).startswith("**1 new finding**")
    assert _counts(github.comments(REPO, 2)[0]["body"]).startswith("**1 new finding**")

    # the base branch moves on: the new merge base is built from the kept one and the blob that differs
    moved = sources(UNCLIP) + "\n# moved on\n"
    github.add_pull(REPO, 3, base_files={UNCLIP: moved}, head_files={DDPM: with_eta(sources)})
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 3, "opened"))
    await harness.run()
    new_base = github.pull(REPO, 3)["base"]["sha"]
    assert len(github.requests("GET", r"/tarball/")) == 1
    assert github.requests("GET", rf"/git/trees/{new_base}$")
    assert len(github.requests("GET", r"/git/blobs/")) == 4 + 1 + 1  # the base's changed file, the head's
    assert _counts(github.comments(REPO, 3)[0]["body"]).startswith("**1 new finding**")


async def test_labels_are_created_once_per_repository(harness, github, sources):
    open_pr(github, sources, {DDPM: with_eta(sources)})
    for number in (2, 3):  # the same new finding, in heads of their own (one head tree would be a duplicate)
        github.add_pull(REPO, number, head_files={DDPM: with_eta(sources) + f"\n# pull request {number}\n"})
    label_reads = r"/repos/[^/]+/[^/]+/labels"  # the repository's labels (GET one, POST to create)

    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    assert github.labels(REPO, 1) == ["drbot: pattern 2"]
    assert [c.method for c in github.requests(path_regex=label_reads)] == ["GET", "POST"]  # looked up, created

    await harness.deliver("pull_request", github.pull_request_payload(REPO, 2, "opened"))
    await harness.run()
    assert github.labels(REPO, 2) == ["drbot: pattern 2"]
    assert len(github.requests(path_regex=label_reads)) == 2  # known to exist: added without asking

    # GitHub refuses the add (the label went away meanwhile): drbot makes sure of it again and adds it
    github.fail("POST", r"/issues/3/labels$", status=422, times=1)
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 3, "opened"))
    await harness.run()
    assert github.labels(REPO, 3) == ["drbot: pattern 2"]
    assert [c.method for c in github.requests(path_regex=label_reads)][2:] == ["GET"]
    assert len(github.requests("POST", r"/issues/3/labels$")) == 2


async def test_added_deleted_and_renamed_files_get_the_findings_of_the_tarball_review(harness, github, sources):
    """A head built on the kept base from its blobs reviews as the two-tarball workspace does: a file the base does
    not have, a deleted one, and a renamed one that also changes."""
    added = with_eta(sources).replace("DDPM", "Added")
    head = {DDPM: None, RENAMED: with_eta(sources), UNCLIP: None, ADDED: added, MOVED: None, MOVED_TO: added}
    open_pr(github, sources, head, base_extra={MOVED: added})
    github.add_pull(REPO, 2, head_files=head)
    await harness.deliver("pull_request", github.pull_request_payload(REPO, 1, "opened"))
    await harness.run()
    assert github.requests("GET", r"/git/trees/") and len(github.requests("GET", r"/tarball/")) == 1
    # only the renamed file that also changed is downloaded: the added and the moved file hold a blob the base has
    assert len(github.requests("GET", r"/git/blobs/")) == 1
    stateful = github.comments(REPO, 1)[0]["body"]

    settings = make_settings(github, f"drbot-test-{uuid.uuid4().hex[:8]}:", review_state=False)
    redis = aioredis.from_url("redis://127.0.0.1:6379/0")
    try:
        async with app_harness(github, settings, redis) as old_way:
            await old_way.deliver("pull_request", github.pull_request_payload(REPO, 2, "opened"))
            await old_way.run()
    finally:
        async for key in redis.scan_iter(match=f"{settings.key_prefix}*"):
            await redis.delete(key)
        await redis.aclose()
    assert len(github.requests("GET", r"/tarball/")) == 3  # the old way: both sides as tarballs
    tarballs = github.comments(REPO, 2)[0]["body"]

    assert _counts(stateful) == _counts(tarballs)
    # `eta` in the renamed file and in the added one; the moved file's findings keep their fingerprints (known)
    assert _counts(stateful).startswith("**2 new findings** · ")
    assert " 0 fixed" not in _counts(stateful)  # the deleted file's findings are fixed
    for text in ("pipeline_ddpm_renamed.py", "pipeline_ddpm_added.py", "pipeline_stable_unclip_img2img.py"):
        assert (text in stateful) == (text in tarballs), text


def _tarball(sha: str, files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT, pax_headers={"comment": sha}) as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(f"o-r-{sha[:7]}/{path}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_base_is_installed_once_when_two_workers_build_it_at_once(tmp_path):
    store = workspace.BaseStore(tmp_path)
    sha = "a" * 40
    tarball = _tarball(sha, {"src/diffusers/x.py": b"x = 1\n" * 1000, "README.md": b"not kept\n"})
    errors: list[BaseException] = []

    def install() -> None:
        try:
            store.install("o/r", sha, tarball)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=install) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [p.name for p in store.directory("o/r", sha).parent.iterdir()] == [sha]  # no build left behind
    with store.lease("o/r", sha) as base:
        assert base is not None and base.listing().keys() == {"src/diffusers/x.py"}


def test_a_base_whose_tarball_is_another_commit_is_not_kept(tmp_path):
    store = workspace.BaseStore(tmp_path)
    try:
        store.install("o/r", "a" * 40, _tarball("b" * 40, {"src/diffusers/x.py": b"x = 1\n"}))
    except workspace.WorkspaceError as error:
        assert "not commit" in str(error)
    else:
        raise AssertionError("a tarball of another commit was kept as the base")
    with store.lease("o/r", "a" * 40) as base:
        assert base is None


def test_pruning_removes_the_least_recently_used_bases_but_never_one_in_use(tmp_path):
    store = workspace.BaseStore(tmp_path, max_bytes=0)
    shas = [c * 40 for c in "abc"]
    for age, sha in enumerate(shas):  # used in this order, long ago (the clock's ticks may be coarser than a build)
        store.install("o/r", sha, _tarball(sha, {"src/diffusers/x.py": sha.encode() * 100}))
        os.utime(store.directory("o/r", sha) / "ready", (1000 + age, 1000 + age))
    with store.lease("o/r", shas[0]) as used:
        assert used is not None
        removed = store.prune(keep=(store.directory("o/r", shas[2]),))
        assert removed == [store.directory("o/r", shas[1])]  # the leased one and the kept one stay
        assert used.listing()  # still readable while leased
    # the lease made `a` the most recently used: `c` goes first
    assert store.prune() == [store.directory("o/r", shas[2]), store.directory("o/r", shas[0])]
    with store.lease("o/r", shas[0]) as gone:
        assert gone is None


def test_a_head_is_built_in_the_reviews_own_repository_and_checked_against_its_blob_ids(tmp_path):
    store = workspace.BaseStore(tmp_path / "bases")
    sha = "a" * 40
    files = {"src/diffusers/kept.py": b"kept = 1\n", "src/diffusers/gone.py": b"gone = 1\n"}
    store.install("o/r", sha, _tarball(sha, files))
    blobs = tmp_path / "blobs"
    (blobs / "src/diffusers").mkdir(parents=True)
    (blobs / "src/diffusers/new.py").write_bytes(b"new = 1\n")
    tree = [
        {"path": "src/diffusers/kept.py", "mode": "100644", "type": "blob", "sha": workspace.blob_id(b"kept = 1\n")},
        {"path": "src/diffusers/new.py", "mode": "100644", "type": "blob", "sha": workspace.blob_id(b"new = 1\n")},
        {"path": "src/diffusers/link.py", "mode": "120000", "type": "blob", "sha": "c" * 40},  # never a link
        {"path": "docs/page.md", "mode": "100644", "type": "blob", "sha": "d" * 40},  # not reviewed
    ]
    with store.lease("o/r", sha) as base:
        assert base is not None
        objects = sorted((base.path / ".git" / "objects").rglob("*"))
        changes = workspace.head_changes(base, tree)
        assert changes.changed.keys() == {"src/diffusers/new.py"} and changes.deleted == {"src/diffusers/gone.py"}
        repository = workspace.scratch_repository(base, tmp_path / "repository")
        head = workspace.head_commit(repository, base.commit, changes, blobs)
        listing = workspace._git(repository, "ls-tree", "-r", "--name-only", head).split()
        assert listing == ["src/diffusers/kept.py", "src/diffusers/new.py"]
        assert sorted((base.path / ".git" / "objects").rglob("*")) == objects  # the kept base is left as it was

        (blobs / "src/diffusers/new.py").write_bytes(b"not what the tree says\n")
        try:
            workspace.head_commit(repository, base.commit, changes, blobs)
        except workspace.WorkspaceError as error:
            assert "is not" in str(error)
        else:
            raise AssertionError("a blob that is not the tree's was committed")


def test_the_kept_state_is_on_by_default_and_can_be_turned_off():
    from bot.settings import Settings

    env = {"GITHUB_WEBHOOK_SECRET": "s"}
    assert Settings.from_env(env).review_state is True
    assert Settings.from_env(env).max_bases_bytes == workspace.DEFAULT_BASES_BYTES
    for off in ("0", "false", "No", "off"):
        assert Settings.from_env({**env, "DRBOT_REVIEW_STATE": off}).review_state is False
    assert Settings.from_env({**env, "DRBOT_MAX_BASES_BYTES": "1048576"}).max_bases_bytes == 1 << 20
