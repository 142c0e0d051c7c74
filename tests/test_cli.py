"""The `drbot` command line: exit statuses, formats, errors, and what each subcommand imports."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from analyzers.core import all_rules


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


def drbot(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "drbot", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={
            "PYTHONPATH": str(ROOT),
            "PATH": "/usr/bin:/bin",
            "DRBOT_CACHE_DIR": os.environ["DRBOT_CACHE_DIR"],
            **(env or {}),
        },
    )


def usage_error(result: subprocess.CompletedProcess, *named: str) -> bool:
    """Exit 2 with one `drbot…: error` line on stderr that names each of `named`, and no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "error" in last and all(name in last for name in named), result.stderr
    return True


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
    assert usage_error(drbot("analyze", str(package), "--select", "P2", "--ignore", "DRB2"), "leave no rule")


def test_usage_errors_exit_2(tmp_path):
    result = drbot("analyze", str(tmp_path / "missing"))
    assert result.returncode == 2 and "no such file or directory" in result.stderr
    assert drbot("analyze", "--format", "xml").returncode == 2
    assert drbot().returncode == 2
    assert drbot("rules", "DRB999").returncode == 2


def test_rules_lists_and_explains():
    listing = drbot("rules")
    assert listing.returncode == 0 and "DRB201  unused-call-argument" in listing.stdout
    page = drbot("rules", "drb201", "--format", "markdown")
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
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "DRBOT_CACHE_DIR": os.environ["DRBOT_CACHE_DIR"]},
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
    assert [(e["path"], e["message"]) for e in payload["errors"]] == [
        ("diffusers/pipelines/toy/pipeline_evil.py", "not analysed: the parser crashed (SIGSEGV)")
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


def test_a_pipeline_class_deprecated_in_place_is_skipped_unless_asked(package):
    """A class with `DeprecatedPipelineMixin` is frozen upstream like pipelines/deprecated/: its findings are
    dropped, its live neighbours in the same file keep theirs."""
    deprecated = BUGGY.replace(
        "class ToyPipeline(DiffusionPipeline)", "class OldToyPipeline(DeprecatedPipelineMixin, DiffusionPipeline)"
    )
    deprecated = deprecated.replace("import DiffusionPipeline", "import DeprecatedPipelineMixin, DiffusionPipeline")
    (package / "pipelines" / "pipeline_utils.py").write_text(
        "class DiffusionPipeline:\n    pass\n\n\nclass DeprecatedPipelineMixin:\n    pass\n"
    )
    (package / "pipelines" / "toy" / "pipeline_toy.py").write_text(deprecated + BUGGY.split("\n\n\n", 1)[1])
    payload = json.loads(drbot("analyze", str(package), "--format", "json").stdout)
    assert [f["scope"] for f in payload["findings"]] == ["ToyPipeline.__call__"]
    included = json.loads(drbot("analyze", str(package), "--include-deprecated", "--format", "json").stdout)
    assert sorted(f["scope"] for f in included["findings"]) == ["OldToyPipeline.__call__", "ToyPipeline.__call__"]


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
        env={
            "PYTHONPATH": str(ROOT),
            "PATH": "/usr/bin:/bin",
            "DRBOT_CACHE_DIR": os.environ["DRBOT_CACHE_DIR"],
            "GITHUB_WEBHOOK_SECRET": "s",
        },
    )
    assert result.returncode == 2 and "GITHUB_APP_ID and GITHUB_PRIVATE_KEY" in result.stderr


# -- a new user's mistakes: one line that names what is wrong, exit 2, no traceback ----------------------------


def test_an_output_file_that_cannot_be_written_is_a_usage_error(package, tmp_path):
    (package / "pipelines" / "toy" / "pipeline_toy.py").write_text(BUGGY)
    missing = tmp_path / "missing-dir" / "x.json"
    assert usage_error(drbot("analyze", str(package), "-o", str(missing)), str(missing))
    assert usage_error(drbot("analyze", str(package), "-o", str(tmp_path)), str(tmp_path))


def test_jobs_must_be_a_positive_integer(package):
    assert usage_error(drbot("analyze", str(package), "-j", "-3"), "-3")
    assert usage_error(drbot("analyze", str(package), "--jobs", "0"), "0")
    assert usage_error(drbot("known", "import", "-j", "-3"), "-3")


def test_unknown_rule_selectors_are_usage_errors_that_name_them(package):
    (package / "pipelines" / "toy" / "pipeline_toy.py").write_text(BUGGY)
    assert usage_error(drbot("analyze", str(package), "--select", "DRB999"), "--select", "DRB999")
    assert usage_error(drbot("analyze", str(package), "--ignore", "DRB999"), "--ignore", "DRB999")
    assert usage_error(drbot("analyze", str(package), "--select", "DRB101,DRB999"), "DRB999")
    assert usage_error(drbot("analyze", str(package), "--select", "P11"), "P11")
    assert usage_error(drbot("analyze", str(package), "--select", "X1"), "X1")
    assert usage_error(drbot("review", "--base", "HEAD", "--ignore", "DRB2,DRB99"), "DRB99")
    # codes, prefixes and patterns that name rules are fine
    assert drbot("analyze", str(package), "--select", "DRB2", "--ignore", "P10,drb101").returncode == 1


