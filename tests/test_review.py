"""`drbot review`: diff-aware comparison on a real git repository made of real diffusers 0.42.1 files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from analyzers.core import Finding
from analyzers.render import review_markdown
from analyzers.review import compare
from engine.review import GitError, review


ROOT = Path(__file__).resolve().parent.parent
UNCLIP = "pipelines/stable_diffusion/pipeline_stable_unclip_img2img.py"
SD = "pipelines/stable_diffusion/pipeline_stable_diffusion.py"
FILES = [
    UNCLIP,
    SD,
    "pipelines/ddpm/pipeline_ddpm.py",
    "pipelines/wan/pipeline_wan_i2v.py",
    "pipelines/pipeline_utils.py",
]
GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=GIT_ENV
    ).stdout


@pytest.fixture
def repo(tmp_path: Path, diffusers_dir: Path) -> Path:
    for rel in FILES:
        target = tmp_path / "src" / "diffusers" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(diffusers_dir / rel, target)
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "base")
    return tmp_path


def _edit(repo: Path, rel: str, old: str, new: str) -> None:
    path = repo / "src" / "diffusers" / rel
    text = path.read_text()
    assert old in text, f"{old!r} not in {rel}"
    path.write_text(text.replace(old, new, 1))


def test_compare_by_fingerprint():
    a = Finding("DRB201", 2, "p.py", 1, 1, "S", "a", "m", fingerprint="aaaa")
    b = Finding("DRB201", 2, "p.py", 2, 2, "S", "b", "m", fingerprint="bbbb")
    moved_b = Finding("DRB201", 2, "p.py", 9, 9, "S", "b", "m", fingerprint="bbbb")
    c = Finding("DRB201", 2, "p.py", 3, 3, "S", "c", "m", fingerprint="cccc")
    result = compare([a, b], [moved_b, c])
    assert result.new == (c,) and result.fixed == (a,) and result.unchanged == (moved_b,)


def test_review_tells_new_fixed_and_known(repo):
    # fix the known `clip_skip` finding by using the argument; introduce a new ignored argument in DDPM
    _edit(
        repo,
        UNCLIP,
        "lora_scale=text_encoder_lora_scale,\n",
        "lora_scale=text_encoder_lora_scale,\n            clip_skip=clip_skip,\n",
    )
    _edit(
        repo,
        "pipelines/ddpm/pipeline_ddpm.py",
        "return_dict: bool = True,",
        "return_dict: bool = True,\n        eta: float = 0.0,",
    )
    git(repo, "commit", "-qam", "head")
    data = review(repo, "HEAD~1", "HEAD")
    assert data.files_reviewed == 2
    assert [(f.code, f.scope, f.symbol) for f in data.new] == [("DRB201", "DDPMPipeline.__call__", "eta")]
    assert data.on_changed_line(data.new[0])
    assert ("DRB201", "StableUnCLIPImg2ImgPipeline.__call__", "clip_skip") in {
        (f.code, f.scope, f.symbol) for f in data.comparison.fixed
    }
    assert all(f.path.startswith("diffusers/") for f in data.comparison.new + data.comparison.fixed)


def test_moving_code_keeps_findings_known(repo):
    _edit(repo, UNCLIP, "import inspect\n", "import inspect\n\n\n# a comment that moves every line\n")
    git(repo, "commit", "-qam", "move")
    data = review(repo, "HEAD~1", "HEAD")
    assert data.new == () and data.comparison.fixed == ()
    assert any(f.symbol == "clip_skip" for f in data.known_findings)


def test_cli_prints_the_markdown_and_exits_by_new_findings(repo):
    _edit(
        repo,
        "pipelines/ddpm/pipeline_ddpm.py",
        "return_dict: bool = True,",
        "return_dict: bool = True,\n        eta: float = 0.0,",
    )
    git(repo, "commit", "-qam", "head")
    result = subprocess.run(
        [sys.executable, "-m", "drbot", "review", "--base", "HEAD~1", "--repo", str(repo)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("<!-- drbot:summary -->\n## drbot review")
    assert "**1 new finding**" in result.stdout and "`eta`" in result.stdout


def test_a_changed_file_that_cannot_be_analysed_makes_the_review_exit_1(repo):
    # a syntax error in the head, no new finding: the review is not clean, and it says why
    path = repo / "src" / "diffusers" / "pipelines" / "ddpm" / "pipeline_ddpm.py"
    path.write_text(path.read_text() + "\ndef broken(:\n")
    git(repo, "commit", "-qam", "head")
    result = subprocess.run(
        [sys.executable, "-m", "drbot", "review", "--base", "HEAD~1", "--repo", str(repo)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 1, result.stderr
    assert "**0 new findings**" in result.stdout and "pipeline_ddpm.py" in result.stdout
    assert "1 file could not be analysed" in result.stderr


def test_bad_revision_is_a_clear_error(repo):
    with pytest.raises(GitError, match="no-such-rev"):
        review(repo, "no-such-rev")


def test_a_renamed_file_keeps_its_findings_known(repo):
    git(repo, "mv", "src/diffusers/" + UNCLIP, "src/diffusers/pipelines/stable_diffusion/pipeline_unclip_i2i.py")
    git(repo, "commit", "-qm", "rename")
    data = review(repo, "HEAD~1", "HEAD")
    assert data.files_reviewed == 1
    assert data.new == () and data.comparison.fixed == ()
    assert {f.path for f in data.known_findings} == {"diffusers/pipelines/stable_diffusion/pipeline_unclip_i2i.py"}


CLAMP = "image = (image / 2 + 0.5).clamp(0, 1)\n"


def _copy_findings(data):
    return [(f.path, f.symbol, data.notes.get(f.fingerprint, "")) for f in data.new if f.code == "DRB801"]


def test_source_edited_without_fix_copies_flags_the_untouched_copy(repo):
    _edit(repo, SD, CLAMP, "image = (image / 2 + 0.5).clamp(0, 1)  # edited\n        image = image * 1.0\n")
    git(repo, "commit", "-qam", "edit the source only")
    data = review(repo, "HEAD~1", "HEAD")
    assert data.files_reviewed == 1
    (copy,) = [c for c in _copy_findings(data) if c[1].endswith("StableDiffusionPipeline.decode_latents")]
    assert copy[0] == "diffusers/" + UNCLIP
    assert "the source was edited" in copy[2] and "make fix-copies" in copy[2]


def test_an_edited_copy_is_told_apart(repo):
    text = (repo / "src" / "diffusers" / UNCLIP).read_text()
    start = text.index("def decode_latents")
    edited = text[:start] + text[start:].replace(CLAMP, "image = (image / 2 + 0.5).clamp(-1, 1)\n", 1)
    (repo / "src" / "diffusers" / UNCLIP).write_text(edited)
    git(repo, "commit", "-qam", "edit the copy only")
    data = review(repo, "HEAD~1", "HEAD")
    (copy,) = _copy_findings(data)
    assert copy[0] == "diffusers/" + UNCLIP and "this copy was edited" in copy[2]
    assert "this copy was edited" in review_markdown(data)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


NEW_PIPELINE = (
    "from ..pipeline_utils import DiffusionPipeline\n\n\n"
    "class OmniPipeline(DiffusionPipeline):\n"
    "    def __call__(self, prompt):\n"
    "        return prompt\n"
)


def test_a_new_public_pipeline_without_tests_is_reported_and_its_tests_silence_it(tmp_path):
    """The test coverage rules see the head revision's `tests/` through `git ls-tree`."""
    _write(
        tmp_path,
        {
            "src/diffusers/__init__.py": '_import_structure = {"pipelines": ["FooPipeline"]}\n',
            "src/diffusers/pipelines/pipeline_utils.py": "class DiffusionPipeline:\n    pass\n",
            "src/diffusers/pipelines/foo/pipeline_foo.py": NEW_PIPELINE.replace("Omni", "Foo"),
            "tests/pipelines/foo/test_foo.py": "class FooFastTests:\n    pipeline_class = FooPipeline\n",
        },
    )
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "base")
    _write(
        tmp_path,
        {
            "src/diffusers/__init__.py": '_import_structure = {"pipelines": ["FooPipeline", "OmniPipeline"]}\n',
            "src/diffusers/pipelines/omni/pipeline_omni.py": NEW_PIPELINE,
        },
    )
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "add a pipeline, no tests")
    data = review(tmp_path, "HEAD~1", "HEAD")
    assert [(f.code, f.symbol) for f in data.new if f.pattern == 10] == [("DRB014", "OmniPipeline")]

    _write(
        tmp_path, {"tests/pipelines/omni/test_omni.py": "class OmniFastTests:\n    pipeline_class = OmniPipeline\n"}
    )
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "and its fast tests")
    data = review(tmp_path, "HEAD~2", "HEAD")
    assert [(f.code, f.symbol) for f in data.new if f.pattern == 10] == [("DRB015", "OmniPipeline")]


