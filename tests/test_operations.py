"""docs/operations.md keeps up with the code: its settings table is `bot.settings.Settings`, field by field, with the
variable `Settings.from_env` reads for each and the default the dataclass gives it; the README links the runbook."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import html
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from bot.settings import Settings


ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = ROOT / "docs" / "operations.md"
NO_VARIABLE = "–"


def variables_by_field() -> dict[str, set[str]]:
    """Settings field -> the environment variables `from_env` reads for it (from the source, not by running it):
    the variables named in the field's argument of `cls(...)`, and in the locals that argument is computed from
    (`private_key` <- `GITHUB_PRIVATE_KEY`, or the file `GITHUB_PRIVATE_KEY_PATH` names)."""
    source = (ROOT / "bot" / "settings.py").read_text()
    (from_env,) = [
        node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.FunctionDef) and node.name == "from_env"
    ]

    def direct(node: ast.AST) -> set[str]:
        """Variable names (string constants) and local names in an expression."""
        found = set()
        for child in ast.walk(node):
            if isinstance(child, ast.Constant) and isinstance(child.value, str):
                if re.fullmatch(r"(GITHUB|REDIS|DRBOT)_[A-Z0-9_]+", child.value):
                    found.add(child.value)
            elif isinstance(child, ast.Name):
                found.add(child.id)
        return found

    computed_from: dict[str, set[str]] = {}
    for node in ast.walk(from_env):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            computed_from.setdefault(node.targets[0].id, set()).update(direct(node.value))

    def variables(names: set[str], seen: frozenset[str] = frozenset()) -> set[str]:
        out = {n for n in names if n.isupper()}
        for local in names - out - seen:
            out |= variables(computed_from.get(local, set()), seen | {local})
        return out

    (call,) = [
        node for node in ast.walk(from_env)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "cls"
    ]  # fmt: skip
    return {str(keyword.arg): variables(direct(keyword.value)) for keyword in call.keywords}


def runbook_table() -> dict[str, tuple[set[str], str]]:
    """The settings table of the runbook: field -> (variables, the default as written in the first code span)."""
    text = RUNBOOK.read_text()
    section = text[text.index("## Settings") :]
    section = section[: section.index("\n## ", 4)]
    rows: dict[str, tuple[set[str], str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[1].startswith("`") or cells[1] == "`Settings` field":
            continue
        variables = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0]))
        field = cells[1].strip("`")
        default = re.search(r"`([^`]*)`", cells[2])
        rows[field] = (variables, default[1] if default else cells[2])
    return rows


def written_default(value) -> str:
    if value is None:
        return "none"
    return str(value)


def test_the_runbook_table_lists_every_setting_with_its_variable_and_default():
    table = runbook_table()
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    assert table.keys() == fields.keys(), (
        f"missing from docs/operations.md: {sorted(fields.keys() - table.keys())}; "
        f"no such setting: {sorted(table.keys() - fields.keys())}"
    )
    read = variables_by_field()
    assert read["redis_url"] == {"REDIS_URL"} and read["private_key"] == {
        "GITHUB_PRIVATE_KEY",
        "GITHUB_PRIVATE_KEY_PATH",
    }  # the source reading finds what it should
    for name, field in fields.items():
        variables, default = table[name]
        assert variables == read.get(name, set()), (
            f"{name}: the runbook says {variables}, the code reads {read.get(name)}"
        )
        if field.default is dataclasses.MISSING:
            assert default == "required", f"{name} has no default: the runbook must say `required`"
        else:
            assert default == written_default(field.default), f"{name}: default {field.default!r}, runbook {default!r}"


def test_the_table_check_catches_a_wrong_default(monkeypatch):
    # the check is only worth something if a drifted default fails it
    @dataclasses.dataclass(frozen=True)
    class Drifted:
        port: int = 9090

    assert written_default(dataclasses.fields(Drifted)[0].default) != runbook_table()["port"][1]


def test_the_readme_links_the_runbook_and_keeps_its_two_set_up_commands():
    readme = (ROOT / "README.md").read_text()
    assert "(docs/operations.md)" in readme
    fresh = readme[readme.index("## On a fresh machine") : readme.index("## Using drbot")]
    assert re.findall(r"```sh\n(.*?)\n```", fresh, re.S) == ["make scan", "make test"]


def test_every_drbot_command_the_runbook_shows_exists():
    from drbot.cli import build_parser

    parser = build_parser()
    text = RUNBOOK.read_text()
    code = "\n".join(re.findall(r"```sh\n(.*?)```", text, re.S) + re.findall(r"`([^`\n]+)`", text))
    shown = set(re.findall(r"(?<![/\w])drbot ([a-z][a-z-]*)(?: ([a-z]+))?", code))
    assert {("dead-letters", "list"), ("dead-letters", "replay"), ("known", "import"), ("redis-acl", "")} <= shown
    choices = next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, sub in shown:
        assert command in choices, f"the runbook shows `drbot {command}`, which does not exist"
        if command in ("dead-letters", "known") and sub:
            ids = ["1-0"] if sub in ("show", "replay", "drop") else []
            parser.parse_args([command, sub, *ids])  # exits 2 on a subcommand that does not exist


def test_the_manifest_form_of_the_runbook_posts_app_yml(tmp_path):

    text = RUNBOOK.read_text()
    (script,) = re.findall(r"python - <<'PY' > register.html\n(.*?)\n\s*PY\n", text, re.S)
    shutil.copy(ROOT / "app.yml", tmp_path / "app.yml")

    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    form = result.stdout
    action = re.search(r'<form action="([^"]+)" method="post">', form)[1]
    assert action.startswith("https://github.com/organizations/ORG/settings/apps/new?state=")
    manifest = json.loads(html.unescape(re.search(r'name="manifest" value="([^"]*)"', form)[1]))
    assert manifest == yaml.safe_load((ROOT / "app.yml").read_text())
    assert manifest["default_events"] == ["pull_request", "issue_comment"]
