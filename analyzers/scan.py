"""Scan files and directories with every rule, on all cores, and collect findings and errors."""

from __future__ import annotations

import gc
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from analyzers.cache import ResultCache
from analyzers.core import Finding, Project, Rule, all_rules, analyze_file
from analyzers.modules import root_for_relative_imports


SKIP_DIRS = frozenset({"__pycache__", ".git", ".venv", "node_modules", "build", "dist"})


@dataclass(frozen=True)
class ScanError:
    path: str
    message: str

    def to_dict(self) -> dict:
        return {"path": self.path, "message": self.message}


@dataclass
class ScanReport:
    findings: list[Finding] = field(default_factory=list)
    errors: list[ScanError] = field(default_factory=list)
    files: int = 0
    skipped: int = 0  # frozen files (deprecated pipelines) not analysed
    #: per analysed file, its package path (`Finding.path`, `diffusers/…`, what fingerprints hash) -> its path in
    #: the repository that holds it (`src/diffusers/…`), the path GitHub places annotations by; a file in no
    #: repository (an installed package) keeps its package path
    file_paths: dict[str, str] = field(default_factory=dict)
    #: the directory every `file_paths` value is relative to, when the scanned files share one (else None)
    root: Path | None = None
    #: files whose results came from the result cache (unchanged, and so was everything their rules read)
    cached: int = 0


class UsageError(Exception):
    """A path or option the user gave cannot be used; the CLI exits with status 2."""


def installed_diffusers() -> Path:
    """The directory of the installed `diffusers` package, found without importing it."""
    spec = importlib.util.find_spec("diffusers")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("diffusers is not installed here; install it (pip install diffusers==0.42.1) or name a path")
    return Path(next(iter(spec.submodule_search_locations)))


def project_root(path: Path) -> Path:
    """The directory whose children are top-level packages, so that finding paths read `diffusers/…`.

    For a package directory (one with `__init__.py`) that is the parent of its outermost package; for a
    repository checkout with `src/`, that `src/`.
    """
    path = path.resolve()
    if path.is_dir() and (path / "src").is_dir() and not (path / "__init__.py").exists():
        return path / "src"
    current = path if path.is_dir() else path.parent
    while (current / "__init__.py").exists() and current.parent != current:
        current = current.parent
    # a tree given without its parents' `__init__.py` files: its relative imports say how deep its packages lie
    return root_for_relative_imports(path, current)


def checkout_root(path: Path) -> Path | None:
    """The repository root above `path` when it lies in a checkout laid out as `src/<package>` + `tests/`."""
    for candidate in (path, *path.parents):
        if (
            (candidate / "src").is_dir()
            and (candidate / "tests").is_dir()
            and not (candidate / "__init__.py").exists()
        ):
            return candidate
    return None


#: directories of installed packages: a file under one is not a repository file, even in a checkout's `.venv/`
INSTALLED_DIRS = frozenset({"site-packages", "dist-packages"})


def _git_work_tree(directory: Path) -> Path | None:
    for candidate in (directory, *directory.parents):
        if (candidate / ".git").exists():  # a directory, or a file in a worktree or submodule
            return candidate
    return None


def repository_root(file: Path, known: dict[Path, Path | None] | None = None) -> Path | None:
    """The root of the repository that holds `file`: the nearest directory above it with a `.git` (what
    `git rev-parse --show-toplevel` answers there), else a checkout laid out as `src/` + `tests/` (an unpacked
    archive has no `.git`); None for a file that lies in no repository, such as an installed package.

    `known` remembers the answer per directory, for a caller that asks about many files at once."""
    file = file.resolve()
    if known is None or file.parent not in known:
        root = _git_work_tree(file.parent) or checkout_root(file.parent)
        if known is not None:
            known[file.parent] = root
    else:
        root = known[file.parent]
    if root is None or INSTALLED_DIRS & set(file.relative_to(root).parts):
        return None
    return root


def repository_paths(items: Sequence[tuple[Path, Path]]) -> tuple[dict[str, str], Path | None]:
    """For discovered (root, file) pairs: package path -> path in the file's repository, and the one directory
    those paths are relative to (None when they have several). A file in no repository keeps its package path,
    relative to its package root."""
    paths: dict[str, str] = {}
    bases: set[Path] = set()
    known: dict[Path, Path | None] = {}
    for root, file in items:
        package_path = Path(file).relative_to(root).as_posix()
        repository = repository_root(Path(file), known)
        base = repository if repository is not None else Path(root)
        paths.setdefault(package_path, Path(file).relative_to(base).as_posix())
        bases.add(base)
    return paths, (next(iter(bases)) if len(bases) == 1 else None)


