"""The README keeps its promises about the environment: every variable the code reads is documented there."""

from __future__ import annotations

import ast
import re
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
#: read from the environment by libraries drbot hands it to, not by drbot's own settings
PASSED_THROUGH = {"CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH"}


def variables_read() -> dict[str, str]:
    """Upper-case names given to `env.get(...)`, `os.environ[...]`, `os.environ.get(...)` and Settings' `number(...)`."""
    found: dict[str, str] = {}
    for package in ("bot", "drbot", "runners", "engine", "common", "analyzers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                name = None
                if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                    callee = ast.unparse(node.func)
                    if callee.endswith(("env.get", "environ.get")) or callee == "number":
                        name = node.args[0].value
                elif isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("environ"):
                    name = node.slice.value if isinstance(node.slice, ast.Constant) else None
                if isinstance(name, str) and re.fullmatch(r"[A-Z][A-Z0-9_]+", name):
                    found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def test_every_environment_variable_the_code_reads_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    read = variables_read()
    assert {"GITHUB_WEBHOOK_SECRET", "REDIS_URL", "DRBOT_PORT"} <= set(read)  # the scan finds what it should
    missing = {name: where for name, where in read.items() if f"`{name}`" not in readme and name not in PASSED_THROUGH}
    assert missing == {}, f"environment variables read but not documented in README.md: {missing}"
