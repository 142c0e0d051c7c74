"""diffusers releases, unpacked once under .cache/releases/: what the history corpus and the before/after tests
read. `release(version)` is a PyPI wheel (the package only; tests/ are not in it); `git_release(tag)` is a tag of
the diffusers git mirror, `src/` and `tests/` laid out as a checkout (what pattern 10's rules need)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "releases"
#: the bare git mirror of huggingface/diffusers (tags v0.18.0 … v0.40.0); DIFFUSERS_MIRROR overrides it
MIRROR = Path(os.environ.get("DIFFUSERS_MIRROR", "/work/.mirror/huggingface+diffusers/repo"))


def release(version: str) -> Path:
    """The `diffusers/` package of release `version`, downloaded with pip (no dependencies) the first time."""
    target = CACHE / version
    package = target / "diffusers"
    if package.is_dir():
        return package
    download = CACHE / f"dl-{version}"
    download.mkdir(parents=True, exist_ok=True)
    wheels = list(download.glob(f"diffusers-{version}-*.whl"))
    if not wheels:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                   f"diffusers=={version}", "-d", str(download)]  # fmt: skip
        subprocess.run(command, check=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
        wheels = list(download.glob(f"diffusers-{version}-*.whl"))
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extractall(target, [name for name in wheel.namelist() if name.startswith("diffusers/")])
    return package


def git_release(tag: str) -> Path:
    """The checkout root of git tag `tag` of the mirror (`src/diffusers/` and `tests/`), from `git archive` the
    first time: .cache/releases/git-<tag>/."""
    target = CACHE / f"git-{tag}"
    if (target / "src").is_dir() and (target / "tests").is_dir():
        return target
    partial = CACHE / f"git-{tag}.partial-{os.getpid()}"
    partial.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(MIRROR), "archive", "--format=tar", tag, "src", "tests"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(partial)], input=archive, check=True)
    try:
        partial.rename(target)  # whole or not at all: a concurrent run may have won, and that one is as good
    except OSError:
        subprocess.run(["rm", "-rf", str(partial)], check=True)
    return target
