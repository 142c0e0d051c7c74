"""The known-findings registry (`drbot:known:{owner/repo}`) and the maintainers' mapping to tracking issues.

An entry is keyed by fingerprint and holds {code, pattern, path, scope, symbol, status, issue, first_seen,
note, ...}; status is `open` (seen on the default branch), `tracked` (a tracking issue is known), `suppressed`
(a maintainer said `/drbot ignore`, with who and why) or `fixed` (a merged PR removed it, with its number).
"""

from __future__ import annotations

import fnmatch
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import yaml

from analyzers.core import Finding
from bot.store import Keys


STATUSES = ("open", "tracked", "suppressed", "fixed")


class MappingError(ValueError):
    """`known-issues.yml` is malformed; the message names the entry."""


@dataclass(frozen=True)
class IssueLink:
    """One entry of `known-issues.yml`: findings it matches belong to tracking issue `issue`."""

    issue: int
    fingerprint: str | None = None
    patterns: tuple[int, ...] = ()
    path: str | None = None  # a glob over repository paths (`src/diffusers/pipelines/wan/*.py`)
    scope: str | None = None  # a prefix of the finding's scope (`WanImageToVideoPipeline`)
    family: str | None = None  # a directory name under pipelines/, models/… (`wan`)
    note: str = ""

    def matches(self, finding: Finding) -> bool:
        if self.fingerprint is not None:
            return finding.fingerprint == self.fingerprint
        if self.patterns and finding.pattern not in self.patterns:
            return False
        repo_path = finding.path if finding.path.startswith("tests/") else f"src/{finding.path}"
        if self.path is not None and not fnmatch.fnmatch(repo_path, self.path):
            return False
        if self.scope is not None and not (finding.scope == self.scope or finding.scope.startswith(self.scope + ".")):
            return False
        return not (self.family is not None and self.family not in finding.path.split("/")[:-1])


def parse_mapping(text: str) -> list[IssueLink]:
    """Parse `known-issues.yml`: a list of entries, each with `issue` and at least one selector."""
    try:
        data = yaml.safe_load(text) or []
    except yaml.YAMLError as error:
        raise MappingError(f"not valid YAML: {error}") from None
    if isinstance(data, dict):
        data = data.get("issues", [])
    if not isinstance(data, list):
        raise MappingError("expected a list of entries (or `issues:` holding one)")
    links = []
    for index, entry in enumerate(data, start=1):
        where = f"entry {index}"
        if not isinstance(entry, dict) or not isinstance(entry.get("issue"), int):
            raise MappingError(f"{where}: needs an integer `issue`")
        unknown = set(entry) - {"issue", "fingerprint", "patterns", "pattern", "path", "scope", "family", "note"}
        if unknown:
            raise MappingError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        patterns = entry.get("patterns", [entry["pattern"]] if "pattern" in entry else [])
        if not isinstance(patterns, list) or not all(isinstance(p, int) and 1 <= p <= 10 for p in patterns):
            raise MappingError(f"{where}: `patterns` must list pattern numbers 1-10")
        link = IssueLink(
            issue=entry["issue"],
            fingerprint=entry.get("fingerprint"),
            patterns=tuple(patterns),
            path=entry.get("path"),
            scope=entry.get("scope"),
            family=entry.get("family"),
            note=str(entry.get("note", "")),
        )
        if link.fingerprint is None and link.path is None and link.scope is None and link.family is None:
            raise MappingError(f"{where}: needs a selector (`fingerprint`, `path`, `scope` or `family`)")
        links.append(link)
    return links


def issue_for(finding: Finding, links: Sequence[IssueLink]) -> int | None:
    """The tracking issue of the most specific matching entry: fingerprint, then scope, then path, then family."""

    def rank(link: IssueLink) -> int:
        return 0 if link.fingerprint else 1 if link.scope else 2 if link.path else 3

    matching = sorted((link for link in links if link.matches(finding)), key=rank)
    return matching[0].issue if matching else None


