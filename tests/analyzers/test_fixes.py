"""Fixes are checked like rules: every INVALID case says what its fix makes of it (or that it has none), the fixed
code compiles, is left alone by a second pass, and no rule reports more on it; removing a rule's fix fails a case."""

from __future__ import annotations

import importlib
import inspect
import textwrap
from collections import Counter
from dataclasses import replace

import libcst as cst
import pytest

from analyzers.analysis import fix_case
from analyzers.core import Project, all_rules, analyze, run_case
from analyzers.findings import Edit, Finding, Fix
from analyzers.fixes import apply_edits, compatible, compiles, line_edits, suggestion, unified_diff


RULES = all_rules()
FIXABLE = [rule for rule in RULES if rule.fixable]
CASES = [
    pytest.param(rule, case, id=f"{rule.code}-invalid-{i}") for rule in RULES for i, case in enumerate(rule.INVALID)
]


def _keys(findings: list[Finding]) -> Counter:
    return Counter((f.code, f.scope, f.symbol) for f in findings)


def _all_findings(case, source: str) -> list[Finding]:
    files = {path: textwrap.dedent(text) for path, text in case.files.items()}
    return analyze(case.path, source, project=Project.from_mapping({**files, case.path: source}), rules=RULES)


@pytest.mark.parametrize("rule, case", CASES)
def test_fix_case(rule, case):
    findings = run_case(rule, case, drift_fixes=True)
    if rule.DRIFT_FIX:  # only `drbot fix` asks for these fixes
        assert all(f.fix is None for f in run_case(rule, case))
    if case.fixed is None:
        assert [f for f in findings if f.fix is not None] == [], f"{rule.code} offers a fix the case does not expect"
        return
    assert any(f.fix is not None for f in findings), f"{rule.code} offers no fix on:\n{textwrap.dedent(case.code)}"
    before = textwrap.dedent(case.code)
    after = fix_case(rule, case)
    assert after == textwrap.dedent(case.fixed)
    assert compiles(case.path, after) is None
    # the fixed findings are gone, and the fix is idempotent: a second pass changes nothing
    assert {f.fingerprint for f in findings}.isdisjoint(
        {f.fingerprint for f in _all_findings(case, after) if f.code == rule.code}
    )
    assert fix_case(rule, type(case)(after, path=case.path, files=case.files)) == after
    # no rule gains a finding when every rule's fixes are applied, as `drbot fix` does (one rule's fix alone may
    # leave another's defect on the lines it adds: DRB602's tuple return before DRB601's missing cleanup)
    everything = fix_case(rule, case, rules=RULES)
    assert compiles(case.path, everything) is None
    gained = _keys(_all_findings(case, everything)) - _keys(_all_findings(case, before))
    assert not gained, f"fixing {rule.code} made other findings: {gained}"


