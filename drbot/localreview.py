"""Review a local git diff the way the App reviews a pull request."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from analyzers.core import Finding, Project, Rule, analyze_file
from analyzers.review import ReviewData, compare


#: where a repository keeps the package and its tests; paths in findings drop the `src/` prefix
SOURCE_PREFIXES = ("src/",)
REVIEWED = re.compile(r"^(src/diffusers/|diffusers/|tests/).*\.py$")


class GitError(Exception):
    """git failed or the revision does not exist; the CLI exits with status 2."""


class GitTree:
    """Read files of one revision through one long-lived `git cat-file --batch` process."""

    def __init__(self, repo: Path, rev: str) -> None:
        self.repo = repo
        self.rev = rev
        self._proc: subprocess.Popen | None = None

    def read(self, path: str) -> str | None:
        if self._proc is None:
            self._proc = subprocess.Popen(
                ["git", "-C", str(self.repo), "cat-file", "--batch"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(f"{self.rev}:{path}\n".encode())
        self._proc.stdin.flush()
        header = self._proc.stdout.readline().decode()
        if header.endswith(" missing\n") or not header.strip():
            return None
        size = int(header.split()[2])
        data = self._proc.stdout.read(size)
        self._proc.stdout.read(1)  # the newline after the object
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def close(self) -> None:
        if self._proc is not None:
            self._proc.communicate()
            self._proc = None


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise GitError(f"git {' '.join(args)}: {result.stderr.strip() or 'failed'}")
    return result.stdout


def finding_path(repo_path: str) -> str:
    """`src/diffusers/x.py` -> `diffusers/x.py`: the path findings carry, whatever the layout."""
    for prefix in SOURCE_PREFIXES:
        if repo_path.startswith(prefix):
            return repo_path[len(prefix) :]
    return repo_path


def project_for(tree: GitTree, prefixes: Sequence[str] = SOURCE_PREFIXES) -> Project:
    """A project view over one revision, reading `diffusers/…` from `src/diffusers/…` where it exists."""

    def read(path: str) -> str | None:
        for prefix in (*prefixes, ""):
            text = tree.read(prefix + path)
            if text is not None:
                return text
        return None

    return Project(read)


@dataclass(frozen=True)
class ChangedFile:
    status: str  # A, M, D, R
    old_path: str | None
    new_path: str | None


_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(?P<start>\d+)(?:,(?P<count>\d+))? @@")


def changed_files(repo: Path, base: str, head: str) -> list[ChangedFile]:
    out = _git(repo, "diff", "--name-status", "-M", "--no-color", base, head, "--")
    files = []
    for line in out.splitlines():
        parts = line.split("\t")
        status = parts[0][0]
        if status == "R":
            files.append(ChangedFile("R", parts[1], parts[2]))
        elif status == "A":
            files.append(ChangedFile("A", None, parts[1]))
        elif status == "D":
            files.append(ChangedFile("D", parts[1], None))
        else:
            files.append(ChangedFile(status, parts[1], parts[1]))
    return [f for f in files if REVIEWED.match(f.new_path or f.old_path or "")]


def changed_lines(repo: Path, base: str, head: str, paths: Sequence[str]) -> dict[str, frozenset[int]]:
    """Head line numbers added or changed by the diff, per finding path."""
    if not paths:
        return {}
    out = _git(repo, "diff", "-U0", "--no-color", "-M", base, head, "--", *paths)
    lines: dict[str, set[int]] = {}
    current: str | None = None
    for line in out.splitlines():
        if line.startswith("+++ "):
            target = line[4:]
            current = finding_path(target[2:]) if target.startswith("b/") else None
        elif current is not None and (match := _HUNK.match(line)):
            start, count = int(match["start"]), int(match["count"] or 1)
            lines.setdefault(current, set()).update(range(start, start + count))
    return {path: frozenset(numbers) for path, numbers in lines.items()}


def review(repo: Path, base: str, head: str = "HEAD", rules: Sequence[type[Rule]] | None = None) -> ReviewData:
    """Analyse base and head of every changed Python file and compare the findings by fingerprint."""
    repo = Path(_git(repo, "rev-parse", "--show-toplevel").strip())
    base_sha = _git(repo, "rev-parse", "--verify", f"{base}^{{commit}}").strip()
    head_sha = _git(repo, "rev-parse", "--verify", f"{head}^{{commit}}").strip()
    files = changed_files(repo, base_sha, head_sha)
    base_tree, head_tree = GitTree(repo, base_sha), GitTree(repo, head_sha)
    base_project, head_project = project_for(base_tree), project_for(head_tree)
    base_findings: list[Finding] = []
    head_findings: list[Finding] = []
    errors: list[tuple[str, str]] = []
    try:
        for changed in files:
            for repo_path, tree, project, sink in (
                (changed.old_path, base_tree, base_project, base_findings),
                (changed.new_path, head_tree, head_project, head_findings),
            ):
                if repo_path is None:
                    continue
                source = tree.read(repo_path)
                if source is None:
                    continue
                result = analyze_file(finding_path(repo_path), source, project=project, rules=rules)
                sink.extend(result.findings)
                if tree is head_tree:
                    errors.extend((finding_path(repo_path), message) for message in result.errors)
    finally:
        base_tree.close()
        head_tree.close()
    touched = [f.new_path for f in files if f.new_path]
    return ReviewData(
        comparison=compare(base_findings, head_findings),
        changed_lines=changed_lines(repo, base_sha, head_sha, touched),
        errors=tuple(errors),
        files_reviewed=len(files),
    )
