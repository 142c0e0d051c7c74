"""Finding paths (and so module names, the project view and fingerprints) are the same whatever the surrounding
tree holds: a package given without its parents' `__init__.py` files still reads `diffusers/pipelines/wan/…`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from analyzers.modules import relative_import_depth, root_for_relative_imports
from analyzers.scan import discover, project_root, scan


WAN = "diffusers/pipelines/wan"


def _keys(findings):
    return sorted((f.code, f.path, f.scope, f.symbol, f.fingerprint) for f in findings)


@pytest.fixture
def wan_alone(tmp_path, diffusers_dir) -> Path:
    """`src/diffusers/pipelines/wan/` of a checkout that holds nothing else: no `diffusers/__init__.py`, no
    `pipelines/__init__.py` (a sparse checkout, the files of a diff)."""
    target = tmp_path / "checkout" / "src" / WAN
    shutil.copytree(diffusers_dir / "pipelines" / "wan", target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def test_relative_import_depth():
    assert relative_import_depth("import torch\nfrom ...utils import x\n    from .. import y\n") == 3
    assert relative_import_depth('"""\n>>> from ...utils import x\n"""\nimport os\n') == 0


def test_a_package_without_its_parents_is_placed_by_its_relative_imports(wan_alone):
    src = wan_alone.parents[2]
    assert project_root(wan_alone) == src
    assert project_root(wan_alone / "pipeline_wan_i2v.py") == src
    assert {file.relative_to(root).as_posix() for root, file in discover([wan_alone])} >= {
        f"{WAN}/__init__.py",
        f"{WAN}/pipeline_wan_i2v.py",
    }


def test_the_same_findings_alone_as_in_the_whole_tree(wan_alone, diffusers_dir):
    alone = scan([wan_alone], jobs=1)
    whole = scan([diffusers_dir / "pipelines" / "wan"], jobs=1)
    assert alone.errors == [] and whole.errors == []
    assert ("DRB101", f"{WAN}/pipeline_wan_i2v.py", "WanImageToVideoPipeline.__call__", "image_embeds") in {
        (f.code, f.path, f.scope, f.symbol) for f in alone.findings
    }
    assert _keys(alone.findings) == _keys(whole.findings)


def test_the_climb_stops_where_no_package_can_be(tmp_path):
    # a relative import deeper than the tree never moves the root out of a project or an install directory
    for stop in ("site-packages", "src"):
        package = tmp_path / stop / "pkg"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        (package / "mod.py").write_text("from ....far import x\n")
        assert project_root(package) == tmp_path / stop
    project = tmp_path / "project"
    (project / "pkg").mkdir(parents=True)
    (project / "pyproject.toml").write_text("")
    (project / "pkg" / "mod.py").write_text("from ...far import x\n")
    assert root_for_relative_imports(project / "pkg", project) == project