def entry_for(finding: Finding, issue: int | None, now: float | None = None) -> dict:
    return {
        "code": finding.code,
        "pattern": finding.pattern,
        "path": finding.path,
        "line": finding.line,  # where it was when recorded (the dashboard links to it); fingerprints ignore it
        "scope": finding.scope,
        "symbol": finding.symbol,
        "status": "tracked" if issue is not None else "open",
        "issue": issue,
        "first_seen": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "note": "",
    }


class KnownRegistry:
    """`drbot:known:{repo}` in Redis."""

    def __init__(self, redis, keys: Keys, repo: str) -> None:
        self.redis, self.key, self.repo = redis, keys.known(repo), repo

    async def import_findings(self, findings: Iterable[Finding], links: Sequence[IssueLink] = ()) -> dict[str, int]:
        """Record every finding as known; idempotent (an entry's status, issue and first_seen are kept, except
        that an open entry the mapping now links becomes tracked). Returns counts: added, updated, unchanged."""
        findings = list(findings)
        existing = await self.get_many([f.fingerprint for f in findings])
        counts = {"added": 0, "updated": 0, "unchanged": 0}
        writes: dict[str, str] = {}
        for finding in findings:
            issue = issue_for(finding, links)
            current = existing.get(finding.fingerprint)
            if current is None:
                writes[finding.fingerprint] = json.dumps(entry_for(finding, issue), sort_keys=True)
                counts["added"] += 1
            elif issue is not None and current.get("status") == "open":
                current.update(status="tracked", issue=issue)
                writes[finding.fingerprint] = json.dumps(current, sort_keys=True)
                counts["updated"] += 1
            else:
                counts["unchanged"] += 1
        for start in range(0, len(writes), 500):
            chunk = dict(list(writes.items())[start : start + 500])
            await self.redis.hset(self.key, mapping=chunk)
        return counts

    async def record_added(self, findings: Mapping[str, Mapping], number: int) -> int:
        """Record the findings a merged PR brought in (fingerprint -> {code, pattern, path, scope, symbol}, what its
        review stored) as open, `added_by` it; entries the registry already has are left as they are."""
        existing = await self.get_many(list(findings))
        writes = {}
        for fp, item in findings.items():
            if fp in existing:
                continue
            finding = Finding(item["code"], int(item["pattern"]), item["path"], int(item.get("line") or 0),
                              int(item.get("line") or 0), item["scope"], item["symbol"], "", fingerprint=fp)  # fmt: skip
            writes[fp] = json.dumps({**entry_for(finding, None), "added_by": number}, sort_keys=True)
        if writes:
            await self.redis.hset(self.key, mapping=writes)
        return len(writes)

    async def get_many(self, fingerprints: Sequence[str]) -> dict[str, dict]:
        if not fingerprints:
            return {}
        values = await self.redis.hmget(self.key, list(fingerprints))
        return {fp: json.loads(v) for fp, v in zip(fingerprints, values, strict=True) if v is not None}

    async def all(self) -> dict[str, dict]:
        raw = await self.redis.hgetall(self.key)
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    async def update(self, fingerprint: str, finding: Finding | None = None, **fields) -> dict:
        """Change an entry (creating it from `finding` when absent)."""
        current = (await self.get_many([fingerprint])).get(fingerprint)
        if current is None:
            if finding is None:
                raise KeyError(fingerprint)
            current = entry_for(finding, None)
        current.update(fields)
        await self.redis.hset(self.key, fingerprint, json.dumps(current, sort_keys=True))
        return current


def known_mapping(entries: Mapping[str, dict]) -> dict[str, int | None]:
    """fingerprint -> tracking issue (or None), for the findings a review should show as known."""
    return {fp: entry.get("issue") for fp, entry in entries.items() if entry.get("status") != "fixed"}
