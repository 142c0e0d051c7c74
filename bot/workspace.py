"""A local git repository of a pull request (merge base, then head) built from GitHub tarballs, so the App
reviews with exactly the code `drbot review` runs: same diff, same context files, same copy tracking.

A tarball is PR-controlled data: it is read as a stream under caps on its expanded size, its entry count and the size
of each file taken from it, and only what a review reads is written to disk (the `.py` files under `src/` and
`tests/`). A file over the per-file cap is left out and reported; an archive over the other caps is not reviewed.
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from common import archive
from common.archive import ArchiveLimit as LimitExceeded  # final: the review ends with a check run saying so
from common.archive import Caps
from common.process import describe_failure, describe_start_failure
from engine.isolation import Failure, Pool


#: what a review reads from the repository: the package's and the tests' Python files (nothing else is parsed)
EXTRACTED_PREFIXES = ("src/", "tests/")
EXTRACTED_SUFFIX = ".py"
#: the defaults of a review's extraction (Settings overrides them): a larger `.py` file is not analysed anyway
REVIEW_CAPS = Caps(max_file_bytes=2 << 20)
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "drbot",
    "GIT_AUTHOR_EMAIL": "drbot@localhost",
    "GIT_COMMITTER_NAME": "drbot",
    "GIT_COMMITTER_EMAIL": "drbot@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": os.devnull,
}


class WorkspaceError(Exception):
    """A tarball could not be read; the review fails and is retried from the queue."""


@dataclass
class Workspace:
    """The repository (tags `base` and `head`) and the files left out of it for size: path -> bytes (head's
    size when both sides were too large)."""

    path: Path
    skipped: dict[str, int] = field(default_factory=dict)


def _wanted(relative: str, prefixes: tuple[str, ...]) -> bool:
    return relative.startswith(prefixes) and relative.endswith(EXTRACTED_SUFFIX)


def extract(
    tarball: bytes | str | os.PathLike,
    target: Path,
    prefixes: tuple[str, ...] = EXTRACTED_PREFIXES,
    caps: Caps = REVIEW_CAPS,
    skipped: dict[str, int] | None = None,
) -> int:
    """Unpack the `.py` files under `prefixes` of GitHub's tarball (bytes or a file) into `target` with
    `common.archive.extract`; files over `caps.max_file_bytes` go to `skipped` (path -> size) instead. Returns the
    files written; raises LimitExceeded past a cap, WorkspaceError for an unreadable archive."""
    try:
        done = archive.extract(tarball, target, lambda relative: _wanted(relative, prefixes), caps)
    except LimitExceeded:
        raise
    except archive.ArchiveError as error:
        raise WorkspaceError(str(error)) from None
    if skipped is not None:
        skipped.update(done.skipped)
    return done.files


def _git(repo: Path, *args: str, env: dict[str, str] | None = None, input: str | None = None) -> str:
    """Run git in `repo`; WorkspaceError naming the command, its exit status and what git said when it fails."""
    command = ["git", *args]
    try:
        result = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, input=input,
            env={**os.environ, **GIT_IDENTITY, **(env or {})},
        )  # fmt: skip
    except OSError as error:  # git is not installed, or the workspace vanished
        raise WorkspaceError(describe_start_failure(command, error)) from None
    if result.returncode != 0:
        raise WorkspaceError(describe_failure(command, result.returncode, result.stderr, result.stdout))
    return result.stdout


def build(
    base_tarball: bytes | str | os.PathLike,
    head_tarball: bytes | str | os.PathLike,
    parent: str | os.PathLike | None = None,
    caps: Caps = REVIEW_CAPS,
) -> Workspace:
    """A repository with two commits, `base` and `head`; the caller removes `Workspace.path` (`shutil.rmtree`).

    Raises LimitExceeded (saying which side) when a tarball is over a cap."""
    repo = Path(tempfile.mkdtemp(prefix="drbot-pr-", dir=parent))
    skipped_base: dict[str, int] = {}
    skipped_head: dict[str, int] = {}
    try:
        _git(repo, "init", "-q", "-b", "base")
        _extract_side("base", base_tarball, repo, caps, skipped_base)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "--allow-empty", "-m", "base")
        _git(repo, "tag", "base")
        for child in repo.iterdir():
            if child.name != ".git":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        _extract_side("head", head_tarball, repo, caps, skipped_head)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "--allow-empty", "-m", "head")
        _git(repo, "tag", "head")
    except BaseException:
        shutil.rmtree(repo, ignore_errors=True)
        raise
    return Workspace(repo, {**skipped_base, **skipped_head})


def _extract_side(side: str, tarball, repo: Path, caps: Caps, skipped: dict[str, int]) -> None:
    try:
        extract(tarball, repo, caps=caps, skipped=skipped)
    except LimitExceeded as error:
        raise LimitExceeded(f"the {side} commit's tarball {error}") from None


def _top_level(path: str, max_bytes: int) -> list[ast.stmt]:
    """The top-level statements of one file (none when it is too large or does not parse)."""
    try:
        if os.path.getsize(path) > max_bytes:
            return []
        return ast.parse(Path(path).read_text(encoding="utf-8")).body
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError, RecursionError, MemoryError):
        return []


def top_level_pipelines(path: str, max_bytes: int) -> list[str]:
    """Classes named `*Pipeline` at the top level of one file; parsed in an analysis worker (engine.isolation)."""
    return [n.name for n in _top_level(path, max_bytes) if isinstance(n, ast.ClassDef) and n.name.endswith("Pipeline")]


def pipeline_classes(repo: Path, paths, pool: Pool, deadline: float | None = None) -> list[str]:
    """Classes named `*Pipeline` defined at the top level of the changed pipeline modules (head side): what
    `/drbot contracts` runs when it names no pipeline. Each file is parsed in `pool`; one that fails adds none."""
    root = repo.resolve()
    wanted = []
    for path in sorted(set(paths)):
        if "/pipelines/" not in f"/{path}" or not path.endswith(".py"):
            continue
        full = (root / path).resolve()
        if full.is_relative_to(root) and full.is_file():  # a listed name cannot point outside the checkout
            wanted.append(str(full))
    jobs = [pool.submit(top_level_pipelines, full, pool.limits.max_file_bytes) for full in wanted]
    found: set[str] = set()
    for job in jobs:
        value = pool.outcome(job, deadline)
        if not isinstance(value, Failure):
            found.update(value)
    return sorted(found)


#: at most this many pipelines join a `/drbot contracts` that names none because they use a module the PR changes
MAX_DEPENDENTS = 16


def shared_names(path: str, max_bytes: int) -> list[str]:
    """Public classes and functions at the top level of one file, `*Pipeline` classes aside; parsed in an analysis
    worker (engine.isolation)."""
    return [
        n.name
        for n in _top_level(path, max_bytes)
        if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and not n.name.startswith("_")
        and not n.name.endswith("Pipeline")
    ]


def dependent_pipelines(repo: Path, head: str, files: Path, paths, pool: Pool, deadline: float | None = None,
                        limit: int = MAX_DEPENDENTS) -> tuple[list[str], int]:  # fmt: skip
    """Pipelines the PR does not change that use a model, scheduler or shared module it changes: the `*Pipeline`
    classes of the head's pipeline modules that name a public class or function a changed module of
    `src/diffusers/` defines. At most `limit` of them (modules in path order); also how many more modules name one.
    `files` holds the head's changed files (parsed in `pool`); the head commit `head` of `repo` is searched."""
    root = files.resolve()
    changed = sorted({p for p in paths if p.startswith("src/diffusers/") and p.endswith(".py")})
    modules = []
    for path in changed:
        full = (root / path).resolve()
        if not path.endswith("__init__.py") and full.is_relative_to(root) and full.is_file():
            modules.append(str(full))
    names: set[str] = set()
    for job in [pool.submit(shared_names, full, pool.limits.max_file_bytes) for full in modules]:
        value = pool.outcome(job, deadline)
        if not isinstance(value, Failure):
            names.update(value)
    if not names:
        return [], 0
    patterns = [arg for name in sorted(names) for arg in ("-e", name)]
    try:
        listed = _git(repo, "grep", "-l", "-w", "-F", *patterns, head, "--", "src/diffusers/pipelines/")
    except WorkspaceError:  # git grep exits 1 when nothing matches; any other failure adds no pipeline either
        return [], 0
    users = sorted({line.partition(":")[2] for line in listed.splitlines()} - set(changed))
    users = [path for path in users if path.endswith(".py") and not path.endswith("__init__.py")]
    found: list[str] = []
    scratch = Path(tempfile.mkdtemp(prefix="drbot-dependents-", dir=root))
    try:
        for index, path in enumerate(users):
            if len(found) >= limit:
                return sorted(found[:limit]), len(users) - index
            target = scratch / f"{index}.py"
            try:
                target.write_text(_git(repo, "show", f"{head}:{path}"), encoding="utf-8")
            except (WorkspaceError, UnicodeError):
                continue
            value = pool.outcome(pool.submit(top_level_pipelines, str(target), pool.limits.max_file_bytes), deadline)
            if not isinstance(value, Failure):
                found.extend(name for name in value if name not in found)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return sorted(found[:limit]), 0


