"""Contracts composed with a checkout's own fast tests: a synthetic checkout (the installed diffusers as its `src/`, a
`tests/pipelines/foo/test_foo.py` whose classes build real tiny pipelines) run through `drbot contracts --source`, and
a stand-in checkpoint loaded by `from_pretrained` offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from fast_test_module import write_checkout_tests

from runners.checkout import index, is_checkout
from runners.coverage import PipelineCoverage, render
from runners.standins import STANDINS, offline_env, populate, repo_folder


pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """src/diffusers is the installed package (a link); tests/ is a package with one pipeline test module."""
    root = tmp_path_factory.mktemp("checkout")
    (root / "src").mkdir()
    (root / "src" / "diffusers").symlink_to(Path(diffusers.__file__).parent, target_is_directory=True)
    write_checkout_tests(root)
    return root


def test_index_finds_fast_test_classes_with_what_they_load(checkout):
    assert is_checkout(checkout) and not is_checkout(checkout / "tests")
    found = index(checkout)
    assert sorted(found) == ["BrokenPipeline", "CrashingPipeline", "LatentsIgnoredPipeline", "StableDiffusionPipeline",
                             "UnstoodPipeline"]  # fmt: skip
    sd, *wrapped = found["StableDiffusionPipeline"]  # the *SlowTests class is never a candidate
    assert (sd.module, sd.name, sd.via) == ("tests.pipelines.foo.test_foo", "StableDiffusionPipelineFastTests", "")
    # the test module's own subclasses stand for their base too, after the test class that names the base itself
    assert sorted(ref.via for ref in wrapped) == ["BrokenPipeline", "CrashingPipeline", "LatentsIgnoredPipeline",
                                                  "UnstoodPipeline"]  # fmt: skip
    assert sd.repos == ("hf-internal-testing/tiny-random-clip",)
    # inherited from the fast test class in the same module: get_dummy_components and its repositories
    (planted,) = found["LatentsIgnoredPipeline"]
    assert planted.name == "LatentsIgnoredPipelineTesterConfig" and planted.repos == sd.repos
    assert found["UnstoodPipeline"][0].repos == ("hf-internal-testing/tiny-random-nothing",)


@pytest.fixture(scope="module")
def rows(checkout) -> dict[str, dict]:
    """`drbot contracts --source` over the synthetic checkout, DRC003 only: pipeline -> its JSON row."""
    pipelines = ["StableDiffusionPipeline", "LatentsIgnoredPipeline", "CrashingPipeline", "BrokenPipeline",
                 "UnstoodPipeline"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "drbot", "contracts", *pipelines, "--source", str(checkout), "--contract", "DRC003",
         "--format", "json"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900,
    )  # fmt: skip
    assert done.stdout.strip(), done.stderr
    results = json.loads(done.stdout)["results"]
    assert done.returncode == 2, done.stderr  # the crash and the build error are harness errors
    by_pipeline = {r["pipeline"]: r for r in results}
    assert sorted(by_pipeline) == sorted(pipelines) and len(results) == len(pipelines)
    return by_pipeline


def test_a_pipeline_built_from_its_fast_test_class_passes(rows):
    # built with CLIPTokenizer.from_pretrained("hf-internal-testing/tiny-random-clip"): the stand-in, offline
    assert rows["StableDiffusionPipeline"]["outcome"] == "passed", rows["StableDiffusionPipeline"]


def test_a_defect_planted_in_the_checkouts_pipeline_fails_its_contract(rows):
    row = rows["LatentsIgnoredPipeline"]
    assert row["outcome"] == "failed", row
    assert "two different `latents` gave identical outputs" in row["message"]


def test_a_crashed_worker_costs_only_its_own_pipeline(rows):
    assert rows["CrashingPipeline"]["outcome"] == "error"
    assert rows["CrashingPipeline"]["message"].startswith("crashed: worker exited 3")
    # BrokenPipeline and UnstoodPipeline come after the crash in a restarted worker
    assert rows["BrokenPipeline"]["outcome"] == "error"
    assert rows["BrokenPipeline"]["message"] == "build-error: RuntimeError: no components today"


def test_a_checkpoint_without_a_stand_in_is_named(rows):
    assert rows["UnstoodPipeline"]["outcome"] == "skipped"
    assert rows["UnstoodPipeline"]["message"] == "no-standin: no stand-in for hf-internal-testing/tiny-random-nothing"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--source", "/nonexistent"], "is not a diffusers checkout"),
        (["NoSuchPipeline", "--source", "{checkout}"], "no fast test class for NoSuchPipeline"),
    ],
    ids=["not-a-checkout", "unknown-pipeline"],
)
def test_source_usage_errors(checkout, args, message):
    args = [a.format(checkout=checkout) for a in args]
    done = subprocess.run([sys.executable, "-m", "drbot", "contracts", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert message in done.stderr


# -- stand-ins ----------------------------------------------------------------------------------------------------------

LOAD_T5 = """
import json, sys
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer, T5EncoderModel

repo = "hf-internal-testing/tiny-random-t5"
config = AutoConfig.from_pretrained(repo)
tokenizer = AutoTokenizer.from_pretrained(repo)
model = T5EncoderModel.from_pretrained(repo)
saved = load_file(sys.argv[1])
ids = tokenizer("A painting of a squirrel eating a burger").input_ids
try:
    AutoTokenizer.from_pretrained("hf-internal-testing/tiny-random-elsewhere")
    missing = "loaded"
