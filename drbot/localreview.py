"""Review a local git diff the way the App reviews a pull request."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from analyzers.core import Finding, Project, Rule, analyze_file, module_name_for
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

    def files(self, directory: str) -> list[str]:
        """Every file path under `directory` at this revision (recursively)."""
        result = subprocess.run(
            ["git", "-C", str(self.repo), "ls-tree", "-r", "--name-only", "-z", self.rev, "--", directory + "/"],
            capture_output=True,
        )
        if result.returncode != 0:
            return []
        return [p for p in result.stdout.decode("utf-8", "replace").split("\0") if p]

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

    def listing(directory: str) -> list[str]:
        found: set[str] = set()
        for prefix in (*prefixes, ""):
            found.update(path[len(prefix) :] for path in tree.files(prefix + directory))
        return sorted(found)

    return Project(read, listing)


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


_WORKER: dict[str, object] = {}


def _init_worker(repo: str, codes: Sequence[str] | None) -> None:
    from analyzers.core import all_rules

    _WORKER.clear()
    _WORKER["repo"] = Path(repo)
    _WORKER["rules"] = None if codes is None else [r for r in all_rules() if r.code in set(codes)]


def _analyze_version(item: tuple) -> tuple[str, list[Finding], list[str]]:
    """Analyse one file at one revision (in a worker: one git reader and project view per revision).

    `item` is (revision, path in the repository, path the findings carry, rule codes or None for all).
    """
    sha, repo_path, path, only = item
    trees = _WORKER.setdefault("trees", {})
    if sha not in trees:
        tree = GitTree(_WORKER["repo"], sha)  # type: ignore[arg-type]
        trees[sha] = (tree, project_for(tree))
    tree, project = trees[sha]
    source = tree.read(repo_path)
    if source is None:
        return sha, [], []
    rules = _WORKER["rules"]
    if only is not None:
        from analyzers.core import all_rules

        rules = [r for r in (rules or all_rules()) if r.code in only]  # type: ignore[union-attr]
    result = analyze_file(path, source, project=project, rules=rules)
    return sha, result.findings, result.errors


COPY_RULE = "DRB801"


def changed_objects(module: str, base: str | None, head: str | None) -> set[str]:
    """Dotted names (`module.Class`, `module.Class.method`, `module.function`) whose code differs."""
    import ast

    def objects(source: str | None) -> dict[str, str]:
        if not source:
            return {}
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError):
            return {}
        lines = source.splitlines()

        def text(node: ast.AST) -> str:  # ast.get_source_segment splits the whole source on every call
            return "\n".join(lines[node.lineno - 1 : node.end_lineno])  # type: ignore[attr-defined]

        found: dict[str, str] = {}
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                found[f"{module}.{node.name}"] = text(node)
                if isinstance(node, ast.ClassDef):
                    for inner in node.body:
                        if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)):
                            found[f"{module}.{node.name}.{inner.name}"] = text(inner)
        return found

    before, after = objects(base), objects(head)
    return {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}


def copies_of(repo: Path, sha: str, names: set[str]) -> list[str]:
    """Files at `sha` holding a `# Copied from` marker that names one of `names` (or something inside it)."""
    if not names:
        return []
    # the marker names exactly this object (`… with A->B` may follow), not one inside a changed class
    args = [arg for name in sorted(names) for arg in ("-e", f"Copied from {re.escape(name)}( |$)")]
    result = subprocess.run(
        ["git", "-C", str(repo), "grep", "-l", "-E", *args, sha, "--", "src/", "diffusers/"],
        capture_output=True,
        text=True,
    )
    return sorted({line.split(":", 1)[1] for line in result.stdout.splitlines() if ":" in line})


def review(
    repo: Path,
    base: str,
    head: str = "HEAD",
    rules: Sequence[type[Rule]] | None = None,
    jobs: int | None = None,
    include: Callable[[str], bool] | None = None,
) -> ReviewData:
    """Analyse base and head of every changed Python file and compare the findings by fingerprint.

    `include(repo_path)` narrows the changed files reviewed (the App's configured paths and file cap).
    """
    repo = Path(_git(repo, "rev-parse", "--show-toplevel").strip())
    base_sha = _git(repo, "rev-parse", "--verify", f"{base}^{{commit}}").strip()
    head_sha = _git(repo, "rev-parse", "--verify", f"{head}^{{commit}}").strip()
    files = changed_files(repo, base_sha, head_sha)
    if include is not None:
        files = [f for f in files if include(f.new_path or f.old_path or "")]
    codes = None if rules is None else [r.code for r in rules]
    # a renamed file's base findings carry the new path, so a move alone changes no fingerprint
    items: list[tuple] = [
        (base_sha, f.old_path, finding_path(f.new_path or f.old_path), None) for f in files if f.old_path
    ]
    items += [(head_sha, f.new_path, finding_path(f.new_path), None) for f in files if f.new_path]
    jobs = min(jobs or os.cpu_count() or 1, max(len(items), 1))
    follow_copies = codes is None or COPY_RULE in codes
    touched_paths = {f.new_path for f in files} | {f.old_path for f in files}

    def context_items() -> list[tuple]:
        """Copies of edited code in files the change does not touch (`make fix-copies` was not run)."""
        if not follow_copies:
            return []
        edited = _edited_objects(repo, base_sha, head_sha, files)
        extra: list[tuple] = []
        for path in copies_of(repo, head_sha, edited):
            if path not in touched_paths:
                extra += [(sha, path, finding_path(path), (COPY_RULE,)) for sha in (base_sha, head_sha)]
        return extra

    if jobs <= 1:
        _init_worker(str(repo), codes)
        try:
            items += context_items()
            results = [_analyze_version(item) for item in items]
        finally:
            for tree, _ in _WORKER.get("trees", {}).values():  # type: ignore[union-attr]
                tree.close()
    else:
        with ProcessPoolExecutor(jobs, initializer=_init_worker, initargs=(str(repo), codes)) as pool:
            futures = [pool.submit(_analyze_version, item) for item in items]
            extra = context_items()  # git work in this process while the workers analyse
            futures += [pool.submit(_analyze_version, item) for item in extra]
            items += extra
            results = [future.result() for future in futures]
    context = sorted({item[1] for item in items if item[3] is not None})
    base_findings = [f for sha, findings, _ in results if sha == base_sha for f in findings]
    head_findings = [f for sha, findings, _ in results if sha == head_sha for f in findings]
    errors = [
        (path, message)
        for (sha, _, path, _), (_, _, messages) in zip(items, results, strict=True)
        if sha == head_sha
        for message in messages
    ]
    touched = [f.new_path for f in files if f.new_path]
    comparison = compare(base_findings, head_findings)
    context_paths = {finding_path(path) for path in context}
    changed_modules = {module_name_for(finding_path(p)) for f in files for p in (f.old_path, f.new_path) if p}
    notes = {
        f.fingerprint: copy_note(f, f.path in context_paths, changed_modules)
        for f in comparison.new
        if f.code == COPY_RULE
    }
    return ReviewData(
        comparison=comparison,
        changed_lines=changed_lines(repo, base_sha, head_sha, touched),
        errors=tuple(errors),
        files_reviewed=len(files),
        notes={fp: note for fp, note in notes.items() if note},
    )


def copy_note(finding: Finding, copy_untouched: bool, changed_modules: set[str]) -> str:
    """Say which side of a `# Copied from` pair the change edited."""
    source_changed = any(finding.symbol == m or finding.symbol.startswith(m + ".") for m in changed_modules)
    if copy_untouched:
        return "the source was edited and this copy was not updated: run `make fix-copies`"
    if source_changed:
        return "both the source and this copy changed: make them agree, then run `make fix-copies`"
    return "this copy was edited; `make fix-copies` would revert it: change the source instead, or drop the marker"


def _edited_objects(repo: Path, base_sha: str, head_sha: str, files: Sequence[ChangedFile]) -> set[str]:
    base_tree, head_tree = GitTree(repo, base_sha), GitTree(repo, head_sha)
    try:
        edited: set[str] = set()
        for f in files:
            path = f.new_path or f.old_path or ""
            if not path.endswith(".py") or path.startswith("tests/"):
                continue
            module = module_name_for(finding_path(path))
            base = base_tree.read(f.old_path) if f.old_path else None
            head = head_tree.read(f.new_path) if f.new_path else None
            edited |= changed_objects(module, base, head)
        return edited
    finally:
        base_tree.close()
        head_tree.close()
