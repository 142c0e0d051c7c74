"""A local git repository of a pull request (merge base, then head) built from GitHub tarballs, so the App
reviews with exactly the code `drbot review` runs: same diff, same context files, same copy tracking.

A tarball is PR-controlled data: it is read as a stream under caps on its expanded size, its entry count and the size
of each file taken from it, and only what a review reads is written to disk (the `.py` files under `src/` and
`tests/`). A file over the per-file cap is left out and reported; an archive over the other caps is not reviewed.
"""

from __future__ import annotations

import ast
import gzip
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from drbot.isolation import Failure, Pool, human_size


#: what a review reads from the repository: the package's and the tests' Python files (nothing else is parsed)
EXTRACTED_PREFIXES = ("src/", "tests/")
EXTRACTED_SUFFIX = ".py"
#: tar's own headers (long names, pax records) are read whole into memory: anything larger than this is hostile
MAX_HEADER_BYTES = 1 << 20
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


class LimitExceeded(Exception):
    """A tarball over a cap: the review ends with a check run that says so. Final: the same commit is as large
    next time, so this is never retried."""


@dataclass(frozen=True)
class Caps:
    """What reading one tarball may take."""

    #: bytes the archive expands to, every entry counted (skipping an entry costs as much as reading it)
    max_bytes: int = 1 << 30
    #: entries in the archive
    max_files: int = 100_000
    #: one file taken from it; a larger one is left out and reported as not analysed if the PR changed it
    max_file_bytes: int = 2 << 20


@dataclass
class Workspace:
    """The repository (tags `base` and `head`) and the files left out of it for size: path -> bytes (head's
    size when both sides were too large)."""

    path: Path
    skipped: dict[str, int] = field(default_factory=dict)


class _Counted:
    """The decompressed stream, counted: reading past `limit` bytes raises LimitExceeded."""

    def __init__(self, stream, limit: int) -> None:
        self.stream, self.limit, self.total = stream, limit, 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size if size is not None and size >= 0 else self.limit - self.total + 1)
        self.total += len(data)
        if self.total > self.limit:
            raise LimitExceeded(f"expands to more than {human_size(self.limit)}")
        return data


class _GuardedInfo(tarfile.TarInfo):
    """A tar header whose extension records (GNU long names, pax) tarfile would load whole must be small."""

    _EXTENSIONS = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE, b"X")

    def _proc_member(self, archive):  # tarfile's dispatch on the header type (stable since Python 2)
        if self.type in self._EXTENSIONS and self.size > MAX_HEADER_BYTES:
            raise LimitExceeded(f"holds a {human_size(self.size)} tar header record")
        return super()._proc_member(archive)


def _open_stream(source: bytes | str | os.PathLike):
    raw = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    magic = raw.read(2)
    raw.seek(0)
    return raw, (gzip.GzipFile(fileobj=raw, mode="rb") if magic == b"\x1f\x8b" else raw)


def _wanted(relative: str, prefixes: tuple[str, ...]) -> bool:
    return (
        relative.startswith(prefixes)
        and relative.endswith(EXTRACTED_SUFFIX)
        and not relative.startswith("/")
        and ".." not in relative.split("/")
    )


def extract(
    tarball: bytes | str | os.PathLike,
    target: Path,
    prefixes: tuple[str, ...] = EXTRACTED_PREFIXES,
    caps: Caps = Caps(),
    skipped: dict[str, int] | None = None,
) -> int:
    """Unpack GitHub's `{owner}-{repo}-{sha}/…` tarball (bytes or a file) into `target` without its top directory;
    only regular `.py` files under `prefixes`, and never outside `target` (no absolute paths, `..`, links or
    devices). Files over `caps.max_file_bytes` go to `skipped` (path -> size) instead. Returns the files written;
    raises LimitExceeded past a cap, WorkspaceError for an unreadable archive."""
    count = entries = 0
    raw, stream = _open_stream(tarball)
    try:
        # a stream (`r|`): every byte is decompressed once, in order, and counted; an entry that is skipped costs as
        # much as one that is read, so the cap is on what the whole archive expands to
        counted = _Counted(stream, caps.max_bytes)
        with tarfile.open(fileobj=counted, mode="r|", tarinfo=_GuardedInfo) as archive:
            for member in archive:
                entries += 1
                if entries > caps.max_files:
                    raise LimitExceeded(f"holds more than {caps.max_files:,} entries")
                parts = member.name.split("/", 1)
                if len(parts) != 2 or not member.isfile() or not _wanted(parts[1], prefixes):
                    continue
                relative = parts[1]
                if member.size > caps.max_file_bytes:
                    if skipped is not None:
                        skipped[relative] = member.size
                    continue
                destination = target / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                if source is None:
                    continue
                with source, open(destination, "wb") as handle:
                    shutil.copyfileobj(source, handle)
                count += 1
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as error:
        raise WorkspaceError(f"cannot read the tarball: {error}") from None
    finally:
        raw.close()
    return count


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env={**os.environ, **GIT_IDENTITY}
    )
    if result.returncode != 0:
        raise WorkspaceError(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def build(
    base_tarball: bytes | str | os.PathLike,
    head_tarball: bytes | str | os.PathLike,
    parent: str | os.PathLike | None = None,
    caps: Caps = Caps(),
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
    """Classes named `*Pipeline` at the top level of one file; parsed in an analysis worker (drbot.isolation)."""
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
