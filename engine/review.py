"""Review a local git diff the way the App reviews a pull request.

Every file of the diff is read and parsed in the worker processes of `engine.isolation`, never here: a file that
crashes the parser, runs past the time limit, exhausts the memory limit or is over the size limit is reported as
not analysed, and the review goes on with the others.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from analyzers.cache import ResultCache
from analyzers.core import Finding, Project, Rule, analyze_file, module_name_for
from analyzers.review import ReviewData, compare
from common.process import describe_failure, describe_start_failure
from engine.isolation import Failure, Limits, Pool, size_reason


#: where a repository keeps the package and its tests; paths in findings drop the `src/` prefix
SOURCE_PREFIXES = ("src/",)
REVIEWED = re.compile(r"^(src/diffusers/|diffusers/|tests/).*\.py$")


class GitError(Exception):
    """git failed or the revision does not exist; the CLI exits with status 2."""


class GitTree:
    """Read files of one revision through one long-lived `git cat-file --batch` process.

    A file larger than `max_bytes` reads as absent (None) without being loaded; its size lands in `too_large`.
    """

    def __init__(self, repo: Path, rev: str, max_bytes: int | None = None) -> None:
        self.repo = repo
        self.rev = rev
        self.max_bytes = max_bytes
        self.too_large: dict[str, int] = {}
        self._proc: subprocess.Popen | None = None

    def read(self, path: str) -> str | None:
        """The file's text at this revision; None when it is absent, not a file, too large or not UTF-8. GitError
        when git itself fails (a file read as absent would show every finding in it as fixed)."""
        if self._proc is None:
            command = ["git", "-C", str(self.repo), "cat-file", "--batch"]
            try:
                self._proc = subprocess.Popen(
                    command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
                )
            except OSError as error:
                raise GitError(describe_start_failure(command, error)) from None
        assert self._proc.stdin is not None and self._proc.stdout is not None
        try:
            self._proc.stdin.write(f"{self.rev}:{path}\n".encode())
            self._proc.stdin.flush()
            header = self._proc.stdout.readline().decode()
        except OSError:  # the process is gone: a broken pipe
            header = ""
        if not header:
            self._failed()
        fields = header.split()
        if header.endswith((" missing\n", " ambiguous\n")) or len(fields) != 3 or not fields[2].isdigit():
            return None
        size = int(fields[2])
        if fields[1] != "blob" or (self.max_bytes is not None and size > self.max_bytes):
            left = size + 1  # the object, then its newline: drained in chunks, never held
            while left > 0:
                chunk = self._proc.stdout.read(min(left, 1 << 20))
                if not chunk:
                    break
                left -= len(chunk)
            if fields[1] == "blob":
                self.too_large[path] = size
            return None
        data = self._proc.stdout.read(size)
        self._proc.stdout.read(1)  # the newline after the object
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def _failed(self) -> None:
        """git cat-file ended early: raise GitError with its exit status and what it said."""
        assert self._proc is not None
        process, self._proc = self._proc, None
        try:
            _, stderr = process.communicate(timeout=10)
        except (subprocess.TimeoutExpired, OSError, ValueError):
            process.kill()
            stderr = b""
        command = ["git", "-C", str(self.repo), "cat-file", "--batch"]
        raise GitError(describe_failure(command, process.returncode or -1, stderr.decode("utf-8", "replace"), ""))

    def files(self, directory: str) -> list[str]:
        """Every file path under `directory` at this revision (recursively); GitError when git fails."""
        command = ["git", "-C", str(self.repo), "ls-tree", "-r", "--name-only", "-z", self.rev, "--", directory + "/"]
        try:
            result = subprocess.run(command, capture_output=True)
        except OSError as error:
            raise GitError(describe_start_failure(command, error)) from None
        if result.returncode != 0:
            raise GitError(describe_failure(command, result.returncode, result.stderr, result.stdout))
        return [p for p in result.stdout.decode("utf-8", "replace").split("\0") if p]

    def close(self) -> None:
        if self._proc is not None:
            self._proc.communicate()
            self._proc = None


def _git(repo: Path, *args: str) -> str:
    """Run git in `repo`; GitError naming the command, its exit status and what git said when it fails."""
    command = ["git", *args]
    try:
        result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    except OSError as error:  # git is not installed, or `repo` is no directory
        raise GitError(describe_start_failure(command, error)) from None
    if result.returncode != 0:
        raise GitError(describe_failure(command, result.returncode, result.stderr, result.stdout))
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


# -- in the analysis workers (engine.isolation): everything that reads or parses a file of the diff -------------

#: git readers and project views of the revisions a worker analysed lately (a review asks for two, plus context)
_TREES: OrderedDict[tuple[str, str, int | None], tuple[GitTree, Project]] = OrderedDict()
TREES_KEPT = 4
_RULES: dict[tuple, list[type[Rule]]] = {}


def workdir_cache(workdir: str | None) -> ResultCache:
    """The App's result cache: `$DRBOT_CACHE_DIR`, else `drbot-cache/` in its workdir (default: the system temp dir),
    where base-side files of the reviewed repository, the same across pull requests, are found again."""
    import tempfile

    return ResultCache(
        os.environ.get("DRBOT_CACHE_DIR") or os.path.join(workdir or tempfile.gettempdir(), "drbot-cache")
    )


def worker_modules() -> tuple[str, ...]:
    """What the analysis workers import before their first task (the fork server preloads them once)."""
    from analyzers.core import all_rules

    return (__name__, *sorted({rule.__module__ for rule in all_rules()}))


def _tree(repo: str, sha: str, max_bytes: int | None) -> tuple[GitTree, Project]:
    """One reader and project view per revision, kept across the tasks of a review (rules read neighbours)."""
    key = (repo, sha, max_bytes)
    if key in _TREES:
        _TREES.move_to_end(key)
        return _TREES[key]
    for old in [k for k in _TREES if not os.path.isdir(k[0])]:  # an earlier review's repository, removed since
        _TREES.pop(old)[0].close()
    tree = GitTree(Path(repo), sha, max_bytes)
    _TREES[key] = (tree, project_for(tree))
    while len(_TREES) > TREES_KEPT:
        _TREES.popitem(last=False)[1][0].close()
    return _TREES[key]


def _rules(codes: tuple[str, ...] | None, only: tuple[str, ...] | None) -> list[type[Rule]]:
    key = (codes, only)
    if key not in _RULES:
        from analyzers.core import all_rules

        _RULES[key] = [
            r for r in all_rules() if (codes is None or r.code in codes) and (only is None or r.code in only)
        ]
    return _RULES[key]


def analyze_version(
    repo: str,
    sha: str,
    repo_path: str,
    path: str,
    codes: tuple[str, ...] | None,
    only: tuple[str, ...] | None,
    max_bytes: int | None,
    cache: ResultCache | None = None,
) -> tuple[list[Finding], list[str]] | Failure:
    """Findings and errors of one file at one revision (`path` is the path findings carry); runs in a worker.
    With `cache`, a file whose text and reads are unchanged since some earlier review is answered from it."""
    tree, project = _tree(repo, sha, max_bytes)
    source = tree.read(repo_path)
    if source is None:
        if repo_path in tree.too_large:
            return Failure(size_reason(tree.too_large[repo_path], max_bytes or 0))
        return [], []
    if cache is not None:
        result, _ = cache.analyze(path, source, project=project, rules=_rules(codes, only))
    else:
        result = analyze_file(path, source, project=project, rules=_rules(codes, only))
    return result.findings, result.errors


def edited_objects(
    repo: str, base_sha: str, head_sha: str, old_path: str | None, new_path: str | None, max_bytes: int | None
) -> set[str]:
    """`changed_objects` of one changed file (both sides parsed here, in a worker); empty for a file too large."""
    base = _tree(repo, base_sha, max_bytes)[0] if old_path else None
    head = _tree(repo, head_sha, max_bytes)[0] if new_path else None
    before = base.read(old_path) if base and old_path else None
    after = head.read(new_path) if head and new_path else None
    if (base and old_path in base.too_large) or (head and new_path in head.too_large):
        return set()
    return changed_objects(module_name_for(finding_path(new_path or old_path or "")), before, after)


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

        def text(node: ast.stmt) -> str:  # ast.get_source_segment splits the whole source on every call
            return "\n".join(lines[node.lineno - 1 : node.end_lineno])

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
    command = ["git", "-C", str(repo), "grep", "-l", "-E", *args, sha, "--", "src/", "diffusers/"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, errors="replace")
    except OSError as error:
        raise GitError(describe_start_failure(command, error)) from None
    if result.returncode not in (0, 1):  # 1: nothing matched
        raise GitError(describe_failure(command, result.returncode, result.stderr, result.stdout))
    return sorted({line.split(":", 1)[1] for line in result.stdout.splitlines() if ":" in line})


def blob_sizes(repo: Path, refs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Sizes of `(revision, path)` blobs, from one `git cat-file --batch-check` (nothing is read); absent ones
    are left out."""
    if not refs:
        return {}
    command = ["git", "-C", str(repo), "cat-file", "--batch-check=%(objecttype) %(objectsize)"]
    try:
        result = subprocess.run(
            command, input="".join(f"{sha}:{path}\n" for sha, path in refs).encode(), capture_output=True
        )
    except OSError as error:
        raise GitError(describe_start_failure(command, error)) from None
    lines = result.stdout.decode("utf-8", "replace").splitlines()
    if result.returncode != 0 or len(lines) != len(refs):  # one line per request, in order, or git failed
        stderr = result.stderr.decode("utf-8", "replace")
        raise GitError(describe_failure(command, result.returncode, stderr, f"{len(lines)} of {len(refs)} answered"))
    sizes: dict[tuple[str, str], int] = {}
    for ref, line in zip(refs, lines, strict=True):
        kind, _, size = line.partition(" ")
        if kind == "blob" and size.isdigit():
            sizes[ref] = int(size)
    return sizes


