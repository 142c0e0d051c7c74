"""DRB011: a test disabled with a TODO for a reason: `@unittest.skip("TODO ...")`, or a `pass` body under a TODO."""

from __future__ import annotations

import re

import libcst as cst

from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.testfiles import (
    SKIP_DECORATORS,
    TODO_RE,
    body_comments,
    decorator_name,
    definitions_of_tests,
    is_skipped,
    leading_comments,
    placeholder_reason,
    skip_reason,
    trivial_body,
)


#: a skip that waits for CI hardware: "the current CI hardware", "move to a beefier GPU / dedicated runner" (not a
#: flaky network test waiting for "new runners": no marker gates that)
DEFERRED_TO_CI = re.compile(
    r"\bCI (hardware|runners?|machines?|GPUs?)\b|\b(dedicated|beefier|bigger|larger) (GPU )?(runners?|GPUs?|machines?)\b",
    re.I,
)


class TodoSkippedTest(Rule):
    """
    ## What it does
    Checks for tests skipped with a bare TODO as their reason (`@unittest.skip("TODO: revisit")`,
    `pytest.mark.skip(reason="TODO")`, `self.skipTest("TODO")`: a TODO and at most six words that
    explain nothing), and for tests that no decorator skips whose body is only `pass` under a `# TODO`
    comment (inside the body or on the lines right above the `def`): those report as passed.

    ## Why is this bad?
    A TODO skip is a known hole in coverage with no owner and no tracking issue; it stays forever and
    the path it covered (offload, batching, saving) regresses unseen. Meta issue #13656 (pattern 10)
    names skipped and placeholder tests among the reasons bugs survive in the paths users run. A
    `pass` body is worse: the test reports as passed.

    ## Example
    ```python
    class HunyuanDiTPipelineFastTests(PipelineTesterMixin, unittest.TestCase):
        def test_sequential_cpu_offload_forward_pass(self):
            # TODO(YiYi) need to fix later
            pass
    ```

    Use instead:
    ```python
    class HunyuanDiTPipelineFastTests(PipelineTesterMixin, unittest.TestCase):
        @unittest.skip("MultiheadAttention weights bypass offload hooks, see #NNNN")
        def test_sequential_cpu_offload_forward_pass(self):
            pass
    ```

    ## Known problems
    A skip whose reason states a limitation ("Decoding without tiling is not yet implemented", "TODO:
    not supported for now because needs to be adjusted to work with guiders") is not reported, even
    with a `# TODO` comment next to it: it documents the gap. "Explains nothing" is a heuristic (word
    count and words such as "because", "requires", "not supported"). Conditional skips (`skipIf`,
    `skipUnless`) are not looked at.

    ## References
    - huggingface/diffusers#13656, pattern 10
    - tests/pipelines/hunyuandit/test_hunyuan_dit.py (`# TODO(YiYi) need to fix later` + `pass`)
    """

    code = "DRB011"
    pattern = 10
    severity = "note"
    message = (
        "`{test}` is skipped under a TODO; fix the test, or skip it with a reason that names the limitation "
        "and a tracking issue."
    )
    message_pass = (
        "`{test}` is disabled by a `pass` body under a TODO comment; fix the test, or skip it with a reason "
        "that names the limitation and a tracking issue."
    )
    message_ci = (
        "`{test}` is skipped everywhere until the CI infrastructure changes ({why}), so its path has no coverage; "
        "gate it on a runner marker (`@require_big_accelerator`) instead of an unconditional skip."
    )
    REQUIRES_ANY = ("TODO", "FIXME", "XXX", "CI ", "runner", "GPU")
    PATHS = ("/tests/",)

    VALID = [
        Valid(
            """
            class AllegroPipelineFastTests(unittest.TestCase):
                @unittest.skip("Decoding without tiling is not yet implemented")
                def test_save_load_local(self):
                    pass
            """,
            path="tests/pipelines/allegro/test_allegro.py",
        ),
        Valid(
            """
            class MyPipelineFastTests(unittest.TestCase):
                def test_inference(self):
                    # TODO: make the slice tighter
                    image = pipe(prompt).images
                    assert image.shape == (1, 8, 8, 3)
            """,
            path="tests/pipelines/example/test_example.py",
        ),
        Valid(
            """
            class MyPipelineFastTests(unittest.TestCase):
                @unittest.skipIf(torch_device != "cuda", "TODO: only on CUDA for now")
                def test_float16_inference(self):
                    super().test_float16_inference()
            """,
            path="tests/pipelines/example/test_example.py",
        ),
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                @unittest.skip("TODO")
                def test_x(self):
                    pass
            """,
        ),
        # a skip that explains itself documents a known limitation, whatever TODO sits nearby
        Valid(
            """
            class HunyuanDiTPipelineFastTests(unittest.TestCase):
                @unittest.skip("The HunyuanDiT Attention pooling layer does not support sequential CPU offloading.")
                def test_sequential_cpu_offload_forward_pass(self):
                    # TODO(YiYi) need to fix later
                    pass
            """,
            path="tests/pipelines/hunyuandit/test_hunyuan_dit.py",
        ),
        Valid(
            """
            class AllegroPipelineFastTests(unittest.TestCase):
                # TODO(aryan)
                @unittest.skip("Decoding without tiling is not yet implemented.")
                def test_vae_tiling(self):
                    pipe = self.pipeline_class(**self.get_dummy_components())
                    self.assertLess(run(pipe), 0.2)
            """,
            path="tests/pipelines/allegro/test_allegro.py",
        ),
        Valid(
            """
            class HunyuanImagePipelineFastTests(unittest.TestCase):
                @unittest.skip("TODO: Test not supported for now because needs to be adjusted to work with guiders")
                def test_encode_prompt_works_in_isolation(self):
                    pass
            """,
            path="tests/pipelines/hunyuan_image_21/test_hunyuanimage.py",
        ),
        # gated on the runner that has the hardware, not skipped
        Valid(
            """
            @slow
            @require_big_accelerator
            class FooPipelineSlowTests(unittest.TestCase):
                def test_foo_inference(self):
                    run()

            class FooPipelineFastTests(unittest.TestCase):
                @unittest.skip("Difference between FP16 and FP32 too large on CI")
                def test_float16(self):
                    run()

                @unittest.skip("Flaky behaviour on CI. Re-enable after migrating to new runners")
                def test_one_request_upon_cached(self):
                    run()

                # a big GPU would help here, but nothing is skipped for it
                @unittest.skip("Not supported by this pipeline.")
                def test_offload(self):
                    run()
            """,
            path="tests/pipelines/foo/test_pipeline_foo.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            class Kandinsky5T2VPipelineFastTests(unittest.TestCase):
                @unittest.skip("TODO: revisit")
                def test_inference_batch_single_identical(self):
                    pass
            """,
            path="tests/pipelines/kandinsky5/test_kandinsky5.py",
            message=(
                "`test_inference_batch_single_identical` is skipped under a TODO; fix the test, or skip it with a reason that names the limitation and a tracking issue."
            ),
        ),
        Invalid(
            """
            class MyPipelineFastTests(unittest.TestCase):
                def test_callback_cfg(self):
                    self.skipTest("TODO: callbacks not wired yet")
            """,
            path="tests/pipelines/example/test_example.py",
            message=(
                "`test_callback_cfg` is skipped under a TODO; fix the test, or skip it with a reason that names the limitation and a tracking issue."
            ),
        ),
        Invalid(
            """
            class ControlNetPipelineSDXLFastTests(unittest.TestCase):
                # TODO(Patrick, Sayak) - skip for now as this requires more refiner tests
                def test_save_load_optional_components(self):
                    pass
            """,
            path="tests/pipelines/controlnet/test_controlnet_inpaint_sdxl.py",
            message=(
                "`test_save_load_optional_components` is disabled by a `pass` body under a TODO comment; fix the "
                "test, or skip it with a reason that names the limitation and a tracking issue."
            ),
        ),
        # a real-checkpoint test switched off until CI gets bigger GPUs
        Invalid(
            """
            @slow
            class FooPipelineSlowTests(unittest.TestCase):
                # TODO: move large model tests to a dedicated runner
                @unittest.skip("We cannot run this model's inference on the current CI hardware")
                def test_foo_inference(self):
                    run()
            """,
            path="tests/pipelines/foo/test_pipeline_foo.py",
            message=(
                '`test_foo_inference` is skipped everywhere until the CI infrastructure changes ("We cannot run '
                "this model's inference on the current CI hardware\"), so its path has no coverage; gate it on a "
                "runner marker (`@require_big_accelerator`) instead of an unconditional skip."
            ),
        ),
        # a whole integration class, the reason says nothing but the TODO under the decorator does
        Invalid(
            """
            @unittest.skip("Too slow for now")
            # TODO: move these tests to a beefier GPU
            class FooLoRAIntegrationTests(unittest.TestCase):
                def test_lora(self):
                    run()
            """,
            path="tests/lora/test_lora_layers_foo.py",
        ),
        Invalid(
            """
            @pytest.mark.skip(reason="TODO")
            def test_module_level():
                run()
            """,
            path="tests/others/test_example.py",
        ),
    ]

    def check(self) -> None:
        deferred = self._deferred_to_ci()
        for definition in definitions_of_tests(self.context):
            function = cst.ensure_type(definition.node, cst.FunctionDef)
            name, scope = definition.name, definition.qualname
            reported = scope in deferred
            for decorator in function.decorators:
                if decorator_name(decorator) in SKIP_DECORATORS and isinstance(decorator.decorator, cst.Call):
                    reason = skip_reason(decorator.decorator)
                    # only a reason that is itself a bare TODO: a skip that explains itself, with or without a
                    # `# TODO` nearby, documents a known limitation
                    if reason is not None and placeholder_reason(reason):
                        self.report(decorator, self.message.format(test=name), symbol=name, scope=scope)
                        reported = True
            if reported:
                continue
            first = self._first_statement(function)
            if isinstance(first, cst.Call) and (dotted_name(first.func) or "").endswith(("skipTest", "pytest.skip")):
                reason = skip_reason(first)
                if reason is not None and placeholder_reason(reason):
                    self.report(first, self.message.format(test=name), symbol=name, scope=scope)
                    continue
            # an emptied body under a TODO passes silently, unless a skip decorator already says why
            if (
                not is_skipped(function)
                and trivial_body(function)
                and TODO_RE.search(body_comments(self.context, function) + "\n" + leading_comments(function))
            ):
                self.report(function.name, self.message_pass.format(test=name), symbol=name, scope=scope)

    def _deferred_to_ci(self) -> set[str]:
        """Report test classes and tests skipped unconditionally until CI has the hardware (the reason says so, or
        a TODO above it does); their qualified names."""
        reported: set[str] = set()
        for definition in self.context.definitions:
            if not (definition.is_class or definition.name.startswith("test")):
                continue
            node = definition.node
            if not isinstance(node, (cst.ClassDef, cst.FunctionDef)):
                continue
            comments = "\n".join(
                line.comment.value
                for line in (*node.leading_lines, *node.lines_after_decorators)
                if line.comment is not None
            )
            todo = TODO_RE.search(comments) and DEFERRED_TO_CI.search(comments)
            for decorator in node.decorators:
                if decorator_name(decorator) not in SKIP_DECORATORS or not isinstance(decorator.decorator, cst.Call):
                    continue
                reason = skip_reason(decorator.decorator) or ""
                if not (DEFERRED_TO_CI.search(reason) or todo):
                    continue
                why = f'"{" ".join(reason.split())}"' if reason else "no reason given"
                self.report(
                    decorator,
                    self.message_ci.format(test=definition.name, why=why),
                    symbol=definition.name,
                    scope=definition.qualname,
                )
                reported.add(definition.qualname)
                break
        return reported

    @staticmethod
    def _first_statement(function: cst.FunctionDef) -> cst.BaseExpression | None:
        body = function.body
        if not isinstance(body, cst.IndentedBlock) or not body.body:
            return None
        statement = body.body[0]
        if isinstance(statement, cst.SimpleStatementLine) and isinstance(statement.body[0], cst.Expr):
            return statement.body[0].value
        return None
