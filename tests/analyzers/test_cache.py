"""The result cache (analyzers/cache.py): a repeated scan or review answers unchanged files from it, and never a file
whose text, whose rule set or anything its rules read through the project view changed since."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from analyzers import cache as cache_module
from analyzers.cache import ResultCache, package_digest, ruleset_version
from analyzers.scan import scan


ROOT = Path(__file__).resolve().parents[2]

INIT = '_import_structure = {"pipelines": ["FooPipeline", "BarPipeline"]}\n'
BASE = "class FooBasePipeline(DiffusionPipeline):\n    pass\n"
PIPELINE = (
    "from .base import FooBasePipeline\n\n\n"
    "class FooPipeline(FooBasePipeline):\n"
    "    def __call__(self, prompt, unused=1):\n"
    "        return self.run(prompt)\n"
)
BAR = "class BarPipeline(DiffusionPipeline):\n    def __call__(self, prompt):\n        return self.run(prompt)\n"
TESTS = "".join(
    f"class {name}PipelineFastTests(PipelineTesterMixin, unittest.TestCase):\n    pipeline_class = {name}Pipeline\n\n\n"
    f"class {name}PipelineIntegrationTests(unittest.TestCase):\n    def test_load(self):\n"
    f"        assert {name}Pipeline.from_pretrained('x') is not None\n\n\n"
    for name in ("Foo", "Bar")
)
FILES = {
    "src/diffusers/__init__.py": INIT,
    "src/diffusers/pipelines/__init__.py": '_import_structure = {"foo": ["FooPipeline"], "bar": ["BarPipeline"]}\n',
    "src/diffusers/pipelines/foo/__init__.py": '_import_structure = {"pipeline_foo": ["FooPipeline"]}\n',
    "src/diffusers/pipelines/foo/base.py": BASE,
    "src/diffusers/pipelines/foo/pipeline_foo.py": PIPELINE,
    "src/diffusers/pipelines/bar/__init__.py": '_import_structure = {"pipeline_bar": ["BarPipeline"]}\n',
    "src/diffusers/pipelines/bar/pipeline_bar.py": BAR,
    "tests/pipelines/foo/test_foo.py": TESTS,
}


def checkout(root: Path, files: dict[str, str] = FILES) -> Path:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def codes_by_path(report) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for finding in report.findings:
        found.setdefault(finding.path, []).append(finding.code)
    return found


@pytest.fixture
def repo(tmp_path) -> Path:
    return checkout(tmp_path / "repo")


@pytest.fixture
def cache(tmp_path) -> ResultCache:
    return ResultCache(str(tmp_path / "cache"))


def entries(cache: ResultCache) -> list[Path]:
    return sorted(Path(cache.directory, "entries").rglob("*.json"))


def test_an_unchanged_tree_is_answered_from_the_cache(repo, cache):
    cold = scan([repo], jobs=1, cache=cache)
    assert cold.cached == 0 and cold.files == len(FILES)
    assert codes_by_path(cold) == {"diffusers/pipelines/foo/pipeline_foo.py": ["DRB201"]}
    warm = scan([repo], jobs=1, cache=cache)
    assert warm.cached == warm.files == len(FILES)
    assert warm.findings == cold.findings  # fingerprints included
    assert warm.findings == scan([repo], jobs=1).findings


def test_a_changed_file_is_analysed_again(repo, cache):
    scan([repo], jobs=1, cache=cache)
    pipeline = repo / "src/diffusers/pipelines/foo/pipeline_foo.py"
    pipeline.write_text(pipeline.read_text().replace("unused=1", "unused=1, also_unused=2"))
    report = scan([repo], jobs=1, cache=cache)
    # the file itself, and foo/__init__.py, whose export table DRB604 checks against it
    assert report.cached == len(FILES) - 2
    assert sorted(f.symbol for f in report.findings) == ["also_unused", "unused"]


def test_a_change_to_a_base_class_in_another_file_reaches_the_unchanged_file(repo, cache):
    """pipeline_foo.py is a pipeline only through base.py's class: its cached finding must go when the base changes
    (base.py is analysed first, so the rule finds its parse already made: the read is remembered all the same)."""
    assert codes_by_path(scan([repo], jobs=1, cache=cache)) == {"diffusers/pipelines/foo/pipeline_foo.py": ["DRB201"]}
    (repo / "src/diffusers/pipelines/foo/base.py").write_text("class FooBasePipeline:\n    pass\n")
    report = scan([repo], jobs=1, cache=cache)
    assert report.findings == [] == scan([repo], jobs=1).findings
    assert report.cached == len(FILES) - 2  # base.py itself, and pipeline_foo.py that read it
    # and back: base.py's first entry answers; pipeline_foo.py's one entry (one per text) holds the second reads
    (repo / "src/diffusers/pipelines/foo/base.py").write_text(BASE)
    report = scan([repo], jobs=1, cache=cache)
    assert codes_by_path(report) == {"diffusers/pipelines/foo/pipeline_foo.py": ["DRB201"]}
    assert report.cached == len(FILES) - 1


def test_a_change_to_the_test_index_reaches_the_unchanged_pipeline(repo, cache):
    """DRB014 reads every test file through a tree-wide index (`Project.memo`): a test file that stops naming
    BarPipeline makes the untouched pipeline_bar.py a finding."""
    assert scan([repo], jobs=1, cache=cache).findings != []
    tests = repo / "tests/pipelines/foo/test_foo.py"
    tests.write_text(TESTS.split("class Bar")[0])
    report = scan([repo], jobs=1, cache=cache)
    assert "DRB014" in codes_by_path(report).get("diffusers/pipelines/bar/pipeline_bar.py", [])
    assert report.findings == scan([repo], jobs=1).findings
    # a new test file counts too (the listing of tests/ is a read)
    (repo / "tests/pipelines/bar").mkdir()
    (repo / "tests/pipelines/bar/test_bar.py").write_text(TESTS)
    report = scan([repo], jobs=1, cache=cache)
    assert "diffusers/pipelines/bar/pipeline_bar.py" not in codes_by_path(report)


def test_a_file_that_appears_where_a_rule_looked_for_it_counts(tmp_path, cache):
    """An absent file is a read too: `from .base import X` with no base.py, then base.py appears."""
    files = {path: text for path, text in FILES.items() if not path.endswith("foo/base.py")}
    repo = checkout(tmp_path / "repo", files)
    assert "diffusers/pipelines/foo/pipeline_foo.py" not in codes_by_path(scan([repo], jobs=1, cache=cache))
    (repo / "src/diffusers/pipelines/foo/base.py").write_text(BASE)
    report = scan([repo], jobs=1, cache=cache)
    assert codes_by_path(report)["diffusers/pipelines/foo/pipeline_foo.py"] == ["DRB201"]


def test_another_rule_set_version_misses(repo, cache):
    scan([repo], jobs=1, cache=cache)
    changed = ResultCache(cache.directory, version="a rule changed")
    assert scan([repo], jobs=1, cache=changed).cached == 0
    assert scan([repo], jobs=1, cache=changed).cached == len(FILES)


def test_the_rule_set_version_follows_every_file_of_the_analyzers_package(tmp_path):
    copy = tmp_path / "analyzers"
    shutil.copytree(ROOT / "analyzers", copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = package_digest(copy)
    assert package_digest(copy) == before
    rule = copy / "rules" / "drb201_unused_call_argument.py"
    rule.write_text(rule.read_text() + "\n# one more comment\n")
    assert package_digest(copy) != before
    assert ruleset_version() == ruleset_version() and len(ruleset_version()) == 32


def test_the_selected_rules_are_part_of_the_key(repo, cache):
    from analyzers.core import all_rules

    scan([repo], jobs=1, cache=cache)
    some = [rule for rule in all_rules() if rule.code != "DRB201"]
    report = scan([repo], some, jobs=1, cache=cache)
    assert report.cached == 0 and report.findings == []


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # a truncated write
        lambda text: "\0\0\0",
        lambda text: "[]",
        lambda text: text.replace('"key":"', '"key":"0'),  # another key's entry
        lambda text: text.replace('"line":', '"line":"x","was":'),  # findings this version does not write
        lambda text: text.replace('"reads":[', '"reads":[7,'),
        lambda text: text.replace('"findings":[', '"findings":[{},'),
    ],
)
def test_a_damaged_entry_is_a_miss(repo, cache, damage):
    cold = scan([repo], jobs=1, cache=cache)
    damaged = 0
    for entry in entries(cache):
        text = entry.read_text()
        if damage(text) != text:
            entry.write_text(damage(text))
            damaged += 1
    report = scan([repo], jobs=1, cache=cache)
    assert damaged > 0 and report.cached == len(FILES) - damaged and report.findings == cold.findings
    assert scan([repo], jobs=1, cache=cache).cached == len(FILES)  # rewritten


def test_a_damaged_or_missing_group_is_a_miss(repo, cache):
    scan([repo], jobs=1, cache=cache)
    groups = sorted(Path(cache.directory, "groups").rglob("*.json"))
    assert groups  # the test index's reads, shared by the entries that used it
    groups[0].write_text(groups[0].read_text().replace("tests/", "tests/x"))
    first = scan([repo], jobs=1, cache=cache)
    for group in groups:
        group.unlink()
    second = scan([repo], jobs=1, cache=cache)
    assert first.cached < len(FILES) and second.cached < len(FILES)
    assert first.findings == second.findings == scan([repo], jobs=1).findings


def test_an_unreadable_entry_is_a_miss(repo, cache):
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    scan([repo], jobs=1, cache=cache)
    for entry in entries(cache):
        entry.chmod(0)
    assert scan([repo], jobs=1, cache=cache).cached == 0


def test_a_directory_others_can_write_is_not_used(repo, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    report = scan([repo], jobs=1, cache=ResultCache(str(shared)))
    assert report.cached == 0 and list(shared.iterdir()) == []


def test_an_unwritable_directory_leaves_the_scan_uncached(repo, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    report = scan([repo], jobs=1, cache=ResultCache(str(blocked / "cache")))
    assert report.cached == 0 and report.findings == scan([repo], jobs=1).findings


def test_prune_keeps_the_cache_under_its_bound_dropping_the_least_recently_used(repo, cache, tmp_path):
    scan([repo], jobs=1, cache=cache)
    files = entries(cache)
    sizes = sum(f.stat().st_size for f in files) + sum(
        f.stat().st_size for f in Path(cache.directory, "groups").rglob("*.json")
    )
    for n, entry in enumerate(files):  # an order of last use: the first entry is the oldest
        os.utime(entry, (1_000_000 + n, 1_000_000 + n))
    small = ResultCache(cache.directory, max_bytes=sizes - 1)
    removed = small.prune()
    assert removed >= 1 and not files[0].exists() and files[-1].exists()
    left = sum(f.stat().st_size for f in Path(cache.directory).rglob("*.json"))
    assert left <= small.max_bytes * cache_module.PRUNE_TO
    assert ResultCache(cache.directory).prune() == 0  # under the default bound: nothing to do


def test_a_scan_prunes_its_cache(repo, cache):
    scan([repo], jobs=1, cache=ResultCache(cache.directory, max_bytes=1))
    assert entries(cache) == []


# -- concurrency: the scan's worker processes read and write the same directory ---------------------------------


def _scan_in_a_process(repo: str, directory: str) -> list:
    report = scan([Path(repo)], jobs=1, cache=ResultCache(directory))
    return [finding.to_dict() for finding in report.findings]


def test_concurrent_scans_share_the_cache_without_damaging_it(repo, cache):
    expected = [finding.to_dict() for finding in scan([repo], jobs=1).findings]
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(4, mp_context=context) as pool:
        results = list(pool.map(_scan_in_a_process, [str(repo)] * 8, [cache.directory] * 8))
    assert all(result == expected for result in results)
    for entry in entries(cache):
        assert json.loads(entry.read_text())["key"] == entry.stem
    assert list(Path(cache.directory).rglob(".tmp-*")) == []
    assert scan([repo], jobs=1, cache=cache).cached == len(FILES)


def _write_many(directory: str, n: int) -> None:
    cache = ResultCache(directory)
    target = Path(directory, "entries", "ab", "abcd.json")
    for i in range(n):
        assert cache._write(target, {"key": "abcd", "writer": os.getpid(), "i": i, "padding": "x" * 200_000})


def _read_many(directory: str, stop: str) -> tuple[int, int]:
    """Read the entry until the writers are done, then once more (so at least one read finds it whole)."""
    whole = damaged = 0
    target = Path(directory, "entries", "ab", "abcd.json")
    finished = False
    while not finished:
        finished = Path(stop).exists()
        try:
            text = target.read_text()
        except FileNotFoundError:
            continue
        try:
            json.loads(text)
            whole += 1
        except ValueError:
            damaged += 1
    return whole, damaged


def test_a_reader_never_sees_a_partly_written_entry(cache, tmp_path):
    """Several writers of one key and a reader at once (what two workers analysing one file do)."""
    stop = tmp_path / "writers-done"
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(4, mp_context=context) as pool:
        reader = pool.submit(_read_many, cache.directory, str(stop))
        writers = [pool.submit(_write_many, cache.directory, 150) for _ in range(3)]
        try:
            for writer in writers:
                writer.result()
        finally:
            stop.touch()
        whole, damaged = reader.result(timeout=120)
    assert damaged == 0 and whole > 0


def test_scans_in_worker_pools_use_the_cache(repo, cache):
    """Workers of a process pool (`jobs`) and of engine.isolation (the command line's) read and write it."""
    from engine.isolation import Failure, Limits, Pool

    cold = scan([repo], jobs=2, cache=cache)  # 8 files: the process pool
    assert cold.cached == 0 and len(entries(cache)) == len(FILES)
    # a planted message proves the next answers come out of the entries
    for entry in entries(cache):
        entry.write_text(entry.read_text().replace("is accepted by", "PLANTED is accepted by"))
    with Pool(Limits(), 2, preload=("analyzers.scan",)) as pool:

        def isolate(function, items):
            return [o.reason if isinstance(o, Failure) else o for o in pool.map(function, items)]

        warm = scan([repo], cache=cache, isolate=isolate)
        assert warm.cached == len(FILES)
        assert [f.message.startswith("`unused` PLANTED") for f in warm.findings] == [True]
        # the same pool, next scan, after a change another file reads: its workers see the new tree
        (repo / "src/diffusers/pipelines/foo/base.py").write_text("class FooBasePipeline:\n    pass\n")
        assert scan([repo], cache=cache, isolate=isolate).findings == []


# -- the command line -------------------------------------------------------------------------------------------


def _drbot(*args: str, cache_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "drbot", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "DRBOT_CACHE_DIR": str(cache_dir)},
        timeout=300,
    )


