"""DRB014: a public pipeline or model class that no test names."""

from __future__ import annotations

import libcst as cst

from analyzers.core import Invalid, Rule, Valid
from analyzers.testfiles import MODEL_BASES, PIPELINE_BASES, coverage_index, exported_names, is_deprecated_alias


class PublicClassWithoutTests(Rule):
    """
    ## What it does
    Checks every class that `diffusers` exports from its top-level package and that is a pipeline (a
    `DiffusionPipeline` under `pipelines/`) or a model (a `ModelMixin` under `models/`) for a test that names
    it: a pipeline must be named in some module under `tests/pipelines/`, a model anywhere under `tests/`.

    ## Why is this bad?
    Every public pipeline and model is promised to users through `from diffusers import …`. One that no test
    constructs runs its batching, masking, dtype and output paths for the first time on a user's machine.
    Meta issue #13656 (pattern 10): "there is no enforced matrix for exported public pipelines/models";
    several of its bugs (Z-Image Omni's `guidance_scale=0`, pattern 2) sat in untested variants.

    ## Example
    ```python
    # src/diffusers/pipelines/z_image/pipeline_z_image_omni.py, exported as diffusers.ZImageOmniPipeline
    class ZImageOmniPipeline(DiffusionPipeline): ...


    # and nothing under tests/pipelines/ mentions ZImageOmniPipeline
    ```

    Use instead: add `tests/pipelines/z_image/test_z_image_omni.py` with a `PipelineTesterMixin` fast-test
    class whose `pipeline_class = ZImageOmniPipeline`.

    ## Known problems
    It needs the repository's `tests/` in view (a checkout, or a PR review) and is silent without it, so a
    wheel scan never reports it. "Names it" is by identifier: a test that only loads the class through
    `DiffusionPipeline.from_pretrained` or an `AutoPipeline` does not count. A renamed class that only
    warns in `__init__` (`Lumina2Text2ImgPipeline`) is not reported.

    ## References
    - huggingface/diffusers#13656, pattern 10 ("Test Coverage Analysis")
    """

    code = "DRB014"
    pattern = 10
    severity = "note"
    message = (
        "`{name}` is exported by `diffusers` but no test under `tests/pipelines/` names it; add a fast test class "
        "for it (`PipelineTesterMixin` with `pipeline_class = {name}`)."
    )
    message_model = (
        "`{name}` is exported by `diffusers` but no test under `tests/` names it; add a test module under "
        "`tests/models/` for it (a `BaseModelTesterConfig` whose `model_class` is `{name}`, with `ModelTesterMixin`)."
    )
    REQUIRES_ANY = ("class ",)
    PATHS = ("/diffusers/pipelines/", "/diffusers/models/")

    _INIT = '_import_structure = {"pipelines": ["FooPipeline", "BarPipeline"], "models": ["FooTransformer2DModel"]}\n'
    _TEST = """
        class FooPipelineFastTests(PipelineTesterMixin, unittest.TestCase):
            pipeline_class = FooPipeline
        """

    VALID = [
        Valid(
            """
            class FooPipeline(DiffusionPipeline):
                pass
            """,
            path="diffusers/pipelines/foo/pipeline_foo.py",
            files={"diffusers/__init__.py": _INIT, "tests/pipelines/foo/test_foo.py": _TEST},
        ),
        # no tests in view (a wheel): nobody can tell
        Valid(
            """
            class BarPipeline(DiffusionPipeline):
                pass
            """,
            path="diffusers/pipelines/bar/pipeline_bar.py",
            files={"diffusers/__init__.py": _INIT},
        ),
        # the test imports it under another name
        Valid(
            """
            class BarPipeline(DiffusionPipeline):
                pass
            """,
            path="diffusers/pipelines/bar/pipeline_bar.py",
            files={
                "diffusers/__init__.py": _INIT,
                "tests/pipelines/bar/test_bar.py": (
                    "from diffusers.pipelines.bar import BarPipeline as StableDiffusionPipeline\n\n"
                    "class BarPipelineFastTests:\n    pipeline_class = StableDiffusionPipeline\n"
                ),
            },
        ),
        # not exported: internal
        Valid(
            """
            class BazPipeline(DiffusionPipeline):
                pass
            """,
            path="diffusers/pipelines/baz/pipeline_baz.py",
            files={"diffusers/__init__.py": _INIT, "tests/pipelines/foo/test_foo.py": _TEST},
        ),
        # a renamed class kept for compatibility
        Valid(
            """
            class BarPipeline(FooPipeline):
                def __init__(self, transformer, vae):
                    deprecate("BarPipeline", "0.34", "`BarPipeline` has been renamed to `FooPipeline`.")
                    super().__init__(transformer=transformer, vae=vae)
            """,
            path="diffusers/pipelines/foo/pipeline_foo.py",
            files={"diffusers/__init__.py": _INIT, "tests/pipelines/foo/test_foo.py": _TEST},
        ),
        # a model named by any test, here a pipeline test's components
        Valid(
            """
            class FooTransformer2DModel(ModelMixin, ConfigMixin):
                pass
            """,
            path="diffusers/models/transformers/transformer_foo.py",
            files={
                "diffusers/__init__.py": _INIT,
                "tests/pipelines/foo/test_foo.py": "class T:\n    def f(self):\n        return FooTransformer2DModel()\n",
            },
        ),
    ]
    INVALID = [
        Invalid(
            """
            class BarPipeline(DiffusionPipeline):
                def __call__(self, prompt):
                    return prompt
            """,
            path="diffusers/pipelines/bar/pipeline_bar.py",
            files={"diffusers/__init__.py": _INIT, "tests/pipelines/foo/test_foo.py": _TEST},
            message=(
                "`BarPipeline` is exported by `diffusers` but no test under `tests/pipelines/` names it; add a fast "
                "test class for it (`PipelineTesterMixin` with `pipeline_class = BarPipeline`)."
            ),
        ),
        # a release before 0.21 exported its classes with eager imports, not a lazy import structure
        Invalid(
            """
            class BarPipeline(DiffusionPipeline):
                pass
            """,
            path="diffusers/pipelines/bar/pipeline_bar.py",
            files={
                "diffusers/__init__.py": "from .pipelines import BarPipeline, FooPipeline\n",
                "tests/pipelines/foo/test_foo.py": _TEST,
            },
        ),
        # named only by a LoRA test: not a pipeline test module
        Invalid(
            """
            class BarPipeline(DiffusionPipeline):
                pass
            """,
            path="diffusers/pipelines/bar/pipeline_bar.py",
            files={
                "diffusers/__init__.py": _INIT,
                "tests/pipelines/foo/test_foo.py": _TEST,
                "tests/lora/test_lora_layers_bar.py": "class BarLoRATests:\n    pipeline_class = BarPipeline\n",
            },
        ),
        Invalid(
            """
            class FooTransformer2DModel(ModelMixin, ConfigMixin):
                pass
            """,
            path="diffusers/models/transformers/transformer_foo.py",
            files={"diffusers/__init__.py": _INIT, "tests/pipelines/foo/test_foo.py": _TEST},
            message=(
                "`FooTransformer2DModel` is exported by `diffusers` but no test under `tests/` names it; add a test "
                "module under `tests/models/` for it (a `BaseModelTesterConfig` whose `model_class` is "
                "`FooTransformer2DModel`, with `ModelTesterMixin`)."
            ),
        ),
    ]

    def check(self) -> None:
        index = coverage_index(self.context.project)
        if index is None:
            return
        exported = exported_names(self.context.project)
        is_pipeline_file = "/pipelines/" in f"/{self.context.path}"
        for definition in self.context.classes:
            cls = cst.ensure_type(definition.node, cst.ClassDef)
            if definition.parent is not None or definition.name not in exported:
                continue
            bases, under = (PIPELINE_BASES, "tests/pipelines/") if is_pipeline_file else (MODEL_BASES, "tests/")
            if not self.context.inherits_from(cls, bases) or is_deprecated_alias(cls):
                continue
            if not index.files_naming(definition.name, under):
                self.report(
                    cls.name,
                    (self.message if is_pipeline_file else self.message_model).format(name=definition.name),
                    symbol=definition.name,
                    scope=definition.qualname,
                )