def review(
    repo: Path,
    base: str,
    head: str = "HEAD",
    rules: Sequence[type[Rule]] | None = None,
    jobs: int | None = None,
    include: Callable[[str], bool] | None = None,
    *,
    pool: Pool | None = None,
    limits: Limits | None = None,
    not_analysed: Mapping[str, str] | None = None,
    cache: ResultCache | None = None,
) -> ReviewData:
    """Analyse base and head of every changed Python file and compare the findings by fingerprint.

    Args:
        include: `include(repo_path)` narrows the changed files reviewed (the App's configured paths and file cap).
        pool: the analysis workers to use (the App's long-lived pool); without one, a pool of `jobs` workers
            (default: one per core) under `limits` is made for this review and stopped at its end.
        not_analysed: repository paths the caller already knows it cannot analyse (the App's extraction skipped
            them for size), with the reason; they are reported with the files that fail here.
        cache: per-file results kept across reviews (`analyzers.cache`): the workers answer a file from it when
            neither its text nor anything its rules read changed, and store what they analyse.
    """
    repo = Path(_git(repo, "rev-parse", "--show-toplevel").strip())
    base_sha = _git(repo, "rev-parse", "--verify", f"{base}^{{commit}}").strip()
    head_sha = _git(repo, "rev-parse", "--verify", f"{head}^{{commit}}").strip()
    files = changed_files(repo, base_sha, head_sha)
    if include is not None:
        files = [f for f in files if include(f.new_path or f.old_path or "")]
    try:
        if pool is not None:
            return _review(repo, base_sha, head_sha, files, rules, pool, not_analysed or {}, cache)
        workers = min(jobs or os.cpu_count() or 1, max(2 * len(files), 1))
        with Pool(limits or Limits(), workers, preload=worker_modules()) as own:
            return _review(repo, base_sha, head_sha, files, rules, own, not_analysed or {}, cache)
    finally:
        if cache is not None:
            cache.prune()


