"""DRB013: an inherited contract test (from `PipelineTesterMixin` and friends) skipped for a defect the reason admits."""

from __future__ import annotations

import re

import libcst as cst

from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.matchers import string_value
from analyzers.testfiles import (
    SKIP_DECORATORS,
    XFAIL_DECORATORS,
    body_comments,
    decorator_name,
    definitions_of_tests,
    inherited_tests,
    leading_comments,
    placeholder_reason,
    skip_reason,
    unconditional_xfail_reason,
)


#: words with which a skip admits that the path is broken or unfinished (not that it does not apply)
ADMITS_DEFECT = re.compile(
    r"\b(TODO|FIXME|XXX|fix(ed)? (it )?later|needs? to (be )?fix(ed)?|not (yet )?implemented|is raised|raises?|"
    r"fails?|failing|broken|bugs?|flaky|does ?n[o']t work|not working|revisit|investigate|debug)\b",
    re.I,
)
#: a body comment admits a defect only with a to-do: explanations there often describe the test helper
ADMITS_IN_COMMENT = re.compile(r"\b(TODO|FIXME|XXX|fix(ed)? (it )?later|needs? to (be )?fix(ed)?)\b")
#: reasons that blame the tiny fast-test components, or a kernel torch lacks, not the code under test
TEST_HARNESS = re.compile(r"\b(vocab|dummy|tiny|small (model|config)|fast tests?)\b|not implemented for '", re.I)
#: an expected failure whose reason says the contract does not apply, rather than that the code under test fails it
NOT_APPLICABLE = re.compile(
    r"\b(not (yet )?(supported|applicable)|unsupported|does ?n[o']t (apply|support)|n/a)\b", re.I
)
#: a reason that names a tracking issue or pull request is tracked, and that is all this rule asks for
TRACKED = re.compile(r"(#\d{3,}|github\.com/[^ ]+/(issues|pull)/\d+)")


