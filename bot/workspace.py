"""A local git repository of a pull request (merge base, then head) built from GitHub tarballs, so the App
reviews with exactly the code `drbot review` runs: same diff, same context files, same copy tracking.

A tarball is PR-controlled data: it is read as a stream under caps on its expanded size, its entry count and the size
of each file taken from it, and only what a review reads is written to disk (the `.py` files under `src/` and
`tests/`). A file over the per-file cap is left out and reported; an archive over the other caps is not reviewed.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

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


def _git(repo: Path, *args: str) -> str:
    """Run git in `repo`; WorkspaceError naming the command, its exit status and what git said when it fails."""
    command = ["git", *args]
    try:
        result = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, env={**os.environ, **GIT_IDENTITY}
        )
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


def top_level_pipelines(path: str, max_bytes: int) -> list[str]:
    """Classes named `*Pipeline` at the top level of one file; parsed in an analysis worker (engine.isolation)."""
    try:
        if os.path.getsize(path) > max_bytes:
            return []
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError, RecursionError, MemoryError):
        return []
    return [n.name for n in tree.body if isinstance(n, ast.ClassDef) and n.name.endswith("Pipeline")]


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
