"""Bounded handling of GitHub tarballs: which commit one holds, and extraction under caps on what it expands to.

Both the bot (review workspaces) and the runners (the PR's `src/`) unpack archives that a pull request's author
controls; neither may let one fill the disk or memory, escape the target directory, or pose as another commit.
An archive is read as one stream: every byte is decompressed once, in order, and counted, so an entry that is
skipped costs as much as one that is read and the cap is on what the whole archive expands to.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast


#: tar's own headers (long names, pax records) are read whole into memory: anything larger than this is hostile
MAX_HEADER_BYTES = 1 << 20


class ArchiveError(Exception):
    """The archive cannot be read, or is not the commit it should be."""


class ArchiveLimit(ArchiveError):
    """The archive is over a cap. Final: the same commit is as large next time, so never worth a retry."""


@dataclass(frozen=True)
class Caps:
    """What reading one archive may take."""

    #: bytes the archive expands to, every entry counted
    max_bytes: int = 1 << 30
    #: entries in the archive, of any kind
    max_files: int = 100_000
    #: one file taken from it; a larger one is left out and listed
    max_file_bytes: int = 64 << 20


@dataclass
class Extracted:
    files: int = 0
    #: selected files left out for being over `Caps.max_file_bytes`: path -> size
    skipped: dict[str, int] = field(default_factory=dict)


def human_size(n: float) -> str:
    """`2097152` -> `2 MiB`, `52428800.5` -> `50.0 MiB`: whole units without decimals, others with one."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{int(n)} bytes"


class _Counted:
    """The decompressed stream, counted: reading past `limit` bytes raises ArchiveLimit."""

    def __init__(self, stream, limit: int) -> None:
        self.stream, self.limit, self.total = stream, limit, 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size if size is not None and size >= 0 else self.limit - self.total + 1)
        self.total += len(data)
        if self.total > self.limit:
            raise ArchiveLimit(f"expands to more than {human_size(self.limit)}")
        return data


class _GuardedInfo(tarfile.TarInfo):
    """A tar header whose extension records (GNU long names, pax) tarfile would load whole must be small."""

    _EXTENSIONS = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE, b"X")

    def _proc_member(self, archive):  # tarfile's dispatch on the header type (stable since Python 2)
        if self.type in self._EXTENSIONS and self.size > MAX_HEADER_BYTES:
            raise ArchiveLimit(f"holds a {human_size(self.size)} tar header record")
        return super()._proc_member(archive)


def commit_of(archive: tarfile.TarFile) -> str | None:
    """The commit id `git archive` (and so GitHub) writes into the pax global header (`git get-tar-commit-id`)."""
    comment = archive.pax_headers.get("comment", "")
    return comment if len(comment) == 40 and all(c in "0123456789abcdef" for c in comment) else None


def extract(
    source: bytes | str | os.PathLike,
    target: Path,
    select: Callable[[str], bool],
    caps: Caps = Caps(),
    *,
    commit: str | None = None,
) -> Extracted:
    """Unpack GitHub's `{owner}-{repo}-{sha}/…` tarball (bytes or a file) into `target` without its top directory:
    only regular files whose relative path `select` accepts, never outside `target` (no absolute paths, `..`,
    links or devices). With `commit`, the archive must say it holds that commit. A selected file over the per-file
    cap is left out and listed; an archive over another cap raises ArchiveLimit; an unreadable one ArchiveError."""
    done = Extracted()
    entries = 0
    raw = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    try:
        magic = raw.read(2)
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if magic == b"\x1f\x8b" else raw
        counted = cast(IO[bytes], _Counted(stream, caps.max_bytes))  # stream mode (`r|`) only ever calls read()
        with tarfile.open(fileobj=counted, mode="r|", tarinfo=_GuardedInfo) as archive:
            if commit is not None and commit_of(archive) != commit:
                found = commit_of(archive)
                raise ArchiveError(
                    f"the tarball is not commit {commit[:12]} (it says {found[:12] if found else 'nothing'})"
                )
            for member in archive:
                entries += 1
                if entries > caps.max_files:
                    raise ArchiveLimit(f"holds more than {caps.max_files:,} entries")
                parts = member.name.split("/", 1)
                if len(parts) != 2 or not member.isfile():
                    continue
                relative = parts[1]
                if relative.startswith("/") or ".." in relative.split("/") or not select(relative):
                    continue
                if member.size > caps.max_file_bytes:
                    done.skipped[relative] = member.size
                    continue
                destination = target / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                data = archive.extractfile(member)
                if data is None:
                    continue
                with data, open(destination, "wb") as handle:
                    shutil.copyfileobj(data, handle)
                done.files += 1
    except ArchiveError:
        raise
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile, ValueError) as error:
        raise ArchiveError(f"cannot read the tarball: {error}") from None
    finally:
        raw.close()
    return done
