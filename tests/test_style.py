"""The tree is formatted and linted with the project's ruff settings (diffusers' line length and isort), and tests
do not depend on when they run."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
PATHS = ["analyzers", "engine", "common", "drbot", "bot", "runners", "tests", "bench"]


def test_ruff_check():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", *PATHS], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", *PATHS], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


CLOCKS = {("time", "time"), ("time", "monotonic"), ("datetime", "now"), ("datetime", "utcnow"), ("date", "today")}


def _reads_a_clock(node: ast.AST) -> bool:
    """Whether evaluating `node` reads the clock right away (a lambda defers it, so its body does not count)."""
    if isinstance(node, ast.Lambda):
        return False
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
        if (node.func.value.id, node.func.attr) in CLOCKS:
            return True
    return any(_reads_a_clock(child) for child in ast.iter_child_nodes(node))


def test_no_test_takes_the_time_when_it_is_collected():
    """Parameters and module-level values are made when pytest collects, possibly minutes before the test runs:
    a timestamp made then (a JWT's `exp`, say) may be stale by the time it is used."""
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        collected = [node for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign, ast.Expr))]
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                collected += [d for d in node.decorator_list if "parametrize" in ast.unparse(d)]
        offenders += [f"{path.relative_to(ROOT)}:{node.lineno}" for node in collected if _reads_a_clock(node)]
    assert offenders == [], offenders


def test_mypy():
    """The packages type-check (configuration in pyproject.toml: torch, transformers and diffusers count as Any)."""
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr
