"""Suppression comments: `# drbot: ignore[DRB201] reason` hides the named rules' findings on its line (or, alone
on a line, on the next); a bare `# drbot: ignore` hides nothing and is itself a finding, DRB000."""

from __future__ import annotations

import re
from dataclasses import dataclass

from analyzers.findings import Finding
from analyzers.patterns import DRBOT_META


SUPPRESSION_RE = re.compile(
    r"""\#\s*drbot:\s*ignore        # the marker
        (?:\[(?P<codes>[^\]]*)\])?   # optional [DRB101, DRB201]
        (?P<reason>[^\#]*)           # free-text reason up to another comment
    """,
    re.VERBOSE,
)
BARE_IGNORE_CODE = "DRB000"
BARE_IGNORE_MESSAGE = (
    "`# drbot: ignore` without a rule code silences nothing; name the rule, as in `# drbot: ignore[DRB201] reason`."
)


@dataclass(frozen=True)
class Suppression:
    line: int
    codes: frozenset[str]
    reason: str
    standalone: bool  # the comment is alone on its line, so it covers the next line


def suppressions(source: str) -> list[Suppression]:
    """Find `# drbot: ignore[...]` comments. Only lines that mention `drbot:` are looked at."""
    if "drbot:" not in source:
        return []
    found = []
    for number, text in enumerate(source.splitlines(), start=1):
        if "drbot:" not in text:
            continue
        match = SUPPRESSION_RE.search(text)
        if not match:
            continue
        codes = frozenset(c.strip().upper() for c in (match["codes"] or "").split(",") if c.strip())
        standalone = text.lstrip().startswith("#")
        found.append(Suppression(number, codes, match["reason"].strip(), standalone))
    return found


def apply_suppressions(findings: list[Finding], path: str, source: str) -> list[Finding]:
    """Drop the findings that a comment names on their line, and add a DRB000 finding for each bare ignore."""
    marks = suppressions(source)
    if not marks:
        return findings
    by_line: dict[int, set[str]] = {}
    extra: list[Finding] = []
    for mark in marks:
        if not mark.codes:
            extra.append(
                Finding(
                    BARE_IGNORE_CODE, DRBOT_META, path, mark.line, mark.line, "", "drbot: ignore", BARE_IGNORE_MESSAGE
                )
            )
            continue
        by_line.setdefault(mark.line, set()).update(mark.codes)
        if mark.standalone:
            by_line.setdefault(mark.line + 1, set()).update(mark.codes)
    kept = [f for f in findings if f.code not in by_line.get(f.line, ())]
    return kept + extra
