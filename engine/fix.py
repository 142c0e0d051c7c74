"""`drbot fix`: apply the rules' fixes to a tree, pass after pass, checking each file's edits before keeping them.

A pass takes every finding of the selected rules that has a fix, applies the compatible ones file by file
(`analyzers.fixes.compatible`: by rule code, then line; an overlapping fix waits for the next pass, on the fixed
text) and keeps a file's edits only if the file still compiles and no rule (of all of them, not only the
selected) reports more on it than before. A batch that fails is retried fix by fix, and a fix that fails alone is
refused for the rest of the run. Then every file is analysed again, through a project view that reads the fixed
texts (a fix in one file may change another's findings: a `# Copied from` source edited under its copies), with
the result cache, so only what changed is analysed again. Nothing is written until the last pass: with `write`,
the changed files are written then, else the caller prints the diff.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from analyzers.analysis import MAX_FIX_PASSES, FileResult
from analyzers.cache import ResultCache
from analyzers.copies import COPY_RE, Located, Missing, locate_code
from analyzers.core import Finding, Project, Rule, all_rules
from analyzers.findings import Edit
from analyzers.fixes import apply_edits, apply_fixes, compatible, compiles, line_edits, split_lines
from analyzers.scan import Isolate, ScanError, discover, project_dirs, repository_paths, scan


#: what a finding is for "no rule reports more": its rule, file, scope and symbol (not its line, which fixes move)
Key = tuple[str, str, str, str]


def _keys(findings: Sequence[Finding]) -> Counter[Key]:
    return Counter(map(_key, findings))


@dataclass
class FixReport:
    #: every finding of every rule before any fix, and what is left after the last pass
    before: list[Finding] = field(default_factory=list)
    after: list[Finding] = field(default_factory=list)
    #: package path -> (text before, text after), for each file a fix changed
    changed: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: the findings whose fix was applied, pass after pass
    applied: list[Finding] = field(default_factory=list)
    #: findings whose fix was not kept, and why
    refused: list[tuple[Finding, str]] = field(default_factory=list)
    #: copies this run fixed whose `# Copied from` source took the same change (DRB801 findings it avoided)
    synced: list[Finding] = field(default_factory=list)
    errors: list[ScanError] = field(default_factory=list)
    #: package path -> the file on disk; package path -> the path in its repository (what diffs show)
    files: dict[str, Path] = field(default_factory=dict)
    file_paths: dict[str, str] = field(default_factory=dict)
    passes: int = 0
    files_scanned: int = 0

    def remaining(self, codes: set[str]) -> list[Finding]:
        return [f for f in self.after if f.code in codes]

    def gained(self) -> list[Finding]:
        """Findings after the fixes that were not there before (by rule, file, scope and symbol, counted)."""
        extra = _keys(self.after) - _keys(self.before)
        out = []
        for finding in self.after:
            key = _key(finding)
            if extra[key] > 0:
                extra[key] -= 1
                out.append(finding)
        return out


class _Tree:
    """The scanned files and their current texts (fixed ones from `overlay`), one project view per root."""

    def __init__(self, paths: Sequence[Path]) -> None:
        found = discover(paths)
        self.items = [(root, file) for root, file in found]
        self.file_paths, _ = repository_paths(found)
        self.files = {Path(file).relative_to(root).as_posix(): Path(file) for root, file in found}
        self.dirs = {Path(file).relative_to(root).as_posix(): project_dirs(Path(root)) for root, file in found}
        self.overlay: dict[str, str] = {}
        self.original: dict[str, str] = {}
        #: files the first scan could not analyse: left out of the passes
        self.unanalysable: set[str] = set()
        self._bases: dict[tuple[str, ...], Project] = {}

    def text(self, path: str) -> str:
        if path not in self.overlay:
            self.original.setdefault(path, self.files[path].read_text(encoding="utf-8"))
            return self.original[path]
        return self.overlay[path]

    def project(self, path: str, extra: dict[str, str] | None = None) -> Project:
        dirs = self.dirs[path]
        if dirs not in self._bases:
            self._bases[dirs] = Project.from_directory(*dirs)
        return self._bases[dirs].overlaid({**self.overlay, **(extra or {})})


def fix_tree(
    paths: Sequence[Path],
    rules: Sequence[type[Rule]],
    *,
    cache: ResultCache,
    jobs: int | None = None,
    isolate: Isolate | None = None,
    include_frozen: bool = False,
    write: bool = False,
) -> FixReport:
    """Fix what the fixes of `rules` can under `paths`; every rule is run to check that no finding is gained."""
    everything = all_rules()
    fixing = {rule.code for rule in rules if rule.fixable and not rule.DRIFT_FIX}
    # a drift fix (DRB801: sync a `# Copied from` copy) runs whatever the selection, on what this run caused only
    drifting = {rule.code for rule in everything if rule.DRIFT_FIX}
    tree = _Tree(paths)
    report = FixReport(files=tree.files, file_paths=tree.file_paths, files_scanned=len(tree.items))
    first = scan(paths, everything, jobs=jobs, include_frozen=include_frozen, isolate=isolate, cache=cache)
    report.before = list(first.findings)
    report.errors = list(first.errors)
    tree.unanalysable = {error.path for error in first.errors}
    findings = _by_path(first.findings)
    at_first = _keys(first.findings)
    refused: set[tuple[str, Key]] = set()

    def wanted(path: str, finding: Finding) -> bool:
        if finding.fix is None or (path, _key(finding)) in refused:
            return False
        if finding.code in drifting:  # a copy left behind by a source this run fixed: sync it from the source
            return _key(finding) not in at_first and _source_changed(tree, finding) is True
        return finding.code in fixing

    for _ in range(MAX_FIX_PASSES):
        todo = {
            path: found
            for path, found in findings.items()
            if path in tree.files and any(wanted(path, f) for f in found)
        }
        report.passes += 1
        changed = False
        for path, found in sorted(todo.items()):
            candidates = [f for f in found if wanted(path, f)]
            text = tree.text(path)
            new, applied, failed = _fix_file(tree, path, text, candidates, everything, cache, include_frozen)
            for finding, why in failed:
                refused.add((path, _key(finding)))
                report.refused.append((finding, why))
            if new != text:
                tree.overlay[path] = new
                report.applied.extend(applied)
                changed = True
        if changed:
            findings = _by_path(
                _analyze_all(tree, everything, cache, include_frozen, report, jobs or os.cpu_count() or 1)
            )
        # a copy this run fixed whose source it did not: the source takes the copy's change, or the copy drifts
        drifted = [
            f
            for found in findings.values()
            for f in found
            if f.code in drifting
            and f.fix is not None
            and _key(f) not in at_first
            and (f.path, _key(f)) not in refused
            and _source_changed(tree, f) is False
        ]
        synced = False
        for finding in drifted:
            if _source_changed(tree, finding):
                continue  # synced from another copy a moment ago: the copy follows the source next pass, if need be
            problem = _sync_source(tree, finding, everything, cache, include_frozen)
            if problem is None:
                synced = True
                report.synced.append(finding)
            else:
                refused.add((finding.path, _key(finding)))
                report.refused.append((finding, problem))
        if synced:
            findings = _by_path(
                _analyze_all(tree, everything, cache, include_frozen, report, jobs or os.cpu_count() or 1)
            )
        if not changed and not synced:
            report.passes -= 1
            break
    report.after = sorted((f for found in findings.values() for f in found), key=lambda f: (f.path, f.line, f.code))
    for path, new in tree.overlay.items():
        if new != tree.original[path]:
            report.changed[path] = (tree.original[path], new)
    if write:
        for path, (_, new) in sorted(report.changed.items()):
            with open(tree.files[path], "w", encoding="utf-8", newline="") as handle:
                handle.write(new)
    return report


def _source(tree: _Tree, finding: Finding) -> Located | None:
    """Where the source of a DRB801 finding's copy lies (its symbol is `diffusers.<object>`)."""
    try:
        return locate_code(tree.project(finding.path), finding.symbol.removeprefix("diffusers."))
    except Missing:
        return None


