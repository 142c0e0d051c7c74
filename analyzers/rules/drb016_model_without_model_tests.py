"""DRB016: an exported model class that no model-level test (`tests/models/`, `ModelTesterMixin`) names."""

from __future__ import annotations

import re

import libcst as cst

from analyzers.core import Invalid, Project, Rule, Valid
from analyzers.testfiles import MODEL_BASES, coverage_index, exported_names, is_deprecated_alias, package_exports


#: a container of several models (`MultiControlNetModel`, `MultiAdapter`): it delegates to members tested on their own
WRAPPER_NAME = re.compile(r"Multi[A-Z]")
#: the shared model tester: a module outside `tests/models/` that uses it is a model-level test too
MODEL_TESTER = re.compile(r"\bModelTesterMixin\b")


def models_exported_names(project: Project) -> frozenset[str]:
    """Names `diffusers/models/__init__.py` exports (its lazy import structure lists them as strings, older
    releases imported them eagerly), together with the top-level package's."""
    return project.memo(
        "drb016.models_exported_names",
        lambda: exported_names(project) | package_exports(project, "diffusers/models/__init__.py"),
    )


class ModelWithoutModelTests(Rule):
    """
    ## What it does
    Checks every model class (a `ModelMixin` under `models/`) that `diffusers` or `diffusers.models` exports
    for a model-level test: a module under `tests/models/` (or any test module using `ModelTesterMixin`) that
    names it. A model that only a pipeline's fast test builds as a tiny component is reported.

    ## Why is this bad?
    `ModelTesterMixin` is diffusers' contract for every model: saving and loading, dict/tuple output
    equivalence, determinism, dtype round trips, cpu/disk/group offload, gradient checkpointing. A pipeline
    fast test runs one forward pass of a tiny component and checks none of these, so a model without its own
    test module ships them untested. Meta issue #13656 (pattern 10): "there is no enforced matrix for exported
    public pipelines/models"; HunyuanDiT2DModel, LuminaNextDiT2DModel and TransformerTemporalModel all
    shipped for releases before their model tests were added.

    ## Example
    ```python
    # src/diffusers/models/transformers/hunyuan_transformer_2d.py, exported as diffusers.HunyuanDiT2DModel
    class HunyuanDiT2DModel(ModelMixin, ConfigMixin): ...


    # only tests/pipelines/hunyuan_dit/test_hunyuan_dit.py names HunyuanDiT2DModel
    ```

    Use instead: add `tests/models/transformers/test_models_transformer_hunyuan_dit.py` with a
    `ModelTesterMixin` test class whose `model_class = HunyuanDiT2DModel`.

    ## Known problems
    It needs the repository's `tests/` in view (a checkout, or a PR review) and is silent without it, or
    when the checkout has no `tests/models/`. "Names it" is by identifier. A model exported by `diffusers`
    that no test names at all is DRB014's. Containers of several models (`MultiControlNetModel`,
    `MultiAdapter`) and renamed classes kept for compatibility are not reported. It reports a gap in
    coverage, not a bug.

    ## References
    - huggingface/diffusers#13656, pattern 10 ("Test Coverage Analysis")
    - huggingface/diffusers#8916, #8932, #8987 (model tests added for HunyuanDiT, TransformerTemporal, Lumina)
    """

    code = "DRB016"
    pattern = 10
    severity = "note"
    message = (
        "`{name}` is exported by `diffusers` but has no model-level test ({where}); add a test module under "
        "`tests/models/` (`ModelTesterMixin` with `model_class = {name}`) so its save/load, output, dtype and "
        "offload contracts run."
    )
    REQUIRES_ANY = ("class ",)
    PATHS = ("/diffusers/models/",)

    _INIT = '_import_structure = {"models": ["FooTransformer2DModel", "BarModel", "MultiBarModel"]}\n'
    _MODELS_INIT = '_import_structure = {"transformers.transformer_temporal": ["TemporalModel"]}\n'
    _PIPE_TEST = (
        "class FooPipelineFastTests:\n"
        "    def get_dummy_components(self):\n"
        "        return {'transformer': FooTransformer2DModel(), 'unet': BarModel()}\n"
    )
    _MODEL_TEST = "class BarModelTests(ModelTesterMixin):\n    model_class = BarModel\n"
    FILES = {
        "diffusers/__init__.py": _INIT,
        "diffusers/models/__init__.py": _MODELS_INIT,
        "tests/pipelines/foo/test_foo.py": _PIPE_TEST,
        "tests/models/test_models_bar.py": _MODEL_TEST,
    }

    VALID = [
        # a model test names it
        Valid(
            """
            class BarModel(ModelMixin, ConfigMixin):
                pass
            """,
            path="diffusers/models/bar.py",
            files=FILES,
        ),
        # a ModelTesterMixin test outside tests/models/
        Valid(
            """
            class FooTransformer2DModel(ModelMixin, ConfigMixin):
                pass
            """,
            path="diffusers/models/transformers/transformer_foo.py",
            files={
                **FILES,
                "tests/others/test_foo_model.py": (
                    "class FooTests(ModelTesterMixin):\n    model_class = FooTransformer2DModel\n"
                ),
            },
        ),
        # no tests in view (a wheel): nobody can tell
        Valid(
            """
            class FooTransformer2DModel(ModelMixin, ConfigMixin):
                pass
            """,
            path="diffusers/models/transformers/transformer_foo.py",
            files={"diffusers/__init__.py": _INIT},
        ),
        # a container of several tested models
        Valid(
            """
            class MultiBarModel(ModelMixin):
                def __init__(self, models):
                    self.nets = models
            """,
            path="diffusers/models/bar.py",
            files={**FILES, "tests/pipelines/bar/test_bar.py": "x = MultiBarModel([BarModel()])\n"},
        ),
        # not exported: internal
        Valid(
            """
            class BazModel(ModelMixin, ConfigMixin):
                pass
            """,
            path="diffusers/models/baz.py",
            files={**FILES, "tests/pipelines/baz/test_baz.py": "x = BazModel()\n"},
        ),
        # not a model
        Valid(
            """
            class FooTransformer2DModel(nn.Module):
                pass
            """,
            path="diffusers/models/transformers/transformer_foo.py",
            files=FILES,
        ),
    ]
    INVALID = [
        # only a pipeline's fast test builds it
        Invalid(
            """
            class FooTransformer2DModel(ModelMixin, ConfigMixin):
                pass
            """,
            path="diffusers/models/transformers/transformer_foo.py",
            files=FILES,
            message=(
                "`FooTransformer2DModel` is exported by `diffusers` but has no model-level test (only "
                "`tests/pipelines/foo/test_foo.py` names it); add a test module under `tests/models/` "
                "(`ModelTesterMixin` with `model_class = FooTransformer2DModel`) so its save/load, output, dtype and "
                "offload contracts run."
            ),
        ),
        # exported by diffusers.models only, and no test at all
        Invalid(
            """
            class TemporalModel(ModelMixin, ConfigMixin):
                pass
            """,
            path="diffusers/models/transformers/transformer_temporal.py",
            files=FILES,
            message=(
                "`TemporalModel` is exported by `diffusers` but has no model-level test (no test names it); add a "
                "test module under `tests/models/` (`ModelTesterMixin` with `model_class = TemporalModel`) so its "
                "save/load, output, dtype and offload contracts run."
            ),
        ),
    ]

    def check(self) -> None:
        project = self.context.project
        index = coverage_index(project)
        if index is None or not any(p.startswith("tests/models/") for p in project.files("tests/models")):
            return
        top_level = exported_names(project)
        exported = models_exported_names(project)
        for definition in self.context.classes:
            cls = cst.ensure_type(definition.node, cst.ClassDef)
            name = definition.name
            if definition.parent is not None or name not in exported or WRAPPER_NAME.search(name):
                continue
            if not self.context.inherits_from(cls, MODEL_BASES) or is_deprecated_alias(cls):
                continue
            if index.files_naming(name, "tests/models/"):
                continue
            naming = index.files_naming(name)
            if not naming and name in top_level:
                continue  # DRB014's: exported and no test at all
            if any(MODEL_TESTER.search(project.source(p) or "") for p in naming):
                continue
            where = (
                "only "
                + ", ".join(f"`{p}`" for p in sorted(naming)[:2])
                + (" and others" if len(naming) > 2 else "")
                + (" names it" if len(naming) == 1 else " name it")
                if naming
                else "no test names it"
            )
            self.report(cls.name, self.message.format(name=name, where=where), symbol=name, scope=definition.qualname)
