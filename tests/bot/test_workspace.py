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
