"""Results of `analyze_file` kept on disk across runs, so a repeated scan or review skips the files that did not change.

What a file's findings depend on is more than its text: rules read other files through the project view (base
classes, `# Copied from` sources, package `__init__` export tables, the test index). So an entry holds, beside the
findings, every read the rules made through the `Project` (`Project.recording`) with the digest of what they saw:
each file's text (or its absence), each listing, and for a tree-wide index (`Project.memo`) a group of the reads it
was built from, stored once and shared by the entries that used it. A lookup answers only when every one of those
digests still matches what the project view sees now; anything else (a missing, unreadable, corrupt or mismatched
entry or group) is a miss, and the file is analysed again.

Key: the rule set's version (a digest over every file of the `analyzers` package, so any change to a rule, a matcher
or the engine changes it, plus drbot's, libcst's and Python's versions), the selected rule codes, the file's path
(findings and fingerprints carry it), a digest of its text, and whether deprecated code is included.

Entries are JSON (never pickle: nothing read back runs), written to a temporary file and renamed into place, so the
worker processes of a scan or a review read and write the cache at once without locks: a reader sees a whole entry
or none, and two writers of one key write the same thing. `prune` evicts the least recently used entries (a hit
refreshes an entry's mtime) once the directory is past its size bound.

This module does file I/O, which the rules never do: it lives in `analyzers` because the scan (`analyzers.scan`),
which runs here and in its worker processes, consults it, and `analyzers` may import nothing of drbot's other
packages (tests/test_boundaries.py). It uses the standard library only.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import stat
import sys
import tempfile
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from analyzers.analysis import FileResult, analyze_file, is_frozen
from analyzers.findings import Finding
from analyzers.project import Project, Read, text_digest
from analyzers.rule import Rule
from analyzers.ruleset import all_rules


#: the layout of entries and groups; part of the key, so a new layout never reads an old one (2: findings may
#: carry a `fix`)
FORMAT = 2
#: the size the cache directory is pruned back under (bytes of entries and groups)
DEFAULT_MAX_BYTES = 256 << 20
#: a prune removes entries, oldest use first, until the cache holds at most this share of its bound
PRUNE_TO = 0.8
#: nested tree-wide indexes followed at most this deep (an index built from another index)
MAX_DEPTH = 8
#: temporary files older than this are a writer's leftovers (it was killed between write and rename)
STALE_TMP_S = 3600.0

#: the keys of a stored finding; `fix` is present only on a finding that has one
_FINDING_FIELDS = frozenset(Finding.__dataclass_fields__) - {"fix"}


def default_directory() -> Path:
    """`$DRBOT_CACHE_DIR`, else `$XDG_CACHE_HOME/drbot`, else `~/.cache/drbot`."""
    configured = os.environ.get("DRBOT_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG spec: a relative path is invalid and must be ignored
        return Path(xdg) / "drbot"
    return Path.home() / ".cache" / "drbot"


def _distribution_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


def package_digest(package: Path) -> str:
    """A digest of every file under `package` (names and contents; bytecode caches left out)."""
    digest = hashlib.blake2b(digest_size=16)
    for file in sorted(package.rglob("*")):
        if "__pycache__" in file.parts or not file.is_file() or file.suffix in (".pyc", ".pyo"):
            continue
        digest.update(file.relative_to(package).as_posix().encode() + b"\0")
        digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()


@functools.cache
def ruleset_version() -> str:
    """A digest of everything a file's results depend on besides its reads: every file of the `analyzers` package
    (rules, matchers, the engine), drbot's and libcst's versions, Python's version and the cache's format. Any
    edit to a rule changes it; nothing has to be bumped by hand."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (
        f"analyzers {package_digest(Path(__file__).resolve().parent)}",
        f"format {FORMAT}",
        f"python {sys.version} {sys.implementation.cache_tag}",
        f"drbot {_distribution_version('drbot')}",
        f"libcst {_distribution_version('libcst')}",
    ):
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()