def test_the_command_line_caches_unless_told_not_to(repo, tmp_path):
    cache_dir = tmp_path / "cli-cache"
    bypassed = _drbot("analyze", str(repo), "--format", "json", "--no-cache", cache_dir=cache_dir)
    assert bypassed.returncode == 1, bypassed.stderr
    assert not cache_dir.exists()
    first = _drbot("analyze", str(repo), "--format", "json", cache_dir=cache_dir)
    assert len(list(cache_dir.rglob("*.json"))) >= len(FILES)
    for entry in Path(cache_dir, "entries").rglob("*.json"):
        entry.write_text(entry.read_text().replace("is accepted by", "PLANTED is accepted by"))
    second = _drbot("analyze", str(repo), "--format", "json", cache_dir=cache_dir)
    assert json.loads(first.stdout) == json.loads(bypassed.stdout)
    assert "PLANTED" in second.stdout
    third = _drbot("analyze", str(repo), "--format", "json", "--no-cache", cache_dir=cache_dir)
    assert json.loads(third.stdout) == json.loads(bypassed.stdout)


def test_the_default_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DRBOT_CACHE_DIR", str(tmp_path / "mine"))
    assert ResultCache.default().directory == str(tmp_path / "mine")
    monkeypatch.delenv("DRBOT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_module.default_directory() == tmp_path / "xdg" / "drbot"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/xdg")  # invalid per the XDG spec: ignored
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_module.default_directory() == tmp_path / "home" / ".cache" / "drbot"