# -- per-repository state kept between reviews: each merge base unpacked once, heads built on it ---------------

#: the merge bases kept on disk (under the App's workdir) are pruned back under this many bytes, least recently used
#: first (Settings.max_bases_bytes overrides it)
DEFAULT_BASES_BYTES = 2 << 30
#: git's mode of a regular file; a head tree's symbolic links and submodules are left out, as the tarball's are
_FILE_MODES = ("100644", "100755")
_SHA = frozenset("0123456789abcdef")
#: a base's build (or removal) directory older than this was left by a process that died: pruning removes it
STALE_BUILD_S = 3600.0


def _is_sha(value: str) -> bool:
    return len(value) == 40 and set(value) <= _SHA


def blob_id(data: bytes) -> str:
    """The git object id of a blob holding `data` (what GitHub's trees and blobs name it by)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Base:
    """One merge base of one repository, unpacked once: a git repository whose commit `commit` holds the base's
    reviewed files (the `.py` files under `src/` and `tests/`), and the files left out of it for size."""

    path: Path
    commit: str
    skipped: dict[str, int] = field(default_factory=dict)

    def listing(self) -> dict[str, str]:
        """path -> blob id of every file of the base commit."""
        out = _git(self.path, "ls-tree", "-r", "-z", "--full-tree", self.commit)
        found = {}
        for record in out.split("\0"):
            if record:
                meta, _, path = record.partition("\t")
                found[path] = meta.split()[2]
        return found


@dataclass(frozen=True)
class HeadChanges:
    """How a head differs from its base in the reviewed files: path -> blob id of the new or changed files,
    the deleted paths, and the head's files left out for size (path -> bytes)."""

    changed: dict[str, str]
    deleted: frozenset[str]
    skipped: dict[str, int]


