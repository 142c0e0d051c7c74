"""Module names: a finding path's dotted name, relative imports resolved, a module's import table, and the
directory that finding paths are relative to."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import libcst as cst

from analyzers.syntax import dotted_name, nested_blocks


def module_name_for(path: str) -> str:
    """`diffusers/pipelines/x/__init__.py` -> `diffusers.pipelines.x`; `a/b.py` -> `a.b`."""
    parts = list(PurePosixPath(path).with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve_relative(module_name: str, is_package: bool, level: int, target: str | None) -> str:
    """Resolve `from {'.' * level}{target} import …` inside `module_name` to an absolute dotted name."""
    if level == 0:
        return target or ""
    parts = module_name.split(".")
    if not is_package:
        parts = parts[:-1]
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    if target:
        parts.append(target)
    return ".".join(parts)


def module_imports(module: cst.Module, module_name: str, is_package: bool) -> dict[str, str]:
    """Module-level (and `if`/`try`-guarded) imports of `module`: local name -> absolute dotted name."""
    table: dict[str, str] = {}

    def visit(body: Sequence[cst.CSTNode]) -> None:
        for statement in body:
            if isinstance(statement, cst.SimpleStatementLine):
                for small in statement.body:
                    if isinstance(small, cst.ImportFrom) and not isinstance(small.names, cst.ImportStar):
                        base = resolve_relative(
                            module_name, is_package, len(small.relative), dotted_name(small.module)
                        )
                        for alias in small.names:
                            name = dotted_name(alias.name) or ""
                            local = cst.ensure_type(alias.asname.name, cst.Name).value if alias.asname else name
                            table[local] = f"{base}.{name}" if base else name
                    elif isinstance(small, cst.Import):
                        for alias in small.names:
                            name = dotted_name(alias.name) or ""
                            if alias.asname:
                                table[cst.ensure_type(alias.asname.name, cst.Name).value] = name
                            else:
                                table[name.split(".")[0]] = name.split(".")[0]
            elif isinstance(statement, (cst.If, cst.Try)):
                for block in nested_blocks(statement):
                    visit(block)

    visit(module.body)
    return table


# ---------------------------------------------------------------------------------------------
# Where finding paths start

#: `from ...utils import x` at the start of a line (a doctest's `>>> from` is not at the start)
_RELATIVE_IMPORT_RE = re.compile(r"^[ \t]*from[ \t]+(\.+)", re.MULTILINE)
#: a directory holding one of these is a project, never a package inside one
_PROJECT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")


def relative_import_depth(source: str) -> int:
    """How many dots the deepest relative import of a module has: 3 for `from ...utils import x`, 0 for none."""
    return max((len(dots) for dots in _RELATIVE_IMPORT_RE.findall(source)), default=0)


def _may_be_package(directory: Path) -> bool:
    return (
        directory.name.isidentifier()
        and directory.name != "src"
        and not any((directory / marker).exists() for marker in _PROJECT_MARKERS)
    )


def _modules_at(path: Path) -> list[Path]:
    """The Python files that decide the root for `path`: those of its tree, or a file's siblings."""
    if path.is_file():
        return sorted(path.parent.glob("*.py"))
    found = []
    for dirpath, dirnames, filenames in os.walk(path):
        # only directories that can be packages hold modules whose relative imports mean anything here
        dirnames[:] = [d for d in dirnames if d.isidentifier() and d != "__pycache__"]
        found += [Path(dirpath, name) for name in filenames if name.endswith(".py")]
    return found


def root_for_relative_imports(path: Path, root: Path) -> Path:
    """`root`, or the directory above it that the relative imports of the modules at `path` say is the root.

    `root` is where the `__init__.py` files above `path` end. A tree given without its parents' `__init__.py`
    files (a sparse checkout, a copy of `src/diffusers/pipelines/wan/`) ends them too early, and finding paths
    and module names would read `wan/…`. But `from ...utils import x` in `wan/pipeline_wan.py` says that `wan`
    lies two packages deep, so the root is two directories further up and the paths read
    `diffusers/pipelines/wan/…`, as in the whole tree. The climb stops at a directory that cannot be a package:
    a name that is no identifier (`site-packages`), `src`, or one that holds a project (`pyproject.toml`, `.git`).
    A package directory copied out of its tree (`/tmp/wan/`) cannot be placed: its paths name the directories
    above it.
    """
    if not _may_be_package(root):
        return root  # the usual case (`site-packages`, a checkout's `src/`): nothing to read
    needed = len(root.parts)
    for module in _modules_at(path):
        try:
            depth = relative_import_depth(module.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
        if depth:
            # the module's package is its directory; `depth` dots reach `depth - 1` packages above it
            needed = min(needed, len(module.parent.parts) - depth)
    while len(root.parts) > max(needed, 1) and _may_be_package(root):
        root = root.parent
    return root
