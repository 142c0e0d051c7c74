"""Findings and their fingerprints (DESIGN §4): what a rule reports, and the line-independent id a review keys on."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace


#: a finding's severity, as SARIF's `level`, most severe first; each rule sets one (`Rule.severity`)
SEVERITIES = ("error", "warning", "note")
#: what each severity says about a finding (rule pages, docs)
SEVERITY_MEANINGS = {
    "error": "a user-visible defect on a call path",
    "warning": "a likely defect, or a risk",
    "note": "maintenance, documentation or a feature gap",
}
#: the severities the App posts as inline comments and check-run annotations; notes go to the summary only
POSTED_SEVERITIES = frozenset({"error", "warning"})


@dataclass(frozen=True)
class Edit:
    """Replace lines `line`..`end_line` (1-based, inclusive) of a file with `text` (whole lines, each ending in a
    newline; empty to delete them). Whole lines are what a GitHub `suggestion` block replaces."""

    line: int
    end_line: int
    text: str


@dataclass(frozen=True)
class Fix:
    """A finding's mechanical remedy: what it does, in one phrase, and the edits that do it (sorted, disjoint)."""

    description: str
    edits: tuple[Edit, ...]

    @property
    def line(self) -> int:
        return self.edits[0].line

    @property
    def end_line(self) -> int:
        return self.edits[-1].end_line

    def to_dict(self) -> dict:
        return {"description": self.description, "edits": [asdict(edit) for edit in self.edits]}

    @classmethod
    def from_dict(cls, data: Mapping) -> Fix:
        """The inverse of `to_dict`; TypeError or ValueError on anything else (a cache entry of another shape)."""
        edits = tuple(Edit(**edit) for edit in data["edits"])
        fix = cls(str(data["description"]), edits)
        if not edits or not all(
            type(e.line) is int and type(e.end_line) is int and isinstance(e.text, str) for e in edits
        ):
            raise ValueError(f"not a fix: {data!r}")
        return fix


@dataclass(frozen=True)
class Finding:
    """One defect found in one place; see DESIGN §4. `fix`, when a rule can offer one, is its mechanical remedy; it
    takes no part in equality, so a finding with a fix is the same finding as one without."""

    code: str
    pattern: int
    path: str
    line: int
    end_line: int
    scope: str
    symbol: str
    message: str
    severity: str = "warning"
    fingerprint: str = ""
    fix: Fix | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict:
        """The fields as a dict; `fix` only when there is one (so a finding without keeps its old keys)."""
        data = asdict(self)
        del data["fix"]
        if self.fix is not None:
            data["fix"] = self.fix.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> Finding:
        values = {name: data[name] for name in cls.__dataclass_fields__ if name in data and name != "fix"}
        fix = data.get("fix")
        return cls(**values, fix=Fix.from_dict(fix) if fix is not None else None)


def fingerprint(code: str, path: str, scope: str, symbol: str, n: int) -> str:
    """Return the line-independent id of a finding: sha256 of `code|path|scope|symbol|n`, 16 hex digits."""
    return hashlib.sha256(f"{code}|{path}|{scope}|{symbol}|{n}".encode()).hexdigest()[:16]


def with_fingerprints(findings: Iterable[Finding]) -> list[Finding]:
    """Number identical (code, path, scope, symbol) tuples in source order and fill in fingerprints."""
    ordered = sorted(findings, key=lambda f: (f.path, f.line, f.end_line, f.code, f.symbol, f.message))
    seen: Counter[tuple[str, str, str, str]] = Counter()
    out = []
    for finding in ordered:
        key = (finding.code, finding.path, finding.scope, finding.symbol)
        n = seen[key]
        seen[key] += 1
        out.append(replace(finding, fingerprint=fingerprint(*key, n)))
    return out


def most_severe(findings: Iterable[Finding]) -> str:
    """The most severe severity among `findings` ("note" when there are none)."""
    ranks = [SEVERITIES.index(f.severity) for f in findings]
    return SEVERITIES[min(ranks, default=len(SEVERITIES) - 1)]


def severity_counts(findings: Iterable[Finding]) -> str:
    """`1 error, 2 warnings, 3 notes`: the non-zero counts, most severe first ("" when there are none)."""
    counts = Counter(f.severity for f in findings)
    return ", ".join(f"{counts[s]} {s}{'s' if counts[s] != 1 else ''}" for s in SEVERITIES if counts[s])


def by_line(findings: Iterable[Finding]) -> list[tuple[Finding, ...]]:
    """Findings grouped by the line they start on (path, line), in first-seen order: what one inline comment or
    one annotation shows, so that two rules on one `return` say so once."""
    groups: dict[tuple[str, int], list[Finding]] = {}
    for finding in findings:
        groups.setdefault((finding.path, finding.line), []).append(finding)
    return [tuple(group) for group in groups.values()]


def actionable(findings: Sequence[Finding]) -> tuple[Finding, ...]:
    """The findings the App posts inline and annotates: errors and warnings, not notes."""
    return tuple(f for f in findings if f.severity in POSTED_SEVERITIES)