# -- reviews ----------------------------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    identity = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@x",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@x",
    }
    result = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env={**os.environ, **identity}
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_review_worker_checks_reads_at_each_revision(repo, cache):
    """The same file at two revisions is one key; what its rules read differs between them (the base class)."""
    from engine.review import analyze_version

    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "one")
    first = _git(repo, "rev-parse", "HEAD")
    (repo / "src/diffusers/pipelines/foo/base.py").write_text("class FooBasePipeline:\n    pass\n")
    _git(repo, "commit", "-qam", "two")
    second = _git(repo, "rev-parse", "HEAD")
    path = "src/diffusers/pipelines/foo/pipeline_foo.py"
    shown = "diffusers/pipelines/foo/pipeline_foo.py"
    at_first = analyze_version(str(repo), first, path, shown, None, None, None, cache)
    at_second = analyze_version(str(repo), second, path, shown, None, None, None, cache)
    assert [f.code for f in at_first[0]] == ["DRB201"] and at_second == ([], [])
    hits = cache_module.STATS.hits
    assert analyze_version(str(repo), second, path, shown, None, None, None, cache) == at_second
    assert cache_module.STATS.hits == hits + 1
    assert analyze_version(str(repo), first, path, shown, None, None, None, cache) == at_first
    assert cache_module.STATS.hits == hits + 1  # the entry holds the second revision's reads: a miss


def test_a_repeated_review_is_answered_from_the_cache(repo, cache):
    from engine.review import review

    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    pipeline = repo / "src/diffusers/pipelines/foo/pipeline_foo.py"
    pipeline.write_text(pipeline.read_text().replace("unused=1", "unused=1, also_unused=2"))
    _git(repo, "commit", "-qam", "head")
    cold = review(repo, "HEAD~1", jobs=2, cache=cache)
    assert [f.symbol for f in cold.comparison.new] == ["also_unused"]
    assert len(entries(cache)) == 2  # base and head of the one changed file
    for entry in entries(cache):
        entry.write_text(entry.read_text().replace("is accepted by", "PLANTED is accepted by"))
    warm = review(repo, "HEAD~1", jobs=2, cache=cache)
    assert [f.message.split()[1] for f in warm.comparison.new] == ["PLANTED"]
    assert review(repo, "HEAD~1", jobs=2).comparison.new == cold.comparison.new
