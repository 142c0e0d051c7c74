"""diffusers releases from PyPI, unpacked once under .cache/releases/: what the history corpus and the
before/after tests read (the wheel holds the package only; tests/ are not in it)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "releases"


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