def _source_changed(tree: _Tree, finding: Finding) -> bool | None:
    """Whether this run changed the source of a DRB801 finding's copy (None: the source is not found)."""
    located = _source(tree, finding)
    if located is None:
        return None
    return located.path in tree.overlay and tree.overlay[located.path] != tree.original.get(located.path)


def _sync_source(tree: _Tree, finding: Finding, rules, cache: ResultCache, include_frozen: bool) -> str | None:
    """Give the source of a copy this run fixed the copy's change, so that the copy matches it again; None when done,
    else why not. The finding's drift fix (what `make fix-copies` would write over the copy) says where the copy's
    body lies and what the source's body reads as after the marker's replacements, line for line."""
    located = _source(tree, finding)
    copy = tree.overlay.get(finding.path)
    if located is None or located.path not in tree.files or finding.fix is None or len(finding.fix.edits) != 1:
        return "its `# Copied from` source is not among the files being fixed"
    if copy is None or copy == tree.original.get(finding.path):
        return "the copy differs from its source, but not through this run's fixes"
    if _source_changed(tree, finding):
        return "this run changed both the copy and its source, differently"
    body = located.lines[located.start : located.end]
    if any(COPY_RE.search(line) for line in body):
        return "the source's body holds `# Copied from` lines of its own: its lines and the copy's do not align"
    edit = finding.fix.edits[0]
    expected, observed = edit.text, "".join(split_lines(copy)[edit.line - 1 : edit.end_line])
    if len(split_lines(expected)) != len(body):
        return "the source's body and the copy's do not align line for line"
    shifted = [
        Edit(e.line + located.start, e.end_line + located.start, e.text) for e in line_edits(expected, observed)
    ]
    source = tree.text(located.path)
    new = apply_edits(source, shifted)
    why = compiles(located.path, new)
    if why is not None:
        return f"the synced source does not compile ({why})"
    result = _analyze(tree, finding.path, copy, rules, cache, include_frozen, {located.path: new})
    if _key(finding) in _keys(result.findings):
        return "the copy still differs from the synced source"
    tree.overlay[located.path] = new
    return None