def discover(paths: Sequence[Path]) -> list[tuple[Path, Path]]:
    """Expand paths into (root, file) pairs of Python files, sorted, skipping caches and virtualenvs.

    A file's root is the directory its finding path is relative to: the parent of its top-level package,
    or, for `tests/` in a checkout, the checkout itself (so paths read `diffusers/…` and `tests/…`). Naming
    a checkout scans its `src/` and its `tests/`.
    """
    found: dict[Path, Path] = {}

    def add_tree(start: Path, root: Path) -> None:
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
            for filename in filenames:
                if filename.endswith(".py"):
                    found[Path(dirpath, filename)] = root

    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise UsageError(f"{raw}: no such file or directory")
        path = path.resolve()
        checkout = checkout_root(path)
        if checkout is not None and path == checkout:
            add_tree(checkout / "src", checkout / "src")
            add_tree(checkout / "tests", checkout)
            continue
        if checkout is not None and (path == checkout / "tests" or checkout / "tests" in path.parents):
            root = checkout
        else:
            root = project_root(path)
        if path.is_file():
            found[path] = root
        else:
            add_tree(path, root)
    return [(root, file) for file, root in sorted(found.items())]


def project_dirs(root: Path) -> tuple[str, ...]:
    """The directories a project view over `root` reads from: a checkout's `src/` and root together."""
    checkout = checkout_root(root)
    if checkout is not None and root in (checkout, checkout / "src"):
        return (str(checkout / "src"), str(checkout))
    return (str(root),)


#: per scan, in each process: scan root -> its project view (and the directories it reads, asked once per root)
_WORKER_DIRS: dict[str, tuple[str, ...]] = {}
_WORKER_PROJECTS: dict[str, Project] = {}
_WORKER_RULES: list[type[Rule]] = []
_WORKER_OPTIONS: dict[str, object] = {}


#: objects a scan process may gain, net, between two runs of Python's cycle collector, which is off in between
#: (`gc.get_count()[0]` counts them while it is off). A file's syntax tree is freed by reference counting, and
#: collections triggered by its allocations would traverse every object alive, the project view's parsed neighbours
#: included, again and again (a third of a one-process scan of diffusers 0.42.1: 64 s with the collector on, 43 s
#: off). Files leave next to nothing in cycles (string literals are evaluated without `ast.literal_eval`'s closures,
#: `matchers.string_value`; 5 objects after the whole of diffusers 0.42.1), and the caches a scan keeps are bounded
#: (about 1.9 million objects at most there), so a scan of that size never collects; a rule that began to leak
#: cycles would make the count pass this, and the collector run, before memory grows far
COLLECT_GROWTH = 4_000_000


def _init_worker(codes: Sequence[str], include_frozen: bool = False, cache: ResultCache | None = None) -> None:
    by_code = {rule.code: rule for rule in all_rules()}
    _WORKER_RULES[:] = [by_code[code] for code in codes]
    _WORKER_OPTIONS["include_frozen"] = include_frozen
    _WORKER_OPTIONS["cache"] = cache
    # a new scan may see changed files: project views (their parses, listings, indexes) start afresh
    _WORKER_PROJECTS.clear()
    _WORKER_DIRS.clear()


#: one file's outcome: findings, errors, skipped as frozen, answered from the result cache
Outcome = tuple[list[Finding], list[ScanError], bool, bool]


def _scan_one(item: tuple[str, str]) -> Outcome:
    root, file = item
    dirs = _WORKER_DIRS.get(root)
    if dirs is None:
        dirs = _WORKER_DIRS[root] = project_dirs(Path(root))
    project = _WORKER_PROJECTS.get(dirs[0])
    if project is None:
        project = _WORKER_PROJECTS[dirs[0]] = Project.from_directory(*dirs)
    path = Path(file).relative_to(root).as_posix()
    try:
        source = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return [], [ScanError(path, f"cannot read this file: {error}")], False, False
    include_frozen = bool(_WORKER_OPTIONS.get("include_frozen"))
    cache = _WORKER_OPTIONS.get("cache")
    hit = False
    if isinstance(cache, ResultCache):
        result, hit = cache.analyze(path, source, project=project, rules=_WORKER_RULES, include_frozen=include_frozen)
    else:
        result = analyze_file(path, source, project=project, rules=_WORKER_RULES, include_frozen=include_frozen)
    if gc.get_count()[0] > COLLECT_GROWTH:
        gc.collect(1)  # survivors move to the oldest generation, which later collections here do not traverse
    return result.findings, [ScanError(path, message) for message in result.errors], result.skipped, hit


