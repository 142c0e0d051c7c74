"""Parses shared between project views: a module unchanged between two revisions is parsed once per process."""

from __future__ import annotations

from analyzers import project
from analyzers.project import Project


def test_two_views_of_the_same_text_share_one_parse_and_a_changed_text_is_parsed_again():
    text = "class A:\n    pass\n"
    base = Project.from_mapping({"pkg/a.py": text})
    head = Project.from_mapping({"pkg/a.py": text})
    changed = Project.from_mapping({"pkg/a.py": text + "\nclass B:\n    pass\n"})
    assert base.module("pkg.a") is head.module("pkg.a")
    assert changed.module("pkg.a") is not base.module("pkg.a")
    assert changed.find_class("pkg.a", "B") is not None and head.find_class("pkg.a", "B") is None


def test_a_text_that_does_not_parse_is_none_in_every_view_and_few_parses_are_kept():
    assert Project.from_mapping({"pkg/bad.py": "def (:\n"}).module("pkg.bad") is None
    for n in range(project.SHARED_PARSES_KEPT + 5):
        project.parse_shared(f"x = {n}\n")
    assert len(project._SHARED_PARSES) == project.SHARED_PARSES_KEPT
