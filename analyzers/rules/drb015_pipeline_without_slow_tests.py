"""DRB015: a public pipeline with fast tests but no slow or integration test."""

from __future__ import annotations

import libcst as cst

from analyzers.core import Invalid, Rule, Valid
from analyzers.testfiles import PIPELINE_BASES, coverage_index, exported_names, is_deprecated_alias


class PipelineWithoutSlowTests(Rule):
    """
    ## What it does
    Checks every pipeline class that `diffusers` exports for a slow or integration test: some test module
    under `tests/pipelines/` names the class, but none of the modules that name it holds a test marked
    `@slow`, `@nightly`, `@require_big_accelerator` (on the class or a method) or a class named
    `…IntegrationTests` / `…SlowTests`. A slow test anywhere under `tests/` that names the class counts
    (a LoRA integration test loads the real checkpoint too).

    ## Why is this bad?
    Fast tests run tiny random components with a toy tokenizer; they cannot see a real tokenizer's padding,
    a real scheduler's sigmas, a real checkpoint's config or a real VAE's scaling. Meta issue #13656
    (pattern 10): "Slow/integration gaps correlate strongly with discovered bugs. Families with missing or
    weak slow coverage repeatedly contain failures in num_images_per_prompt, num_videos_per_prompt,
    output_type="latent", precomputed embeddings, and real tokenizer/scheduler behavior."

    ## Example
    ```python
    # tests/pipelines/wan/test_wan.py: fast tests only
    class TestWanPipeline(WanPipelineTesterConfig, PipelineTesterMixin): ...
    ```

    Use instead: add an integration class next to the fast tests:
    ```python
    @slow
    @require_big_accelerator
    class TestWanPipelineIntegration:
        pipeline_class = WanPipeline
        repo_id = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"

        def test_wan_t2v(self): ...  # compare a slice against a stored reference
    ```

    ## Known problems
    It needs the repository's `tests/` in view and is silent without it; a pipeline that no test names at
    all is DRB014's. A module that holds any slow test counts for every pipeline it names, and a slow test
    that loads the pipeline only through `DiffusionPipeline.from_pretrained` is not seen. It reports a gap
    in coverage, not a bug: in a PR review it matters when a new pipeline arrives with fast tests only.

    ## References
    - huggingface/diffusers#13656, pattern 10 ("Test Coverage Analysis")
    """

    code = "DRB015"
    pattern = 10
    severity = "note"
    message = (
        "`{name}` has fast tests ({tests}) but no slow or integration test; add a `@slow` test class that runs "
        "a real checkpoint and compares against a stored reference slice."
    )
    REQUIRES_ANY = ("class ",)
    PATHS = ("/diffusers/pipelines/",)

    _INIT = '_import_structure = {"pipelines": ["FooPipeline", "BarPipeline"]}\n'
    _FAST = """
        class FooPipelineFastTests(PipelineTesterMixin, unittest.TestCase):
            pipeline_class = FooPipeline
        """
    _CODE = """
        class FooPipeline(DiffusionPipeline):
            pass
        """
    _PATH = "diffusers/pipelines/foo/pipeline_foo.py"

    VALID = [
        Valid(
            _CODE,
            path=_PATH,
            files={
                "diffusers/__init__.py": _INIT,
                "tests/pipelines/foo/test_foo.py": _FAST
                + """
        @slow
        @require_torch_accelerator
        class FooPipelineIntegrationTests(unittest.TestCase):
            def test_foo(self):
                pipe = FooPipeline.from_pretrained("org/foo")
        """,
            },
        ),
        # a nightly test method inside an otherwise plain class
        Valid(
            _CODE,
            path=_PATH,
            files={
                "diffusers/__init__.py": _INIT,
                "tests/pipelines/foo/test_foo.py": _FAST
                + """
        class FooPipelineChecks:
            @nightly
            def test_real_checkpoint(self):
                FooPipeline.from_pretrained("org/foo")
        """,
            },
        ),
        # no test names it at all: DRB014's finding
        Valid(
            """
            class BarPipeline(DiffusionPipeline):
                pass
            """,
            path="diffusers/pipelines/bar/pipeline_bar.py",
            files={"diffusers/__init__.py": _INIT, "tests/pipelines/foo/test_foo.py": _FAST},
        ),
        # no tests in view
        Valid(_CODE, path=_PATH, files={"diffusers/__init__.py": _INIT}),
        # a renamed class kept for compatibility
        Valid(
            """
            class FooPipeline(BarPipeline):
                def __init__(self, transformer):
                    deprecate("FooPipeline", "0.40", "renamed to `BarPipeline`")
                    super().__init__(transformer=transformer)
            """,
            path=_PATH,
            files={"diffusers/__init__.py": _INIT, "tests/pipelines/foo/test_foo.py": _FAST},
        ),
    ]
    INVALID = [
        Invalid(
            _CODE,
            path=_PATH,
            files={"diffusers/__init__.py": _INIT, "tests/pipelines/foo/test_foo.py": _FAST},
            message=(
                "`FooPipeline` has fast tests (`tests/pipelines/foo/test_foo.py`) but no slow or integration test; "
                "add a `@slow` test class that runs a real checkpoint and compares against a stored reference slice."
            ),
        ),
        # a release before 0.21 exported its classes with eager imports, not a lazy import structure
        Invalid(
            _CODE,
            path=_PATH,
            files={
                "diffusers/__init__.py": "from .pipelines import (\n    BarPipeline,\n    FooPipeline,\n)\n",
                "tests/pipelines/foo/test_foo.py": _FAST,
            },
        ),
        # a slow test elsewhere that does not name this pipeline does not count
        Invalid(
            _CODE,
            path=_PATH,
            files={
                "diffusers/__init__.py": _INIT,
                "tests/pipelines/foo/test_foo.py": _FAST,
                "tests/pipelines/bar/test_bar.py": "@slow\nclass BarPipelineSlowTests:\n    pipeline_class = BarPipeline\n",
            },
        ),
    ]

    def check(self) -> None:
        index = coverage_index(self.context.project)
        if index is None:
            return
        exported = exported_names(self.context.project)
        for definition in self.context.classes:
            cls = cst.ensure_type(definition.node, cst.ClassDef)
            if definition.parent is not None or definition.name not in exported:
                continue
            if not self.context.inherits_from(cls, PIPELINE_BASES) or is_deprecated_alias(cls):
                continue
            fast = index.files_naming(definition.name, "tests/pipelines/")
            if fast and not (index.files_naming(definition.name) & index.slow_files):
                shown = ", ".join(f"`{p}`" for p in sorted(fast)[:2]) + (" and others" if len(fast) > 2 else "")
                self.report(
                    cls.name,
                    self.message.format(name=definition.name, tests=shown),
                    symbol=definition.name,
                    scope=definition.qualname,
                )
