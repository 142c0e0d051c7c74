"""Findings and their fingerprints (DESIGN §4): what a rule reports, and the line-independent id a review keys on."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace


SEVERITIES = ("error", "warning", "note")


@dataclass(frozen=True)
class Finding:
    """One defect found in one place; see DESIGN §4."""

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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Finding:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


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