def _review(
    repo: Path,
    base_sha: str,
    head_sha: str,
    files: list[ChangedFile],
    rules: Sequence[type[Rule]] | None,
    pool: Pool,
    known_failures: Mapping[str, str],
    cache: ResultCache | None = None,
) -> ReviewData:
    limits = pool.limits
    deadline = time.monotonic() + limits.budget_s
    codes = None if rules is None else tuple(sorted(r.code for r in rules))
    # finding path -> why it was not analysed; any side failing drops the file's findings on both sides, since a
    # one-sided result would read as new or fixed findings
    failed: dict[str, str] = {finding_path(path): reason for path, reason in known_failures.items()}
    # (revision, path in the repository, path the findings carry, rule codes or None for all);
    # a renamed file's base findings carry the new path, so a move alone changes no fingerprint
    items: list[tuple] = [
        (base_sha, f.old_path, finding_path(f.new_path or f.old_path), None) for f in files if f.old_path
    ]
    items += [(head_sha, f.new_path, finding_path(f.new_path), None) for f in files if f.new_path]
    sizes = blob_sizes(repo, [(sha, path) for sha, path, _, _ in items])
    for sha, path, shown, _ in items:  # too large: never read, never sent to a worker
        if sizes.get((sha, path), 0) > limits.max_file_bytes:
            failed[shown] = size_reason(sizes[(sha, path)], limits.max_file_bytes)
    follow_copies = codes is None or COPY_RULE in codes
    touched_paths = {f.new_path for f in files} | {f.old_path for f in files}
    root, cap = str(repo), limits.max_file_bytes

    # copy tracking first: its results decide which untouched files join the review, so they come back early
    edited_jobs = []
    if follow_copies:
        for f in files:
            path = f.new_path or f.old_path or ""
            if path.endswith(".py") and not path.startswith("tests/") and finding_path(path) not in failed:
                job = pool.submit(edited_objects, root, base_sha, head_sha, f.old_path, f.new_path, cap)
                edited_jobs.append((finding_path(path), job))
    items = [item for item in items if item[2] not in failed]
    jobs = [
        pool.submit(analyze_version, root, sha, path, shown, codes, only, cap, cache)
        for sha, path, shown, only in items
    ]
    edited: set[str] = set()
    for shown, job in edited_jobs:
        value = pool.outcome(job, deadline)
        if isinstance(value, Failure):
            failed.setdefault(shown, value.reason)
        else:
            edited |= value
    # copies of edited code in files the change does not touch (`make fix-copies` was not run)
    extra = [
        (sha, path, finding_path(path), (COPY_RULE,))
        for path in copies_of(repo, head_sha, edited)
        if path not in touched_paths
        for sha in (base_sha, head_sha)
    ]
    jobs += [
        pool.submit(analyze_version, root, sha, path, shown, codes, only, cap, cache)
        for sha, path, shown, only in extra
    ]
    items += extra
    results = [pool.outcome(job, deadline) for job in jobs]
    for (sha, _, shown, _), result in zip(items, results, strict=True):
        if isinstance(result, Failure) and (sha == head_sha or shown not in failed):
            failed[shown] = result.reason  # the head's reason, when both sides failed
    done = [(item, result) for item, result in zip(items, results, strict=True) if item[2] not in failed]
    context = sorted({item[1] for item, _ in done if item[3] is not None})
    base_findings = [f for (sha, *_), (findings, _) in done if sha == base_sha for f in findings]
    head_findings = [f for (sha, *_), (findings, _) in done if sha == head_sha for f in findings]
    errors = [
        (shown, message) for (sha, _, shown, _), (_, messages) in done if sha == head_sha for message in messages
    ]
    touched = [f.new_path for f in files if f.new_path and finding_path(f.new_path) not in failed]
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
        not_analysed=tuple(sorted(failed.items())),
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