def head_changes(base: Base, tree: list[dict], caps: Caps = REVIEW_CAPS) -> HeadChanges:
    """Compare GitHub's recursive tree of the head (`GET /git/trees/{head}?recursive=1`, its `tree` list) with the
    base's files. LimitExceeded when the tree holds more entries than `caps.max_files`."""
    if len(tree) > caps.max_files:
        raise LimitExceeded(f"the head commit's tree holds more than {caps.max_files:,} entries")
    head: dict[str, str] = {}
    skipped: dict[str, int] = {}
    for entry in tree:
        path, sha = str(entry.get("path", "")), str(entry.get("sha", ""))
        if (
            entry.get("type") != "blob"
            or entry.get("mode") not in _FILE_MODES
            or not _wanted(path, EXTRACTED_PREFIXES)
        ):
            continue
        if path.startswith("/") or ".." in path.split("/") or "\n" in path or "\t" in path or not _is_sha(sha):
            continue  # never in a tarball either (`common.archive` skips such names)
        size = entry.get("size")
        if isinstance(size, int) and size > caps.max_file_bytes:
            skipped[path] = size
            continue
        head[path] = sha
    base_files = base.listing()
    changed = {path: sha for path, sha in head.items() if base_files.get(path) != sha}
    deleted = frozenset(path for path in base_files if path not in head)
    return HeadChanges(changed, deleted, skipped)