def _hash(data: object) -> str:
    text = json.dumps(data, separators=(",", ":"), sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


#: per project view (per worker process): memo key -> its group's digest, and group digest -> still valid
_GROUPS_MADE: weakref.WeakKeyDictionary[Project, dict[tuple[str, str], str | None]] = weakref.WeakKeyDictionary()
_GROUPS_CHECKED: weakref.WeakKeyDictionary[Project, dict[tuple[str, str], bool]] = weakref.WeakKeyDictionary()


@dataclass
class Stats:
    """What this process's lookups did (tests and benchmarks read it)."""

    hits: int = 0
    misses: int = 0
    stores: int = 0
    write_errors: int = 0


@dataclass(frozen=True)
class ResultCache:
    """Per-file results under `directory`; pickles into worker processes as its settings alone."""

    directory: str
    #: the rule set's version (`ruleset_version`); a test passes another to stand for a changed rule
    version: str = field(default_factory=ruleset_version)
    max_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def default(cls) -> ResultCache:
        return cls(str(default_directory()))

    def usable(self) -> bool:
        """Whether this process may use the directory: made if absent (mode 700), and a directory of this user that
        no one else can write to (under a shared temp dir, another user could plant findings). Checked once."""
        if self.directory not in _USABLE:
            try:
                os.makedirs(self.directory, mode=0o700, exist_ok=True)
                info = os.lstat(self.directory)
                _USABLE[self.directory] = (
                    stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o022
                )
            except OSError:
                _USABLE[self.directory] = False
        return _USABLE[self.directory]

    # -- lookups and stores (in whatever process analyses the file) ------------------------------------------

    def analyze(
        self,
        path: str,
        source: str,
        *,
        project: Project,
        rules: Sequence[type[Rule]] | None = None,
        include_frozen: bool = False,
        drift_fixes: bool = False,
    ) -> tuple[FileResult, bool]:
        """`analyze_file`, answered from the cache when an entry for this text, path and rule set exists and
        everything its rules read through `project` is unchanged; else analysed, and stored when clean. Returns the
        result and whether it came from the cache."""
        rules = all_rules() if rules is None else list(rules)
        if (is_frozen(path) and not include_frozen) or not self.usable():
            result = analyze_file(
                path, source, project=project, rules=rules, include_frozen=include_frozen, drift_fixes=drift_fixes
            )
            return result, False
        key = self.key(path, source, rules, include_frozen, drift_fixes)
        cached = self._lookup(key, path, project)
        if cached is not None:
            STATS.hits += 1
            return FileResult(path, cached, []), True
        STATS.misses += 1
        with project.recording() as reads:
            result = analyze_file(
                path, source, project=project, rules=rules, include_frozen=include_frozen, drift_fixes=drift_fixes
            )
        # an error (no parse, a rule that raised) is not kept: it may be the machine's (memory) rather than the file's
        if not result.errors and not result.skipped:
            self._store(key, path, result.findings, project, reads)
        return result, False

    def key(
        self,
        path: str,
        source: str,
        rules: Iterable[type[Rule]],
        include_frozen: bool = False,
        drift_fixes: bool = False,
    ) -> str:
        """The entry of this text at this path under these rules; `include_frozen` keeps the findings of classes
        deprecated in place, and `drift_fixes` attaches more fixes, so both are part of the key."""
        codes = sorted(rule.code for rule in rules)
        return _hash(
            [
                FORMAT,
                self.version,
                codes,
                path,
                text_digest(source),
                include_frozen,
                *(["drift"] if drift_fixes else []),
            ]
        )

    def _entry_path(self, key: str) -> Path:
        return Path(self.directory, "entries", key[:2], f"{key}.json")

    def _group_path(self, digest: str) -> Path:
        return Path(self.directory, "groups", digest[:2], f"{digest}.json")

    @staticmethod
    def _read_json(file: Path) -> dict | None:
        try:
            with open(file, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError, RecursionError):
            return None
        return data if isinstance(data, dict) else None

    def _lookup(self, key: str, path: str, project: Project) -> list[Finding] | None:
        file = self._entry_path(key)
        entry = self._read_json(file)
        if entry is None or entry.get("key") != key or entry.get("path") != path:
            return None
        findings = _findings(entry.get("findings"), path)
        if findings is None or not self._fresh(project, entry.get("reads"), 0):
            return None
        try:
            os.utime(file)  # the least recently used entries go first when the cache is pruned
        except OSError:
            pass
        return findings

    def _fresh(self, project: Project, reads: object, depth: int) -> bool:
        """Whether every read of an entry (or group) still sees what it saw."""
        if not isinstance(reads, list) or depth > MAX_DEPTH:
            return False
        for read in reads:
            if not (isinstance(read, list) and len(read) == 3 and read[0] in ("file", "dir", "memo")):
                return False
            kind, name, digest = read
            if not isinstance(name, str) or not (digest is None or isinstance(digest, str)):
                return False
            if kind == "memo":
                if digest is None or not self._group_fresh(project, digest, depth + 1):
                    return False
            elif project.digest((kind, name)) != digest:
                return False
        return True

    def _group_fresh(self, project: Project, digest: str, depth: int) -> bool:
        checked = _GROUPS_CHECKED.setdefault(project, {})
        if (self.directory, digest) not in checked:
            file = self._group_path(digest)
            group = self._read_json(file)
            reads = None if group is None else group.get("reads")
            # a group's name is the digest of its reads: a group damaged on disk does not pass for another
            fresh = isinstance(reads, list) and _hash(reads) == digest and self._fresh(project, reads, depth)
            checked[(self.directory, digest)] = fresh
            if fresh:
                try:
                    os.utime(file)
                except OSError:
                    pass
        return checked[(self.directory, digest)]

    def _store(self, key: str, path: str, findings: list[Finding], project: Project, reads: set[Read]) -> None:
        listed = self._listed(project, reads, 0)
        if listed is None:
            return
        entry = {
            "format": FORMAT,
            "key": key,
            "path": path,
            "findings": [finding.to_dict() for finding in findings],
            "reads": listed,
        }
        if self._write(self._entry_path(key), entry):
            STATS.stores += 1

    def _listed(self, project: Project, reads: Iterable[Read], depth: int) -> list[list] | None:
        """Reads as stored: [kind, name, digest], a memo's digest naming the group of its own reads."""
        listed: list[list] = []
        for kind, name in sorted(reads):
            if kind == "memo":
                digest = self._group(project, name, depth + 1)
                if digest is None:
                    return None
                listed.append([kind, name, digest])
            else:
                listed.append([kind, name, project.digest((kind, name))])
        return listed

    def _group(self, project: Project, memo: str, depth: int) -> str | None:
        made = _GROUPS_MADE.setdefault(project, {})
        if (self.directory, memo) not in made:
            members = project.memo_reads(memo)
            listed = None if members is None or depth > MAX_DEPTH else self._listed(project, members, depth)
            digest = None if listed is None else _hash(listed)
            if digest is not None and not self._group_path(digest).exists():
                if not self._write(self._group_path(digest), {"format": FORMAT, "reads": listed}):
                    digest = None
            made[(self.directory, memo)] = digest
        return made[(self.directory, memo)]

    def _write(self, target: Path, data: dict) -> bool:
        """Write `data` to `target` atomically (a reader sees the whole file or none); False when it cannot."""
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    json.dump(data, out, separators=(",", ":"))
                os.replace(temporary, target)
            except BaseException:
                try:
                    os.unlink(temporary)
                except OSError:
                    pass
                raise
        except OSError:
            STATS.write_errors += 1  # a read-only or full disk: the run goes on uncached
            return False
        return True

    # -- upkeep (in the process that started the run) -----------------------------------------------------------

    def prune(self) -> int:
        """Remove the least recently used entries and groups until the cache is back under `max_bytes * PRUNE_TO`
        (only when it is past `max_bytes`), and writers' leftovers; returns the files removed. An entry whose
        group was removed is then a miss."""
        if not self.usable():
            return 0
        files: list[tuple[float, int, str]] = []
        removed = 0
        now = time.time()
        for part in ("entries", "groups"):
            try:
                shards = list(os.scandir(os.path.join(self.directory, part)))
            except OSError:
                continue
            for shard in shards:
                try:
                    found = list(os.scandir(shard.path)) if shard.is_dir(follow_symlinks=False) else []
                except OSError:
                    continue
                for item in found:
                    try:
                        info = item.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if item.name.startswith(".tmp-"):
                        if now - info.st_mtime > STALE_TMP_S:
                            removed += _unlink(item.path)
                        continue
                    files.append((info.st_mtime, info.st_size, item.path))
        total = sum(size for _, size, _ in files)
        if total <= self.max_bytes:
            return removed
        files.sort()
        for _, size, path in files:
            if total <= self.max_bytes * PRUNE_TO:
                break
            removed += _unlink(path)
            total -= size
        return removed


STATS = Stats()
#: directory -> whether this process may use it (`ResultCache.usable`)
_USABLE: dict[str, bool] = {}


def _unlink(path: str) -> int:
    try:
        os.unlink(path)
    except OSError:
        return 0
    return 1


def _findings(data: object, path: str) -> list[Finding] | None:
    """The findings of an entry, or None when they are not what this version writes."""
    if not isinstance(data, list):
        return None
    findings = []
    for item in data:
        if not isinstance(item, dict) or set(item) - {"fix"} != _FINDING_FIELDS or item.get("path") != path:
            return None
        fields = [value for name, value in item.items() if name != "fix"]
        if not all(isinstance(value, (str, int)) and not isinstance(value, bool) for value in fields):
            return None
        if "fix" in item and not isinstance(item["fix"], dict):
            return None
        try:
            findings.append(Finding.from_dict(item))
        except (TypeError, ValueError, KeyError):  # a field this version checks on construction, a damaged fix
            return None
    return findings
