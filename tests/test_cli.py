"""The `drbot` command line: exit statuses, formats, errors, and what each subcommand imports."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
BUGGY = textwrap.dedent(
    """
    from ...pipeline_utils import DiffusionPipeline


    class ToyPipeline(DiffusionPipeline):
        def __call__(self, prompt, eta=0.0):
            return self.run(prompt)
    """
)
CLEAN = BUGGY.replace("return self.run(prompt)", "return self.run(prompt, eta)")


def drbot(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "drbot", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


@pytest.fixture
def package(tmp_path: Path) -> Path:
    pipelines = tmp_path / "diffusers" / "pipelines" / "toy"
    pipelines.mkdir(parents=True)
    for init in (tmp_path / "diffusers", tmp_path / "diffusers" / "pipelines", pipelines):
        (init / "__init__.py").write_text("")
    (tmp_path / "diffusers" / "pipelines" / "pipeline_utils.py").write_text("class DiffusionPipeline:\n    pass\n")
    return tmp_path / "diffusers"


def test_findings_exit_1_with_paths_relative_to_the_package_parent(package):
    (package / "pipelines" / "toy" / "pipeline_toy.py").write_text(BUGGY)
    result = drbot("analyze", str(package), "--format", "json", "-j", "1")
    assert result.returncode == 1, result.stderr
    payload = json.loads(result.stdout)
    (finding,) = payload["findings"]
    assert finding["path"] == "diffusers/pipelines/toy/pipeline_toy.py"
    assert (finding["code"], finding["scope"], finding["symbol"]) == ("DRB201", "ToyPipeline.__call__", "eta")
    assert payload["errors"] == []


def test_no_findings_exit_0(package):
    (package / "pipelines" / "toy" / "pipeline_toy.py").write_text(CLEAN)
    result = drbot("analyze", str(package))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 findings in 5 files, 0 errors." in result.stdout


def test_a_file_libcst_cannot_parse_is_listed_and_the_scan_goes_on(package):
    (package / "pipelines" / "toy" / "pipeline_toy.py").write_text(BUGGY)
    (package / "pipelines" / "toy" / "broken.py").write_text("def __call__(self:\n")
    result = drbot("analyze", str(package), "--format", "json")
    payload = json.loads(result.stdout)
    assert result.returncode == 1
    assert [e["path"] for e in payload["errors"]] == ["diffusers/pipelines/toy/broken.py"]
    assert len(payload["findings"]) == 1


def test_select_and_ignore_filter_rules(package):
    (package / "pipelines" / "toy" / "pipeline_toy.py").write_text(BUGGY)
    assert drbot("analyze", str(package), "--ignore", "DRB201").returncode == 0
    assert drbot("analyze", str(package), "--select", "P2").returncode == 1
    result = drbot("analyze", str(package), "--select", "DRB999")
    assert result.returncode == 2 and "no rule matches" in result.stderr


def test_usage_errors_exit_2(tmp_path):
    result = drbot("analyze", str(tmp_path / "missing"))
    assert result.returncode == 2 and "no such file or directory" in result.stderr
    assert drbot("analyze", "--format", "xml").returncode == 2
    assert drbot().returncode == 2
    assert drbot("rules", "DRB999").returncode == 2


def test_rules_lists_and_explains():
    listing = drbot("rules")
    assert listing.returncode == 0 and "DRB201  unused-call-argument" in listing.stdout
    page = drbot("rules", "drb201")
    assert page.returncode == 0 and page.stdout == (ROOT / "docs" / "rules" / "DRB201.md").read_text()


def test_output_file(package, tmp_path):
    (package / "pipelines" / "toy" / "pipeline_toy.py").write_text(BUGGY)
    out = tmp_path / "report.sarif"
    result = drbot("analyze", str(package), "--format", "sarif", "-o", str(out))
    assert result.returncode == 1 and result.stdout == ""
    assert json.loads(out.read_text())["runs"][0]["results"][0]["ruleId"] == "DRB201"


FORBIDDEN = ("aiohttp", "gidgethub", "redis", "torch", "diffusers", "jwt", "bot", "runners")


def test_analyzers_and_drbot_analyze_import_nothing_forbidden(package):
    (package / "pipelines" / "toy" / "pipeline_toy.py").write_text(BUGGY)
    script = textwrap.dedent(
        f"""
        import sys
        import analyzers, analyzers.scan, analyzers.render, analyzers.review, analyzers.docs
        from drbot.cli import main
        main(["analyze", {str(package)!r}, "-j", "1", "--format", "json"])
        main(["rules"])
        loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({FORBIDDEN!r}))
        print("LOADED", loaded, file=sys.stderr)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert "LOADED []" in result.stderr, result.stderr