class ContractTestSkippedForDefect(Rule):
    """
    ## What it does
    Checks test classes for an unconditional skip (`@unittest.skip`, `@pytest.mark.skip`) of a test they
    inherit from a shared tester mixin (`PipelineTesterMixin.test_sequential_cpu_offload_forward_pass`,
    `test_inference_batch_single_identical`, `test_save_load_local`, …) when the skip reason or the comments
    in the overriding body admit a defect: "TODO … need to fix later", "not yet implemented", "Key error is
    raised with accelerate", "failing", "broken". An override marked `@pytest.mark.xfail` everywhere (no
    condition, or `True`) admits the defect by itself: the test is expected to fail.

    ## Why is this bad?
    The shared tester mixins are diffusers' contract for every pipeline: batching, offload, saving and
    loading, precision. Skipping one because the pipeline fails it hides a known bug in exactly the path
    users run, and nothing tracks it. Meta issue #13656 (pattern 10) names these: "passing TODO stubs in
    hunyuandit, skipped offload/batch paths in shap_e, and non-meaningful decode coverage in allegro".

    ## Example
    ```python
    class ShapEPipelineFastTests(PipelineTesterMixin, unittest.TestCase):
        @unittest.skip("Key error is raised with accelerate")
        def test_sequential_cpu_offload_forward_pass(self):
            pass
    ```

    Use instead: fix the offload path and delete the override, or keep the skip and name the tracking issue:
    ```python
    class ShapEPipelineFastTests(PipelineTesterMixin, unittest.TestCase):
        @unittest.skip("Sequential offload raises KeyError in accelerate hooks, see #12345")
        def test_sequential_cpu_offload_forward_pass(self):
            pass
    ```

    ## Known problems
    Only tests found in a base class through the project view count, so the rule needs the repository's
    `tests/` (a checkout, or a PR review). A skip that says the feature does not apply ("Not supported",
    "has to run in mixed precision") is not reported, and neither is one that blames the tiny fast-test
    components ("A very small vocab size is used for fast tests") or a kernel torch lacks ("not implemented for
    'Float8_e4m3fn'"). Comments in the body count only with a to-do ("TODO … need to fix later"): explanations
    there often describe the shared test's helper, not the code under test. A reason that is a bare TODO is
    DRB011's. An `xfail` with a condition (a device, a library version) is an environment check and is not
    looked at; one whose reason says the contract does not apply ("not supported") is not reported either.

    ## References
    - huggingface/diffusers#13656, pattern 10
    - tests/pipelines/shap_e/test_shap_e.py, tests/pipelines/hunyuandit/test_hunyuan_dit.py,
      tests/pipelines/allegro/test_allegro.py
    """

    code = "DRB013"
    pattern = 10
    severity = "note"
    message = (
        "`{test}` skips the shared `{base}.{test}` contract with a reason that admits a defect ({why}); fix the "
        "code under test and drop the skip, or name the tracking issue in the reason."
    )
    message_xfail = (
        "`{test}` marks the shared `{base}.{test}` contract as an expected failure everywhere ({why}); fix the code "
        "under test and drop the marker, or name the tracking issue in the reason."
    )
    REQUIRES_ANY = ("skip", "xfail")
    PATHS = ("/tests/",)

    _MIXIN = """
        class PipelineTesterMixin:
            def test_sequential_cpu_offload_forward_pass(self):
                run_offloaded(self)

            def test_save_load_local(self):
                save_and_load(self)

            def test_inference_batch_single_identical(self):
                compare_batches(self)
        """
    FILES = {"tests/pipelines/test_pipelines_common.py": _MIXIN}

    VALID = [
        # the skip says the feature does not apply
        Valid(
            """
            from ..test_pipelines_common import PipelineTesterMixin

            class StableCascadeCombinedPipelineFastTests(PipelineTesterMixin, unittest.TestCase):
                @unittest.skip("Not supported.")
                def test_sequential_cpu_offload_forward_pass(self):
                    pass
            """,
            path="tests/pipelines/stable_cascade/test_stable_cascade_combined.py",
            files=FILES,
        ),
        # blames the tiny fast-test tokenizer, not the pipeline
        Valid(
            """
            from ..test_pipelines_common import PipelineTesterMixin

            class SanaPipelineFastTests(PipelineTesterMixin, unittest.TestCase):
                @unittest.skip(
                    "A very small vocab size is used for fast tests. So, any kind of prompt other than the empty "
                    "default used in other tests will lead to a embedding lookup error."
                )
                def test_inference_batch_single_identical(self):
                    pass
            """,
            path="tests/pipelines/sana/test_sana.py",
            files=FILES,
        ),
        # a test of its own, not an inherited contract
        Valid(
            """
            from ..test_pipelines_common import PipelineTesterMixin

            class SanaVideoPipelineIntegrationTests(unittest.TestCase):
                @unittest.skip("TODO: test needs to be implemented")
                def test_sana_video_480p(self):
                    pass
            """,
            path="tests/pipelines/sana_video/test_sana_video.py",
            files=FILES,
        ),
        # tracked: the reason names the issue
        Valid(
            """
            from ..test_pipelines_common import PipelineTesterMixin

            class ShapEPipelineFastTests(PipelineTesterMixin, unittest.TestCase):
                @unittest.skip("KeyError is raised with accelerate, see #10234")
                def test_sequential_cpu_offload_forward_pass(self):
                    pass
            """,
            path="tests/pipelines/shap_e/test_shap_e.py",
            files=FILES,
        ),
        # conditional skips are environment checks
        Valid(
            """
            from ..test_pipelines_common import PipelineTesterMixin

            class FooPipelineFastTests(PipelineTesterMixin, unittest.TestCase):
                @unittest.skipIf(torch_device == "mps", "fails on mps")
                def test_save_load_local(self):
                    super().test_save_load_local()
            """,
            path="tests/pipelines/foo/test_foo.py",
            files=FILES,
        ),
        # the body explains that the shared test's helper cannot compare this output: a harness gap
        Valid(
            """
            from ..test_pipelines_common import PipelineTesterMixin

            class TestCosmosControlNetModel(PipelineTesterMixin):
                # the helpers call .flatten() on the output (a list of tensors), so they raise AttributeError
                @pytest.mark.skip("Output is a list of tensors; comparison helper calls .flatten() on it.")
                def test_save_load_local(self):
                    super().test_save_load_local()
            """,
            path="tests/models/controlnets/test_models_controlnet_cosmos.py",
            files=FILES,
        ),
        # a kernel torch lacks for a dtype
        Valid(
            """
            from ..test_pipelines_common import PipelineTesterMixin

            class TestAutoencoderKLWanMemory(PipelineTesterMixin):
                @pytest.mark.skip("RuntimeError: fill_out not implemented for 'Float8_e4m3fn'")
                def test_save_load_local(self):
                    pass
            """,
            path="tests/models/autoencoders/test_models_autoencoder_wan.py",
            files=FILES,
        ),
        # an expected failure on one device or library version is an environment check
        Valid(
            """
            from ..test_pipelines_common import PipelineTesterMixin
            class FooPipelineFastTests(PipelineTesterMixin, unittest.TestCase):
                @pytest.mark.xfail(condition=is_torch_version(">=", "9.9"), reason="Fails on torch 9.9.", strict=False)
                def test_save_load_local(self):
                    super().test_save_load_local()

                @pytest.mark.xfail(True, reason="Offload is not supported by this pipeline.")
                def test_sequential_cpu_offload_forward_pass(self):
                    super().test_sequential_cpu_offload_forward_pass()

                @pytest.mark.xfail(condition=True, reason="Tracked in #40404.", strict=True)
                def test_inference_batch_single_identical(self):
                    super().test_inference_batch_single_identical()
            """,
            path="tests/pipelines/foo/test_foo.py",
            files=FILES,
        ),
        # on CUDA, but with a second condition, or a reason that admits nothing
        Valid(
            """
            from ..test_pipelines_common import PipelineTesterMixin
            class FooPipelineFastTests(PipelineTesterMixin, unittest.TestCase):
                @pytest.mark.xfail(condition=torch_device == "cuda" and is_dist_enabled, reason="Fails with dist.")
                def test_save_load_local(self):
                    super().test_save_load_local()

                @pytest.mark.xfail(condition=torch_device == "cuda", reason="Nondeterministic kernels on CUDA.")
                def test_inference_batch_single_identical(self):
                    super().test_inference_batch_single_identical()
            """,
            path="tests/pipelines/foo/test_foo.py",
            files=FILES,
        ),
        # a bare TODO reason is DRB011's finding, not this one's
        Valid(
            """
            from ..test_pipelines_common import PipelineTesterMixin

            class Kandinsky5I2VPipelineFastTests(PipelineTesterMixin, unittest.TestCase):
                @unittest.skip("TODO: revisit")
                def test_inference_batch_single_identical(self):
                    pass
            """,
            path="tests/pipelines/kandinsky5/test_kandinsky5_i2v.py",
            files=FILES,
        ),
    ]
    INVALID = [
        Invalid(
            """
            from ..test_pipelines_common import PipelineTesterMixin

            class ShapEPipelineFastTests(PipelineTesterMixin, unittest.TestCase):
                @unittest.skip("Key error is raised with accelerate")
                def test_sequential_cpu_offload_forward_pass(self):
                    pass
            """,
            path="tests/pipelines/shap_e/test_shap_e.py",
            files=FILES,
            message=(
                "`test_sequential_cpu_offload_forward_pass` skips the shared "
                "`PipelineTesterMixin.test_sequential_cpu_offload_forward_pass` contract with a reason that admits "
                'a defect ("Key error is raised with accelerate"); fix the code under test and drop the skip, or name the '
                "tracking issue in the reason."
            ),
        ),
        # the reason says "does not support", the body admits it is a bug to fix
        Invalid(
            """
            from ..test_pipelines_common import PipelineTesterMixin

            class HunyuanDiTPipelineFastTests(PipelineTesterMixin, unittest.TestCase):
                @unittest.skip("The HunyuanDiT Attention pooling layer does not support sequential CPU offloading.")
                def test_sequential_cpu_offload_forward_pass(self):
                    # TODO(YiYi) need to fix later
                    pass
            """,
            path="tests/pipelines/hunyuandit/test_hunyuan_dit.py",
            files=FILES,
        ),
        # an expected failure everywhere admits that the code under test fails the contract
        Invalid(
            """
            from ..test_pipelines_common import PipelineTesterMixin
            class BazPipelineFastTests(PipelineTesterMixin, unittest.TestCase):
                @pytest.mark.xfail(True, reason="Batched prompts need to be revisited.", strict=True)
                def test_inference_batch_single_identical(self):
                    super().test_inference_batch_single_identical()
            """,
            path="tests/pipelines/baz/test_baz.py",
            files=FILES,
            message=(
                "`test_inference_batch_single_identical` marks the shared "
                "`PipelineTesterMixin.test_inference_batch_single_identical` contract as an expected failure "
                'everywhere ("Batched prompts need to be revisited."); fix the code under test and drop the marker, '
                "or name the tracking issue in the reason."
            ),
        ),
        Invalid(
            """
            from ..test_pipelines_common import PipelineTesterMixin
            class BazPipelineFastTests(PipelineTesterMixin, unittest.TestCase):
                @pytest.mark.xfail(condition=True, reason="Device mismatch after offload.")
                def test_sequential_cpu_offload_forward_pass(self):
                    super().test_sequential_cpu_offload_forward_pass()
            """,
            path="tests/pipelines/baz/test_baz.py",
            files=FILES,
        ),
        # an expected failure on CUDA, where the offload contract runs, admitting that the test fails
        Invalid(
            """
            from ..test_pipelines_common import PipelineTesterMixin
            class QuxModelTests(PipelineTesterMixin, unittest.TestCase):
                @pytest.mark.xfail(condition=torch.device(torch_device).type == "cuda", reason="Test currently fails.")
                def test_sequential_cpu_offload_forward_pass(self):
                    return super().test_sequential_cpu_offload_forward_pass()
            """,
            path="tests/pipelines/qux/test_qux.py",
            files=FILES,
        ),
        # inherited through an intermediate base, with pytest's marker
        Invalid(
            """
            from ..test_pipelines_common import PipelineTesterMixin

            class AllegroTesterBase(PipelineTesterMixin):
                pass

            class AllegroPipelineFastTests(AllegroTesterBase):
                @pytest.mark.skip(reason="Decoding without tiling is not yet implemented")
                def test_save_load_local(self):
                    pass
            """,
            path="tests/pipelines/allegro/test_allegro.py",
            files=FILES,
        ),
    ]

    def check(self) -> None:
        inherited_by_class: dict[str, dict[str, str]] = {}
        for definition in definitions_of_tests(self.context):
            parent = definition.parent
            if parent is None or not parent.is_class:
                continue
            function = cst.ensure_type(definition.node, cst.FunctionDef)
            for decorator in function.decorators:
                xfail = unconditional_xfail_reason(decorator)
                on_cuda = _cuda_only_xfail_reason(decorator) if xfail is None else None
                if on_cuda is not None and ADMITS_DEFECT.search(on_cuda):
                    xfail = on_cuda  # CUDA is where the contract runs: an expected failure there is one everywhere
                if xfail is not None:
                    # an expected failure admits that the code under test fails the contract, unless it is tracked,
                    # blames the test harness, or says the contract does not apply
                    reason = xfail
                    if TRACKED.search(reason) or TEST_HARNESS.search(reason) or NOT_APPLICABLE.search(reason):
                        continue
                elif decorator_name(decorator) not in SKIP_DECORATORS or not isinstance(decorator.decorator, cst.Call):
                    continue
                else:
                    reason = skip_reason(decorator.decorator) or ""
                    if placeholder_reason(reason) or TRACKED.search(reason) or TEST_HARNESS.search(reason):
                        continue
                    comments = body_comments(self.context, function) + "\n" + leading_comments(function)
                    if not (ADMITS_DEFECT.search(reason) or ADMITS_IN_COMMENT.search(comments)):
                        continue
                if parent.qualname not in inherited_by_class:
                    inherited_by_class[parent.qualname] = inherited_tests(
                        self.context, cst.ensure_type(parent.node, cst.ClassDef)
                    )
                base = inherited_by_class[parent.qualname].get(definition.name)
                if base is None:
                    continue
                if xfail is not None:
                    why = f'"{_clip(reason)}"' if reason else "no reason given"
                elif ADMITS_DEFECT.search(reason):
                    why = f'"{_clip(reason)}"'
                else:
                    why = f'"{_clip(reason)}", body: {_first_admitting(comments)}'
                self.report(
                    decorator,
                    (self.message if xfail is None else self.message_xfail).format(
                        test=definition.name, base=base, why=why
                    ),
                    symbol=definition.name,
                    scope=definition.qualname,
                )
                break


