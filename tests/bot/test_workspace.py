"""A git command that fails in a workspace says which command, with what exit status, and what git printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot import workspace
from common.process import describe_failure, exit_status
from engine import review as engine_review


def test_bot_workspace_git_failure_names_command_status_and_stderr(tmp_path):
    with pytest.raises(workspace.WorkspaceError) as raised:
        workspace._git(tmp_path, "rev-parse", "--verify", "no-such-rev")  # not a repository
    message = str(raised.value)
    assert message.startswith("git rev-parse --verify no-such-rev failed (exit status 128): ")
    assert "not a git repository" in message


def test_engine_git_failure_names_command_status_and_stderr(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    with pytest.raises(engine_review.GitError) as raised:
        engine_review._git(tmp_path, "rev-parse", "--verify", "no-such-rev^{commit}")
    message = str(raised.value)
    assert message.startswith("git rev-parse --verify no-such-rev^{commit} failed (exit status 128): ")
    assert "fatal: Needed a single revision" in message


def test_a_failure_that_prints_only_on_stdout_still_says_why(tmp_path):
    # `git commit` with nothing to commit explains itself on stdout, with nothing on stderr
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    with pytest.raises(workspace.WorkspaceError) as raised:
        workspace._git(tmp_path, "commit", "-q", "-m", "empty")
    message = str(raised.value)
    assert "failed (exit status 1): " in message and "nothing to commit" in message


def test_git_missing_from_path_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(workspace.WorkspaceError, match=r"^git init -q could not be started: No such file"):
        workspace._git(tmp_path, "init", "-q")
    with pytest.raises(engine_review.GitError, match=r"^git status could not be started: No such file"):
        engine_review._git(tmp_path, "status")


def test_a_killed_command_names_the_signal():
    result = subprocess.run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    assert result.returncode < 0
    assert describe_failure(["python"], result.returncode, "", "") == (
        "python failed (killed by signal 9 (SIGKILL)): it printed nothing"
    )
    assert exit_status(3) == "exit status 3"


def test_the_command_line_shows_the_git_failure(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "drbot", "review", "--base", "no-such-rev", "--repo", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert result.returncode == 2
    assert "failed (exit status 128)" in result.stderr and "no-such-rev" in result.stderr


# -- the pipelines `/drbot contracts` runs when it names none --------------------------------------------------------


def _commit(repo, files: dict[str, str]) -> str:
    import subprocess

    for path, text in files.items():
        target = repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    run = lambda *args: subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True)  # noqa: E731
    run("add", "-A")
    run("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "x")
    return run("rev-parse", "HEAD").stdout.strip()


def test_pipelines_using_a_changed_model_join_and_the_rest_are_counted(tmp_path):
    import subprocess

    from bot.workspace import dependent_pipelines, pipeline_classes
    from engine.isolation import Limits, Pool

    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    model = "src/diffusers/models/transformers/transformer_flux.py"
    flux = "from ...models import FluxTransformer2DModel\n\nclass FluxPipeline:\n    pass\n"
    files = {
        model: "class FluxTransformer2DModel:\n    pass\n\ndef _private():\n    pass\n",
        "src/diffusers/pipelines/flux/pipeline_flux.py": flux,
        "src/diffusers/pipelines/flux/pipeline_flux_img2img.py": flux.replace("FluxPipeline", "FluxImg2ImgPipeline"),
        "src/diffusers/pipelines/flux/pipeline_flux_fill.py": flux.replace("FluxPipeline", "FluxFillPipeline"),
        # names the model only in a private helper's name: a word match, not a substring match
        "src/diffusers/pipelines/sana/pipeline_sana.py": "from x import FluxTransformer2DModelish\n\n"
        "class SanaPipeline:\n    pass\n",
        # uses a private name of the changed module only: not a user of its public interface
        "src/diffusers/pipelines/other/pipeline_other.py": "from y import _private\n\nclass OtherPipeline:\n    pass\n",
        "src/diffusers/pipelines/flux/__init__.py": "from .pipeline_flux import FluxPipeline\n",
    }
    head = _commit(repo, files)
    changed_dir = tmp_path / "changed"  # what the review holds: the head's changed files
    for path in (model, "src/diffusers/pipelines/flux/pipeline_flux.py"):
        (changed_dir / path).parent.mkdir(parents=True, exist_ok=True)
        (changed_dir / path).write_text(files[path])
    changed = [model, "src/diffusers/pipelines/flux/pipeline_flux.py"]
    with Pool(Limits(timeout_s=30)) as pool:
        assert pipeline_classes(changed_dir, changed, pool) == ["FluxPipeline"]
        found, more = dependent_pipelines(repo, head, changed_dir, changed, pool)
        assert (found, more) == (["FluxFillPipeline", "FluxImg2ImgPipeline"], 0)
        capped, more = dependent_pipelines(repo, head, changed_dir, changed, pool, limit=1)
        assert (capped, more) == (["FluxFillPipeline"], 1)
        # a change to pipeline modules alone adds no dependents
        assert dependent_pipelines(repo, head, changed_dir, changed[1:], pool) == ([], 0)
    assert not list(changed_dir.glob("drbot-dependents-*"))  # the scratch copies are gone
