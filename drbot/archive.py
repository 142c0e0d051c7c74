"""Bounded handling of GitHub tarballs: which commit one holds, and extraction with caps on what it expands to.

Both the bot (review workspaces) and the runners (the PR's `src/`) unpack archives that a pull request's
author controls; neither may let one fill the disk, escape the target directory or pose as another commit.
"""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


class ArchiveError(Exception):
    """The archive is unreadable, over a cap, or not the commit it should be; the message says which."""


@dataclass(frozen=True)
class Caps:
    """What one archive may expand to."""

    total_bytes: int = 1024 * 1024 * 1024
    files: int = 50_000
    file_bytes: int = 64 * 1024 * 1024
    #: entries of any kind read (tarfile keeps each one in memory while it reads)
    members: int = 200_000


@dataclass
class Extracted:
    files: int = 0
    bytes: int = 0
    #: (path, size) of selected files skipped for being over `Caps.file_bytes`
    oversized: list[tuple[str, int]] = field(default_factory=list)


def commit_of(archive: tarfile.TarFile) -> str | None:
    """The commit id `git archive` (and so GitHub) writes into the pax global header (`git get-tar-commit-id`)."""
    comment = archive.pax_headers.get("comment", "")
    return comment if len(comment) == 40 and all(c in "0123456789abcdef" for c in comment) else None


def extract(
    path: Path,
    target: Path,
    select: Callable[[str], bool],
    caps: Caps = Caps(),
    *,
    commit: str | None = None,
) -> Extracted:
    """Unpack GitHub's `{owner}-{repo}-{sha}/…` tarball into `target` without its top directory: only regular
    files whose relative path `select` accepts, never outside `target` (no absolute paths, `..`, links or
    devices). With `commit`, the archive must say it holds that commit. A selected file over the per-file cap is
    skipped and listed; more files or bytes than the caps allow stop the extraction with ArchiveError."""
    done = Extracted()
    try:
        with tarfile.open(path, mode="r:*") as archive:
            if commit is not None and commit_of(archive) != commit:
                raise ArchiveError(f"the tarball is not commit {commit[:12]} (it says {commit_of(archive) or 'nothing'})")
            for seen, member in enumerate(archive, start=1):
                if seen > caps.members:
                    raise ArchiveError(f"the tarball holds more than {caps.members:,} entries")
                parts = member.name.split("/", 1)
                if len(parts) != 2 or not member.isfile():
                    continue
                relative = parts[1]
                if relative.startswith("/") or ".." in relative.split("/") or not select(relative):
                    continue
                if member.size > caps.file_bytes:
                    done.oversized.append((relative, member.size))
                    continue
                if done.files + 1 > caps.files:
                    raise ArchiveError(f"the tarball holds more than {caps.files:,} files")
                if done.bytes + member.size > caps.total_bytes:
                    raise ArchiveError(f"the tarball expands to more than {caps.total_bytes / 2**20:,.0f} MiB")
                destination = target / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                if source is None:
                    continue
                with source, open(destination, "wb") as handle:
                    # the header's size is what the archive claims; copy at most that much
                    shutil.copyfileobj(source, handle, length=1024 * 1024)
                done.files += 1
                done.bytes += member.size
    except ArchiveError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        raise ArchiveError(f"cannot read the tarball: {error}") from None
    return done
