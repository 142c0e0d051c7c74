"""The engine: fingerprints, suppressions, parse errors, broken rules, the project view, rule checks."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import libcst as cst
import pytest

from analyzers.core import (
    BARE_IGNORE_CODE,
    FileContext,
    Finding,
    Invalid,
    Project,
    Rule,
    Valid,
    all_rules,
    analyze,
    analyze_file,
    fingerprint,
    resolve_relative,
    select_rules,
    suppressions,
)
from analyzers.rules.drb201_unused_call_argument import UnusedCallArgument


PIPELINE = textwrap.dedent(
    """
    class MyPipeline(DiffusionPipeline):
        def __call__(self, prompt, num_images_per_prompt=1, eta=0.0):
            return self.run(prompt)
    """
)
PATH = "diffusers/pipelines/example/pipeline_example.py"


def _run(source: str, path: str = PATH, project=None):
    return analyze(path, source, project=project, rules=[UnusedCallArgument])


def test_fingerprint_is_sha256_of_the_tuple():
    import hashlib

    expected = hashlib.sha256(b"DRB201|a.py|P.__call__|eta|0").hexdigest()[:16]
    assert fingerprint("DRB201", "a.py", "P.__call__", "eta", 0) == expected


def test_fingerprints_survive_moved_lines():
    before = _run(PIPELINE)
    after = _run("import torch\n\n\n# a comment\n" + PIPELINE.replace("class MyPipeline", "\n\nclass MyPipeline"))
    assert [f.line for f in before] != [f.line for f in after]
    assert [f.fingerprint for f in before] == [f.fingerprint for f in after]
    assert len({f.fingerprint for f in before}) == 2


def test_identical_tuples_are_numbered_in_order():
    rule_findings = [Finding("DRB201", 2, "a.py", line, line, "S", "x", "m") for line in (30, 10)]
    from analyzers.core import with_fingerprints

    numbered = with_fingerprints(rule_findings)
    assert [f.line for f in numbered] == [10, 30]
    assert numbered[0].fingerprint == fingerprint("DRB201", "a.py", "S", "x", 0)
    assert numbered[1].fingerprint == fingerprint("DRB201", "a.py", "S", "x", 1)


def test_finding_fields():
    (first, second) = _run(PIPELINE)  # same line: ordered by symbol
    assert (first.code, first.pattern, first.path, first.scope, first.symbol) == (
        "DRB201",
        2,
        PATH,
        "MyPipeline.__call__",
        "eta",
    )
    assert first.line == first.end_line == 3
    assert second.symbol == "num_images_per_prompt"


def test_suppression_on_the_line_and_above():
    source = PIPELINE.replace(
        "num_images_per_prompt=1, eta=0.0):", "num_images_per_prompt=1, eta=0.0):  # drbot: ignore[DRB201] kept for BC"
    )
    assert _run(source) == []
    above = textwrap.dedent(
        """
        class MyPipeline(DiffusionPipeline):
            def __call__(
                self,
                prompt,
                # drbot: ignore[DRB201] deprecated in 0.40, removed in 1.0
                eta=0.0,
                num_images_per_prompt=1,
            ):
                return self.run(prompt)
        """
    )
    assert [f.symbol for f in _run(above)] == ["num_images_per_prompt"]


def test_suppression_of_another_code_does_not_hide():
    source = PIPELINE.replace("eta=0.0):", "eta=0.0):  # drbot: ignore[DRB999] not this one")
    assert len(_run(source)) == 2


def test_bare_ignore_is_reported_and_hides_nothing():
    source = PIPELINE.replace("eta=0.0):", "eta=0.0):  # drbot: ignore")
    findings = _run(source)
    assert sorted(f.code for f in findings) == [BARE_IGNORE_CODE, "DRB201", "DRB201"]
    bare = next(f for f in findings if f.code == BARE_IGNORE_CODE)
    assert bare.line == 3 and "name the rule" in bare.message


def test_suppressions_parse_codes_and_reason():
    (mark,) = suppressions("x = 1  # drbot: ignore[DRB201, drb601] kept on purpose\n")
    assert mark.codes == {"DRB201", "DRB601"} and mark.reason == "kept on purpose" and not mark.standalone


def test_unparsable_file_is_an_error_not_a_raise():
    result = analyze_file(PATH, "class Broken(:\n    def __call__(self\n", rules=[UnusedCallArgument])
    assert result.findings == []
    assert len(result.errors) == 1 and "libcst cannot parse" in result.errors[0] and "line" in result.errors[0]


def test_a_broken_rule_does_not_stop_the_others():
    class Exploding(UnusedCallArgument):
        abstract = True  # keep it out of all_rules()
        code = "DRB201"

        def check(self):
            raise RuntimeError("boom")

    result = analyze_file(PATH, PIPELINE, rules=[Exploding, UnusedCallArgument])
    assert len(result.findings) == 2
    assert result.errors == ["DRB201 raised RuntimeError: boom"]


def test_files_no_rule_applies_to_are_not_parsed_with_libcst(monkeypatch):
    parsed = []
    real = cst.parse_module
    monkeypatch.setattr(cst, "parse_module", lambda source, *args, **kwargs: parsed.append(source) or real(source))
    result = analyze_file(PATH, "x = (1,\n     2)\n", rules=[UnusedCallArgument])
    assert result.errors == [] and result.findings == [] and parsed == []


def test_an_unparsable_file_no_rule_applies_to_is_an_error_too():
    # the prefilter skips the parse, not the verdict: the same error as for a file a rule applies to
    skipped = analyze_file(PATH, "this is not python (", rules=[UnusedCallArgument])
    parsed = analyze_file(PATH, "def __call__(self):\n    this is not python (", rules=[UnusedCallArgument])
    assert skipped.findings == [] and len(skipped.errors) == 1
    assert skipped.errors[0].startswith("libcst cannot parse this file:") and "line 1" in skipped.errors[0]
    assert parsed.errors[0].startswith("libcst cannot parse this file:")


def test_a_scan_lists_every_file_it_could_not_analyse(tmp_path):
    from analyzers.scan import scan

    package = tmp_path / "diffusers"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "constants.py").write_text("SIZE = 1024\n")
    (package / "broken.py").write_text("SIZE = (1024\n")  # no rule's prefilter accepts it
    report = scan([package], jobs=1)
    assert report.files == 3 and report.findings == []
    assert [(e.path, e.message.split(":")[0]) for e in report.errors] == [
        ("diffusers/broken.py", "libcst cannot parse this file")
    ]


def test_a_scan_runs_the_cycle_collector_only_once_objects_pile_up(tmp_path, monkeypatch):
    # the collector is off during a one-process scan; it runs when the objects gained since its last run pass
    # COLLECT_GROWTH (here: what a leaking rule keeps), and not for a tree that leaves nothing behind
    import gc

    import analyzers.scan as scan_module

    package = tmp_path / "diffusers"
    package.mkdir()
    for index in range(3):
        (package / f"m{index}.py").write_text(f"SIZE = {index}\n")
    runs: list[str] = []

    def observe(phase: str, info: dict) -> None:
        if phase == "start" and not gc.isenabled():  # a run the scan asked for, not one of the collector's own
            runs.append(phase)

    kept: list[list] = []
    real = scan_module.analyze_file

    def leaking(*args, **kwargs):
        kept.append([[] for _ in range(2000)])  # objects that stay alive, as a rule leaking cycles would leave
        return real(*args, **kwargs)

    gc.callbacks.append(observe)
    try:
        quiet = scan_module.scan([package], jobs=1)
        assert quiet.files == 3 and runs == []
        monkeypatch.setattr(scan_module, "COLLECT_GROWTH", 3000)
        monkeypatch.setattr(scan_module, "analyze_file", leaking)
        scan_module.scan([package], jobs=1)
    finally:
        gc.callbacks.remove(observe)
    assert (
        1 <= len(runs) <= 2
    )  # 2000 objects a file against 3000 allowed: the second file's pass it, maybe the third's
    assert gc.isenabled()  # the scan gives the collector back as it found it


def test_a_file_only_ast_rejects_is_judged_by_libcst():
    # Python 3.12 syntax: this interpreter's `ast` rejects it, libcst parses it; a rule could analyse it, so it is no
    # error when no rule applies either
    result = analyze_file(PATH, "type Embeds = list[float]\n", rules=[UnusedCallArgument])
    assert result.errors == [] and result.findings == []


@pytest.mark.parametrize(
    "bad, error",
    [
        ({"code": "X1"}, "DRB + 3 digits"),
        ({"code": "DRB201"}, "already used"),
        ({"pattern": 11}, "pattern"),
        ({"__doc__": "## What it does\nx"}, "Why is this bad?"),
        ({"INVALID": []}, "VALID and one INVALID"),
    ],
)
def test_rule_classes_are_checked_when_defined(bad, error):
    namespace = {
        "__doc__": "## What it does\nChecks.\n## Why is this bad?\nBecause.",
        "code": "DRB998",
        "pattern": 2,
        "VALID": [Valid("x = 1")],
        "INVALID": [Invalid("x = 2")],
        **bad,
    }
    with pytest.raises(TypeError, match=re.escape(error)):
        type("Bad", (Rule,), namespace)


def test_select_and_ignore():
    rules = all_rules()
    assert select_rules(rules, ["DRB201"]) == [UnusedCallArgument]
    assert UnusedCallArgument in select_rules(rules, ["P2"])
    assert UnusedCallArgument not in select_rules(rules, [], ["DRB2"])
    assert select_rules(rules, ["ALL"]) == rules


def test_resolve_relative():
    assert resolve_relative("diffusers.pipelines.wan.pipeline_wan", False, 2, "pipeline_utils") == (
        "diffusers.pipelines.pipeline_utils"
    )
    assert (
        resolve_relative("diffusers.pipelines.wan", True, 1, "pipeline_wan") == "diffusers.pipelines.wan.pipeline_wan"
    )
    assert resolve_relative("diffusers.pipelines.wan.pipeline_wan", False, 3, None) == "diffusers"


def test_project_view_follows_imports_to_the_ancestor():
    files = {
        "diffusers/pipelines/pipeline_utils.py": "class DiffusionPipeline:\n    pass\n",
        "diffusers/pipelines/base/pipeline_base.py": (
            "from ..pipeline_utils import DiffusionPipeline as DP\n\nclass BasePipeline(DP):\n    pass\n"
        ),
        "diffusers/pipelines/base/__init__.py": "from .pipeline_base import BasePipeline\n",
    }
    project = Project.from_mapping(files)
    source = "from ..base import BasePipeline\n\nclass Child(BasePipeline):\n    pass\n\nclass Other:\n    pass\n"
    ctx = FileContext("diffusers/pipelines/child/pipeline_child.py", source, cst.parse_module(source), project)
    child, other = ctx.classes
    assert ctx.inherits_from(child.node, frozenset({"DiffusionPipeline"}))
    assert not ctx.inherits_from(other.node, frozenset({"DiffusionPipeline"}))
    assert ctx.qualified_name(cst.parse_expression("BasePipeline")) == "diffusers.pipelines.base.BasePipeline"
    assert project.module("diffusers.pipelines.missing") is None


def test_project_view_loads_lazily_and_once():
    reads = []

    def reader(path):
        reads.append(path)
        return "X = 1\n" if path == "pkg/a.py" else None

    project = Project(reader)
    assert reads == []
    assert project.module("pkg.a") is project.module("pkg.a")
    assert reads.count("pkg/a.py") == 1


def test_matcher_decorators_work_on_every_instance():
    import libcst.matchers as m

    from analyzers.decorated import DecoratedRule

    class CallsEval(DecoratedRule):
        """
        ## What it does
        Reports `eval(...)`.
        ## Why is this bad?
        Test rule.
        """

        abstract = True
        code = "DRB997"
        pattern = 2
        VALID = [Valid("x = 1")]
        INVALID = [Invalid("eval('1')")]

        @m.visit(m.Call(func=m.Name("eval")))
        def _found(self, node: cst.Call) -> None:
            self.report(node, "found; remove it.", symbol="eval")

        @m.leave(m.Call(func=m.Name("eval")))
        def _left(self, node: cst.Call) -> None:
            self.report(node, "left; remove it.", symbol="eval-leave")

    for _ in range(3):  # the first instance gathers the decorated methods, later ones reuse the names
        findings = analyze(PATH, "eval('1')\nexec('2')\n", rules=[CallsEval])
        assert sorted(f.symbol for f in findings) == ["eval", "eval-leave"]


def test_walk_sees_every_name_in_source_order_and_caches():
    from analyzers import walk

    function = cst.parse_statement("def f(a, *args: T, b=d, **kw: U):\n    return g(a, *args, key=v)[0].x\n")
    names = [n.value for n in walk.nodes(function, cst.Name)]
    assert names == ["f", "a", "args", "T", "b", "d", "kw", "U", "g", "a", "args", "v", "key", "x"]
    assert walk.nodes(function, cst.Call)[0] is walk.nodes(function, cst.Call)[0]
    assert len(walk.nodes(function, cst.BaseExpression)) > len(names)
    walk.clear()


def test_generated_child_lists_equal_the_generic_walk():
    """`walk._children` is generated per node type from its declared field types; it must list exactly the nodes the
    generic field-by-field walk lists, on real files and on the rarer syntax (match, f-string specs, star imports)."""
    from analyzers import walk
    from analyzers.scan import discover, installed_diffusers

    rare = (
        "from m import *\nfrom . import (a as b, c)\n"
        "match p:\n    case [1, *rest] | {'k': v, **kw} if v: pass\n    case Point(x=0) as q: pass\n"
        "f'{x!r:>{width}} {y=}'\nlambda a, /, b=1, *c, d, **e: (a, b)\nx[1:2:3, ...] = *y, z\n"
        "async def f():\n    async with a as (b, c):\n        await g(*args, **kw)\n    return [i async for i in h]\n"
        "@dec\nclass C(B, metaclass=M):\n    global g\n    del a[0]\n    assert x, 'm'\n    raise E from e\n"
    )
    sources = [rare] + [Path(file).read_text() for _, file in discover([installed_diffusers()])[::40]]
    checked = 0
    for source in sources:
        for node in walk._walk(cst.parse_module(source)):
            fields = walk._FIELDS.get(type(node)) or walk._fields(type(node))
            expected = walk._generic_children(node, fields)
            got = walk._children(node)
            assert len(got) == len(expected) and all(a is b for a, b in zip(got, expected, strict=True)), type(node)
            checked += 1
    assert checked > 10_000


def test_names_read_answers_the_same_from_one_walk_and_from_an_index():
    from analyzers import matchers, walk

    function = cst.parse_statement(
        "def f(a, b=c):\n    import m.n as k\n    x.y = g(a, key=v, *w)\n    class C(B):\n        z = 1\n"
        "    def h(q):\n        return q + r\n    return [i for i in a if i.t]\n"
    )
    walked = [n.value for n in matchers.names_read(function)]  # not indexed yet: one walk
    assert walk.indexed(function) is None
    walk.index(function)
    assert [n.value for n in matchers.names_read(function)] == walked  # from the index
    assert walked == ["c", "x", "g", "a", "v", "w", "z", "B", "q", "r", "i", "i", "a", "i"]  # field order
    walk.clear()


def test_the_prefilter_answers_as_each_rules_own_applies_to():
    """One Aho-Corasick pass finds every needle, overlapping ones included ("abc" and "bcd" in "abcd"), and asks a
    rule that overrides `applies_to` itself; on every file of diffusers it picks exactly the rules `applies_to` picks."""
    from analyzers.rule import Prefilter
    from analyzers.scan import discover, installed_diffusers

    def rule(code, needles=(), paths=()):
        return type(
            code, (Rule,), {"abstract": True, "code": code, "pattern": 1, "REQUIRES_ANY": needles, "PATHS": paths}
        )

    class Own(Rule):
        abstract = True
        code = "DRB990"
        pattern = 1

        @classmethod
        def applies_to(cls, path, source):
            return source.startswith("#")

    rules = [rule("DRB991", ("abc",)), rule("DRB992", ("bcd",)), rule("DRB993", ("cd", "zz"), ("/pipelines/",)),
             rule("DRB994"), rule("DRB995", ("x",), ("/tests/",)), Own]  # fmt: skip
    prefilter = Prefilter(rules)
    assert prefilter._automaton is not None
    picked = [r.code for r in prefilter.applicable("diffusers/pipelines/a.py", "# abcd")]
    assert picked == ["DRB991", "DRB992", "DRB993", "DRB994", "DRB990"]
    assert [r.code for r in prefilter.applicable("tests/test_a.py", "x abc")] == ["DRB995"]
    assert [r.code for r in prefilter.applicable("diffusers/models/a.py", "bcd")] == ["DRB992", "DRB994"]
    everything = all_rules()
    prefilter = Prefilter(everything)
    for root, file in discover([installed_diffusers()])[::7]:
        path, source = Path(file).relative_to(root).as_posix(), Path(file).read_text()
        assert prefilter.applicable(path, source) == [r for r in everything if r.applies_to(path, source)], path


def test_a_rule_can_ask_for_libcst_metadata():
    from libcst.metadata import ScopeProvider

    class ShadowedPrompt(Rule):
        """
        ## What it does
        Reports assignments to `prompt` in a function scope.
        ## Why is this bad?
        Test rule for METADATA_DEPENDENCIES.
        """

        abstract = True
        code = "DRB996"
        pattern = 2
        METADATA_DEPENDENCIES = (ScopeProvider,)
        VALID = [Valid("x = 1")]
        INVALID = [Invalid("def f():\n    prompt = 1\n")]

        def visit_Name(self, node: cst.Name) -> None:
            scope = self.get_metadata(ScopeProvider, node, None)
            if node.value == "prompt" and scope is not None and type(scope).__name__ == "FunctionScope":
                self.report(node, "shadowed; rename it.", symbol="prompt")

    findings = analyze(PATH, "prompt = 0\n\ndef f():\n    prompt = 1\n", rules=[ShadowedPrompt])
    assert [(f.line, f.scope) for f in findings] == [(4, "f")]


def test_project_lists_files_from_directories_and_mappings(tmp_path):
    (tmp_path / "src" / "diffusers" / "pipelines").mkdir(parents=True)
    (tmp_path / "src" / "diffusers" / "pipelines" / "a.py").write_text("")
    (tmp_path / "tests" / "pipelines" / "foo").mkdir(parents=True)
    (tmp_path / "tests" / "pipelines" / "foo" / "test_foo.py").write_text("")
    (tmp_path / "tests" / "pipelines" / "__pycache__").mkdir()
    (tmp_path / "tests" / "pipelines" / "__pycache__" / "x.pyc").write_text("")
    project = Project.from_directory(str(tmp_path / "src"), str(tmp_path))
    assert project.files("tests") == ("tests/pipelines/foo/test_foo.py",)
    assert project.files("diffusers/pipelines/") == ("diffusers/pipelines/a.py",)
    assert project.files("nothing/here") == ()
    mapping = Project.from_mapping({"tests/a/b.py": "", "tests2/c.py": "", "diffusers/x.py": ""})
    assert mapping.files("tests") == ("tests/a/b.py",)
    assert Project(lambda path: None).files("tests") == ()


def test_project_memo_builds_once():
    project = Project.from_mapping({})
    calls = []
    for _ in range(3):
        assert project.memo("k", lambda: calls.append(1) or 42) == 42
    assert calls == [1]