def _worker_start(codes: Sequence[str], include_frozen: bool, cache: ResultCache | None) -> None:
    """A scan's worker process: the rules set up, the cycle collector off (`COLLECT_GROWTH`)."""
    gc.disable()
    _init_worker(codes, include_frozen, cache)


def scan_isolated(
    root: str, file: str, codes: tuple[str, ...], include_frozen: bool, cache: ResultCache | None = None, run: str = ""
) -> Outcome:
    """`_scan_one` in an isolated worker (engine.isolation): the rules are set up once per worker and scan (`run`)."""
    if _WORKER_OPTIONS.get("run") != (codes, include_frozen, cache, run):
        _worker_start(codes, include_frozen, cache)
        _WORKER_OPTIONS["run"] = (codes, include_frozen, cache, run)
    return _scan_one((root, file))


#: runs `function(*item)` for each item in processes of its own and returns, per item, the value or a short
#: reason (str) why there is none: a crash, a time or memory limit (the command line passes engine.isolation's pool)
Isolate = Callable[[Callable, list[tuple]], list]


def scan(
    paths: Sequence[Path],
    rules: Sequence[type[Rule]] | None = None,
    *,
    jobs: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    include_frozen: bool = False,
    isolate: Isolate | None = None,
    cache: ResultCache | None = None,
) -> ScanReport:
    """Run `rules` over every Python file under `paths`; unparsable files become errors. With `isolate`, each file
    is analysed there, and a file that crashes the parser or passes a limit becomes an error too. With `cache`, a
    file that did not change, nor did anything its rules read, is answered from it (`analyzers.cache`)."""
    rules = all_rules() if rules is None else list(rules)
    found = discover(paths)
    items = [(str(root), str(file)) for root, file in found]
    codes = [rule.code for rule in rules]
    jobs = jobs or os.cpu_count() or 1
    report = ScanReport(files=len(items))
    report.file_paths, report.root = repository_paths(found)
    if isolate is not None:
        run = f"{os.getpid()}-{time.monotonic_ns()}"  # workers outlive a scan: the next one starts afresh
        outcomes = isolate(
            scan_isolated, [(root, file, tuple(codes), include_frozen, cache, run) for root, file in items]
        )
        results: Iterable[Outcome] = [
            ([], [ScanError(Path(file).relative_to(root).as_posix(), f"not analysed: {outcome}")], False, False)
            if isinstance(outcome, str)
            else outcome
            for (root, file), outcome in zip(items, outcomes, strict=True)
        ]
        _collect(report, results, len(items), progress)
    elif jobs == 1 or len(items) < 8:
        collecting = gc.isenabled()
        _worker_start(codes, include_frozen, cache)
        try:
            _collect(report, map(_scan_one, items), len(items), progress)
        finally:
            _init_worker(codes, include_frozen, None)  # this process keeps no view of the tree it scanned
            if collecting:
                gc.enable()
    else:
        initargs = (codes, include_frozen, cache)
        with ProcessPoolExecutor(max_workers=jobs, initializer=_worker_start, initargs=initargs) as pool:
            # small chunks keep both cores busy despite a few very large files
            _collect(report, pool.map(_scan_one, items, chunksize=4), len(items), progress)
    if cache is not None:
        cache.prune()
    report.findings.sort(key=lambda f: (f.path, f.line, f.code))
    report.errors.sort(key=lambda e: e.path)
    return report


def _collect(report: ScanReport, results: Iterable[Outcome], total: int, progress) -> None:
    for done, (findings, errors, skipped, cached) in enumerate(results, start=1):
        report.findings.extend(findings)
        report.errors.extend(errors)
        report.skipped += skipped
        report.cached += cached
        if progress is not None:
            progress(done, total)


def tty_progress(done: int, total: int) -> None:
    """Print `scanned N/M files` on stderr, in place."""
    if done == total or done % 25 == 0:
        end = "\n" if done == total else ""
        print(f"\rscanned {done}/{total} files", end=end, file=sys.stderr, flush=True)
