"""action.yml, the composite GitHub Action: its script steps run here as a runner would run them, in a scratch
repository laid out as a pull request's checkout, with the environment GitHub gives a step.

The install step (`pip install` of the action into a fresh virtualenv) is the one script not run: the suite's own
environment, with drbot installed, stands in for it. `uses:` steps (setup-python, the SARIF upload) are GitHub's own
actions; their inputs are checked.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


ROOT = Path(__file__).resolve().parent.parent
DDPM = "src/diffusers/pipelines/ddpm/pipeline_ddpm.py"
UNCLIP = "src/diffusers/pipelines/stable_diffusion/pipeline_stable_unclip_img2img.py"
ETA_OLD = "return_dict: bool = True,"
ETA_NEW = "return_dict: bool = True,\n        eta: float = 0.0,"
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


@pytest.fixture(scope="module")
def action() -> dict:
    return yaml.safe_load((ROOT / "action.yml").read_text())


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_NOSYSTEM": "1"}  # fmt: skip
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


def write(repo: Path, files: dict[str, str]) -> None:
    for path, text in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)


@pytest.fixture
def pull_request(tmp_path, diffusers_dir) -> dict:
    """An upstream repository where a pull request adds an ignored `eta` argument to DDPM (new finding, DRB201),
    while `main` moved on after the branch point with a change of its own; and the runner's shallow checkout of it
    at `main` (the pull request's commits are not there yet: the action fetches them)."""
    source = {path: (diffusers_dir / path.removeprefix("src/diffusers/")).read_text() for path in (DDPM, UNCLIP)}
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    git(upstream, "init", "-q", "-b", "main")
    git(upstream, "config", "uploadpack.allowAnySHA1InWant", "true")
    write(upstream, source)
    git(upstream, "add", "-A")
    git(upstream, "commit", "-qm", "base")
    git(upstream, "checkout", "-qb", "pr")
    assert ETA_OLD in source[DDPM]
    write(upstream, {DDPM: source[DDPM].replace(ETA_OLD, ETA_NEW, 1)})
    git(upstream, "commit", "-qam", "add eta")
    head = git(upstream, "rev-parse", "HEAD").strip()
    git(upstream, "checkout", "-q", "main")
    # main's own later change: diffed against main's tip instead of the merge base, it would read as "fixed"
    write(upstream, {UNCLIP: source[UNCLIP].replace(ETA_OLD, ETA_NEW, 1)})
    git(upstream, "commit", "-qam", "main moves on")
    base = git(upstream, "rev-parse", "HEAD").strip()
    workspace = tmp_path / "workspace"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{upstream}", str(workspace)], check=True)
    event = {"action": "opened", "number": 1, "pull_request": {"number": 1, "base": {"sha": base, "ref": "main"},
             "head": {"sha": head, "ref": "pr"}}}  # fmt: skip
    (tmp_path / "event.json").write_text(json.dumps(event))
    return {"base": base, "head": head, "workspace": workspace, "event": event, "tmp": tmp_path}


def evaluate(text: str, context: dict) -> str:
    """GitHub's `${{ … }}` for what action.yml uses: `inputs.NAME` and `github.event.…` property paths."""

    def value(match: re.Match) -> str:
        expression = match[1]
        if not re.fullmatch(r"[A-Za-z_][\w.-]*", expression):
            raise AssertionError(f"the test knows no expression {expression!r}: teach evaluate() about it")
        found = context
        for part in expression.split("."):
            found = found.get(part, "") if isinstance(found, dict) else ""
        return str(found)

    return EXPRESSION.sub(value, text)


def run_action(action: dict, pr: dict, **inputs: str) -> dict:
    """Run every script step after the install, as the runner would; returns what they left."""
    tmp, workspace = pr["tmp"], pr["workspace"]
    context: dict = {"github": {"event": pr["event"]}, "inputs": {}}
    for name, spec in action["inputs"].items():
        context["inputs"][name] = inputs.get(name, evaluate(str(spec.get("default", "")), context))
    files = {name: tmp / name for name in ("output", "summary", "path", "env")}
    for file in files.values():
        file.write_text("")
    (tmp / "runner-temp").mkdir(exist_ok=True)
    github_env = {
        "CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_EVENT_PATH": str(tmp / "event.json"), "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_ACTION_PATH": str(ROOT), "GITHUB_REPOSITORY": "huggingface/diffusers",
        "GITHUB_SHA": pr["head"], "RUNNER_TEMP": str(tmp / "runner-temp"), "GITHUB_OUTPUT": str(files["output"]),
        "GITHUB_STEP_SUMMARY": str(files["summary"]), "GITHUB_PATH": str(files["path"]),
        "GITHUB_ENV": str(files["env"]),
        # what the install step would put on PATH: here, the suite's environment where drbot is installed
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }  # fmt: skip
    results = []
    for step in action["runs"]["steps"]:
        if "run" not in step or step.get("id") == "install":
            continue
        assert step["shell"] == "bash"
        env = {**os.environ, **github_env, **{k: evaluate(str(v), context) for k, v in step.get("env", {}).items()}}
        cwd = workspace / evaluate(step.get("working-directory", "."), context)
        script = tmp / f"{step['id']}.sh"
        script.write_text(step["run"])
        # GitHub's `shell: bash`: bash --noprofile --norc -eo pipefail {0}
        results.append(subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=cwd,
                                      env=env, capture_output=True, text=True))  # fmt: skip
    outputs = dict(line.split("=", 1) for line in files["output"].read_text().splitlines() if "=" in line)
    return {"results": results, "outputs": outputs, "summary": files["summary"].read_text()}


