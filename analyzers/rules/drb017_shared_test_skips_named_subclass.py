"""DRB017: a shared tester's test skips itself for one subclass it names (`if self.__class__.__name__ == "X": skip`)."""

from __future__ import annotations

import re

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.testfiles import definitions_of_tests, skip_reason


#: calls that skip the running test
SKIP_CALLS = ("pytest.skip", "self.skipTest", "unittest.SkipTest", "SkipTest")
#: a reason that names a tracking issue or pull request
TRACKED = re.compile(r"(#\d{3,}|github\.com/[^ ]+/(issues|pull)/\d+)")


class SharedTestSkipsNamedSubclass(Rule):
    """
    ## What it does
    Checks the tests of shared tester classes (`ModelTesterMixin`, `PipelineTesterMixin`, …) for a branch
    that compares the running test class's own name with a literal (`self.__class__.__name__ ==
    "AutoencoderKLCosmosTests"`, `type(self).__name__ in (…)`) and skips the test inside it
    (`pytest.skip(…)`, `self.skipTest(…)`).

    ## Why is this bad?
    The shared tests are the contract every model or pipeline must meet. Carving one class out by name
    inside the shared test hides the gap where nobody looks: the subclass's own test file shows no skip, and
    the shared test's reason ("it fails. Needs investigation.") admits a defect in the code under test that
    stays unfixed. Meta issue #13656 (pattern 10) names skipped contract paths among the reasons bugs
    survive; the Cosmos VAE's carve-out from `test_group_offloading_with_disk` hid a `record_stream` bug in
    group offloading that hit every model.

    ## Example
    ```python
    class ModelTesterMixin:
        def test_group_offloading_with_disk(self, offload_type):
            if self.__class__.__name__ == "AutoencoderKLCosmosTests" and offload_type == "leaf_level":
                pytest.skip("With leaf_level offloading it fails. Needs investigation.")
            ...
    ```

    Use instead: fix the code under test; if the model truly cannot run the contract, override the test
    in the model's own test class with a skip that says why (and names the tracking issue), so the gap is
    visible where the model is tested.

    ## Known problems
    Only a comparison of the test class's own name with string literals counts; a skip that depends on an
    attribute the subclass sets (`if not self.model_class._supports_group_offloading`) is the intended way to
    opt out and is not reported. A reason that names a tracking issue is not reported.

    ## References
    - huggingface/diffusers#13656, pattern 10
    - huggingface/diffusers#12721 (the Cosmos carve-out removed with the group-offloading fix)
    """

    code = "DRB017"
    pattern = 10
    severity = "note"
    message = (
        "`{test}` skips itself for `{names}` by class name{why}; the shared contract's gap is hidden from that "
        "class's own tests: fix the code under test, or override the test there with a tracked skip."
    )
    REQUIRES_ANY = ("__name__",)
    PATHS = ("/tests/",)

    VALID = [
        # an opt-out through an attribute the subclass sets
        Valid(
            """
            class ModelTesterMixin:
                def test_group_offloading(self):
                    if not self.model_class._supports_group_offloading:
                        pytest.skip("Model does not support group offloading.")
                    run(self)
            """,
            path="tests/models/test_modeling_common.py",
        ),
        # the class name only shows in the message
        Valid(
            """
            class ModelTesterMixin:
                def test_lora(self):
                    if not issubclass(self.model_class, PeftAdapterMixin):
                        pytest.skip(f"PEFT is not supported for this model ({self.__class__.__name__}).")
            """,
            path="tests/models/test_modeling_common.py",
        ),
        # the name picks a tolerance, nothing is skipped
        Valid(
            """
            class ModelTesterMixin:
                def test_outputs(self):
                    atol = 1e-3 if self.__class__.__name__ == "FooTests" else 1e-5
                    check(self, atol)
            """,
            path="tests/models/test_modeling_common.py",
        ),
        # tracked
        Valid(
            """
            class ModelTesterMixin:
                def test_offload(self):
                    if self.__class__.__name__ == "FooTests":
                        pytest.skip("Fails for Foo, see #12345.")
            """,
            path="tests/models/test_modeling_common.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            class ModelTesterMixin:
                def test_group_offloading_with_disk(self, offload_type):
                    if self.__class__.__name__ == "FooVAETests" and offload_type == "leaf_level":
                        pytest.skip("With leaf_level it fails. Needs investigation.")
                    run(self)
            """,
            path="tests/models/test_modeling_common.py",
            message=(
                '`test_group_offloading_with_disk` skips itself for `FooVAETests` by class name ("With leaf_level '
                "it fails. Needs investigation.\"); the shared contract's gap is hidden from that class's own tests: "
                "fix the code under test, or override the test there with a tracked skip."
            ),
        ),
        # several classes, `type(self)`, unittest spelling
        Invalid(
            """
            class PipelineTesterMixin:
                def test_save_load_local(self):
                    if type(self).__name__ in ("FooPipelineFastTests", "BarPipelineFastTests"):
                        self.skipTest("broken")
                    save_and_load(self)
            """,
            path="tests/pipelines/test_pipelines_common.py",
        ),
    ]

    def check(self) -> None:
        for definition in definitions_of_tests(self.context):
            function = cst.ensure_type(definition.node, cst.FunctionDef)
            for branch in walk.nodes(function, cst.If):
                names = _own_class_names(branch.test)
                if not names:
                    continue
                for call in walk.nodes(branch.body, cst.Call):
                    if (dotted_name(call.func) or "") not in SKIP_CALLS:
                        continue
                    reason = skip_reason(call) or ""
                    if TRACKED.search(reason):
                        continue
                    why = f' ("{" ".join(reason.split())}")' if reason else ""
                    self.report(
                        call,
                        self.message.format(test=definition.name, names="`, `".join(names), why=why),
                        symbol=definition.name,
                        scope=definition.qualname,
                    )
                    break


def _own_class_names(test: cst.BaseExpression) -> list[str]:
    """String literals that `test` compares the running test class's own name with (`==` or `in`)."""
    found: list[str] = []
    for comparison in walk.nodes(test, cst.Comparison):
        operands = [comparison.left, *(t.comparator for t in comparison.comparisons)]
        if not any(_is_own_class_name(o) for o in operands):
            continue
        if not all(isinstance(t.operator, (cst.Equal, cst.In)) for t in comparison.comparisons):
            continue
        for operand in operands:
            for string in walk.nodes(operand, cst.SimpleString):
                value = string.value.strip("\"'")
                if value.isidentifier():
                    found.append(value)
    return found


def _is_own_class_name(node: cst.BaseExpression) -> bool:
    if not isinstance(node, cst.Attribute) or node.attr.value != "__name__":
        return False
    owner = node.value
    if isinstance(owner, cst.Call) and not owner.args[1:]:
        return dotted_name(owner.func) == "type" and bool(owner.args) and dotted_name(owner.args[0].value) == "self"
    return dotted_name(owner) == "self.__class__"
