"""`.pre-commit-hooks.yaml`: the `drbot` hook, run by pre-commit itself (`pre-commit try-repo`) on staged files.

pre-commit installs the hook from a git repository: a scratch one holding this checkout's package files as they are
now (committed or not), so the test runs the hook as a user's `pre-commit` would, with drbot installed from PyPI's
dependencies into pre-commit's own virtualenv.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
#: what a pip install of drbot needs from the checkout, and the hook definition
PACKAGE = ("pyproject.toml", "README.md", ".pre-commit-hooks.yaml", "analyzers", "engine", "common", "drbot", "bot",
           "runners")  # fmt: skip
DDPM = "src/diffusers/pipelines/ddpm/pipeline_ddpm.py"
ETA_OLD = "return_dict: bool = True,"
ETA_NEW = "return_dict: bool = True,\n        eta: float = 0.0,"
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "GIT_CONFIG_NOSYSTEM": "1"}  # fmt: skip


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env={**os.environ, **GIT_ENV})


def hook_repository(target: Path) -> Path:
    """A git repository of the checkout's package files, tracked or not (ignored ones left out)."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *PACKAGE],
        check=True, capture_output=True, text=True,
    ).stdout.split("\0")  # fmt: skip
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    git(target, "init", "-q")
    git(target, "add", "-A")
    git(target, "commit", "-qm", "drbot")
    return target


def pre_commit(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **GIT_ENV, "PRE_COMMIT_HOME": str(home), "PRE_COMMIT_COLOR": "never"}
    return subprocess.run([sys.executable, "-m", "pre_commit", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip


@pytest.fixture(scope="module")
def hook_repo(tmp_path_factory) -> Path:
    if importlib.util.find_spec("pre_commit") is None:
        pytest.skip("pre-commit is not installed (it is in the dev extra: pip install -e '.[dev]')")
    return hook_repository(tmp_path_factory.mktemp("drbot-hook"))


def test_the_hook_fails_on_a_staged_finding_and_passes_a_clean_file(hook_repo, tmp_path, diffusers_dir):
    work = tmp_path / "diffusers"
    (work / DDPM).parent.mkdir(parents=True)
    clean = (diffusers_dir / "pipelines/ddpm/pipeline_ddpm.py").read_text()
    (work / DDPM).write_text(clean)
    git(work, "init", "-q")
    git(work, "add", "-A")
    home = tmp_path / "pre-commit-home"

    passed = pre_commit("try-repo", str(hook_repo), "drbot", cwd=work, home=home)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "Passed" in passed.stdout

    git(work, "commit", "-qm", "clean")
    (work / DDPM).write_text(clean.replace(ETA_OLD, ETA_NEW, 1))
    (work / "notes.md").write_text("not python\n")
    git(work, "add", "-A")  # staged: what a commit would hold
    failed = pre_commit("try-repo", str(hook_repo), "drbot", cwd=work, home=home)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Failed" in failed.stdout and "exit code: 1" in failed.stdout
    assert "DRB201" in failed.stdout and "`eta`" in failed.stdout
    assert "notes.md" not in failed.stdout  # only Python files reach drbot
