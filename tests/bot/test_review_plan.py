"""The review's pure phases, without I/O: which files a review reads (`plan_scope`) and what it posts, labels and
records (`plan_review`). The end-to-end tests in test_pull_request.py drive the same code through the fake GitHub."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from analyzers.core import Finding, all_rules
from analyzers.render import SUMMARY_MARKER, Links
from analyzers.review import Comparison, ReviewData
from bot import publish
from bot.config import PATTERN_COLOURS, RepoConfig
from bot.handlers.pull_request import Found, ReviewPlan, Scope, Stop, plan_review, plan_scope


ROOT = Path(__file__).resolve().parents[2]
DDPM = "diffusers/pipelines/ddpm/pipeline_ddpm.py"


def finding(
    symbol: str, line: int, *, code: str = "DRB201", pattern: int = 2, path: str = DDPM, severity: str = "warning"
) -> Finding:
    message = f"`{symbol}` is accepted by `__call__` but never read; use it or remove it."
    return Finding(code, pattern, path, line, line, "DDPMPipeline.__call__", symbol, message, severity=severity,
                   fingerprint=f"{symbol:0>16}"[:16])  # fmt: skip


def found(data: ReviewData, **overrides) -> Found:
    values = dict(
        repo="o/r", number=3, head_sha="a" * 40, config=RepoConfig(), rules=tuple(all_rules()), data=data,
        fixes_known=False, crossref="", duplicates_earlier=False, related=frozenset(), pipelines=("DDPMPipeline",),
        tree_sha="t" * 40, labels_present=frozenset(), labels_ours=frozenset(),
    )  # fmt: skip
    values.update(overrides)
    return Found(**values)


ETA = finding("eta", 10)
OFF_LINE = finding("dtype", 50, code="DRB501", pattern=5)  # new, but not on a line the change touched
FIXED = finding("clip_skip", 7)


def test_a_plan_says_what_the_review_posts_labels_and_records():
    data = ReviewData(Comparison(new=(ETA, OFF_LINE), fixed=(FIXED,)), changed_lines={DDPM: frozenset({10})},
                      files_reviewed=1)  # fmt: skip
    crossref = "### Possible duplicates\n\n- DRB201 `clip_skip`: also fixed by #2 (opened earlier)\n"
    person, stale = "needs review", "drbot: pattern 3"
    plan = plan_review(
        found(data, fixes_known=True, crossref=crossref, duplicates_earlier=True, related=frozenset({5, 2}),
              labels_present=frozenset({person, stale, "drbot: pattern 5"}), labels_ours=frozenset({stale})),
        Links(),
    )  # fmt: skip
    assert isinstance(plan, ReviewPlan)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.new = 0  # type: ignore[misc]

    # the check run: one annotation per new finding on a changed line; the summary without its marker
    assert (plan.check.conclusion, plan.check.title) == ("neutral", "2 new findings")
    (annotation,) = plan.check.annotations
    assert (annotation["path"], annotation["start_line"]) == (f"src/{DDPM}", 10)
    assert plan.summary.startswith(SUMMARY_MARKER) and "Possible duplicates" in plan.summary
    assert SUMMARY_MARKER not in plan.check.summary and "**2 new findings**" in plan.check.summary

    # the review: inline comments for new findings on changed lines only
    (comment,) = plan.comments
    assert (comment["path"], comment["line"], comment["side"]) == (f"src/{DDPM}", 10, "RIGHT")
    assert comment["body"].startswith("**DRB201** `unused-call-argument`")
    assert plan.posted_codes == ("DRB201",)

    # labels: one per pattern among the new findings, fixes-known and duplicate-fix; a label a person put on stays
    # theirs (pattern 5 is there already, so drbot neither adds nor owns it); drbot removes only its own stale one
    config = RepoConfig()
    assert [label.name for label in plan.labels.add] == [
        "drbot: fixes known finding", "drbot: pattern 2", "drbot: possible duplicate fix",
    ]  # fmt: skip
    assert plan.labels.add == tuple(publish.label_for(config, label.name) for label in plan.labels.add)
    assert publish.label_for(config, "drbot: pattern 2").colour == PATTERN_COLOURS[2]
    assert plan.labels.remove == (stale,)
    assert plan.labels.ours == ("drbot: fixes known finding", "drbot: pattern 2", "drbot: possible duplicate fix")

    # what it records: the fixes (with the head tree), the pipelines and findings the commands read
    assert (plan.fixed, plan.tree_sha) == ((FIXED,), "t" * 40)
    assert plan.record["pipelines"] == ["DDPMPipeline"]
    assert plan.record["findings"] == {
        f.fingerprint: {"code": f.code, "pattern": f.pattern, "path": f.path, "scope": f.scope, "symbol": f.symbol}
        for f in (ETA, OFF_LINE)
    }
    assert plan.refresh == (2, 5) and plan.new == 2


def test_inline_comments_are_capped_or_turned_off_but_every_finding_is_annotated():
    many = tuple(finding(f"arg{i}", 100 + i) for i in range(35))
    data = ReviewData(Comparison(new=many), changed_lines={DDPM: frozenset(range(100, 200))}, files_reviewed=1)
    plan = plan_review(found(data), Links())
    assert len(plan.check.annotations) == 35 and len(plan.comments) == publish.MAX_INLINE_COMMENTS == 30
    assert len(plan.posted_codes) == 30
    quiet = plan_review(found(data, config=RepoConfig(inline_comments=False)), Links())
    assert quiet.comments is None and len(quiet.check.annotations) == 35


def test_no_new_findings_succeeds_unless_files_were_not_analysed_and_drops_drbots_labels():
    data = ReviewData(Comparison(unchanged=(ETA,)), files_reviewed=1)
    plan = plan_review(
        found(data, labels_present=frozenset({"drbot: pattern 2"}), labels_ours=frozenset({"drbot: pattern 2"})),
        Links(),
    )
    assert (plan.check.conclusion, plan.check.title) == ("success", "No new findings")
    assert plan.comments == () and plan.labels.add == () and plan.labels.remove == ("drbot: pattern 2",)
    assert plan.labels.ours == () and plan.new == 0
    broken = dataclasses.replace(data, not_analysed=((DDPM, "the parser crashed (SIGSEGV)"),))
    plan = plan_review(found(broken), Links())
    assert (plan.check.conclusion, plan.check.title) == ("neutral", "No new findings · 1 file not analysed")


def test_notes_are_neither_posted_inline_nor_annotated_nor_labelled_and_are_collapsed_in_the_summary():
    note = finding("TODO", 12, code="DRB803", pattern=8, severity="note")
    data = ReviewData(Comparison(new=(ETA, note)), changed_lines={DDPM: frozenset({10, 12})}, files_reviewed=1)
    plan = plan_review(found(data), Links())
    (comment,) = plan.comments
    (annotation,) = plan.check.annotations
    assert comment["line"] == annotation["start_line"] == 10 and plan.posted_codes == ("DRB201",)
    assert (plan.check.conclusion, plan.check.title) == ("neutral", "1 new finding · 1 new note")
    assert [label.name for label in plan.labels.add] == ["drbot: pattern 2"]  # no label for pattern 8
    summary = plan.summary
    assert "**1 new finding** · 1 new note" in summary
    collapsed = summary.index("<details><summary>1 new note: maintenance, documentation and feature gaps</summary>")
    assert summary.index("**DRB201**") < collapsed < summary.index("**DRB803**") < summary.index("</details>")
    assert note.fingerprint in plan.record["findings"]  # `/drbot ignore` may still name it

    # a change whose only new findings are notes succeeds, quietly
    quiet = plan_review(found(ReviewData(Comparison(new=(note,)), changed_lines={DDPM: frozenset({12})})), Links())
    assert (quiet.check.conclusion, quiet.check.title) == ("success", "No new findings · 1 new note")
    assert quiet.comments == () and quiet.check.annotations == () and quiet.labels.add == ()


def test_rules_that_report_one_line_share_one_inline_comment_and_one_annotation():
    # DRB601 and DRB602 on the same early `return`: the review says it once, naming both rules
    early = finding("return ImagePipelineOutput", 20, code="DRB601", pattern=6)
    ignores = dataclasses.replace(early, code="DRB602", severity="error", fingerprint="f" * 16)
    data = ReviewData(Comparison(new=(ETA, early, ignores)), changed_lines={DDPM: frozenset({10, 20})},
                      files_reviewed=1)  # fmt: skip
    plan = plan_review(found(data), Links())
    assert [c["line"] for c in plan.comments] == [10, 20]
    body = plan.comments[1]["body"]
    assert body.startswith("**DRB601** `early-return-skips-hook-cleanup` (warning): ")
    assert "\n\n**DRB602** `return-ignores-return-dict` (error): " in body
    assert body.count("huggingface/diffusers#13656") == 1
    annotations = plan.check.annotations
    assert [(a["start_line"], a["annotation_level"]) for a in annotations] == [(10, "warning"), (20, "failure")]
    assert annotations[1]["title"].startswith("DRB601, DRB602 (Pattern 6: ")
    assert "DRB601 (warning): " in annotations[1]["message"] and "DRB602 (error): " in annotations[1]["message"]
    assert plan.posted_codes == ("DRB201", "DRB601", "DRB602")  # per-rule feedback counts each finding
    assert "**3 new findings**" in plan.summary  # the summary keeps each finding


def test_configured_label_names_keep_drbots_colours_and_descriptions():
    config = RepoConfig(pattern_labels={2: "bug: ignored argument"}, duplicate_fix_label="dup")
    data = ReviewData(Comparison(new=(ETA,)), changed_lines={DDPM: frozenset({10})}, files_reviewed=1)
    plan = plan_review(found(data, config=config, duplicates_earlier=True), Links())
    assert {label.name: label.colour for label in plan.labels.add} == {
        "bug: ignored argument": PATTERN_COLOURS[2], "dup": "e99695",
    }  # fmt: skip


def test_each_label_spec_is_written_once():
    """The colour and description of drbot's labels live in `bot.publish.drbot_labels` only."""
    labels = publish.drbot_labels(RepoConfig())
    assert len(labels) == 12  # ten patterns, fixes-known, duplicate-fix
    sources = "\n".join(path.read_text() for path in (ROOT / "bot").rglob("*.py"))
    for label in labels.values():
        if label.colour in PATTERN_COLOURS.values():
            continue  # the pattern colours are bot.config's table
        assert len(re.findall(re.escape(f'"{label.colour}"'), sources)) == 1, label
        assert sources.count(label.description) == 1, label