# -- git failing under a review is an error that says why, never an empty answer ------------------------------------


def _corrupt_objects(repo: Path) -> None:
    """Make every loose object unreadable: git then fails on any read, as on a damaged disk."""
    for obj in (repo / ".git" / "objects").glob("??/*"):
        obj.write_bytes(b"not a zlib stream")


def test_git_failures_under_the_tree_readers_are_loud(repo):
    from engine.review import GitTree, blob_sizes, copies_of

    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    tree = GitTree(repo, head)
    assert tree.files("src")  # the healthy repository answers
    path = tree.files("src")[0]
    assert tree.read(path) is not None
    assert tree.read("src/no/such/file.py") is None  # absent is not an error
    tree.close()
    _corrupt_objects(repo)
    broken = GitTree(repo, head)
    with pytest.raises(GitError, match=r"git .* failed \(exit status \d+\): .*\S"):
        broken.files("src")
    with pytest.raises(GitError, match=r"cat-file"):
        broken.read(path)
    with pytest.raises(GitError, match=r"cat-file"):
        blob_sizes(repo, [(head, path)])
    with pytest.raises(GitError, match=r"git .*grep.* failed"):
        copies_of(repo, head, {"diffusers.models.Thing"})


def test_a_directory_reads_as_no_file(repo):
    from engine.review import GitTree

    tree = GitTree(repo, "HEAD")
    try:
        assert tree.read("src") is None and tree.too_large == {}
        assert tree.read(tree.files("src")[0]) is not None  # the stream stays in step after a non-blob
    finally:
        tree.close()
