"""Render findings as text, JSON, SARIF 2.1.0, GitHub workflow annotations and Markdown."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from urllib.parse import quote, urlsplit

from analyzers.core import Finding, Rule
from analyzers.findings import Fix, actionable, by_line, most_severe, severity_counts
from analyzers.patterns import META_ISSUE, META_ISSUE_URL, PATTERNS, pattern_title
from analyzers.review import ReviewData


SUMMARY_MARKER = "<!-- drbot:summary -->"
#: GitHub rejects comment bodies over 65,536 characters; keep a margin for the marker and footer
MAX_BODY = 65_000
TOOL_NAME = "drbot"
#: a finding in `--format json`: the Finding's fields, with `file` (the path in the repository) after `path`
JSON_FIELDS = (
    "code", "pattern", "severity", "path", "file", "line", "end_line", "scope", "symbol", "message", "fingerprint",
)  # fmt: skip
#: a severity as a GitHub workflow command (`::notice`) and as a check-run annotation level (`failure`)
WORKFLOW_COMMANDS = {"error": "error", "warning": "warning", "note": "notice"}
ANNOTATION_LEVELS = {"error": "failure", "warning": "warning", "note": "notice"}
#: the rule pages as a path inside drbot's repository: what `Links(docs_base=RELATIVE_DOCS_BASE)` asks for
RELATIVE_DOCS_BASE = "docs/rules/"
#: drbot's [project.urls] in pyproject.toml (tests/test_sarif.py keeps them equal). Constants rather than the
#: installed metadata: an editable install's stale `drbot.egg-info` on the path would answer differently by cwd.
REPOSITORY_URL = "https://github.com/huggingface/drbot"
#: the rule pages at a stable URL: `Links()` and SARIF `helpUri`s point here
DOCS_URL = "https://github.com/huggingface/drbot/blob/main/docs/rules/"
#: the SARIF base id every artifact location is relative to (`originalUriBaseIds` says where it is)
SRCROOT = "%SRCROOT%"


def is_absolute_url(text: str) -> bool:
    parts = urlsplit(text)
    return bool(parts.scheme and parts.netloc)


@dataclass(frozen=True)
class Links:
    """Where rendered findings point: rule documentation, and optionally the source line.

    Rule links are absolute by default (`DOCS_URL`): a relative link in a PR comment resolves under
    `/pull/N/` and leads nowhere. `docs_base` overrides it: another URL, or `RELATIVE_DOCS_BASE` for links
    inside drbot's own repository."""

    docs_base: str = DOCS_URL
    source_url: Callable[[Finding], str | None] | None = None

    def rule(self, code: str) -> str:
        return f"{self.docs_base}{code}.md"


def _rules_by_code(rules: Iterable[type[Rule]] | None) -> dict[str, type[Rule]]:
    if rules is None:
        from analyzers.core import all_rules

        rules = all_rules()
    return {rule.code: rule for rule in rules}


def _rule_name(code: str, rules: dict[str, type[Rule]]) -> str:
    rule = rules.get(code)
    return rule.name if rule is not None else "suppression-without-code"


# ---------------------------------------------------------------------------------------------- text


def to_text(
    findings: Sequence[Finding], errors: Sequence[tuple[str, str]] = (), *, files: int | None = None, skipped: int = 0
) -> str:
    """Findings grouped by pattern, one `path:line: severity: CODE [scope] message` line each, then errors and a
    count."""
    lines: list[str] = []
    for pattern, group in groupby(
        sorted(findings, key=lambda f: (f.pattern, f.path, f.line)), key=lambda f: f.pattern
    ):
        items = list(group)
        lines.append(f"{pattern_title(pattern)} ({len(items)})")
        for f in items:
            lines.append(f"  {f.path}:{f.line}: {f.severity}: {f.code} [{f.scope or '<module>'}] {f.message}")
        lines.append("")
    for path, message in errors:
        lines.append(f"error: {path}: {message}")
    scanned = f" in {files} files" if files is not None else ""
    if skipped:
        lines.append(
            f"{skipped} files of deprecated pipelines skipped (diffusers accepts no changes there; --include-deprecated scans them)."
        )
    counts = f" ({severity_counts(findings)})" if findings else ""
    lines.append(
        f"{len(findings)} finding{'s' if len(findings) != 1 else ''}{counts}{scanned}, "
        f"{len(errors)} error{'s' if len(errors) != 1 else ''}."
    )
    fixable = sum(1 for f in findings if f.fix is not None)
    if fixable:
        lines.append(f"{fixable} of them can be fixed with `drbot fix` (`drbot fix --diff` shows how).")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- json