def _key(finding: Finding) -> Key:
    return (finding.code, finding.path, finding.scope, finding.symbol)


def _by_path(findings: Sequence[Finding]) -> dict[str, list[Finding]]:
    out: dict[str, list[Finding]] = {}
    for finding in findings:
        out.setdefault(finding.path, []).append(finding)
    return out


def _analyze(
    tree: _Tree, path: str, text: str, rules, cache: ResultCache, include_frozen: bool, extra=None
) -> FileResult:
    project = tree.project(path, extra)
    result, _ = cache.analyze(
        path, text, project=project, rules=rules, include_frozen=include_frozen, drift_fixes=True
    )
    return result


def _fix_file(
    tree: _Tree,
    path: str,
    text: str,
    candidates: list[Finding],
    rules,
    cache: ResultCache,
    include_frozen: bool,
) -> tuple[str, list[Finding], list[tuple[Finding, str]]]:
    drifting = {rule.code for rule in rules if rule.DRIFT_FIX}
    """Apply the compatible fixes of `candidates` to `text`: all at once if that passes the checks, else one by one.
    Returns the new text, the findings fixed, and the fixes refused with the reason."""
    # what the file reports now, with the other files as this pass left them (a fix elsewhere may have changed it)
    before = _keys(_analyze(tree, path, text, rules, cache, include_frozen).findings)

    def check(new: str) -> str | None:
        why = compiles(path, new)
        if why is not None:
            return f"the fixed file does not compile ({why})"
        result = _analyze(tree, path, new, rules, cache, include_frozen, {path: new})
        if result.errors:
            return "the fixed file cannot be analysed: " + "; ".join(result.errors)
        # a copy's drift (DRB801) is settled between passes: the source takes the change, or the copy follows
        gained = Counter({key: n for key, n in (_keys(result.findings) - before).items() if key[0] not in drifting})
        if gained:
            return "it would add findings: " + ", ".join(sorted(f"{code} {symbol}" for code, _, _, symbol in gained))
        return None

    chosen = compatible(candidates)
    new = apply_fixes(text, chosen)
    if check(new) is None:
        return new, chosen, []
    kept: list[Finding] = []
    failed: list[tuple[Finding, str]] = []
    current = text
    # bottom up: a kept fix moves only the lines below it, where the fixes already tried lie
    for finding in sorted(chosen, key=lambda f: f.fix.line if f.fix else 0, reverse=True):
        attempt = apply_fixes(current, [finding])
        why = check(attempt)
        if why is None:
            current = attempt
            kept.append(finding)
        else:
            failed.append((finding, why))
    return current, kept, failed