def _cuda_only_xfail_reason(decorator: cst.Decorator) -> str | None:
    """The reason of an `@pytest.mark.xfail` whose only condition is that the test runs on CUDA
    (`condition=torch.device(torch_device).type == "cuda"`, `torch_device == "cuda"`); None otherwise."""
    if decorator_name(decorator) not in XFAIL_DECORATORS or not isinstance(decorator.decorator, cst.Call):
        return None
    reason, on_cuda = "", False
    for position, arg in enumerate(decorator.decorator.args):
        keyword = arg.keyword.value if arg.keyword is not None else None
        if keyword == "reason":
            reason = string_value(arg.value) or reason
        elif keyword == "condition" or (keyword is None and position == 0):
            on_cuda = _is_cuda_check(arg.value)
            if not on_cuda:
                return None
    return reason if on_cuda else None


def _is_cuda_check(node: cst.BaseExpression) -> bool:
    if not isinstance(node, cst.Comparison) or len(node.comparisons) != 1:
        return False
    target = node.comparisons[0]
    if not isinstance(target.operator, cst.Equal) or string_value(target.comparator) != "cuda":
        return False
    left = node.left
    if isinstance(left, cst.Attribute) and left.attr.value == "type":
        left = left.value
        if isinstance(left, cst.Call) and dotted_name(left.func) == "torch.device" and len(left.args) == 1:
            left = left.args[0].value
    return isinstance(left, cst.Name) and left.value == "torch_device"


def _clip(text: str, limit: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _first_admitting(comments: str) -> str:
    for line in comments.splitlines():
        if ADMITS_IN_COMMENT.search(line):
            return f'"{_clip(line.strip().lstrip("#").strip(), 60)}"'
    return '""'