def test_a_file_that_is_not_utf8_is_an_error(package):
    (package / "pipelines" / "toy" / "pipeline_toy.py").write_text(BUGGY)
    (package / "pipelines" / "toy" / "latin1.py").write_bytes("x = 'caf\xe9'\n".encode("latin-1"))
    payload = json.loads(drbot("analyze", str(package), "--format", "json").stdout)
    assert [e["path"] for e in payload["errors"]] == ["diffusers/pipelines/toy/latin1.py"]
    assert "cannot read this file" in payload["errors"][0]["message"]


def test_a_file_that_crashes_the_parser_is_not_analysed_and_the_scan_goes_on(package):
    # nesting this deep overflows libcst's native parser (a segfault): before, it killed `drbot analyze` (exit 139)
    (package / "pipelines" / "toy" / "pipeline_toy.py").write_text(BUGGY)
    crash = "class EvilPipeline(DiffusionPipeline):\n    pass\n\nx = " + "(" * 2000 + "1" + ")" * 2000 + "\n"
    (package / "pipelines" / "toy" / "pipeline_evil.py").write_text(crash)
    result = drbot("analyze", str(package), "--format", "json", "-j", "1")
    payload = json.loads(result.stdout)
    assert result.returncode == 1 and [f["code"] for f in payload["findings"]] == ["DRB201"]
    assert payload["errors"] == [
        {"path": "diffusers/pipelines/toy/pipeline_evil.py", "message": "not analysed: the parser crashed (SIGSEGV)"}
    ]


def test_progress_is_printed_in_place_on_a_terminal(capsys):
    from analyzers.scan import tty_progress

    for done in range(1, 51):
        tty_progress(done, 50)
    err = capsys.readouterr().err
    assert err == "\rscanned 25/50 files\rscanned 50/50 files\n"


def test_deprecated_pipelines_are_skipped_unless_asked(package):
    frozen = package / "pipelines" / "deprecated" / "toy"
    frozen.mkdir(parents=True)
    (package / "pipelines" / "deprecated" / "__init__.py").write_text("")
    (frozen / "__init__.py").write_text("")
    (frozen / "pipeline_toy.py").write_text(BUGGY.replace("from ...pipeline_utils", "from ....pipeline_utils"))
    result = drbot("analyze", str(package))
    assert result.returncode == 0, result.stdout
    assert "3 files of deprecated pipelines skipped" in result.stdout
    included = json.loads(drbot("analyze", str(package), "--include-deprecated", "--format", "json").stdout)
    assert [f["path"] for f in included["findings"]] == ["diffusers/pipelines/deprecated/toy/pipeline_toy.py"]


def test_a_checkout_is_scanned_with_its_tests(tmp_path):
    checkout = tmp_path / "checkout"
    pipelines = checkout / "src" / "diffusers" / "pipelines" / "toy"
    pipelines.mkdir(parents=True)
    for init in (checkout / "src" / "diffusers", checkout / "src" / "diffusers" / "pipelines", pipelines):
        (init / "__init__.py").write_text("")
    (pipelines / "pipeline_toy.py").write_text(BUGGY.replace("from ...pipeline_utils", "from ..pipeline_utils"))
    (checkout / "tests" / "pipelines" / "toy").mkdir(parents=True)
    (checkout / "tests" / "pipelines" / "toy" / "test_toy.py").write_text("def test_toy(:\n")
    payload = json.loads(drbot("analyze", str(checkout), "--format", "json").stdout)
    assert [f["path"] for f in payload["findings"]] == ["diffusers/pipelines/toy/pipeline_toy.py"]
    assert [e["path"] for e in payload["errors"]] == ["tests/pipelines/toy/test_toy.py"]


def test_serve_refuses_to_start_without_its_secret_or_credentials():
    result = drbot("serve")
    assert result.returncode == 2 and "GITHUB_WEBHOOK_SECRET is not set" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "drbot", "serve", "--worker-only"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "GITHUB_WEBHOOK_SECRET": "s"},
    )
    assert result.returncode == 2 and "GITHUB_APP_ID and GITHUB_PRIVATE_KEY" in result.stderr