def to_json(
    findings: Sequence[Finding],
    errors: Sequence[tuple[str, str]] = (),
    *,
    file_paths: Mapping[str, str] | None = None,
) -> str:
    """Findings and errors as JSON. `path` is the package path fingerprints use (`diffusers/…`); `file` the path in
    the repository (`src/diffusers/…`), from `file_paths` (package path -> file, as `ScanReport.file_paths`)."""
    file_paths = file_paths or {}
    payload = {
        "findings": [
            {
                **{
                    name: file_paths.get(f.path, f.path) if name == "file" else getattr(f, name)
                    for name in JSON_FIELDS
                },
                # a finding whose remedy is mechanical says how (`drbot fix` applies it); the key is absent otherwise
                **({"fix": f.fix.to_dict()} if f.fix is not None else {}),
            }
            for f in findings
        ],
        "errors": [{"path": path, "file": file_paths.get(path, path), "message": message} for path, message in errors],
    }
    return json.dumps(payload, indent=2) + "\n"


# ---------------------------------------------------------------------------------------------- sarif


_ERROR_LINE = re.compile(r"\(line (\d+), column \d+\)\s*$")


def error_line(message: str) -> int | None:
    """The line a scan error names (`libcst cannot parse this file: … (line 3, column 0)`), if it names one."""
    match = _ERROR_LINE.search(message)
    return int(match.group(1)) if match else None


def _artifact(path: str, file_paths: Mapping[str, str]) -> dict:
    # a URI reference, not a file name: `a:b.py` would read as a scheme, a space is not allowed
    return {"uri": quote(file_paths.get(path, path), safe="/"), "uriBaseId": SRCROOT}


def _sarif_fix(fix: Fix, artifact: dict) -> dict:
    """A SARIF `fix`: each edit replaces whole lines, so its deleted region runs from the first column of its first
    line to the first column of the line after its last (the last line's newline included)."""
    replacements = [
        {
            "deletedRegion": {"startLine": e.line, "startColumn": 1, "endLine": e.end_line + 1, "endColumn": 1},
            "insertedContent": {"text": e.text},
        }
        for e in fix.edits
    ]
    return {
        "description": {"text": fix.description},
        "artifactChanges": [{"artifactLocation": artifact, "replacements": replacements}],
    }


