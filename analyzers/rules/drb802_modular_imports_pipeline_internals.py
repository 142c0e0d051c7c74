"""DRB802: a modular pipeline that imports classic-pipeline internals or another modular family's helpers."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name, resolve_relative


def _names(node: cst.ImportFrom) -> list[str]:
    if isinstance(node.names, cst.ImportStar):
        return []
    return [dotted_name(alias.name) or "" for alias in node.names]


#: bases that make a class a loadable pipeline component (a processor or a model), not a helper
_COMPONENT_SUFFIXES = ("Processor", "ModelMixin", "ConfigMixin", "PreTrainedModel")


def _is_component(project, module: str, name: str) -> bool:
    """Whether `module.name` is a class that subclasses a processor or model base (a component class)."""
    found = project.locate_class(module, name)
    if found is None:
        return False
    bases = [(dotted_name(arg.value) or "").rpartition(".")[2] for arg in found[1].bases]
    return any(base.endswith(_COMPONENT_SUFFIXES) for base in bases)


def _quoted(names: list[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


class ModularImportsPipelineInternals(Rule):
    """
    ## What it does
    Checks modular pipeline blocks (`diffusers/modular_pipelines/<family>/`) for imports of
    - names from a classic pipeline module (`diffusers/pipelines/<family>/pipeline_*.py`) that the family
      does not export in its `__init__.py` (constants, helpers, private functions of one pipeline);
    - anything from another modular family (`modular_pipelines/<other>/…`).

    Shared code is not coupling and is never reported: the modules directly under `diffusers/pipelines/`
    (`pipeline_utils`, `pipeline_loading_utils`, `auto_pipeline`, …), the package `diffusers.pipelines`
    itself, the modules directly under `diffusers/modular_pipelines/` (`modular_pipeline`,
    `modular_pipeline_utils`, `components_manager`, …), the family's helper modules (every module directly
    under `diffusers/pipelines/<family>/` that is not a `pipeline_*.py` pipeline module: `utils.py`,
    `mixed_precision.py`, `image_processor.py`, `prompt_enhancement.py`, `connectors.py`, …), names a classic
    family exports publicly (component classes such as `LTX2Vocoder`, output and condition dataclasses), and
    component classes the family defines without exporting them (a `ModelMixin` subclass): a modular
    pipeline needs the class to declare its `ComponentSpec`, and where that class lives is a packaging
    question rather than coupling to the classic pipeline's code.

    The line between the two is how diffusers lays out a family: a `pipeline_*.py` module holds one
    pipeline and what that pipeline alone needs, while the family's other modules exist to be shared by its
    pipelines. Importing a helper module is the reuse the family was split for; copying it with a
    `# Copied from` header would make the very copy that drifts (#13656, pattern 8).

    ## Why is this bad?
    diffusers' modular conventions (gotchas 1 and 2 of `.ai/references/modular.md`) say the modular and
    classic pipeline systems are parallel: modular blocks must not import from `diffusers.pipelines.*`,
    nor from another model's modular pipeline. Such an import is hidden coupling (#13656, pattern 8): a
    refactor of a classic pipeline, or of another family's private helper, silently changes or breaks
    the modular pipeline, and nothing in the importing family's tests points at it.

    ## Example
    ```python
    # modular_pipelines/qwenimage/encoders.py
    from ...pipelines.qwenimage.pipeline_qwenimage_edit import calculate_dimensions
    ```

    Use instead:
    ```python
    # pipelines/qwenimage/utils.py now holds `calculate_dimensions`; pipeline_qwenimage_edit.py imports it too
    from ...pipelines.qwenimage.utils import calculate_dimensions
    ```

    ## Known problems
    `import diffusers.pipelines.x.y` (plain `import`) and star imports are not looked at. Whether a name
    is public is read from the family `__init__.py` text (a quoted `"Name"` in its import structure).

    ## References
    - huggingface/diffusers#13656, pattern 8 (modular pipelines import classic pipeline internals)
    - huggingface/diffusers#13584 (modular flux imports `pipeline_flux_kontext` and `..qwenimage.inputs`)
    - huggingface/diffusers#13958 (modular flux decoupling)
    """

    code = "DRB802"
    pattern = 8
    severity = "warning"
    message = (
        "{names} {verb} imported from the classic pipeline module `{module}`, which does not export {them}; "
        "move {them} to a helper module of the family (such as `diffusers/pipelines/{family}/utils.py`) and "
        "import {them} from there in both pipelines."
    )
    message_cross = (
        "{names} {verb} imported from `{module}`, another modular pipeline family; move {them} to "
        "`modular_pipeline_utils.py` and import {them} from there in both families."
    )
    PATHS = ("/modular_pipelines/",)
    REQUIRES_ANY = ("pipelines", "from ..")

    _FLUX_INIT = """
        _import_structure = {"pipeline_flux": ["FluxPipeline"], "pipeline_flux_kontext": ["FluxKontextPipeline"]}
        """
    _KONTEXT = "PREFERRED_KONTEXT_RESOLUTIONS = [(672, 1568)]\nclass FluxKontextPipeline: ...\n"

    VALID = [
        # shared infrastructure, public exports of a classic family, and the family's own modules
        Valid(
            """
            from ...pipelines.pipeline_utils import StableDiffusionMixin
            from ...pipelines import DiffusionPipeline
            from ...pipelines.flux.pipeline_flux_kontext import FluxKontextPipeline
            from ..modular_pipeline import ModularPipelineBlocks
            from ..modular_pipeline_utils import InputParam
            from ..components_manager import ComponentsManager
            from .before_denoise import FluxPrepareLatentsStep
            """,
            path="diffusers/modular_pipelines/flux/encoders.py",
            files={
                "diffusers/pipelines/pipeline_utils.py": "class StableDiffusionMixin: ...\n",
                "diffusers/pipelines/flux/__init__.py": _FLUX_INIT,
                "diffusers/pipelines/flux/pipeline_flux_kontext.py": _KONTEXT,
                "diffusers/modular_pipelines/modular_pipeline.py": "class ModularPipelineBlocks: ...\n",
                "diffusers/modular_pipelines/modular_pipeline_utils.py": "class InputParam: ...\n",
                "diffusers/modular_pipelines/components_manager.py": "class ComponentsManager: ...\n",
            },
        ),
        # shared modules at the top of modular_pipelines/ are the framework itself, not a family
        Valid(
            """
            from ..pipelines.pipeline_loading_utils import load_sub_model
            from ..pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS
            """,
            path="diffusers/modular_pipelines/modular_pipeline.py",
            files={
                "diffusers/pipelines/flux/__init__.py": _FLUX_INIT,
                "diffusers/pipelines/flux/pipeline_flux_kontext.py": _KONTEXT,
            },
        ),
        # a component class of the family (an image processor): the modular pipeline's ComponentSpec needs it
        Valid(
            """
            from ...pipelines.flux2.image_processor import Flux2ImageProcessor
            """,
            path="diffusers/modular_pipelines/flux2/decoders.py",
            files={
                "diffusers/pipelines/flux2/__init__.py": '_import_structure = {"pipeline_flux2": ["Flux2Pipeline"]}\n',
                "diffusers/pipelines/flux2/image_processor.py": (
                    "from ...image_processor import VaeImageProcessor\n"
                    "class Flux2ImageProcessor(VaeImageProcessor): ...\n"
                ),
            },
        ),
        # the family's helper modules (not `pipeline_*.py`) are shared code: reuse, not coupling
        Valid(
            """
            from ...pipelines.ltx2.utils import conditioning_frame_rate
            from ...pipelines.cosmos.mixed_precision import Cosmos3MixedPrecisionConfig, reset_cosmos3_mixed_precision
            from ...pipelines.ltx2.prompt_enhancement import _prepare_enhance_image
            """,
            path="diffusers/modular_pipelines/ltx2/encoders.py",
            files={
                "diffusers/pipelines/ltx2/__init__.py": '_import_structure = {"pipeline_ltx2": ["LTX2Pipeline"]}\n',
                "diffusers/pipelines/ltx2/utils.py": "def conditioning_frame_rate(): ...\n",
                "diffusers/pipelines/ltx2/prompt_enhancement.py": "def _prepare_enhance_image(): ...\n",
                "diffusers/pipelines/cosmos/__init__.py": '_import_structure = {"pipeline_cosmos3_omni": []}\n',
                "diffusers/pipelines/cosmos/mixed_precision.py": "class Cosmos3MixedPrecisionConfig: ...\n",
            },
        ),
        # the classic family is not in view: stay silent
        Valid(
            """
            from ...pipelines.foo.utils import helper
            """,
            path="diffusers/modular_pipelines/foo/encoders.py",
        ),
    ]
    INVALID = [
        # #13584: modular flux reads a constant of the classic Kontext pipeline (inside a method)
        Invalid(
            """
            class FluxKontextProcessImagesInputStep:
                def __call__(self, components, state):
                    from ...pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS

                    return PREFERRED_KONTEXT_RESOLUTIONS
            """,
            message=(
                "`PREFERRED_KONTEXT_RESOLUTIONS` is imported from the classic pipeline module "
                "`diffusers.pipelines.flux.pipeline_flux_kontext`, which does not export it; move it to a helper "
                "module of the family (such as `diffusers/pipelines/flux/utils.py`) and import it from there in "
                "both pipelines."
            ),
            path="diffusers/modular_pipelines/flux/encoders.py",
            files={
                "diffusers/pipelines/flux/__init__.py": _FLUX_INIT,
                "diffusers/pipelines/flux/pipeline_flux_kontext.py": _KONTEXT,
            },
        ),
        # #13584: modular flux borrows modular qwenimage's helpers
        Invalid(
            """
            from ..modular_pipeline import ModularPipelineBlocks
            from ..qwenimage.inputs import calculate_dimension_from_latents, repeat_tensor_to_batch_size
            """,
            message=(
                "`calculate_dimension_from_latents`, `repeat_tensor_to_batch_size` are imported from "
                "`diffusers.modular_pipelines.qwenimage.inputs`, another modular pipeline family; move them to "
                "`modular_pipeline_utils.py` and import them from there in both families."
            ),
            path="diffusers/modular_pipelines/flux/inputs.py",
            files={
                "diffusers/modular_pipelines/qwenimage/__init__.py": "",
                "diffusers/modular_pipelines/qwenimage/inputs.py": "def calculate_dimension_from_latents(): ...\n",
            },
        ),
        # only the names the family does not export are reported
        Invalid(
            """
            from ...pipelines.ltx2.pipeline_ltx2_ic_lora import LTX2ReferenceCondition, _normalize_frames
            """,
            message=(
                "`_normalize_frames` is imported from the classic pipeline module "
                "`diffusers.pipelines.ltx2.pipeline_ltx2_ic_lora`, which does not export it; move it to a helper "
                "module of the family (such as `diffusers/pipelines/ltx2/utils.py`) and import it from there in "
                "both pipelines."
            ),
            path="diffusers/modular_pipelines/ltx2/encoders.py",
            files={
                "diffusers/pipelines/ltx2/__init__.py": (
                    '_import_structure = {"pipeline_ltx2_ic_lora": ["LTX2ReferenceCondition"]}\n'
                )
            },
        ),
    ]

    def check(self) -> None:
        parts = self.context.module_name.split(".")
        # diffusers.modular_pipelines.<family>.<module>: files directly under modular_pipelines/ are the framework
        if len(parts) < 4 or parts[0] != "diffusers" or parts[1] != "modular_pipelines":
            return
        family = parts[2]
        project = self.context.project
        for node in walk.nodes(self.context.module, cst.ImportFrom):
            base = resolve_relative(
                self.context.module_name, self.context.is_package, len(node.relative), dotted_name(node.module)
            )
            target = base.split(".")
            names = [n for n in _names(node) if n]
            if len(target) < 3 or target[0] != "diffusers" or not names:
                continue
            if target[1] == "pipelines":
                if project.source(f"diffusers/pipelines/{target[2]}.py") is not None:
                    continue  # a shared module directly under pipelines/ (pipeline_utils, auto_pipeline, ...)
                if len(target) > 3 and not target[3].startswith("pipeline_"):
                    continue  # a helper module of the family (utils, mixed_precision, image_processor, ...)
                init = project.source(f"diffusers/pipelines/{target[2]}/__init__.py")
                if init is None:
                    continue  # not in view
                internal = [
                    n
                    for n in names
                    if f'"{n}"' not in init and f"'{n}'" not in init and not _is_component(project, base, n)
                ]
                if internal:
                    self._report(node, self.message, internal, base, target[2])
            elif target[1] == "modular_pipelines" and target[2] != family:
                if project.source(f"diffusers/modular_pipelines/{target[2]}.py") is not None:
                    continue  # shared framework module (modular_pipeline, modular_pipeline_utils, ...)
                path = project.module_path(base)
                if path is None or not path.startswith(f"diffusers/modular_pipelines/{target[2]}/"):
                    continue  # not a family package in view: stay silent
                self._report(node, self.message_cross, names, base, target[2])

    def _report(self, node: cst.ImportFrom, template: str, names: list[str], module: str, family: str) -> None:
        plural = len(names) > 1
        message = template.format(
            names=_quoted(names),
            verb="are" if plural else "is",
            them="them" if plural else "it",
            module=module,
            family=family,
        )
        self.report(node, message, symbol=module, scope=self._scope(node))

    def _scope(self, node: cst.ImportFrom) -> str:
        """The innermost class or function holding `node` ("" at module level), without positions."""
        best = ""
        for definition in self.context.definitions:
            if any(found is node for found in walk.nodes(definition.node, cst.ImportFrom)):
                best = definition.qualname  # definitions come outer before inner
        return best
