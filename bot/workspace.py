"""A local git repository of a pull request (merge base, then head) built from GitHub tarballs, so the App
reviews with exactly the code `drbot review` runs: same diff, same context files, same copy tracking."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path


#: what a review needs from the repository: the package and its tests (docs and examples are not read)
EXTRACTED_PREFIXES = ("src/", "tests/")
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


def extract(tarball: bytes, target: Path, prefixes: tuple[str, ...] = EXTRACTED_PREFIXES) -> int:
    """Unpack GitHub's `{owner}-{repo}-{sha}/…` tarball into `target` without its top directory; only regular
    files under `prefixes`, and never outside `target` (no absolute paths, `..`, links or devices)."""
    count = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:*") as archive:
            for member in archive:
                parts = member.name.split("/", 1)
                if len(parts) != 2 or not member.isfile():
                    continue
                relative = parts[1]
                if not relative.startswith(prefixes) or relative.startswith("/") or ".." in relative.split("/"):
                    continue
                destination = target / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                if source is None:
                    continue
                with source, open(destination, "wb") as handle:
                    shutil.copyfileobj(source, handle)
                count += 1
    except (tarfile.TarError, EOFError, OSError) as error:
        raise WorkspaceError(f"cannot read the tarball: {error}") from None
    return count


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env={**os.environ, **GIT_IDENTITY}
    )
    if result.returncode != 0:
        raise WorkspaceError(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def build(base_tarball: bytes, head_tarball: bytes, parent: str | None = None) -> Path:
    """A repository with two commits, `base` and `head`; the caller removes it (`shutil.rmtree`)."""
    repo = Path(tempfile.mkdtemp(prefix="drbot-pr-", dir=parent))
    try:
        _git(repo, "init", "-q", "-b", "base")
        extract(base_tarball, repo)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "--allow-empty", "-m", "base")
        _git(repo, "tag", "base")
        for child in repo.iterdir():
            if child.name != ".git":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        extract(head_tarball, repo)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "--allow-empty", "-m", "head")
        _git(repo, "tag", "head")
    except BaseException:
        shutil.rmtree(repo, ignore_errors=True)
        raise
    return repo


def pipeline_classes(repo: Path, paths) -> list[str]:
    """Classes named `*Pipeline` defined at the top level of the changed pipeline modules (head side): what
    `/drbot contracts` runs when it names no pipeline."""
    import ast

    found: list[str] = []
    for path in sorted(paths):
        if "/pipelines/" not in f"/{path}" or not path.endswith(".py"):
            continue
        try:
            tree = ast.parse((repo / path).read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
            continue
        found += [n.name for n in tree.body if isinstance(n, ast.ClassDef) and n.name.endswith("Pipeline")]
    return sorted(set(found))