def scratch_repository(base: Base, path: Path) -> Path:
    """An empty repository at `path` that reads the base's objects (git's alternates) and writes its own: a review
    builds its head there, so the kept base never changes and never grows, and the review's objects go with its
    scratch directory. The base must stay leased while it is used."""
    _git(path.parent, "init", "-q", path.name)
    alternates = path / ".git" / "objects" / "info" / "alternates"
    alternates.write_text(str((base.path / ".git" / "objects").resolve()) + "\n")
    return path


def head_commit(repo: Path, base_commit: str, changes: HeadChanges, blobs: Path) -> str:
    """Write the head as a commit over `base_commit` in `repo`: the base's tree with `changes` applied, its new files
    read from `blobs` (a directory laid out by path, each file checked against its blob id). Git plumbing with an
    index of this call's own; no work tree is written."""
    paths = sorted(changes.changed)
    # a blob the base already holds (a file moved, or changed back) was not downloaded: `write-tree` checks it is there
    fetched = [p for p in paths if (blobs / p).is_file()]
    written = _git_input(repo, "\n".join(str(blobs / p) for p in fetched), "hash-object", "-w", "--no-filters",
                         "--stdin-paths").split()  # fmt: skip
    for path, sha in zip(fetched, written, strict=True):
        if sha != changes.changed[path]:
            raise WorkspaceError(f"{path}: the blob GitHub sent is not {changes.changed[path][:12]}")
    index = Path(tempfile.mkdtemp(prefix="drbot-index-", dir=repo / ".git")) / "index"
    try:
        env = {"GIT_INDEX_FILE": str(index)}
        _git(repo, "read-tree", base_commit, env=env)
        records = [f"100644 {changes.changed[p]}\t{p}" for p in paths]
        records += [f"0 {'0' * 40}\t{p}" for p in sorted(changes.deleted)]
        if records:
            _git_input(repo, "\n".join(records) + "\n", "update-index", "--index-info", env=env)
        tree = _git(repo, "write-tree", env=env).strip()
    finally:
        shutil.rmtree(index.parent, ignore_errors=True)
    return _git(repo, "commit-tree", tree, "-p", base_commit, "-m", "head").strip()


def _git_input(repo: Path, text: str, *args: str, env: dict[str, str] | None = None) -> str:
    """`_git` with `text` on git's standard input."""
    return _git(repo, *args, env=env, input=text)


