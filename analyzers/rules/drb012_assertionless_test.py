"""DRB012: a test that checks nothing: an empty body that silently disables an inherited test, or a pipeline
call with no assertion."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.testfiles import (
    body_comments,
    definitions_of_tests,
    is_skipped,
    leading_comments,
    trivial_body,
)


#: words in a callee's last name that mean it checks something, raises or skips
CHECKING_WORDS = ("assert", "check", "compare", "verify", "expect", "raises", "skip", "fail", "warns", "xfail")
#: `self.<name>(...)` calls that only build inputs; any other `self.` call may hold the assertions
BUILDERS_PREFIXES = ("get_", "pipeline_class", "set_", "_get_")
#: bare-name calls that check nothing
NEUTRAL_FUNCTIONS = frozenset(
    {
        "len", "range", "enumerate", "list", "dict", "tuple", "set", "str", "int", "float", "bool", "zip",
        "isinstance", "getattr", "setattr", "hasattr", "print", "sorted", "min", "max", "sum", "any", "all",
        "iter", "next", "type", "load_image", "load_numpy", "floats_tensor", "randn_tensor", "backend_empty_cache",
        "enable_full_determinism", "torch_device",
    }
)  # fmt: skip


def _is_pipeline_factory(expression: cst.BaseExpression) -> bool:
    """`self.pipeline_class(**c)`, `FooPipeline(**c)`, `FooPipeline.from_pretrained(...)`, `self.get_pipeline()`,
    and `.to(device)` of those."""
    while isinstance(expression, cst.Call):
        name = dotted_name(expression.func) or ""
        if not name and isinstance(expression.func, cst.Attribute):
            name = expression.func.attr.value  # `self.get_pipeline().to(device)`
        last = name.rpartition(".")[2]
        if name in ("self.pipeline_class", "self.get_pipeline") or ("Pipeline" in last and last[:1].isupper()):
            return True
        if last in ("from_pretrained", "from_pipe", "from_single_file"):
            owner = name.rpartition(".")[0]
            return owner == "self.pipeline_class" or "Pipeline" in owner.rpartition(".")[2]
        if last == "to" and isinstance(expression.func, cst.Attribute):
            expression = expression.func.value
            continue
        return False
    return False


class AssertionlessTest(Rule):
    """
    ## What it does
    Checks for test functions that check nothing: a body of only `pass`/`...`/`return` with no skip
    decorator and no comment saying why, or a body that runs a pipeline and never asserts anything
    (no `assert`, no `self.assert*`, no `np.testing`/`torch.testing`, no `pytest.raises`, no helper
    named `assert*`/`check*`/`_test_*`).

    ## Why is this bad?
    The test reports as passed while it tests nothing. An empty override of an inherited mixin test
    silently turns off that check (offload, saving, batching) for the pipeline without the "skipped"
    that would show it in the test report; a pipeline call without an assertion only proves that no
    exception was raised. Meta issue #13656 (pattern 10) names dummy-only and placeholder tests among the
    reasons bugs survive.

    ## Example
    ```python
    class AceStepPipelineFastTests(PipelineTesterMixin, unittest.TestCase):
        def test_num_images_per_prompt(self):
            pass
    ```

    Use instead:
    ```python
    class AceStepPipelineFastTests(PipelineTesterMixin, unittest.TestCase):
        @unittest.skip("AceStep generates audio; `num_images_per_prompt` does not apply.")
        def test_num_images_per_prompt(self):
            pass
    ```

    ## Known problems
    An empty override whose body carries a comment or docstring (other than a TODO, which DRB011 reports)
    is taken as a documented, deliberate disablement and is not reported. A test that calls any
    `self.` helper other than `get_*`/`set_*`, calls `super()`, a function not known to be neutral, or
    raises, is assumed to check something. Tests decorated with a skip or `xfail` are left to DRB011.

    ## References
    - huggingface/diffusers#13656, pattern 10
    """

    code = "DRB012"
    pattern = 10
    severity = "note"
    message_empty = (
        "`{test}` has an empty body, so it passes without testing anything; decorate it with "
        "`@unittest.skip(reason)` saying why it does not apply, or test the behaviour."
    )
    message_no_assert = (
        "`{test}` runs the pipeline but asserts nothing about its output; check the output's shape or values."
    )
    REQUIRES_ANY = ("def test",)
    PATHS = ("/tests/",)

    VALID = [
        Valid(
            """
            class MyPipelineFastTests(PipelineTesterMixin, unittest.TestCase):
                @unittest.skip("Not supported.")
                def test_sequential_cpu_offload_forward_pass(self):
                    pass

                def test_attention_slicing_forward_pass(self):
                    # Attention slicing needs to be implemented differently for single and dual DiT blocks.
                    return
            """,
            path="tests/pipelines/example/test_example.py",
        ),
        Valid(
            """
            class MyPipelineFastTests(PipelineTesterMixin, unittest.TestCase):
                def test_inference(self):
                    pipe = self.pipeline_class(**self.get_dummy_components())
                    image = pipe(**self.get_dummy_inputs("cpu")).images
                    self.assertEqual(image.shape, (1, 8, 8, 3))

                def test_rejects_bad_input(self):
                    pipe = self.get_pipeline()
                    with pytest.raises(ValueError):
                        pipe(prompt=None)

                def test_batch(self):
                    pipe = self.pipeline_class(**self.get_dummy_components())
                    output = pipe(**self.get_dummy_inputs("cpu"))
                    self._compare_outputs(output)

                def test_float16(self):
                    super().test_float16()
            """,
            path="tests/pipelines/example/test_example.py",
        ),
        Valid(
            """
            class MyPipelineFastTests(unittest.TestCase):
                def test_sequential_cpu_offload_forward_pass(self):
                    # TODO(YiYi) need to fix later
                    pass
            """,
            path="tests/pipelines/example/test_example.py",
        ),
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def test_mode(self):
                    pass
            """,
        ),
    ]
    INVALID = [
        Invalid(
            """
            class AceStepPipelineFastTests(PipelineTesterMixin, unittest.TestCase):
                def test_num_images_per_prompt(self):
                    pass
            """,
            path="tests/pipelines/ace_step/test_ace_step.py",
            message=(
                "`test_num_images_per_prompt` has an empty body, so it passes without testing anything; decorate "
                "it with `@unittest.skip(reason)` saying why it does not apply, or test the behaviour."
            ),
        ),
        Invalid(
            """
            class AnimateDiffPipelineFastTests(PipelineTesterMixin, unittest.TestCase):
                def test_prompt_embeds(self):
                    components = self.get_dummy_components()
                    pipe = self.pipeline_class(**components)
                    pipe.to(torch_device)
                    inputs = self.get_dummy_inputs(torch_device)
                    inputs["prompt_embeds"] = torch.randn((1, 4, 32), device=torch_device)
                    pipe(**inputs)
            """,
            path="tests/pipelines/animatediff/test_animatediff.py",
            message="`test_prompt_embeds` runs the pipeline but asserts nothing about its output; check the output's shape or values.",
        ),
    ]

    def check(self) -> None:
        for definition in definitions_of_tests(self.context):
            if definition.parent is None or not definition.parent.is_class:
                continue  # empty module-level test functions are rare and often fixtures' hooks
            function = cst.ensure_type(definition.node, cst.FunctionDef)
            if is_skipped(function):
                continue
            name, scope = definition.name, definition.qualname
            if trivial_body(function):
                comments = body_comments(self.context, function) + leading_comments(function)
                if not comments.strip():  # a comment or docstring documents it; a TODO one is DRB011
                    self.report(function.name, self.message_empty.format(test=name), symbol=name, scope=scope)
                continue
            call = self._unchecked_pipeline_call(function)
            if call is not None:
                self.report(call, self.message_no_assert.format(test=name), symbol=name, scope=scope)

    @staticmethod
    def _unchecked_pipeline_call(function: cst.FunctionDef) -> cst.Call | None:
        """The first pipeline call of a test that checks nothing, else None."""
        groups = walk.index(function.body)
        if groups.get(cst.Assert) or groups.get(cst.Raise) or groups.get(cst.FunctionDef) or groups.get(cst.Lambda):
            return None
        pipes: set[str] = set()
        for assign in walk.nodes(function.body, cst.Assign):
            if _is_pipeline_factory(assign.value):
                for target in assign.targets:
                    if isinstance(target.target, cst.Name):
                        pipes.add(target.target.value)
        for annotated in walk.nodes(function.body, cst.AnnAssign):
            value = annotated.value
            if value is not None and _is_pipeline_factory(value) and isinstance(annotated.target, cst.Name):
                pipes.add(annotated.target.value)
        if not pipes:
            return None
        first: cst.Call | None = None
        for call in walk.nodes(function.body, cst.Call):
            name = dotted_name(call.func)
            if name is None:
                if isinstance(call.func, cst.Attribute):
                    name = "<call>." + call.func.attr.value  # `x().y()`: judge by `y`
                else:
                    continue
            last = name.rpartition(".")[2].lower()
            if any(word in last for word in CHECKING_WORDS) or "testing" in name or last.startswith(("_test", "test")):
                return None
            if name == "super" or name.startswith("super"):
                return None
            if name.startswith("self.") and not name[5:].startswith(BUILDERS_PREFIXES) and "." not in name[5:]:
                return None
            if "." not in name and name not in pipes and name not in NEUTRAL_FUNCTIONS and not name[:1].isupper():
                return None  # a helper of the test module may assert
            if name in pipes and first is None:
                first = call
        return first
