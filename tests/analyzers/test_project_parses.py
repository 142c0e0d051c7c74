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


def test_analysed_files_do_not_push_asked_for_neighbours_out_and_text_bounds_the_cache(monkeypatch):
    from analyzers.parsing import parse_module

    files = {f"pkg/m{n}.py": f"class M{n}:\n    x = {n}\n" for n in range(200)}
    view = Project.from_mapping({**files, "pkg/hub.py": "class Hub:\n    pass\n"})
    hub = view.module("pkg.hub")
    parses = {n: parse_module(files[f"pkg/m{n}.py"]) for n in range(200)}
    for n in range(200):  # a scan analysing 200 files remembers each of their parses
        view.remember(f"pkg.m{n}", parses[n], False, len(files[f"pkg/m{n}.py"]))
    assert view.module("pkg.hub") is hub  # still the parse a rule asked for first
    assert view.module("pkg.m199") is parses[199]  # remembered: not parsed again
    neighbour = Project.from_mapping(files).module("pkg.m5")
    ahead = Project.from_mapping(files)
    assert ahead.module("pkg.m5") is neighbour  # a rule asked for it before the scan came to it
    assert ahead.parsed("pkg/m5.py", files["pkg/m5.py"]) is neighbour  # so the scan does not parse it again
    assert ahead.parsed("pkg/m5.py", "changed = 1\n") is None and ahead.parsed("pkg/m6.py", files["pkg/m6.py"]) is None

    monkeypatch.setattr(Project, "MODULE_BYTES_KEPT", 60)
    small = Project.from_mapping(files)
    for n in range(10):
        small.module(f"pkg.m{n}")
    assert len(small._modules) == 60 // len(files["pkg/m0.py"])  # the oldest forgotten past the bound
    assert "pkg.m9" in small._modules and "pkg.m0" not in small._modules