class BaseStore:
    """Merge bases unpacked once and kept between reviews, under `root/{repository}/{base sha}/`.

    A base is built in a private directory and renamed into place whole, so a reader never sees half of one and two
    workers building the same base at once both end with one (the loser discards its copy). A review holds a shared
    lock on the base it reads (`lease`); pruning (least recently used first, past `max_bytes`) takes a base only
    under an exclusive lock it can get without waiting, so it never removes one in use."""

    def __init__(self, root: str | os.PathLike, max_bytes: int = DEFAULT_BASES_BYTES) -> None:
        self.root, self.max_bytes = Path(root), max_bytes

    def directory(self, repo: str, sha: str) -> Path:
        if not _is_sha(sha):
            raise WorkspaceError(f"not a commit id: {sha!r}")
        return self.root / hashlib.sha256(repo.encode()).hexdigest()[:16] / sha

    def lease(self, repo: str, sha: str):
        """A context manager: the base of `repo@sha` (None when not kept), held under a shared lock."""
        return _Lease(self.directory(repo, sha))

    def install(self, repo: str, sha: str, tarball, caps: Caps = REVIEW_CAPS) -> None:
        """Unpack the tarball of `repo@sha` (it must say it is that commit) and keep it as a base."""

        final = self.directory(repo, sha)
        final.parent.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(prefix=f".build-{sha[:12]}-", dir=final.parent))
        try:
            work = build / "work"
            _git(build, "init", "-q")
            _git(build, "config", "gc.auto", "0")  # objects of reviewed heads are referenced by no ref: never pruned
            try:
                done = archive.extract(tarball, work, lambda r: _wanted(r, EXTRACTED_PREFIXES), caps, commit=sha)
            except LimitExceeded as error:
                raise LimitExceeded(f"the base commit's tarball {error}") from None
            except archive.ArchiveError as error:
                raise WorkspaceError(str(error)) from None
            env = {"GIT_INDEX_FILE": str(build / "index.base")}
            _git(build, f"--work-tree={work}", "add", "-A", env=env)
            tree = _git(build, "write-tree", env=env).strip()
            commit = _git(build, "commit-tree", tree, "-m", f"base {sha}").strip()
            _git(build, "update-ref", "refs/drbot/base", commit)
            shutil.rmtree(work)
            (build / "index.base").unlink(missing_ok=True)
            self._finish(build, final, commit, done.skipped)
        finally:
            shutil.rmtree(build, ignore_errors=True)

    def latest(self, repo: str) -> str | None:
        """The commit of `repo`'s most recently used base, or None when none is kept."""
        kept = [ready for ready in self.directory(repo, "0" * 40).parent.glob("*/ready") if _is_sha(ready.parent.name)]
        newest = max(kept, key=lambda ready: ready.stat().st_mtime, default=None)
        return None if newest is None else newest.parent.name

    def derive(self, repo: str, sha: str, source: Base, changes: HeadChanges, blobs: Path) -> None:
        """Keep `repo@sha` as a base built from another kept base and how `sha` differs from it (`head_changes` of
        GitHub's tree of `sha`, the changed blobs under `blobs`): the base branch moved on by a few files, and only
        those are downloaded. The source's objects are hard-linked (`git clone --local`), so pruning either base
        later leaves the other whole."""

        final = self.directory(repo, sha)
        build = Path(tempfile.mkdtemp(prefix=f".build-{sha[:12]}-", dir=final.parent))
        try:
            _git(build.parent, "clone", "-q", "--local", "--no-checkout", str(source.path), build.name)
            _git(build, "config", "gc.auto", "0")
            commit = head_commit(build, source.commit, changes, blobs)
            _git(build, "update-ref", "refs/drbot/base", commit)
            self._finish(build, final, commit, changes.skipped)
        finally:
            shutil.rmtree(build, ignore_errors=True)

    @staticmethod
    def _finish(build: Path, final: Path, commit: str, skipped: dict[str, int]) -> None:
        """Mark a built base ready and rename it into place (a base another worker put there first wins)."""
        (build / "skipped.json").write_text(json.dumps(skipped))
        (build / "lock").touch()
        (build / "ready").write_text(commit)
        try:
            build.rename(final)
        except OSError:
            if not (final / "ready").exists():
                raise

    def prune(self, keep: tuple[Path, ...] = ()) -> list[Path]:
        """Remove the least recently used bases until the rest take at most `max_bytes`; returns those removed."""
        bases = []
        for ready in self.root.glob("*/*/ready"):
            directory = ready.parent
            if directory.name.startswith("."):
                continue  # being built, or being removed
            size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file() and not f.is_symlink())
            bases.append((ready.stat().st_mtime, size, directory))
        total = sum(size for _, size, _ in bases)
        removed = []
        for leftover in self.root.glob("*/.*-*"):  # a build or removal whose process died midway
            try:
                if time.time() - leftover.stat().st_mtime > STALE_BUILD_S:
                    shutil.rmtree(leftover, ignore_errors=True)
            except OSError:
                pass
        for _, size, directory in sorted(bases):
            if total <= self.max_bytes:
                break
            if directory in keep:
                continue
            try:
                handle = open(directory / "lock", "rb")
            except OSError:
                continue
            with handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a review reads it now
                trash = directory.parent / f".trash-{directory.name}-{os.getpid()}"
                try:
                    directory.rename(trash)
                except OSError:
                    continue
            shutil.rmtree(trash, ignore_errors=True)
            total -= size
            removed.append(directory)
        return removed


class _Lease:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._handle: BinaryIO | None = None

    def __enter__(self) -> Base | None:
        try:
            self._handle = open(self.directory / "lock", "rb")
        except OSError:
            return None
        handle = self._handle
        fcntl.flock(handle, fcntl.LOCK_SH)
        try:  # pruned while we waited for the lock: gone (the lock file moved with it), or built anew since
            if os.stat(self.directory / "lock").st_ino != os.fstat(handle.fileno()).st_ino:
                return None
            ready = self.directory / "ready"
            commit = ready.read_text().strip()
            skipped = json.loads((self.directory / "skipped.json").read_text())
            os.utime(ready)  # most recently used
        except (OSError, ValueError):
            return None
        return Base(self.directory, commit, skipped)

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