@pytest.mark.parametrize(
    "name, content",
    [
        ("pipeline_bad.py", "class BadPipeline(DiffusionPipeline):\n    def __call__(self:\n"),
        ("pipeline_latin1.py", "# caf\xe9\nclass P(DiffusionPipeline):\n    pass\n".encode("latin-1")),
    ],
    ids=["syntax-error", "not-utf8"],
)
def test_a_file_that_was_not_analysed_makes_the_exit_status_1(package, name, content):
    (package / "pipelines" / "toy" / "pipeline_toy.py").write_text(CLEAN)
    target = package / "pipelines" / "toy" / name
    target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
    result = drbot("analyze", str(package), "-j", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"diffusers/pipelines/toy/{name}" in result.stdout and "0 findings" in result.stdout
    assert "1 file could not be analysed" in result.stderr
    payload = json.loads(drbot("analyze", str(package), "--format", "json").stdout)
    assert payload["findings"] == [] and len(payload["errors"]) == 1


def test_rules_takes_patterns_and_prefixes():
    by_pattern = drbot("rules", "P1")
    assert by_pattern.returncode == 0, by_pattern.stderr
    codes = [line.split()[0] for line in by_pattern.stdout.splitlines() if line.startswith("DRB")]
    assert codes == sorted(rule.code for rule in all_rules() if rule.pattern == 1) and "DRB101" in codes
    by_prefix = drbot("rules", "drb1")
    assert [line.split()[0] for line in by_prefix.stdout.splitlines() if line.startswith("DRB")] == codes
    by_code_prefix = drbot("rules", "DRB5")
    assert {line.split()[0][:4] for line in by_code_prefix.stdout.splitlines() if line.startswith("DRB")} == {"DRB5"}
    assert usage_error(drbot("rules", "P11"), "P11")
    assert usage_error(drbot("rules", "DRB999"), "DRB999")


def test_drb000_is_a_rule_like_the_others(package):
    listing = drbot("rules")
    assert "DRB000  suppression-without-code" in listing.stdout
    page = drbot("rules", "DRB000")
    assert page.returncode == 0 and "suppression-without-code" in page.stdout
    assert drbot("rules", "DRB0").stdout.splitlines()[0].startswith("DRB000")
    # DRB000 reports whatever --select says: it cannot be turned off, only fixed in the comment
    assert usage_error(drbot("analyze", str(package), "--ignore", "DRB000"), "DRB000", "ignore[")


def test_the_drb000_page_names_only_rules_that_exist():
    import re

    codes = set(re.findall(r"DRB\d{3}", drbot("rules").stdout))
    page = (ROOT / "docs" / "rules" / "DRB000.md").read_text()
    assert set(re.findall(r"DRB\d{3}", page)) <= codes


def test_a_rule_page_reads_as_text_on_a_terminal():
    page = drbot("rules", "DRB101")
    assert page.returncode == 0
    assert "<!--" not in page.stdout and "```" not in page.stdout and "\n## " not in page.stdout
    lines = page.stdout.splitlines()
    assert lines[0] == "DRB101 conditioning-expanded-by-batch-size-only" and set(lines[1]) == {"="}
    assert "What it does\n------------\n" in page.stdout
    assert "    image_embeds = image_embeds.repeat(batch_size, 1, 1)\n" in page.stdout  # code stays, indented
    markdown = drbot("rules", "DRB101", "--format", "markdown")
    assert markdown.stdout == (ROOT / "docs" / "rules" / "DRB101.md").read_text()


def test_settings_errors_read_as_english():
    env = {"GITHUB_WEBHOOK_SECRET": "s", "DRBOT_PORT": "abc"}
    assert usage_error(drbot("serve", "--web-only", env=env), "DRBOT_PORT='abc' is not an integer")
    env = {"GITHUB_WEBHOOK_SECRET": "s", "DRBOT_READ_TIMEOUT": "soon"}
    assert usage_error(drbot("serve", "--web-only", env=env), "DRBOT_READ_TIMEOUT='soon' is not a number")


def test_every_command_and_option_says_what_it_does():
    from drbot.cli import build_parser

    def parsers(parser, name="drbot"):
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    yield from parsers(sub, f"{name} {sub_name}")

    undocumented = []
    for name, parser in parsers(build_parser()):
        if not parser.description:
            undocumented.append(name)
        undocumented += [
            f"{name} {'/'.join(action.option_strings) or action.dest}"
            for action in parser._actions
            if not action.help and not isinstance(action, argparse._SubParsersAction)
        ]
    assert undocumented == []
    assert "consume contract jobs" in drbot("worker", "--help").stdout


def test_python_m_drbot_cli_runs_every_command():
    result = subprocess.run(
        [sys.executable, "-m", "drbot.cli", "rules", "DRB201"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "DRBOT_CACHE_DIR": os.environ["DRBOT_CACHE_DIR"]},
    )
    assert result.returncode == 0 and "unused-call-argument" in result.stdout, result.stderr