def to_sarif(
    findings: Sequence[Finding],
    errors: Sequence[tuple[str, str]] = (),
    *,
    rules: Iterable[type[Rule]] | None = None,
    version: str = "0",
    links: Links = Links(),
    file_paths: Mapping[str, str] | None = None,
    root: str | Path | None = None,
) -> str:
    """A SARIF 2.1.0 log, for GitHub code scanning: one run, every rule described, fingerprints kept.

    Artifact URIs are the files' paths in their repository (`file_paths`: package path -> file, as
    `ScanReport.file_paths`), relative to `%SRCROOT%`, which `originalUriBaseIds` places at `root` when known.
    A rule's `helpUri` is its documentation page, left out when `links` gives no absolute URL (SARIF wants one).
    """
    file_paths = file_paths or {}
    by_code = _rules_by_code(rules)
    codes = sorted(by_code)
    index = {code: i for i, code in enumerate(codes)}
    driver_rules = []
    for code in codes:
        rule = by_code[code]
        help_uri = links.rule(code)
        driver_rules.append(
            {
                "id": code,
                "name": rule.__name__,
                "shortDescription": {"text": rule.title},
                "fullDescription": {"text": rule.rationale},
                **({"helpUri": help_uri} if is_absolute_url(help_uri) else {}),
                "help": {"text": f"{rule.title} {rule.rationale}"},
                "defaultConfiguration": {"level": rule.severity},
                "properties": {"pattern": rule.pattern, "tags": [f"pattern-{rule.pattern}"]},
            }
        )
    results = []
    for f in findings:
        location: dict = {
            "physicalLocation": {
                "artifactLocation": _artifact(f.path, file_paths),
                "region": {"startLine": f.line, "endLine": max(f.end_line, f.line)},
            }
        }
        if f.scope:
            location["logicalLocations"] = [{"fullyQualifiedName": f.scope}]
        result: dict = {
            "ruleId": f.code,
            "level": f.severity,  # drbot's severities are SARIF's levels
            "message": {"text": f.message},
            "locations": [location],
            "partialFingerprints": {"drbotFingerprint/v1": f.fingerprint},
            "properties": {"pattern": f.pattern, "symbol": f.symbol},
        }
        if f.code in index:
            result["ruleIndex"] = index[f.code]
        if f.fix is not None:
            result["fixes"] = [_sarif_fix(f.fix, _artifact(f.path, file_paths))]
        results.append(result)
    notifications = []
    for path, message in errors:
        physical: dict = {"artifactLocation": _artifact(path, file_paths)}
        line = error_line(message)
        if line is not None:
            physical["region"] = {"startLine": line}
        notifications.append(
            {"level": "error", "message": {"text": message}, "locations": [{"physicalLocation": physical}]}
        )
    srcroot: dict = {
        "description": {
            "text": "What the paths are relative to: the repository root, or the package root of an installed package."
        }
    }
    if root is not None:
        uri = Path(root).absolute().as_uri()
        srcroot["uri"] = uri if uri.endswith("/") else uri + "/"  # a base URI ends with a slash
    log = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": TOOL_NAME,
                        "informationUri": REPOSITORY_URL,
                        "version": version,
                        "rules": driver_rules,
                    }
                },
                "originalUriBaseIds": {SRCROOT: srcroot},
                "invocations": [{"executionSuccessful": True, "toolExecutionNotifications": notifications}],
                "results": results,
            }
        ],
    }
    return json.dumps(log, indent=2) + "\n"


# ---------------------------------------------------------------------------------------------- github


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def to_github(
    findings: Sequence[Finding],
    errors: Sequence[tuple[str, str]] = (),
    *,
    rules=None,
    file_paths: Mapping[str, str] | None = None,
) -> str:
    """GitHub Actions workflow commands: `::warning file=…,line=…::message`, each file named by its path in the
    repository (`file_paths`: package path -> file, as `ScanReport.file_paths`), as GitHub places annotations.
    A finding's severity picks the command (`::error`, `::warning`, `::notice`); findings of several rules on one
    line are one annotation that names them all, at the most severe of their levels. An error sits on the line it
    names, else on line 1 (GitHub places an annotation by file and line)."""
    file_paths = file_paths or {}
    by_code = _rules_by_code(rules)
    out = []
    for group in by_line(findings):
        first = group[0]
        title = _escape_property(", ".join(f"{f.code} {_rule_name(f.code, by_code)}" for f in group))
        file = _escape_property(file_paths.get(first.path, first.path))
        message = "\n".join(f.message if len(group) == 1 else f"{f.code}: {f.message}" for f in group)
        end_line = max(max(f.end_line, f.line) for f in group)
        out.append(
            f"::{WORKFLOW_COMMANDS[most_severe(group)]} file={file},line={first.line},endLine={end_line},"
            f"title={title}::{_escape_data(message)}"
        )
    for path, message in errors:
        file = _escape_property(file_paths.get(path, path))
        out.append(f"::error file={file},line={error_line(message) or 1},title=drbot::{_escape_data(message)}")
    return "\n".join(out) + ("\n" if out else "")


# ---------------------------------------------------------------------------------------------- markdown

_CODE_SPAN = re.compile(r"(`[^`]*`)")
_HTML = str.maketrans({"<": "&lt;", ">": "&gt;", "&": "&amp;"})