# -- plan_scope: which changed files a review reads


def files(*names: str, renamed: dict[str, str] | None = None) -> list[dict]:
    renamed = renamed or {}
    return [{"filename": n, **({"previous_filename": renamed[n]} if n in renamed else {})} for n in names]


def test_a_change_without_python_under_the_paths_stops_quietly_unless_a_summary_needs_updating():
    stop = plan_scope(files("docs/index.md", "setup.cfg"), RepoConfig(), 100, has_summary=False)
    assert isinstance(stop, Stop) and stop.status == "nothing-to-review"
    assert (stop.check.conclusion, stop.check.title) == ("success", "Nothing to review")
    assert stop.check.summary == "No Python files under `src/diffusers/`, `tests/` changed."
    scope = plan_scope(files("docs/index.md"), RepoConfig(), 100, has_summary=True)
    assert isinstance(scope, Scope) and scope.selected == frozenset() and scope.changed == ("docs/index.md",)


def test_renamed_files_count_under_both_names_and_the_file_cap_is_noted_after_the_other_notes():
    changed = files("src/diffusers/c.py", "src/diffusers/b.py", "docs/x.md",
                    renamed={"src/diffusers/c.py": "src/diffusers/a.py"})  # fmt: skip
    scope = plan_scope(changed, RepoConfig(), 100, False, ("", "config note"))
    assert scope.selected == {"src/diffusers/a.py", "src/diffusers/b.py", "src/diffusers/c.py"}
    assert scope.notes == ("config note",)
    capped = plan_scope(changed, RepoConfig(), 2, False, ("cap note", "config note"))
    assert capped.selected == {"src/diffusers/a.py", "src/diffusers/b.py"}
    assert capped.notes == ("cap note", "config note", "3 Python files changed; drbot reviewed the first 2.")
