"""Shared fixtures: the installed diffusers 0.42.1 package, one full scan of it, older releases from PyPI."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "releases"
PINNED_DIFFUSERS = "0.42.1"


@pytest.fixture(scope="session")
def diffusers_dir() -> Path:
    from analyzers.scan import installed_diffusers

    path = installed_diffusers()
    version = next(path.parent.glob("diffusers-*.dist-info")).name.removesuffix(".dist-info").split("-")[1]
    assert version == PINNED_DIFFUSERS, f"tests pin diffusers {PINNED_DIFFUSERS}, found {version}"
    return path


@pytest.fixture(scope="session")
def full_scan(diffusers_dir):
    """One scan of the whole installed package with every rule, shared by the tests that read it."""
    from analyzers.scan import scan

    return scan([diffusers_dir])


def release(version: str) -> Path:
    """An older diffusers release from PyPI, unpacked once under .cache/releases/; returns its `diffusers/`."""
    target = CACHE / version
    package = target / "diffusers"
    if package.is_dir():
        return package
    download = CACHE / f"dl-{version}"
    download.mkdir(parents=True, exist_ok=True)
    wheels = list(download.glob(f"diffusers-{version}-*.whl"))
    if not wheels:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                f"diffusers=={version}",
                "-d",
                str(download),
            ],
            check=True,
            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        )
        wheels = list(download.glob(f"diffusers-{version}-*.whl"))
    with zipfile.ZipFile(wheels[0]) as wheel:
        members = [name for name in wheel.namelist() if name.startswith("diffusers/")]
        wheel.extractall(target, members)
    return package


@pytest.fixture(scope="session")
def diffusers_release():
    return release
