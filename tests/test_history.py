"""The history corpus (bench/history/pNN.json) is well formed: every pair parses, ids are unique, each pair sits in
its pattern's file, names rules of that pattern, and its fix comes after its `before` release; a "git" pair is
scored on tags of a git repository with the checkout's project view (src/ + tests/)."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap

import pytest

from analyzers.core import all_rules
from bench import history, releases
from bench.history import BLIND, BLIND2, CORPUS, FRESH, Pair, load


def version(text: str, source: str = "pypi") -> tuple[int, ...]:
    pattern = r"v\d+\.\d+\.\d+" if source == "git" else r"\d+\.\d+\.\d+"
    assert re.fullmatch(pattern, text), f"{text!r} is not a {source} release"
    return tuple(int(part) for part in text.lstrip("v").split("."))


@pytest.mark.parametrize(
    "corpus", [CORPUS, FRESH, BLIND, BLIND2], ids=["history", "history-fresh", "history-blind", "history-blind2"]
)
def test_every_pair_is_well_formed(corpus):
    pairs = load(corpus=corpus)  # raises on a missing or unknown key, or a duplicate id
    patterns = {rule.code: rule.pattern for rule in all_rules()}
    for path in sorted(corpus.glob("p*.json")):
        number = int(path.stem[1:])
        for data in json.loads(path.read_text()):
            pair = Pair.from_json(data, path.name)
            assert pair.pattern == number, f"{pair.id} is in {path.name} but says pattern {pair.pattern}"
            assert all(patterns.get(code) == number for code in pair.rules), f"{pair.id}: rules {pair.rules}"
            before, after = version(pair.before, pair.source), version(pair.after, pair.source)
            assert before < after, f"{pair.id}: {pair.before} is not before {pair.after}"
            prefixes = ("diffusers/", "tests/") if pair.source == "git" else ("diffusers/",)
            for file in (pair.file, pair.after_file or pair.file):
                assert file.startswith(prefixes) and file.endswith(".py"), pair.id
            assert pair.summary and pair.verified and pair.fix, pair.id
            # a fresh pair keeps the verdict it had the day it was mined: that is what it measures
            assert (pair.first_scored is not None) == (corpus != CORPUS), pair.id
    assert pairs, "the corpus is empty"


@pytest.mark.parametrize(
    ("corpus", "earlier"),
    [(FRESH, [CORPUS]), (BLIND, [CORPUS, FRESH]), (BLIND2, [CORPUS, FRESH, BLIND])],
    ids=["history-fresh", "history-blind", "history-blind2"],
)
def test_no_later_pair_repeats_an_earlier_pair(corpus, earlier):
    before = [p for c in earlier for p in load(corpus=c)]
    known = {(p.pattern, p.file, p.scope, p.before, p.after) for p in before} | {p.fix for p in before}
    for pair in load(corpus=corpus):
        assert (pair.pattern, pair.file, pair.scope, pair.before, pair.after) not in known, pair.id
        assert pair.fix not in known, f"{pair.id}: its fix is already in an earlier corpus"
    assert not {p.id for p in before} & {p.id for p in load(corpus=corpus)}


def test_a_pair_names_a_known_source():
    data = {key: "x" for key in history.REQUIRED} | {"pattern": 10, "rules": [], "source": "svn"}
    with pytest.raises(ValueError, match="source"):
        Pair.from_json(data, "p10.json")
    assert Pair.from_json({**data, "source": "git"}, "p10.json").source == "git"
    assert Pair.from_json({k: v for k, v in data.items() if k != "source"}, "p10.json").source == "pypi"


def _commit(repo, files: dict[str, str], tag: str) -> None:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "add", "-A"], check=True, capture_output=True)
    subprocess.run([*git, "commit", "-q", "-m", tag], check=True, capture_output=True)
    subprocess.run([*git, "tag", tag], check=True, capture_output=True)


def test_a_git_pair_is_scored_on_tags_with_the_checkouts_tests_in_view(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    pipeline = """
        class FooPipeline(DiffusionPipeline):
            pass
        """
    init = '_import_structure = {"pipelines": ["FooPipeline"]}\n'
    other = "class BarPipelineFastTests:\n    pipeline_class = BarPipeline\n"
    _commit(repo, {"src/diffusers/__init__.py": init, "src/diffusers/pipelines/foo/pipeline_foo.py": pipeline,
                   "tests/pipelines/bar/test_bar.py": other}, "v0.1.0")  # fmt: skip
    skipped = """
        class FooPipelineFastTests:
            pipeline_class = FooPipeline

            @unittest.skip("TODO: revisit")
            def test_inference_batch_single_identical(self):
                pass
        """
    _commit(repo, {"tests/pipelines/foo/test_foo.py": skipped}, "v0.2.0")
    fixed = """
        class FooPipelineFastTests:
            pipeline_class = FooPipeline

            def test_inference_batch_single_identical(self):
                self.assertEqual(run(self), 1)
        """
    _commit(repo, {"tests/pipelines/foo/test_foo.py": fixed}, "v0.3.0")
    monkeypatch.setattr(releases, "MIRROR", repo)
    monkeypatch.setattr(releases, "CACHE", tmp_path / "cache")

    def pair(**fields) -> Pair:
        common = {"id": "x", "pattern": 10, "fix": "-", "summary": "-", "verified": "-", "source": "git"}
        return Pair.from_json({**common, **fields}, "p10.json")

    untested = pair(file="diffusers/pipelines/foo/pipeline_foo.py", scope="FooPipeline", rules=["DRB014"],
                    before="v0.1.0", after="v0.2.0")  # fmt: skip
    todo = pair(file="tests/pipelines/foo/test_foo.py", scope="FooPipelineFastTests", rules=["DRB011"],
                before="v0.2.0", after="v0.3.0")  # fmt: skip
    scores = history.score([untested, todo])
    assert [s.verdict for s in scores] == ["caught", "caught"]
    assert (tmp_path / "cache" / "git-v0.1.0" / "src" / "diffusers" / "__init__.py").is_file()
    # the test module is not in v0.1.0, and the pipeline's tests are read from the checkout, not from src/
    too_early = pair(file="tests/pipelines/foo/test_foo.py", scope="FooPipelineFastTests", rules=["DRB011"],
                     before="v0.1.0", after="v0.3.0")  # fmt: skip
    assert [s.verdict for s in history.score([too_early])] == ["missing file before"]


def test_first_scores_are_stamped_once(tmp_path):
    common = {"pattern": 5, "file": "diffusers/a.py", "scope": "f", "rules": [], "before": "0.1.0", "after": "0.2.0",
              "fix": "-", "summary": "-", "verified": "-"}  # fmt: skip
    data = [{"id": "new", **common}, {"id": "old", **common, "first_scored": "missed on 2026-01-01 (3 rules)"}]
    (tmp_path / "p05.json").write_text(json.dumps(data))
    pairs = load(corpus=tmp_path)
    scores = [history.Score(pairs[0], before=[], after=[]), history.Score(pairs[1], before=[object()], after=[])]
    assert history.stamp_first_scores(scores, tmp_path, "2026-12-07") == 1
    stamped = {p.id: p.first_scored for p in load(corpus=tmp_path)}
    assert stamped["new"].startswith("missed on 2026-12-07 (")
    assert stamped["old"] == "missed on 2026-01-01 (3 rules)"  # a first verdict is never rewritten