def replace_marked(body: str, start: str, end: str, section: str) -> str | None:
    """`body` with the text from its marker `start` through the next `end` replaced by `section` (the rest of the
    body, line endings included, as it was); None when the body has no such pair of markers."""
    first = body.find(start)
    last = body.find(end, first + len(start)) if first != -1 else -1
    if last == -1:
        return None
    return body[:first] + section + body[last + len(end) :]


def md_escape(text: str) -> str:
    """Escape text that came from code for a GitHub comment: no raw HTML, no @mentions, code spans kept."""
    parts = []
    for part in _CODE_SPAN.split(text):
        if part.startswith("`") and part.endswith("`") and len(part) >= 2:
            parts.append(part)  # GitHub renders neither HTML nor mentions inside code spans
        else:
            escaped = part.translate(_HTML)
            escaped = re.sub(r"@(?=\w)", "@\u200b", escaped)
            escaped = re.sub(r"([*_~\[\]|\\])", r"\\\1", escaped)
            parts.append(escaped)
    return "".join(parts)


def code_span(text: str) -> str:
    """A Markdown code span that survives backticks in `text`: its fence is longer than any run of them inside,
    so a file name such as ``a``<b>.py`` cannot close the span early and put raw Markdown or HTML in the comment."""
    text = text.replace("\r", " ").replace("\n", " ")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if "`" in text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _finding_line(f: Finding, by_code: dict[str, type[Rule]], links: Links, *, strike: bool = False) -> str:
    where = f"{code_span(f.path)} line {f.line}"
    if links.source_url is not None:
        url = links.source_url(f)
        if url:
            where = f"[{code_span(f.path)} line {f.line}]({url})"
    scope = f" in {code_span(f.scope)}" if f.scope else ""
    rule = f"**{f.code}** [{_rule_name(f.code, by_code)}]({links.rule(f.code)})"
    if strike:
        rule = f"~~{f.code}~~ [{_rule_name(f.code, by_code)}]({links.rule(f.code)})"
    return f"- {rule} · {f.severity} · {where}{scope}: {md_escape(f.message)} <sub>`{f.fingerprint}`</sub>"


def _pattern_heading(pattern: int, level: str = "####") -> str:
    if pattern in PATTERNS:
        return f"{level} [{pattern_title(pattern)}]({META_ISSUE_URL})"
    return f"{level} {pattern_title(pattern)}"


def _grouped(
    findings: Sequence[Finding], by_code, links, *, strike: bool = False, known=None, notes=None
) -> list[str]:
    lines: list[str] = []
    for pattern, group in groupby(
        sorted(findings, key=lambda f: (f.pattern, f.path, f.line)), key=lambda f: f.pattern
    ):
        lines.append(_pattern_heading(pattern))
        lines.append("")
        for f in group:
            line = _finding_line(f, by_code, links, strike=strike)
            if known and known.get(f.fingerprint):
                line += f" — tracked in #{known[f.fingerprint]}"
            if notes and notes.get(f.fingerprint):
                line += f" — {md_escape(notes[f.fingerprint])}"
            lines.append(line)
        lines.append("")
    return lines


def to_markdown(
    findings: Sequence[Finding], errors: Sequence[tuple[str, str]] = (), *, rules=None, links: Links = Links()
) -> str:
    """Findings of a scan as Markdown, grouped by pattern, each pattern linked to #13656: every finding, however
    long the report (`drbot analyze` has no check run to point at; the App's comments are cut by `_truncate`)."""
    by_code = _rules_by_code(rules)
    counts = f" ({severity_counts(findings)})" if findings else ""
    lines = [f"## drbot: {len(findings)} finding{'s' if len(findings) != 1 else ''}{counts}", ""]
    posted = actionable(findings)
    lines += _grouped(posted, by_code, links)
    lines += _notes_section([f for f in findings if f.severity == "note"], "", by_code, links)
    if errors:
        lines.append(f"<details><summary>{len(errors)} file(s) could not be analysed</summary>\n")
        lines += [f"- {code_span(path)}: {md_escape(message)}" for path, message in errors]
        lines.append("\n</details>")
    return "\n".join(lines).rstrip() + "\n"


