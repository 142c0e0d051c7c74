"""Output formats: JSON shape, SARIF 2.1.0 validity, GitHub annotations, Markdown escaping and limits."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from analyzers.core import Finding, all_rules
from analyzers.render import (
    DOCS_URL,
    MAX_BODY,
    RELATIVE_DOCS_BASE,
    SUMMARY_MARKER,
    Links,
    md_escape,
    review_markdown,
    to_github,
    to_json,
    to_markdown,
    to_sarif,
    to_text,
)
from analyzers.review import Comparison, ReviewData, compare


SARIF_SCHEMA = (
    Path(__file__).resolve().parents[1]
    / "npm"
    / "node_modules"
    / "@microsoft"
    / "jest-sarif"
    / "lib"
    / "schemas"
    / "sarif-2.1.0-rtm.5.json"
)


def _finding(code="DRB201", pattern=2, path="diffusers/pipelines/x/pipeline_x.py", line=10, symbol="eta", **kw):
    defaults = dict(
        end_line=line,
        scope="XPipeline.__call__",
        message="`eta` is accepted by `__call__` but never read; use it.",
        severity="warning",
    )
    defaults.update(kw)
    return Finding(
        code,
        pattern,
        path,
        line,
        defaults["end_line"],
        defaults["scope"],
        symbol,
        defaults["message"],
        severity=defaults["severity"],
        fingerprint=f"{abs(hash((code, path, symbol, line))):016x}"[:16],
    )


FINDINGS = [_finding(), _finding(code="DRB601", pattern=6, line=20, symbol="return StableDiffusionXLPipelineOutput")]
ERRORS = [("diffusers/broken.py", "libcst cannot parse this file: bad input (line 1, column 3)")]
#: package path -> path in the repository, as `ScanReport.file_paths` gives them for a checkout
FILE_PATHS = {
    "diffusers/pipelines/x/pipeline_x.py": "src/diffusers/pipelines/x/pipeline_x.py",
    "diffusers/broken.py": "src/diffusers/broken.py",
}


def validate_sarif(log: dict) -> None:
    """Validate against the SARIF 2.1.0 schema, formats (`uri`, `date-time`) included."""
    validator = jsonschema.Draft4Validator(
        json.loads(SARIF_SCHEMA.read_text()), format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER
    )
    validator.validate(log)


def test_json_has_exactly_the_documented_fields():
    payload = json.loads(to_json(FINDINGS, ERRORS, file_paths=FILE_PATHS))
    assert set(payload) == {"findings", "errors"}
    assert list(payload["findings"][0]) == [
        "code",
        "pattern",
        "severity",
        "path",
        "file",
        "line",
        "end_line",
        "scope",
        "symbol",
        "message",
        "fingerprint",
    ]
    # `path` stays the package path fingerprints hash; `file` is where the file lies in the repository
    assert payload["findings"][0]["path"] == "diffusers/pipelines/x/pipeline_x.py"
    assert payload["findings"][0]["file"] == "src/diffusers/pipelines/x/pipeline_x.py"
    assert payload["errors"] == [
        {"path": "diffusers/broken.py", "file": "src/diffusers/broken.py", "message": ERRORS[0][1]}
    ]
    # with no repository to place it in, a file is named by its package path
    assert json.loads(to_json(FINDINGS))["findings"][0]["file"] == "diffusers/pipelines/x/pipeline_x.py"


def test_sarif_validates_against_the_2_1_0_schema():
    assert SARIF_SCHEMA.exists(), "run the README's test command: it installs tests/npm"
    log = json.loads(to_sarif(FINDINGS, ERRORS, version="0.1.0", file_paths=FILE_PATHS, root="/work/checkout"))
    validate_sarif(log)
    run = log["runs"][0]
    assert [r["ruleId"] for r in run["results"]] == ["DRB201", "DRB601"]
    rules = run["tool"]["driver"]["rules"]
    assert len(rules) == len(all_rules())
    first = run["results"][0]
    assert rules[first["ruleIndex"]]["id"] == "DRB201"
    assert first["partialFingerprints"]["drbotFingerprint/v1"] == FINDINGS[0].fingerprint
    assert first["locations"][0]["physicalLocation"]["region"] == {"startLine": 10, "endLine": 10}
    assert first["locations"][0]["physicalLocation"]["artifactLocation"] == {
        "uri": "src/diffusers/pipelines/x/pipeline_x.py",
        "uriBaseId": "%SRCROOT%",
    }
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == "file:///work/checkout/"
    assert {rule["helpUri"] for rule in rules} == {f"{DOCS_URL}{rule.code}.md" for rule in all_rules()}
    (notification,) = run["invocations"][0]["toolExecutionNotifications"]
    assert notification["level"] == "error"
    assert notification["locations"][0]["physicalLocation"] == {
        "artifactLocation": {"uri": "src/diffusers/broken.py", "uriBaseId": "%SRCROOT%"},
        "region": {"startLine": 1},
    }


def test_sarif_with_relative_docs_links_stays_valid():
    # SARIF wants an absolute helpUri: a relative docs base, asked for explicitly, leaves it out
    log = json.loads(to_sarif(FINDINGS, links=Links(docs_base=RELATIVE_DOCS_BASE)))
    validate_sarif(log)
    assert not any("helpUri" in rule for rule in log["runs"][0]["tool"]["driver"]["rules"])


def test_sarif_uris_are_uri_references():
    finding = _finding(path="diffusers/a b:c.py")
    log = json.loads(to_sarif([finding]))
    validate_sarif(log)
    location = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert location["uri"] == "diffusers/a%20b%3Ac.py"


def test_sarif_with_no_findings_is_valid():
    validate_sarif(json.loads(to_sarif([], [])))


def test_sarif_schema_catches_a_broken_log():
    log = json.loads(to_sarif(FINDINGS))
    log["runs"][0]["results"][0]["level"] = "loud"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(log, json.loads(SARIF_SCHEMA.read_text()))


def test_github_annotations_escape_properties_and_data():
    finding = _finding(path="diffusers/a,b:c.py", message="100% wrong\nsecond line; fix it.")
    line = to_github([finding]).strip()
    assert line.startswith(
        "::warning file=diffusers/a%2Cb%3Ac.py,line=10,endLine=10,title=DRB201 unused-call-argument::"
    )
    assert line.endswith("::100%25 wrong%0Asecond line; fix it.")
    assert "::error file=diffusers/broken.py,line=1,title=drbot::" in to_github([], ERRORS)


def test_github_annotations_name_the_file_in_the_repository_and_the_line_of_an_error():
    out = to_github(FINDINGS, ERRORS + [("diffusers/x.py", "cannot read this file: denied")], file_paths=FILE_PATHS)
    assert "::warning file=src/diffusers/pipelines/x/pipeline_x.py,line=10,endLine=10," in out
    assert "::error file=src/diffusers/broken.py,line=1,title=drbot::libcst cannot parse" in out
    assert "::error file=diffusers/x.py,line=1,title=drbot::cannot read this file" in out


def test_text_groups_by_pattern():
    text = to_text(FINDINGS, ERRORS, files=3)
    assert text.index("Pattern 2: Public Arguments Accepted but Ignored (1)") < text.index(
        "Pattern 6: Output and Cleanup Contracts Diverge (1)"
    )
    assert "diffusers/pipelines/x/pipeline_x.py:10: warning: DRB201" in text
    assert text.rstrip().endswith("2 findings (2 warnings) in 3 files, 1 error.")


def test_markdown_links_patterns_and_rules():
    body = to_markdown(FINDINGS, links=Links(docs_base="https://example.invalid/rules/"))
    assert (
        "[Pattern 2: Public Arguments Accepted but Ignored](https://github.com/huggingface/diffusers/issues/13656)"
        in body
    )
    assert "[unused-call-argument](https://example.invalid/rules/DRB201.md)" in body


def test_rule_links_are_absolute_unless_a_relative_base_is_asked_for():
    # a relative link in a PR comment resolves under /pull/N/ and leads nowhere
    assert DOCS_URL.startswith("https://") and DOCS_URL.endswith("/docs/rules/")
    assert Links().rule("DRB201") == f"{DOCS_URL}DRB201.md"
    assert f"[unused-call-argument]({DOCS_URL}DRB201.md)" in to_markdown(FINDINGS)
    body = review_markdown(ReviewData(comparison=Comparison(new=(FINDINGS[0],))))
    assert f"[unused-call-argument]({DOCS_URL}DRB201.md)" in body and "](docs/" not in body
    relative = to_markdown(FINDINGS, links=Links(docs_base=RELATIVE_DOCS_BASE))
    assert "[unused-call-argument](docs/rules/DRB201.md)" in relative


def test_markdown_of_a_scan_lists_every_finding():
    # the command line has no check run to point at: nothing is cut, however long the report
    many = [_finding(line=i, symbol=f"arg{i}", message="x" * 300 + "; fix.") for i in range(1, 400)]
    body = to_markdown(many)
    assert len(body) > MAX_BODY and "truncated" not in body
    assert body.count("- **DRB201**") == len(many)


def test_md_escape_defuses_mentions_and_html_outside_code():
    text = md_escape("ping @maintainer <img src=x> but keep `@torch.no_grad() <T>`")
    assert "@maintainer" not in text and "@\u200bmaintainer" in text
    assert "<img" not in text and "&lt;img src=x&gt;" in text
    assert "`@torch.no_grad() <T>`" in text


def test_review_markdown_sections():
    new = FINDINGS[0]
    fixed = _finding(code="DRB601", pattern=6, line=5, symbol="return X")
    known = _finding(line=30, symbol="guidance_rescale")
    data = ReviewData(comparison=Comparison(new=(new,), fixed=(fixed,), unchanged=(known,)), files_reviewed=2)
    body = review_markdown(data)
    assert body.startswith(SUMMARY_MARKER)
    assert "**1 new finding** · 1 fixed · 1 known — in 2 changed Python files." in body
    assert body.index("### New findings") < body.index("### Fixed by this change") < body.index("<details>")
    assert "~~DRB601~~" in body


def test_review_markdown_marks_tracked_findings():
    finding = FINDINGS[0]
    data = ReviewData(comparison=Comparison(new=(finding,)), known={finding.fingerprint: 13578})
    body = review_markdown(data)
    assert "No new findings." in body and "tracked in #13578" in body


def test_long_bodies_are_truncated_under_the_github_limit():
    many = [_finding(line=i, symbol=f"arg{i}", message="x" * 300 + "; fix.") for i in range(1, 400)]
    body = review_markdown(ReviewData(comparison=compare([], many)))
    assert len(body) <= MAX_BODY and "truncated" in body


# -- severity: every format says it; notes are collapsed; rules on one line are one annotation

#: one finding of each severity, on three lines of one file
ERROR = _finding(code="DRB602", pattern=6, line=5, symbol="return XOutput", severity="error", message="Ignores it.")
WARNING = _finding(code="DRB601", pattern=6, line=7, symbol="return YOutput", message="Skips the hooks.")
NOTE = _finding(code="DRB803", pattern=8, line=9, symbol="XPipeline", severity="note", message="Says `TODO`.")
BY_SEVERITY = [ERROR, WARNING, NOTE]


def test_text_and_json_carry_each_findings_severity():
    text = to_text(BY_SEVERITY)
    assert "pipeline_x.py:5: error: DRB602" in text
    assert "pipeline_x.py:7: warning: DRB601" in text
    assert "pipeline_x.py:9: note: DRB803" in text
    assert text.rstrip().endswith("3 findings (1 error, 1 warning, 1 note), 0 errors.")
    payload = json.loads(to_json(BY_SEVERITY))
    assert [f["severity"] for f in payload["findings"]] == ["error", "warning", "note"]


def test_sarif_levels_are_the_severities_of_results_and_of_rules():
    log = json.loads(to_sarif(BY_SEVERITY))
    validate_sarif(log)
    run = log["runs"][0]
    assert [r["level"] for r in run["results"]] == ["error", "warning", "note"]
    levels = {rule["id"]: rule["defaultConfiguration"]["level"] for rule in run["tool"]["driver"]["rules"]}
    assert levels == {rule.code: rule.severity for rule in all_rules()}
    assert {levels["DRB803"], levels["DRB902"], levels["DRB503"]} == {"note"}


def test_github_workflow_commands_follow_the_severity():
    lines = to_github(BY_SEVERITY).splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == ["::error", "::warning", "::notice"]


def test_github_annotations_of_several_rules_on_one_line_are_one():
    # DRB601 and DRB602 both report the same early `return`: one annotation, at the most severe level, names both
    same_line = [ERROR, _finding(code="DRB601", pattern=6, line=5, symbol="return XOutput", message="Skips hooks.")]
    (line,) = to_github(same_line).splitlines()
    assert line.startswith("::error file=diffusers/pipelines/x/pipeline_x.py,line=5,endLine=5,")
    assert "title=DRB602 return-ignores-return-dict%2C DRB601 early-return-skips-hook-cleanup::" in line
    assert line.endswith("::DRB602: Ignores it.%0ADRB601: Skips hooks.")
    assert len(json.loads(to_json(same_line))["findings"]) == 2  # the JSON keeps each finding


def test_markdown_shows_severity_and_collapses_notes():
    body = to_markdown(BY_SEVERITY)
    assert body.startswith("## drbot: 3 findings (1 error, 1 warning, 1 note)\n")
    assert "**DRB602** [return-ignores-return-dict](" in body and " · error · " in body
    details = body.index("<details><summary>1 note: maintenance, documentation and feature gaps</summary>")
    assert body.index("**DRB602**") < body.index("**DRB601**") < details < body.index("**DRB803**")
    assert " · note · " in body[details:]


def test_review_markdown_collapses_new_notes_and_counts_them_apart():
    data = ReviewData(comparison=Comparison(new=(WARNING, NOTE)), files_reviewed=1)
    body = review_markdown(data)
    assert "**1 new finding** · 1 new note · 0 fixed · 0 known — in 1 changed Python file." in body
    details = body.index("<details><summary>1 new note: maintenance, documentation and feature gaps</summary>")
    assert body.index("### New findings") < body.index("**DRB601**") < details < body.index("**DRB803**")
    only_notes = review_markdown(ReviewData(comparison=Comparison(new=(NOTE,)), files_reviewed=1))
    assert "**0 new findings** · 1 new note" in only_notes and "No new findings." in only_notes
    assert "### New findings" not in only_notes