class _DropFix(cst.CSTTransformer):
    """Remove the `fix=` argument of the n-th `self.report(...)` call that passes one: the rule loses that fix."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.seen = 0

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.Call:
        func = original.func
        if isinstance(func, cst.Attribute) and func.attr.value == "report":
            if any(arg.keyword is not None and arg.keyword.value == "fix" for arg in original.args):
                index, self.seen = self.seen, self.seen + 1
                if index == self.target:
                    args = [a for a in updated.args if not (a.keyword is not None and a.keyword.value == "fix")]
                    return updated.with_changes(args=args)
        return updated


def _fixed_cases_hold(rule) -> bool:
    return all(fix_case(rule, case) == textwrap.dedent(case.fixed) for case in rule.INVALID if case.fixed is not None)


@pytest.mark.parametrize("rule", FIXABLE, ids=[r.code for r in FIXABLE])
def test_each_fix_is_covered_by_a_fixed_case(rule):
    module = importlib.import_module(rule.__module__)
    source = inspect.getsource(module)
    counter = _DropFix(-1)
    cst.parse_module(source).visit(counter)
    assert counter.seen, f"{rule.code} has fixed cases but passes no fix= to self.report"
    for site in range(counter.seen):
        mutated = cst.parse_module(source).visit(_DropFix(site)).code
        namespace = {"__name__": rule.__module__}
        exec(compile(mutated, module.__file__, "exec"), namespace)  # noqa: S102 - our own rule source
        assert not _fixed_cases_hold(namespace[rule.__name__]), (
            f"{rule.code}: removing fix #{site + 1} leaves every fixed case passing"
        )


def test_the_issue_names_these_fixable_rules():
    assert {"DRB501", "DRB504", "DRB601", "DRB602", "DRB702"} <= {rule.code for rule in FIXABLE}


def test_line_edits_round_trip_and_anchor_insertions():
    old = "a\nb\nc\n"
    assert line_edits(old, "a\nB\nc\n") == (Edit(2, 2, "B\n"),)
    assert line_edits(old, "a\nx\nb\nc\n") == (Edit(2, 2, "x\nb\n"),)  # an insertion replaces the line after it
    assert line_edits(old, "a\nb\nc\nz\n") == (Edit(3, 3, "c\nz\n"),)  # at the end, the line before it
    assert line_edits(old, "a\nc\n") == (Edit(2, 2, ""),)
    for new in ("a\nx\nb\nc\ny\n", "q\na\nb\n", "", "a\nb\nc\n"):
        assert apply_edits(old, line_edits(old, new)) == new
    with pytest.raises(ValueError):
        apply_edits(old, [Edit(1, 2, "x\n"), Edit(2, 3, "y\n")])


def _finding(code: str, line: int, fix: Fix | None) -> Finding:
    return Finding(code, 5, "p.py", line, line, "S", code, "m.", fix=fix)


def test_compatible_keeps_the_first_of_overlapping_fixes_and_equality_ignores_fixes():
    a = _finding("DRB601", 3, Fix("free", (Edit(3, 3, "free()\nreturn x\n"),)))
    b = _finding("DRB602", 3, Fix("tuple", (Edit(3, 3, "if not d:\n    return (x,)\nreturn x\n"),)))
    c = _finding("DRB504", 1, Fix("device", (Edit(1, 1, "y\n"),)))
    assert compatible([b, a, c]) == [c, a]
    assert apply_edits("z\nw\nreturn x\n", [e for f in compatible([a, b, c]) if f.fix for e in f.fix.edits]) == (
        "y\nw\nfree()\nreturn x\n"
    )
    assert a == _finding("DRB601", 3, None)
    assert Finding.from_dict(a.to_dict()) == a and Finding.from_dict(a.to_dict()).fix == a.fix
    assert "fix" not in _finding("DRB601", 3, None).to_dict()


def test_suggestion_only_within_the_commented_lines():
    source = "def f():\n    x = 1\n    return x\n"
    fix = Fix("free", (Edit(3, 3, "    free()\n    return x\n"),))
    assert suggestion(source, fix, 3, 3) == "    free()\n    return x\n"
    assert suggestion(source, fix, 2, 3) == "    x = 1\n    free()\n    return x\n"
    assert suggestion(source, fix, 1, 2) is None


def test_unified_diff_and_compiles():
    assert unified_diff("p.py", "a\n", "a\n") == ""
    assert unified_diff("p.py", "a\n", "b\n") == "--- a/p.py\n+++ b/p.py\n@@ -1 +1 @@\n-a\n+b\n"
    assert compiles("p.py", "x = (") is not None
    assert compiles("p.py", "x = 1\n") is None


def test_json_says_which_findings_have_a_fix():
    import json

    from analyzers.render import JSON_FIELDS, to_json

    rule = next(r for r in RULES if r.code == "DRB702")
    fixed = run_case(rule, rule.INVALID[1])
    drb501 = next(r for r in RULES if r.code == "DRB501")
    plain = run_case(drb501, next(case for case in drb501.INVALID if case.fixed is None))
    out = json.loads(to_json([*fixed, *plain]))["findings"]
    assert list(out[0]) == [*JSON_FIELDS, "fix"]
    assert out[0]["fix"] == {
        "description": "parenthesise the divisor: `size % (8 * patch)`",
        "edits": [{"line": 3, "end_line": 3, "text": '    assert not size % (8 * patch), "bad size"\n'}],
    }
    assert list(out[1]) == list(JSON_FIELDS)  # no fix, no key: the output of findings without one is unchanged


def test_fixes_survive_the_result_cache(tmp_path):
    from analyzers.cache import ResultCache

    rule = next(r for r in RULES if r.code == "DRB702")
    case = rule.INVALID[0]
    source = textwrap.dedent(case.code)
    cache = ResultCache(str(tmp_path / "cache"))
    project = Project.from_mapping({case.path: source})
    first, hit = cache.analyze(case.path, source, project=project, rules=RULES)
    again, hit_again = cache.analyze(case.path, source, project=Project.from_mapping({case.path: source}), rules=RULES)
    assert (hit, hit_again) == (False, True)
    assert [f.fix for f in again.findings] == [f.fix for f in first.findings] != [None]
    # a drift fix (DRB801's) is keyed apart: asking for it never reads an entry stored without it
    assert cache.key(case.path, source, RULES) != cache.key(case.path, source, RULES, drift_fixes=True)


def test_text_output_says_how_many_findings_drbot_fix_can_fix():
    from analyzers.render import to_text

    rule = next(r for r in RULES if r.code == "DRB702")
    fixable = run_case(rule, rule.INVALID[1])
    plain = [replace(f, fix=None) for f in fixable]
    assert "1 of them can be fixed with `drbot fix`" in to_text(fixable)
    assert "drbot fix" not in to_text(plain)


@pytest.mark.parametrize("rule", FIXABLE, ids=[r.code for r in FIXABLE])
def test_fix_edits_copy_only_the_nodes_above_a_replacement_and_agree_with_libcsts_transformer(rule):
    """`fixes.replaced` (the scan's way: rebuild the spine above each replaced node) and `fixes._spliced` (generate
    only the statement that holds the replacements) give the text libcst's transformer gives (which rebuilds every
    node), on every fixed case of the rule."""
    from analyzers import walk
    from analyzers.context import FileContext
    from analyzers.fixes import _Replacer, _spliced, replaced

    compared = 0
    for case in rule.INVALID:
        if case.fixed is None:
            continue
        source = textwrap.dedent(case.code)
        files = {path: textwrap.dedent(text) for path, text in case.files.items()}
        module = cst.parse_module(source)
        checker = rule(FileContext(case.path, source, module, Project.from_mapping({**files, case.path: source})))
        walk.prepare(module)
        try:
            checker.check()
            for *_, proposal in checker.reports:
                if proposal is None or not proposal.replacements:
                    continue
                fast = replaced(module, proposal.replacements)
                assert fast is not None, f"{rule.code}: the spine copy gave up on {proposal.description}"
                expected = module.visit(_Replacer(proposal.replacements)).code
                assert fast.code == expected != source
                # the statement's code alone, spliced into the text, gives the same file
                assert _spliced(module, source, proposal.replacements) == expected
                compared += 1
        finally:
            walk.clear()
    if rule.code != "DRB801":  # DRB801 hands over line edits, as `make fix-copies` would write them
        assert compared, f"{rule.code}: no replacement was compared"