def _analyze_all(
    tree: _Tree, rules, cache: ResultCache, include_frozen: bool, report: FixReport, jobs: int = 1
) -> list[Finding]:
    """Every file again, as the tree now reads (a fixed file may change another's findings); the cache answers the
    files whose text and reads did not change. A file the first scan could not analyse is left out (it stays an
    error): it was analysed there in an isolated worker, under limits, and is not parsed here."""
    paths = [path for path in tree.files if path not in tree.unanalysable]
    if jobs > 1 and len(paths) >= 8:
        codes = [rule.code for rule in rules]
        initargs = (tree.dirs, tree.files, tree.overlay, codes, cache, include_frozen)
        with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, initargs=initargs) as pool:
            outcomes = list(pool.map(_analyze_in_worker, paths, chunksize=16))
    else:
        _init_worker(tree.dirs, tree.files, tree.overlay, [rule.code for rule in rules], cache, include_frozen)
        try:
            outcomes = [_analyze_in_worker(path) for path in paths]
        finally:
            _WORKER.clear()
    findings: list[Finding] = []
    errors: list[ScanError] = []
    for found, problems in outcomes:
        findings.extend(found)
        errors.extend(problems)
    report.errors = errors + [e for e in report.errors if e.path in tree.unanalysable]
    return findings


@dataclass
class _Pass:
    """What a pass's worker process needs: the tree's directories and files, the fixed texts, the rules and the cache;
    and its project views, one per root (their parses and indexes are shared by the files)."""

    dirs: dict[str, tuple[str, ...]]
    files: dict[str, Path]
    overlay: dict[str, str]
    rules: list[type[Rule]]
    cache: ResultCache
    include_frozen: bool
    projects: dict[tuple[str, ...], Project] = field(default_factory=dict)


_WORKER: list[_Pass] = []


def _init_worker(dirs, files, overlay, codes, cache: ResultCache, include_frozen: bool) -> None:
    by_code = {rule.code: rule for rule in all_rules()}
    _WORKER[:] = [_Pass(dirs, files, overlay, [by_code[code] for code in codes], cache, include_frozen)]


def _analyze_in_worker(path: str) -> tuple[list[Finding], list[ScanError]]:
    state = _WORKER[0]
    dirs = state.dirs[path]
    if dirs not in state.projects:
        state.projects[dirs] = Project.from_directory(*dirs).overlaid(state.overlay)
    try:
        text = state.overlay[path] if path in state.overlay else state.files[path].read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return [], [ScanError(path, f"cannot read this file: {error}")]
    result, _ = state.cache.analyze(
        path, text, project=state.projects[dirs], rules=state.rules, include_frozen=state.include_frozen,
        drift_fixes=True,
    )  # fmt: skip
    return result.findings, [ScanError(path, message) for message in result.errors]
