"""Rule pages under docs/rules/ and the README's rule table are generated and must not go stale."""

from __future__ import annotations

from analyzers.core import all_rules
from analyzers.docs import README, expected_pages, readme_with_table, rule_page, stale_pages


def test_no_page_is_stale():
    assert stale_pages() == [], "run `python -m analyzers.docs` and commit the result"


def test_stale_pages_are_detected(tmp_path):
    pages = expected_pages()
    for name, text in pages.items():
        (tmp_path / name).write_text(text)
    assert stale_pages(tmp_path) == []
    rule = all_rules()[0]
    (tmp_path / f"{rule.code}.md").write_text("edited by hand\n")
    (tmp_path / "DRB999.md").write_text("a rule that no longer exists\n")
    (tmp_path / "README.md").unlink()
    assert stale_pages(tmp_path) == sorted([f"{rule.code}.md", "DRB999.md", "README.md"])


def test_a_page_holds_the_docstring_sections():
    for rule in all_rules():
        page = rule_page(rule)
        assert page.splitlines()[1] == f"# {rule.code} {rule.name}"
        assert "## What it does" in page and "## Why is this bad?" in page
        assert "issues/13656" in page


def test_readme_lists_every_rule():
    text = README.read_text()
    assert readme_with_table(text, all_rules()) == text
    for rule in all_rules():
        assert f"[{rule.code}](docs/rules/{rule.code}.md)" in text


def test_every_rule_sets_its_severity_and_its_page_and_the_tables_show_it():
    # a rule decides its severity from what it reports: the `Rule` default is never inherited silently
    inherited = [rule.code for rule in all_rules() if "severity" not in vars(rule)]
    assert inherited == [], 'set `severity = "error" | "warning" | "note"` on these rules'
    pages = expected_pages()
    for rule in all_rules():
        assert f"\nSeverity: {rule.severity} (" in rule_page(rule)
        assert f"| {rule.pattern} | {rule.severity} | " in pages["README.md"]
    assert "Severity: note (maintenance, documentation or a feature gap;" in rule_page(
        next(rule for rule in all_rules() if rule.code == "DRB902")
    )
    assert "| code | name | pattern | severity | what it does |" in README.read_text()