def test_the_review_step_annotates_uploads_and_summarises_the_new_finding(action, pull_request):
    ran = run_action(action, pull_request)
    (review,) = ran["results"]
    assert review.returncode == 0, review.stderr
    # the annotation GitHub reads from the step's output: on the changed file, by its path in the repository
    (annotation,) = [line for line in review.stdout.splitlines() if line.startswith("::")]
    assert annotation.startswith(f"::error file={DDPM},line=")
    assert "title=DRB201 unused-call-argument::`eta`" in annotation
    assert ran["outputs"]["status"] == "1"
    sarif = json.loads(Path(ran["outputs"]["sarif"]).read_text())
    (result,) = sarif["runs"][0]["results"]
    assert result["ruleId"] == "DRB201" and result["level"] == "error"
    assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == DDPM
    # the summary is the App's comment; against the merge base, main's own later change is no part of it
    assert "**1 new finding**" in ran["summary"] and "`eta`" in ran["summary"]
    assert "Fixed by this change" not in ran["summary"] and "stable_unclip" not in ran["summary"]


def test_fail_on_findings_fails_the_step(action, pull_request):
    ran = run_action(action, pull_request, **{"fail-on-findings": "true"})
    (review,) = ran["results"]
    assert review.returncode == 1
    assert "::error title=drbot::the change brings new findings" in review.stdout


def test_without_a_pull_request_the_step_says_what_is_missing(action, pull_request):
    ran = run_action(action, {**pull_request, "event": {}})
    (review,) = ran["results"]
    assert review.returncode == 2
    assert "::error title=drbot::no base or head commit" in review.stdout


def test_a_hostile_input_stays_data(action, pull_request):
    marker = pull_request["tmp"] / "pwned"
    ran = run_action(action, pull_request, select=f"P2$(touch {marker})")
    (review,) = ran["results"]
    assert not marker.exists()
    assert review.returncode == 2 and "--select" in review.stderr  # drbot refused the odd selector, as text


def test_inputs_reach_scripts_only_through_env_and_the_sarif_goes_to_code_scanning(action):
    steps = action["runs"]["steps"]
    for step in steps:
        assert "${{" not in step.get("run", ""), f"{step.get('name')}: an expression spliced into a script"
    (upload,) = [s for s in steps if str(s.get("uses", "")).startswith("github/codeql-action/upload-sarif@")]
    assert upload["with"]["sarif_file"] == "${{ steps.review.outputs.sarif }}"
    assert "inputs.upload-sarif == 'true'" in upload["if"]
    (install,) = [s for s in steps if s.get("id") == "install"]
    assert '"$GITHUB_ACTION_PATH"' in install["run"] and "$GITHUB_PATH" in install["run"]
    assert action["inputs"]["base"]["default"] == "${{ github.event.pull_request.base.sha }}"
    assert action["inputs"]["head"]["default"] == "${{ github.event.pull_request.head.sha }}"
