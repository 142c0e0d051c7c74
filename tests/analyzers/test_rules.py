"""Every rule's embedded VALID and INVALID cases, and a mutation test that each report site is covered."""

from __future__ import annotations

import importlib
import inspect
import textwrap

import libcst as cst
import pytest

from analyzers.core import Valid, all_rules, run_case
from analyzers.render import to_text


RULES = all_rules()
CASES = [
    pytest.param(rule, case, id=f"{rule.code}-{kind}-{i}")
    for rule in RULES
    for kind, cases in (("valid", rule.VALID), ("invalid", rule.INVALID))
    for i, case in enumerate(cases)
]


@pytest.mark.parametrize("rule, case", CASES)
def test_rule_case(rule, case):
    findings = run_case(rule, case)
    if isinstance(case, Valid):
        assert findings == [], to_text(findings)
    else:
        assert findings, f"{rule.code} did not fire on:\n{textwrap.dedent(case.code)}"
        assert {f.code for f in findings} == {rule.code}
        assert case.message is None or [f.message for f in findings] == [case.message]


@pytest.mark.parametrize("rule", RULES, ids=[r.code for r in RULES])
def test_messages_end_in_a_remedy(rule):
    for case in rule.INVALID:
        for finding in run_case(rule, case):
            assert finding.message.endswith("."), finding.message
            assert ";" in finding.message or "," in finding.message, f"no remedy in: {finding.message}"


class _DropReport(cst.CSTTransformer):
    """Replace the n-th `self.report(...)` call with `None`: the rule loses one of its checks."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.seen = 0

    def leave_Call(self, original: cst.Call, updated: cst.Call) -> cst.BaseExpression:
        func = original.func
        if isinstance(func, cst.Attribute) and func.attr.value == "report" and isinstance(func.value, cst.Name):
            index, self.seen = self.seen, self.seen + 1
            if index == self.target:
                return cst.Name("None")
        return updated


def _report_sites(source: str) -> int:
    counter = _DropReport(-1)
    cst.parse_module(source).visit(counter)
    return counter.seen


def _mutant(rule, site: int):
    module = importlib.import_module(rule.__module__)
    source = inspect.getsource(module)
    mutated = cst.parse_module(source).visit(_DropReport(site)).code
    namespace = {"__name__": rule.__module__}
    exec(compile(mutated, module.__file__, "exec"), namespace)  # noqa: S102 - our own rule source
    return namespace[rule.__name__]


def _invalid_cases_hold(rule) -> bool:
    for case in rule.INVALID:
        findings = run_case(rule, case)
        if not findings or (case.message is not None and [f.message for f in findings] != [case.message]):
            return False
    return True


@pytest.mark.parametrize("rule", RULES, ids=[r.code for r in RULES])
def test_each_report_site_is_covered_by_an_invalid_case(rule):
    source = inspect.getsource(importlib.import_module(rule.__module__))
    sites = _report_sites(source)
    assert sites, f"{rule.code} never calls self.report"
    assert _invalid_cases_hold(rule)
    for site in range(sites):
        mutant = _mutant(rule, site)
        assert not _invalid_cases_hold(mutant), (
            f"{rule.code}: deleting report call #{site + 1} leaves every INVALID case passing; add a case for it"
        )


def test_rules_are_found_and_documented():
    codes = [rule.code for rule in RULES]
    assert len(codes) == len(set(codes))
    for rule in RULES:
        assert rule.__module__.rsplit(".", 1)[1].startswith(rule.code.lower() + "_"), rule.__module__
        assert rule.__module__.endswith(rule.name.replace("-", "_")), (rule.__module__, rule.name)
