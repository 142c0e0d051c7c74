"""Diff-aware comparison of findings, and the data a review is rendered from."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from analyzers.core import Finding


@dataclass(frozen=True)
class Comparison:
    """Findings of a change, by fingerprint: `new` in head only, `fixed` in base only, `unchanged` in both."""

    new: tuple[Finding, ...] = ()
    fixed: tuple[Finding, ...] = ()
    unchanged: tuple[Finding, ...] = ()


def compare(base: Iterable[Finding], head: Iterable[Finding]) -> Comparison:
    """Split findings into new / fixed / unchanged by fingerprint; pure, so the App reuses it."""
    base_by_fp = {f.fingerprint: f for f in base}
    head_by_fp = {f.fingerprint: f for f in head}
    key = _sort_key
    return Comparison(
        new=tuple(sorted((f for fp, f in head_by_fp.items() if fp not in base_by_fp), key=key)),
        fixed=tuple(sorted((f for fp, f in base_by_fp.items() if fp not in head_by_fp), key=key)),
        unchanged=tuple(sorted((f for fp, f in head_by_fp.items() if fp in base_by_fp), key=key)),
    )


def _sort_key(finding: Finding) -> tuple:
    return (finding.pattern, finding.path, finding.line, finding.code)


@dataclass(frozen=True)
class ReviewData:
    """What one review of a change shows: the comparison, and the context the App adds to it.

    `changed_lines` maps a path to the head line numbers the change touched (for inline comments);
    `known` maps a fingerprint to a tracking issue number (or None) for findings the registry knows;
    `errors` lists (path, message) for files whose analysis reported a problem (a syntax error, a rule that
    raised); `not_analysed` lists (path, reason) for changed files that were not analysed at all: over a size,
    time or memory limit, or fatal to the parser. Their findings are left out on both sides of the comparison.
    """

    comparison: Comparison
    changed_lines: Mapping[str, frozenset[int]] = field(default_factory=dict)
    known: Mapping[str, int | None] = field(default_factory=dict)
    errors: tuple[tuple[str, str], ...] = ()
    not_analysed: tuple[tuple[str, str], ...] = ()
    files_reviewed: int = 0
    note: str = ""
    #: fingerprint -> a remark the review adds to a finding (which side of a `# Copied from` pair changed)
    notes: Mapping[str, str] = field(default_factory=dict)

    def on_changed_line(self, finding: Finding) -> bool:
        lines = self.changed_lines.get(finding.path, frozenset())
        return any(line in lines for line in range(finding.line, finding.end_line + 1))

    @property
    def new(self) -> tuple[Finding, ...]:
        """New findings that the registry does not already know about."""
        return tuple(f for f in self.comparison.new if f.fingerprint not in self.known)

    @property
    def known_findings(self) -> tuple[Finding, ...]:
        """Findings already present before the change, or recorded in the registry."""
        extra = tuple(f for f in self.comparison.new if f.fingerprint in self.known)
        return tuple(sorted(self.comparison.unchanged + extra, key=_sort_key))
