"""DRB010: a test compares the pipeline's output with an `expected_*` value that is random or a placeholder."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import FileContext, Invalid, Rule, Valid, dotted_name
from analyzers.matchers import string_value


#: calls whose result is random: comparing with it checks nothing
RANDOM_CALLS = frozenset(
    {"torch.randn", "torch.rand", "torch.randint", "torch.randn_like", "torch.rand_like", "torch.randint_like"}
)
RANDOM_PREFIXES = ("numpy.random.", "np.random.", "random.")
#: constant tensors: a placeholder only when the comparison's tolerance is absurd (`<= 1e10`)
CONSTANT_CALLS = frozenset(
    {"torch.zeros", "torch.ones", "torch.empty", "numpy.zeros", "numpy.ones", "np.zeros", "np.ones"}
)
#: a tolerance at least this large accepts any output
ABSURD_TOLERANCE = 1e6


def functions_of_tests(context: FileContext) -> list[tuple[str, cst.FunctionDef]]:
    """(qualname, def) of every `test*` function or method of the file."""
    return [
        (d.qualname, d.node)
        for d in context.definitions
        if isinstance(d.node, cst.FunctionDef) and d.name.startswith("test")
    ]


def _innermost_call(node: cst.BaseExpression) -> cst.Call | None:
    """`torch.randn(...)` of `torch.randn(...).numpy()` / `.to(device)` / `.cpu()`."""
    while isinstance(node, cst.Call):
        func = node.func
        if isinstance(func, cst.Attribute) and isinstance(func.value, cst.Call):
            node = func.value
            continue
        return node
    return None


def _largest_number(function: cst.FunctionDef) -> float:
    largest = 0.0
    numbers: list[cst.Float | cst.Integer] = [
        *walk.nodes(function.body, cst.Float),
        *walk.nodes(function.body, cst.Integer),
    ]
    for number in numbers:
        try:
            largest = max(largest, float(number.value.replace("_", "")))
        except ValueError:
            continue
    return largest


class RandomExpectedOutput(Rule):
    """
    ## What it does
    Checks for tests that build their expected output with a random generator (`torch.randn`,
    `np.random.*`) or as a constant tensor compared with an absurd tolerance (`<= 1e10`), and compare
    the pipeline's output with it. Also checks test classes for attributes set in the class body (component
    kwargs such as `vae_kwargs = {"latents_std": torch.randn(4).tolist(), …}`) with a random draw: it runs
    once at import, before any seed.

    ## Why is this bad?
    The test looks like a numerical regression test but checks nothing: any output passes. Meta issue
    #13656 (pattern 10) lists placeholder-based slow tests among the reasons bugs survive in the paths
    users run; a slow test of a real checkpoint whose expected video is `torch.randn(...)` never caught
    a regression. A random component config makes every run test different numbers, so the test turns flaky
    and gets an `@is_flaky` retry marker instead of a fix (near-zero `latents_std` blew up Wan VACE's LoRA
    tests).

    ## Example
    ```python
    def test_consisid(self):
        video = pipe(image=image, prompt=prompt, generator=generator).frames
        expected_video = torch.randn(1, 16, 480, 720, 3).numpy()
        max_diff = numpy_cosine_similarity_distance(video.cpu(), expected_video)
        assert max_diff < 1e-3
    ```

    Use instead:
    ```python
    def test_consisid(self):
        video = pipe(image=image, prompt=prompt, generator=generator).frames
        video_slice = video[0, 0, -3:, -3:, -1].flatten()
        expected_slice = np.array([0.4414, 0.4297, 0.4297, ...])  # recorded from a reference run
        assert numpy_cosine_similarity_distance(video_slice, expected_slice) < 1e-3
    ```

    ## Known problems
    Only variables named `expected*` are looked at, and only in `test*` functions of files under
    `tests/`. A constant tensor (`torch.zeros`) counts as a placeholder only when the test also holds a
    number of at least `1e6` (the `max_diff <= 1e10` idiom); a literal expected slice of zeros is taken
    at its word. Class attributes count only when the draw is the value itself or a string-keyed entry of a
    dict literal; draws inside methods are left to the seeds the tests set there.

    ## References
    - huggingface/diffusers#13656, pattern 10
    - tests/pipelines/consisid/test_consisid.py and tests/pipelines/mochi/test_mochi.py
      (`expected_video = torch.randn(...)`)
    - huggingface/diffusers#13294 (Wan VACE LoRA tests: random `latents_mean`/`latents_std`, `@is_flaky`)
    """

    code = "DRB010"
    pattern = 10
    severity = "note"
    message = (
        "`{name}` is `{call}(...)`, so comparing the output with it checks nothing; compare with values "
        "recorded from a reference run instead."
    )
    message_config = (
        "`{name}` in `{cls}`'s class body is `{call}(...)`, drawn once at import with no seed, so the test's "
        "components differ on every run (and a retry marker only hides it); use fixed values."
    )
    REQUIRES_ANY = ("expected", "rand")
    PATHS = ("/tests/",)

    VALID = [
        Valid(
            """
            class MyPipelineSlowTests(unittest.TestCase):
                def test_inference(self):
                    video = pipe(prompt).frames[0]
                    expected_slice = np.array([0.1, 0.2, 0.3])
                    assert np.allclose(video[0, -3:, -1], expected_slice, atol=1e-3)
            """,
            path="tests/pipelines/example/test_example.py",
        ),
        Valid(
            """
            class MyPipelineFastTests(unittest.TestCase):
                def test_inference(self):
                    latents = torch.randn(1, 4, 8, 8)
                    expected_shape = (1, 8, 8, 3)
                    image = pipe(latents=latents).images
                    assert image.shape == expected_shape
            """,
            path="tests/pipelines/example/test_example.py",
        ),
        Valid(
            """
            class MyPipelineFastTests(unittest.TestCase):
                def test_inference(self):
                    expected_slice = np.zeros(9)
                    image = pipe(prompt).images
                    assert np.allclose(image[0, -3:, -3:, -1].flatten(), expected_slice, atol=1e-4)
            """,
            path="tests/pipelines/example/test_example.py",
        ),
        Valid(
            """
            def helper():
                expected_video = torch.randn(1, 3, 8, 8)
                return expected_video
            """,
            path="tests/pipelines/example/test_example.py",
        ),
        Valid(
            """
            def test_inference():
                expected_video = torch.randn(1, 3, 8, 8)
                assert expected_video is not None
            """,
            path="diffusers/pipelines/example/pipeline_example.py",
        ),
        # seeded inside a method: deterministic
        Valid(
            """
            import torch

            class FooLoRATests(unittest.TestCase):
                vae_kwargs = {"latents_mean": [0.1, -0.2, 0.3, 0.4], "z_dim": 4}

                def get_dummy_components(self):
                    torch.manual_seed(0)
                    return {"latents_mean": torch.randn(4).tolist()}
            """,
            path="tests/lora/test_lora_layers_foo.py",
        ),
    ]
    INVALID = [
        # a component config drawn at import, under a retry marker
        Invalid(
            """
            import torch

            @is_flaky(max_attempts=10)
            class FooLoRATests(unittest.TestCase):
                vae_kwargs = {
                    "z_dim": 4,
                    "latents_std": torch.randn(4).numpy().tolist(),
                }
            """,
            path="tests/lora/test_lora_layers_foo.py",
            message=(
                "`latents_std` in `FooLoRATests`'s class body is `torch.randn(...)`, drawn once at import with no "
                "seed, so the test's components differ on every run (and a retry marker only hides it); use fixed "
                "values."
            ),
        ),
        Invalid(
            """
            import torch
            from ...testing_utils import numpy_cosine_similarity_distance

            class MochiPipelineIntegrationTests(unittest.TestCase):
                def test_mochi(self):
                    video = pipe(prompt, generator=generator).frames
                    expected_video = torch.randn(1, 19, 480, 848, 3).numpy()
                    max_diff = numpy_cosine_similarity_distance(video.cpu(), expected_video)
                    assert max_diff < 1e-3
            """,
            path="tests/pipelines/mochi/test_mochi.py",
            message=(
                "`expected_video` is `torch.randn(...)`, so comparing the output with it checks nothing; compare "
                "with values recorded from a reference run instead."
            ),
        ),
        Invalid(
            """
            import numpy as np

            class MyPipelineFastTests(unittest.TestCase):
                def test_inference(self):
                    image = pipe(prompt).images
                    expected_slice = np.random.rand(9)
                    assert np.abs(image[0, -3:, -3:, -1].flatten() - expected_slice).max() < 1e-3
            """,
            path="tests/pipelines/example/test_example.py",
            message=(
                "`expected_slice` is `numpy.random.rand(...)`, so comparing the output with it checks nothing; "
                "compare with values recorded from a reference run instead."
            ),
        ),
        Invalid(
            """
            import torch

            class PRXPipelineFastTests(unittest.TestCase):
                def test_inference(self):
                    generated_image = pipe(prompt)[0][0]
                    expected_image = torch.zeros(3, 32, 32)
                    max_diff = np.abs(generated_image - expected_image).max()
                    self.assertLessEqual(max_diff, 1e10)
            """,
            path="tests/pipelines/prx/test_pipeline_prx.py",
            message=(
                "`expected_image` is `torch.zeros(...)`, so comparing the output with it checks nothing; compare "
                "with values recorded from a reference run instead."
            ),
        ),
    ]

    def check(self) -> None:
        self._check_class_configs()
        for qualname, function in functions_of_tests(self.context):
            assigns: list[tuple[str, cst.Assign]] = []  # (`expected*` name, its assignment)
            for a in walk.own_nodes(function, cst.Assign):
                target = a.targets[0].target if len(a.targets) == 1 else None
                if isinstance(target, cst.Name) and target.value.startswith("expected"):
                    assigns.append((target.value, a))
            if not assigns:
                continue
            read = [n.value for n in walk.own_nodes(function, cst.Name)]
            largest = None
            for name, assign in assigns:
                call = _innermost_call(assign.value)
                if call is None or read.count(name) < 2:  # the assignment itself, then a comparison
                    continue
                callee = self.context.qualified_name(call.func) or dotted_name(call.func) or ""
                if callee in RANDOM_CALLS or callee.startswith(RANDOM_PREFIXES):
                    self.report(assign, self.message.format(name=name, call=callee), symbol=name, scope=qualname)
                elif callee in CONSTANT_CALLS:
                    if largest is None:
                        largest = _largest_number(function)
                    if largest >= ABSURD_TOLERANCE:
                        self.report(assign, self.message.format(name=name, call=callee), symbol=name, scope=qualname)

    def _check_class_configs(self) -> None:
        """Class attributes of test classes (component kwargs, configs) drawn at random in the class body."""
        for definition in self.context.classes:
            cls = cst.ensure_type(definition.node, cst.ClassDef)
            if not isinstance(cls.body, cst.IndentedBlock):
                continue
            for statement in cls.body.body:
                if not isinstance(statement, cst.SimpleStatementLine):
                    continue
                for small in statement.body:
                    if isinstance(small, cst.Assign) and len(small.targets) == 1:
                        target, value = small.targets[0].target, small.value
                    elif isinstance(small, cst.AnnAssign) and small.value is not None:
                        target, value = small.target, small.value
                    else:
                        continue
                    if not isinstance(target, cst.Name):
                        continue
                    entries: list[tuple[str, cst.CSTNode, cst.BaseExpression]] = [(target.value, small, value)]
                    if isinstance(value, cst.Dict):
                        entries = [
                            (key, element, element.value)
                            for element in value.elements
                            if isinstance(element, cst.DictElement) and (key := string_value(element.key)) is not None
                        ]
                    for name, node, expression in entries:
                        callee = self._random_callee(expression)
                        if callee:
                            self.report(
                                node,
                                self.message_config.format(name=name, cls=definition.name, call=callee),
                                symbol=name,
                                scope=definition.qualname,
                            )

    def _random_callee(self, expression: cst.BaseExpression) -> str | None:
        call = _innermost_call(expression)
        if call is None:
            return None
        callee = self.context.qualified_name(call.func) or dotted_name(call.func) or ""
        return callee if callee in RANDOM_CALLS or callee.startswith(RANDOM_PREFIXES) else None
