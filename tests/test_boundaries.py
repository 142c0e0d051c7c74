"""Which package may load which (DESIGN §2, STYLE §1 and §8).

Two checks per package. One subprocess imports the package and every module under it and reports what got loaded:
that is what a process using the package pays and trusts. A static pass reads every import statement of every
module, those inside functions too, and the literal `importlib.import_module("…")` calls: a lazy import that no
import of the package triggers (a subcommand, an error path) is caught there.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from analyzers.modules import module_name_for, resolve_relative


ROOT = Path(__file__).resolve().parent.parent
OURS = frozenset({"analyzers", "engine", "common", "bot", "runners", "drbot"})
#: what the GitHub App talks to the world with
SERVICES = frozenset({"aiohttp", "gidgethub", "jwt", "redis"})
#: what the contract runners compute with
COMPUTE = frozenset({"torch", "diffusers", "transformers", "accelerate"})
#: names in `sys.modules` that are no package: the running script, and multiprocessing's alias of it
NOT_PACKAGES = frozenset({"__main__", "__mp_main__"})


@dataclass(frozen=True)
class Boundary:
    #: our packages it may load, itself included
    ours: frozenset[str]
    #: other packages it must never load
    never: frozenset[str] = frozenset()
    #: when set, the only packages outside the standard library (and ours) it may load at all
    only: frozenset[str] | None = None
    #: it may load more, but only inside functions: importing it loads nothing but the standard library
    lazily: bool = False


BOUNDARIES = {
    # the rules and the engine that runs them: pure, stdlib and libcst only, and pyahocorasick's string search (the
    # prefilter's one pass over a file for every rule's needles, `analyzers.rule.Prefilter`): no I/O, no services
    "analyzers": Boundary(ours=frozenset({"analyzers"}), only=frozenset({"libcst", "ahocorasick"})),
    # Redis streams and tarballs, shared by bot and runners
    "common": Boundary(ours=frozenset({"common"}), never=COMPUTE),
    # the review engine and the isolated worker pool, which `drbot review` and the App run
    "engine": Boundary(ours=frozenset({"engine", "analyzers", "common"}), never=SERVICES | COMPUTE),
    # the App: never the runners (they meet only in Redis) nor the command line
    "bot": Boundary(ours=frozenset({"bot", "analyzers", "engine", "common"}), never=COMPUTE),
    # the contract runners hold no GitHub token (no GitHub client, no JWTs; they download public tarballs with
    # aiohttp) and never load the App or the command line
    "runners": Boundary(ours=frozenset({"runners", "analyzers", "common"}), never=frozenset({"gidgethub", "jwt"})),
    # the command line imports each subcommand's needs when it runs
    "drbot": Boundary(ours=OURS, lazily=True),
}

LOADED_SCRIPT = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys

    package = sys.argv[1]
    before = set(sys.modules)
    importlib.import_module(package)
    for info in pkgutil.walk_packages(sys.modules[package].__path__, package + "."):
        if info.name.rpartition(".")[2] != "__main__":  # running it is not importing it
            importlib.import_module(info.name)
    print(json.dumps(sorted({name.split(".")[0] for name in set(sys.modules) - before})))
    """
)


def loaded_by(package: str, path: Path = ROOT) -> set[str]:
    """Top-level names of every module that importing `package` and all its modules loads, in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", LOADED_SCRIPT, package],
        cwd=path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(path), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1])) - NOT_PACKAGES


@dataclass(frozen=True)
class Import:
    path: str
    line: int
    name: str  # absolute dotted name
    in_function: bool

    def __str__(self) -> str:
        return f"{self.path}:{self.line} {self.name}" + (" (in a function)" if self.in_function else "")


def _literal_import(call: ast.Call) -> str | None:
    """`x.y` for `importlib.import_module("x.y")` or `__import__("x.y")`."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if name in ("import_module", "__import__") and call.args and isinstance(call.args[0], ast.Constant):
        value = call.args[0].value
        return value if isinstance(value, str) and not value.startswith(".") else None
    return None


def imports_of(package: str, root: Path = ROOT) -> list[Import]:
    """Every import of every module under `package`, wherever it stands, relative ones made absolute."""
    found = []
    for file in sorted((root / package).rglob("*.py")):
        if "__pycache__" in file.parts:
            continue
        path = file.relative_to(root).as_posix()
        module, is_package = module_name_for(path), file.name == "__init__.py"
        stack: list[tuple[ast.AST, bool]] = [(ast.parse(file.read_text(encoding="utf-8"), path), False)]
        while stack:
            node, in_function = stack.pop()
            names: list[str | None] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [resolve_relative(module, is_package, node.level, node.module)]
            elif isinstance(node, ast.Call):
                names = [_literal_import(node)]
            found += [Import(path, node.lineno, name, in_function) for name in names if name]  # type: ignore[attr-defined]
            inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            stack += [(child, inner) for child in ast.iter_child_nodes(node)]
    return sorted(found, key=lambda i: (i.path, i.line))


def violations(package: str, boundary: Boundary, names: set[str]) -> list[str]:
    """The loaded (or imported) top-level names that `boundary` forbids."""
    stdlib = set(sys.stdlib_module_names)
    bad = (names & OURS) - boundary.ours
    bad |= names & boundary.never
    if boundary.only is not None:
        bad |= names - stdlib - OURS - boundary.only
    return sorted(bad)


@pytest.mark.parametrize("package", sorted(BOUNDARIES))
def test_importing_a_package_loads_only_what_it_may(package):
    boundary = BOUNDARIES[package]
    loaded = loaded_by(package)
    if boundary.lazily:
        assert sorted(loaded - set(sys.stdlib_module_names) - {package}) == []
    assert violations(package, boundary, loaded) == []


@pytest.mark.parametrize("package", sorted(BOUNDARIES))
def test_no_import_statement_crosses_a_boundary(package):
    boundary = BOUNDARIES[package]
    stdlib = set(sys.stdlib_module_names)
    crossing = []
    for imported in imports_of(package):
        top = imported.name.split(".")[0]
        if violations(package, boundary, {top}):
            crossing.append(str(imported))
        elif boundary.lazily and not imported.in_function and top not in stdlib | {package}:
            crossing.append(f"{imported}: import it inside the function that needs it")
    assert crossing == []


def test_the_checks_see_lazy_and_indirect_imports(tmp_path):
    """The checks themselves: a function-level import, `importlib.import_module` and an import made by a module
    that is imported are all seen (were they not, the tests above would pass on anything)."""
    package = tmp_path / "analyzers"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "eager.py").write_text("import libcst\n")
    (package / "lazy.py").write_text(
        "import importlib\n\ndef later():\n    from . import eager\n    import redis\n"
        "    return importlib.import_module('bot.settings')\n"
    )
    found = {(i.path, i.name, i.in_function) for i in imports_of("analyzers", tmp_path)}
    assert found >= {
        ("analyzers/lazy.py", "analyzers", True),
        ("analyzers/lazy.py", "redis", True),
        ("analyzers/lazy.py", "bot.settings", True),
        ("analyzers/eager.py", "libcst", False),
    }
    assert violations("analyzers", BOUNDARIES["analyzers"], {n.split(".")[0] for _, n, _ in found}) == [
        "bot",
        "redis",
    ]
    assert "libcst" in loaded_by("analyzers", tmp_path)