NOTES_SUMMARY = "maintenance, documentation and feature gaps"


def _notes_section(notes: Sequence[Finding], adjective: str, by_code, links, remarks=None) -> list[str]:
    """Findings of severity `note`, collapsed in `<details>` under one line that counts them."""
    if not notes:
        return []
    summary = f"{len(notes)} {adjective}note{'s' if len(notes) != 1 else ''}: {NOTES_SUMMARY}"
    return [f"<details><summary>{summary}</summary>", "", *_grouped(notes, by_code, links, notes=remarks),
            "</details>", ""]  # fmt: skip


HELP_LINE = (
    "<sub>drbot checks for the patterns of "
    f"[#{META_ISSUE}]({META_ISSUE_URL}). Commands: `/drbot help` · `/drbot review` · `/drbot explain DRBnnn` · "
    "`/drbot ignore <fingerprint> <reason>`</sub>"
)


def review_markdown(
    data: ReviewData, *, rules=None, links: Links = Links(), extra_sections: Sequence[str] = ()
) -> str:
    """The sticky summary comment of a review: the exact body the App posts, and `drbot review` prints.

    New errors and warnings are listed by pattern; new notes (maintenance, documentation, feature gaps) are
    counted beside them and listed collapsed, as the App posts no inline comment or annotation for them."""
    by_code = _rules_by_code(rules)
    new = actionable(data.new)
    new_notes = tuple(f for f in data.new if f.severity == "note")
    fixed = data.comparison.fixed
    known = data.known_findings
    noted = f" · {len(new_notes)} new note{'s' if len(new_notes) != 1 else ''}" if new_notes else ""
    counts = (
        f"**{len(new)} new finding{'s' if len(new) != 1 else ''}**{noted} · {len(fixed)} fixed · {len(known)} known"
        f" — in {data.files_reviewed} changed Python file{'s' if data.files_reviewed != 1 else ''}."
    )
    lines = [SUMMARY_MARKER, "## drbot review", "", counts, ""]
    fixable = sum(1 for f in data.new if f.fix is not None)
    if fixable:
        lines += [
            f"{fixable} of the new findings {'has a fix' if fixable == 1 else 'have fixes'}: an inline comment offers "
            "one as a suggestion when it lies on the changed lines, `/drbot fix` replies with the whole diff, and "
            "`drbot fix` applies it to a checkout. drbot never pushes to this branch.",
            "",
        ]
    if data.note:
        lines += [f"> {md_escape(data.note)}", ""]
    if new:
        lines += ["### New findings", ""]
        lines += _grouped(new, by_code, links, notes=data.notes)
    else:
        lines += ["No new findings.", ""]
    lines += _notes_section(new_notes, "new ", by_code, links, data.notes)
    if fixed:
        lines += ["### Fixed by this change", ""]
        lines += _grouped(fixed, by_code, links, strike=True, known=data.known, notes=data.notes)
    if known:
        lines.append(
            f"<details><summary>{len(known)} known finding{'s' if len(known) != 1 else ''} in touched files</summary>"
        )
        lines.append("")
        lines += _grouped(known, by_code, links, known=data.known, notes=data.notes)
        lines += ["</details>", ""]
    if data.not_analysed:
        lines += ["### Not analysed", ""]
        lines += [f"- {code_span(path)}: {md_escape(reason)}" for path, reason in data.not_analysed]
        lines.append("")
    if data.errors:
        lines.append(f"<details><summary>{len(data.errors)} file(s) could not be analysed</summary>")
        lines.append("")
        lines += [f"- {code_span(path)}: {md_escape(message)}" for path, message in data.errors]
        lines += ["", "</details>", ""]
    lines += [*extra_sections]
    lines.append(HELP_LINE)
    return _truncate("\n".join(lines).rstrip() + "\n")


def _truncate(body: str, limit: int = MAX_BODY) -> str:
    """Cut a comment body the App posts to GitHub's limit, pointing at the check run for the rest."""
    if len(body) <= limit:
        return body
    cut = body.rfind("\n", 0, limit - 200)
    return body[:cut] + "\n\n… (truncated: the full list is in the `drbot` check run)\n"
