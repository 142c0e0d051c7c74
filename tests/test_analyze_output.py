"""What `drbot analyze` prints for GitHub: paths in the repository (as GitHub places annotations), errors on a line,
`file` beside `path` in JSON, and every finding in Markdown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from analyzers.render import DOCS_URL, MAX_BODY
from analyzers.scan import discover, repository_paths, repository_root, scan


ROOT = Path(__file__).resolve().parent.parent
BUGGY = textwrap.dedent(
    """
    from ...pipeline_utils import DiffusionPipeline


    class ToyPipeline(DiffusionPipeline):
        def __call__(self, prompt, eta=0.0):
            return self.run(prompt)
    """
)
BROKEN = "class BrokenPipeline(DiffusionPipeline):\n    def __call__(self:\n"


def drbot(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "drbot", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "DRBOT_CACHE_DIR": os.environ["DRBOT_CACHE_DIR"]},
    )


def make_package(parent: Path, *, broken: bool = False) -> Path:
    """`parent/diffusers/pipelines/toy/pipeline_toy.py` with one DRB201 finding (and a file libcst cannot parse)."""
    toy = parent / "diffusers" / "pipelines" / "toy"
    toy.mkdir(parents=True)
    for init in (parent / "diffusers", parent / "diffusers" / "pipelines", toy):
        (init / "__init__.py").write_text("")
    (parent / "diffusers" / "pipelines" / "pipeline_utils.py").write_text("class DiffusionPipeline:\n    pass\n")
    (toy / "pipeline_toy.py").write_text(BUGGY)
    if broken:
        (toy / "broken.py").write_text(BROKEN)
    return parent / "diffusers"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A git checkout laid out as diffusers is: `src/diffusers/…`, `tests/`, and a `utils/` without packages."""
    checkout = tmp_path / "diffusers-checkout"
    make_package(checkout / "src", broken=True)
    (checkout / "tests").mkdir()
    (checkout / "utils").mkdir()
    (checkout / "utils" / "check_toy.py").write_text(BROKEN)
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    return checkout


# ------------------------------------------------------------------------------ how the repository root is found


def test_the_repository_root_is_the_git_work_tree_that_holds_the_file(checkout, tmp_path):
    file = checkout / "src" / "diffusers" / "pipelines" / "toy" / "pipeline_toy.py"
    assert repository_root(file) == checkout.resolve()
    # a worktree or a submodule has a `.git` file, not a directory
    worktree = tmp_path / "worktree"
    make_package(worktree / "src")
    (worktree / ".git").write_text("gitdir: /elsewhere/.git/worktrees/w\n")
    assert repository_root(worktree / "src" / "diffusers" / "__init__.py") == worktree.resolve()


def test_an_unpacked_archive_is_a_repository_by_its_layout(tmp_path):
    archive = tmp_path / "diffusers-0.42.1"  # a tarball of the repository: no .git, but src/ and tests/
    make_package(archive / "src")
    (archive / "tests").mkdir()
    items = discover([archive / "src" / "diffusers" / "pipelines"])
    paths, root = repository_paths(items)
    assert paths["diffusers/pipelines/toy/pipeline_toy.py"] == "src/diffusers/pipelines/toy/pipeline_toy.py"
    assert root == archive.resolve()


def test_an_installed_package_keeps_its_package_path(tmp_path):
    # site-packages of a virtualenv inside a repository: its files are not the repository's
    repository = tmp_path / "project"
    site = repository / ".venv" / "lib" / "python3.11" / "site-packages"
    package = make_package(site)
    (repository / ".git").mkdir()
    assert repository_root(package / "pipelines" / "toy" / "pipeline_toy.py") is None
    report = scan([package], jobs=1)
    assert report.file_paths["diffusers/pipelines/toy/pipeline_toy.py"] == "diffusers/pipelines/toy/pipeline_toy.py"
    assert report.root == site.resolve()
    # a package in no repository at all reads the same
    plain = make_package(tmp_path / "plain")
    assert repository_root(plain / "__init__.py") is None


# ------------------------------------------------------------------------------ what GitHub reads


def test_workflow_annotations_name_files_from_the_repository_root(checkout):
    # run from a directory inside the checkout, on a path relative to it: paths still start at the root
    result = drbot("analyze", "../src/diffusers", "../utils", "--format", "github", "-j", "1", cwd=checkout / "tests")
    lines = result.stdout.splitlines()
    assert any(
        line.startswith("::error file=src/diffusers/pipelines/toy/pipeline_toy.py,line=6,endLine=6,")  # DRB201
        for line in lines
    ), result.stdout
    assert any(
        line.startswith("::error file=src/diffusers/pipelines/toy/broken.py,line=2,title=drbot::") for line in lines
    ), result.stdout
    # before: `file=check_toy.py`, a bare name GitHub cannot place
    assert any(line.startswith("::error file=utils/check_toy.py,line=2,title=drbot::") for line in lines), (
        result.stdout
    )


def test_the_same_paths_from_outside_the_checkout(checkout, tmp_path):
    result = drbot("analyze", str(checkout), "--format", "github", "-j", "1", cwd=tmp_path)
    assert "::error file=src/diffusers/pipelines/toy/pipeline_toy.py,line=6," in result.stdout  # DRB201: an error


def test_json_keeps_the_package_path_and_adds_the_file(checkout):
    payload = json.loads(drbot("analyze", str(checkout), "--format", "json", "-j", "1").stdout)
    (finding,) = payload["findings"]
    assert finding["path"] == "diffusers/pipelines/toy/pipeline_toy.py"  # what the fingerprint hashes
    assert finding["file"] == "src/diffusers/pipelines/toy/pipeline_toy.py"
    assert payload["errors"][0]["path"] == "diffusers/pipelines/toy/broken.py"
    assert payload["errors"][0]["file"] == "src/diffusers/pipelines/toy/broken.py"


def test_fingerprints_do_not_depend_on_where_the_package_lies(checkout, tmp_path):
    installed = make_package(tmp_path / "site-packages")
    in_checkout = json.loads(drbot("analyze", str(checkout / "src"), "--format", "json").stdout)["findings"]
    elsewhere = json.loads(drbot("analyze", str(installed), "--format", "json").stdout)["findings"]
    assert [f["fingerprint"] for f in in_checkout] == [f["fingerprint"] for f in elsewhere]
    assert elsewhere[0]["file"] == elsewhere[0]["path"] == "diffusers/pipelines/toy/pipeline_toy.py"


# ------------------------------------------------------------------------------ Markdown on the command line


def test_markdown_on_the_command_line_lists_every_finding(tmp_path):
    # 300 unused arguments: a report past GitHub's comment limit, which the command line has no reason to cut
    package = make_package(tmp_path)
    params = "".join(f"\n        arg{i}=0," for i in range(300))
    (package / "pipelines" / "toy" / "pipeline_toy.py").write_text(
        BUGGY.replace("def __call__(self, prompt, eta=0.0):", f"def __call__(self, prompt,{params}\n    ):")
    )
    result = drbot("analyze", str(package), "--format", "markdown")
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("## drbot: 300 findings")
    assert "truncated" not in result.stdout and "check run" not in result.stdout
    assert result.stdout.count(f"- **DRB201** [unused-call-argument]({DOCS_URL}DRB201.md)") == 300
    assert len(result.stdout) > MAX_BODY