except OSError:
    missing = "OSError"
print(json.dumps({
    "config": [type(config).__name__, config.d_model, config.vocab_size],
    "tokenizer": [type(tokenizer).__name__, len(tokenizer), max(ids), ids[-1] == tokenizer.eos_token_id],
    "same_weights": bool((model.shared.weight == saved["shared.weight"]).all()),
    "missing": missing,
}))
"""


def test_a_stand_in_loads_through_from_pretrained_offline(tmp_path):
    repo = "hf-internal-testing/tiny-random-t5"
    cache = populate(tmp_path / "hub", [repo])
    folder = repo_folder(cache, repo)
    revision = (folder / "refs" / "main").read_text()
    assert revision == STANDINS[repo].revision and (folder / "snapshots" / revision / "config.json").is_file()
    weights = folder / "snapshots" / revision / "model.safetensors"
    env = {**os.environ, **offline_env(cache), "HF_HOME": str(tmp_path / "home")}  # no other cache to fall back on
    done = subprocess.run([sys.executable, "-c", LOAD_T5, str(weights)], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["config"] == ["T5Config", 32, 1103]  # the d_model the fast tests' transformers are built for
    name, size, top, ends_with_eos = seen["tokenizer"]
    assert name.startswith("T5Tokenizer") and size == 1100 and top < 1103 and ends_with_eos
    assert seen["same_weights"], "T5EncoderModel.from_pretrained did not read the stand-in's weights"
    assert seen["missing"] == "OSError", "a repository with no stand-in must not load offline"


def test_stand_ins_are_reproducible(tmp_path):
    repo = "hf-internal-testing/tiny-random-clip"
    files = []
    for name in ("a", "b"):
        cache = populate(tmp_path / name, [repo])
        snapshot = repo_folder(cache, repo) / "snapshots" / STANDINS[repo].revision
        files.append({p.name: p.read_bytes() for p in sorted(snapshot.iterdir())})
    assert files[0] == files[1] and "model.safetensors" in files[0] and "vocab.json" in files[0]


# -- the coverage report ------------------------------------------------------------------------------------------------


def test_coverage_report_says_why_a_pipeline_is_not_covered(tmp_path):
    (tmp_path / "src" / "diffusers").mkdir(parents=True)
    (tmp_path / "src" / "diffusers" / "__init__.py").write_text('__version__ = "9.9.9.dev0"\n')
    ran = [{"pipeline": "APipeline", "contract": f"DRC00{i}", "outcome": "passed", "message": ""} for i in range(1, 5)]
    ran.append({"pipeline": "APipeline", "contract": "DRC006", "outcome": "failed", "message": "not a tuple"})
    rows = [
        PipelineCoverage("APipeline", "pipeline", "built", test={"path": "tests/pipelines/a/test_a.py", "name": "T"},
                         outcomes=Counter(r["outcome"] for r in ran), results=ran),
        PipelineCoverage("BPipeline", "pipeline", "built", outcomes=Counter(passed=4, skipped=9)),
        PipelineCoverage("CPipeline", "pipeline", "no-standin", "no stand-in for org/tiny-c"),
        PipelineCoverage("DPipeline", "pipeline", "build-error", "ValueError: bad config"),
        PipelineCoverage("EPipeline", "pipeline", "no-test", "no fast test class in tests/pipelines"),
        PipelineCoverage("FModularPipeline", "modular", "not-a-pipeline"),
    ]  # fmt: skip
    text = render(rows, tmp_path, "python -m runners.coverage --source CHECKOUT", "a label", 10.0, 8.0)
    assert "diffusers 9.9.9.dev0" in text and "a label" in text
    assert "| all | 5 |" in text and "| covered: built from the fast test class, ≥5 contracts ran | 1 |" in text
    lines = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "| covered |" in lines["APipeline"] and "| contracts run |" in lines["BPipeline"]  # 4 ran: not covered
    assert "stand-in missing" in lines["CPipeline"] and "no stand-in for org/tiny-c" in lines["CPipeline"]
    assert "build error" in lines["DPipeline"] and "ValueError: bad config" in lines["DPipeline"]
    assert "no fast test class" in lines["EPipeline"]
    assert "| `org/tiny-c` | 1: CPipeline |" in text
    assert "| APipeline | DRC006 | not a tuple |" in text
    assert "- modular (1): FModularPipeline" in text


@pytest.mark.parametrize(
    "message, status, says",
    [
        (
            "OSError: diffusers/consistency-models-test does not appear to have a file named config.json.",
            "no-standin",
            "no stand-in for diffusers/consistency-models-test (",
        ),
        (
            "OSError: We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in the "
            "cached files.",
            "no-standin",
            "no stand-in for a checkpoint the error does not name",
        ),
        ("ValueError: in_channels 4 vs 8 (see org/name)", "build-error", "ValueError"),
    ],
    ids=["named", "unnamed", "other"],
)
def test_an_offline_cache_miss_in_a_helper_counts_as_a_missing_stand_in(message, status, says):
    from runners.checkout import classify

    event = classify({"event": "pipeline", "pipeline": "P", "status": "build-error", "message": message})
    assert event["status"] == status and event["message"].startswith(says)
