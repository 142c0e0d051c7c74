"""DRB404: a module-level import of an optional dependency in a module that a package exports without the guard."""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import libcst as cst

from analyzers.core import Invalid, Project, Rule, Valid, dotted_name, resolve_relative
from analyzers.import_structure import lazy_exports


#: `is_<key>_available()` of `diffusers/utils/import_utils.py` (0.42.1) -> the top-level names it checks
AVAILABILITY: dict[str, tuple[str, ...]] = {
    "accelerate": ("accelerate",),
    "auto_round": ("auto_round",),
    "av": ("av",),
    "better_profanity": ("better_profanity",),
    "bitsandbytes": ("bitsandbytes",),
    "bs4": ("bs4",),
    "compel": ("compel",),
    "cosmos_guardrail": ("cosmos_guardrail",),
    "flash_attn": ("flash_attn",),
    "flash_attn_3": ("flash_attn_3", "flash_attn_interface"),
    "flashinfer": ("flashinfer",),
    "flashpack": ("flashpack",),
    "ftfy": ("ftfy",),
    "gguf": ("gguf",),
    "hpu": ("habana_frameworks",),
    "imageio": ("imageio",),
    "inflect": ("inflect",),
    "invisible_watermark": ("imwatermark",),
    "kernels": ("kernels",),
    "kornia": ("kornia",),
    "librosa": ("librosa",),
    "matplotlib": ("matplotlib",),
    "nltk": ("nltk",),
    "note_seq": ("note_seq",),
    "nvidia_modelopt": ("modelopt",),
    "onnx": ("onnxruntime",),
    "opencv": ("cv2",),
    "optimum_quanto": ("optimum",),
    "outlines": ("outlines",),
    "peft": ("peft",),
    "pytorch_retinaface": ("pytorch_retinaface",),
    "sageattention": ("sageattention",),
    "scipy": ("scipy",),
    "sdnq": ("sdnq",),
    "sentencepiece": ("sentencepiece",),
    "tensorboard": ("tensorboard",),
    "timm": ("timm",),
    "torch": ("torch",),
    "torch_mlu": ("torch_mlu",),
    "torch_neuronx": ("torch_neuronx",),
    "torch_npu": ("torch_npu",),
    "torch_tpu": ("torch_tpu",),
    "torch_xla": ("torch_xla",),
    "torchao": ("torchao",),
    "torchsde": ("torchsde",),
    "torchvision": ("torchvision",),
    "transformers": ("transformers",),
    "unidecode": ("unidecode",),
    "wandb": ("wandb",),
    "xformers": ("xformers",),
}
#: import name -> the `is_<key>_available` key that guards it
OPTIONAL: dict[str, str] = {name: key for key, names in AVAILABILITY.items() for name in names}
#: what an installed package guarantees through its own hard requirements
IMPLIES: dict[str, frozenset[str]] = {
    "accelerate": frozenset({"torch"}),
    "bitsandbytes": frozenset({"torch"}),
    "compel": frozenset({"torch", "transformers"}),
    "flash_attn": frozenset({"torch"}),
    "kornia": frozenset({"torch"}),
    "librosa": frozenset({"scipy"}),
    "optimum": frozenset({"torch"}),
    "peft": frozenset({"torch", "transformers", "accelerate"}),
    "timm": frozenset({"torch", "torchvision"}),
    "torch_mlu": frozenset({"torch"}),
    "torch_npu": frozenset({"torch"}),
    "torch_xla": frozenset({"torch"}),
    "torchsde": frozenset({"torch", "scipy"}),
    "torchvision": frozenset({"torch"}),
    "xformers": frozenset({"torch"}),
}
_CHECK_RE = re.compile(r"is_(\w+?)_(?:available|version)")
_IMPORT_ERRORS = frozenset({"ImportError", "ModuleNotFoundError", "Exception", "BaseException"})
#: a guard that ensures anything: an unknown `is_*()` check (`is_transformers_flax_compatible()`), or a
#: `try`/`except ImportError` around the import, which cannot fail the module
ANYTHING = frozenset({"*"})


def ensures(guard: frozenset[str], name: str) -> bool:
    """Whether packages `guard` guarantee `name`, directly or through their own requirements."""
    return "*" in guard or name in guard or any(name in IMPLIES.get(g, ()) for g in guard)


def implied(test: cst.BaseExpression, aliases: dict[str, cst.BaseExpression], positive: bool = True) -> frozenset[str]:
    """Packages that are surely installed when `test` is true (`positive`) or false: `is_torch_available()`,
    `is_x() and is_y()`, `not (...)`, a module-level alias `_CAN_USE_KORNIA = is_kornia_available()`."""
    if isinstance(test, cst.Call):
        name = (dotted_name(test.func) or "").rpartition(".")[2]
        match = _CHECK_RE.fullmatch(name)
        if not positive or not name.startswith("is_"):
            return frozenset()
        return frozenset(AVAILABILITY.get(match.group(1), (match.group(1),))) if match else ANYTHING
    if isinstance(test, cst.Name) and test.value in aliases:
        return implied(aliases[test.value], {}, positive)
    if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
        return implied(test.expression, aliases, not positive)
    if isinstance(test, cst.BooleanOperation):
        left = implied(test.left, aliases, positive)
        right = implied(test.right, aliases, positive)
        # `a and b` true, or `a or b` false: both hold; otherwise only what both sides guarantee
        if isinstance(test.operator, cst.And) == positive:
            return left | right
        return left & right
    return frozenset()


def _is_type_checking(test: cst.BaseExpression) -> bool:
    name = dotted_name(test)
    return name is not None and name.rpartition(".")[2] == "TYPE_CHECKING"


def _raises(block: cst.BaseSuite) -> bool:
    return isinstance(block, cst.IndentedBlock) and any(
        isinstance(statement, cst.SimpleStatementLine) and any(isinstance(s, cst.Raise) for s in statement.body)
        for statement in block.body
    )


def _catches_import_error(handler: cst.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    kinds = [e.value for e in handler.type.elements] if isinstance(handler.type, cst.Tuple) else [handler.type]
    return any((dotted_name(kind) or "").rpartition(".")[2] in _IMPORT_ERRORS for kind in kinds)


@dataclass(frozen=True)
class _Statement:
    node: cst.BaseSmallStatement
    guard: frozenset[str]  # packages known to be installed when the statement runs
    protected: bool  # inside `try: … except ImportError:`


def module_statements(module: cst.Module) -> list[_Statement]:
    """Small statements that run when the module is imported, in order, with the packages their guards ensure.

    `if TYPE_CHECKING:` bodies never run and are left out; `if TYPE_CHECKING or DIFFUSERS_SLOW_IMPORT:` runs.
    """
    out: list[_Statement] = []
    aliases: dict[str, cst.BaseExpression] = {}

    def visit(body: Sequence[cst.CSTNode], guard: frozenset[str], protected: bool) -> frozenset[str]:
        for statement in body:
            if isinstance(statement, cst.SimpleStatementLine):
                for small in statement.body:
                    out.append(_Statement(small, guard, protected))
                    if (
                        isinstance(small, cst.Assign)
                        and len(small.targets) == 1
                        and isinstance(small.targets[0].target, cst.Name)
                        and (implied(small.value, aliases) or implied(small.value, aliases, False))
                    ):
                        aliases[small.targets[0].target.value] = small.value
            elif isinstance(statement, cst.If):
                if _is_type_checking(statement.test):
                    orelse = statement.orelse
                    if isinstance(orelse, cst.If):
                        visit([orelse], guard, protected)
                    elif isinstance(orelse, cst.Else):
                        visit(orelse.body.body, guard, protected)
                    continue
                if_true = implied(statement.test, aliases)
                if_false = implied(statement.test, aliases, False)
                visit(statement.body.body, guard | if_true, protected)
                orelse = statement.orelse
                if isinstance(orelse, cst.If):
                    visit([orelse], guard | if_false, protected)
                elif isinstance(orelse, cst.Else):
                    visit(orelse.body.body, guard | if_false, protected)
                elif _raises(statement.body):
                    guard = guard | if_false  # `if not is_x_available(): raise …`
            elif isinstance(statement, cst.Try):
                catches = any(_catches_import_error(h) for h in statement.handlers)
                after_body = visit(statement.body.body, guard, protected or catches)
                for handler in statement.handlers:
                    visit(handler.body.body, guard, protected)
                if statement.orelse is not None:
                    visit(statement.orelse.body.body, after_body, protected)
                if statement.finalbody is not None:
                    visit(statement.finalbody.body.body, guard, protected)
            elif isinstance(statement, cst.With):
                visit(statement.body.body, guard, protected)
        return guard

    visit(module.body, frozenset(), False)
    return out


def imported_keys(node: cst.Import | cst.ImportFrom) -> set[str]:
    """What an absolute import binds, as `module` (`import a.b`) or `module:name` (`from a import b`)."""
    if isinstance(node, cst.Import):
        return {dotted_name(alias.name) or "" for alias in node.names} - {""}
    if node.relative or isinstance(node.names, cst.ImportStar):
        return set()
    module = dotted_name(node.module) or ""
    return {f"{module}:{dotted_name(alias.name)}" for alias in node.names} if module else set()


def unguarded_twins(statements: list[_Statement]) -> list[tuple[cst.Import | cst.ImportFrom, str, str, cst.CSTNode]]:
    """(plain import, key, top-level package, guarded twin) for each module-level import of an optional
    dependency that the module also makes under the dependency's own check (`if is_ftfy_available(): import
    ftfy`), the same module or name, and again without any check (DRB611's finding)."""
    guarded: dict[str, cst.CSTNode] = {}
    plain: list[tuple[cst.Import | cst.ImportFrom, str, str]] = []
    for statement in statements:
        node = statement.node
        if not isinstance(node, (cst.Import, cst.ImportFrom)):
            continue
        for key in sorted(imported_keys(node)):
            top = key.partition(".")[0].partition(":")[0]
            if top not in OPTIONAL:
                continue
            if top in statement.guard:  # the check names the package itself, not a blanket or implied guarantee
                guarded.setdefault(key, node)
            elif not statement.protected and not ensures(statement.guard, top):
                plain.append((node, key, top))
    return [(node, key, top, guarded[key]) for node, key, top in plain if key in guarded]


def _imported_modules(small: cst.BaseSmallStatement, package: str) -> list[str]:
    """Absolute names of the modules an import statement of `package`'s `__init__` may load."""
    if isinstance(small, cst.ImportFrom):
        base = resolve_relative(package, True, len(small.relative), dotted_name(small.module))
        names = [] if isinstance(small.names, cst.ImportStar) else [dotted_name(a.name) or "" for a in small.names]
        return [base] + [f"{base}.{name}" for name in names if name]
    if isinstance(small, cst.Import):
        return [dotted_name(alias.name) or "" for alias in small.names]
    return []


def _with_parents(dotted: str, package: str) -> list[str]:
    """`a.b.c.d` under package `a.b` -> `a.b.c`, `a.b.c.d` (importing a submodule imports its packages)."""
    if not dotted.startswith(package + "."):
        return []
    parts = dotted[len(package) + 1 :].split(".")
    return [f"{package}." + ".".join(parts[: i + 1]) for i in range(len(parts))]


class _Reach:
    """How the modules of one project are reached from `import diffusers`: for each module, the ways in (the
    package `__init__` that loads it, lazily through `_import_structure` or eagerly) and the packages each
    way guarantees. Cached per project."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self._tables: dict[str, dict[str, list[frozenset[str]]] | None] = {}
        self._reach: dict[str, frozenset[str] | None] = {}

    def table(self, package: str) -> dict[str, list[frozenset[str]]] | None:
        """Submodule -> the guards under which `package`'s `__init__` loads it."""
        if package not in self._tables:
            path = self.project.module_path(package)
            module = self.project.module(package) if path and path.endswith("__init__.py") else None
            table: dict[str, list[frozenset[str]]] | None = None
            if module is not None:
                table = {}
                for statement in module_statements(module):
                    guard = ANYTHING if statement.protected else statement.guard
                    targets = [f"{package}.{e.submodule}" for e in lazy_exports(statement.node) if e.exports]
                    targets += _imported_modules(statement.node, package)
                    for target in {m for t in targets for m in _with_parents(t, package)}:
                        table.setdefault(target, []).append(guard)
            self._tables[package] = table
        return self._tables[package]

    def ways_in(self, dotted: str) -> list[tuple[str, frozenset[str]]]:
        """(package, packages guaranteed) for each way `dotted` is loaded from an enclosing package `__init__`."""
        ways = []
        parts = dotted.split(".")
        for i in range(len(parts) - 1, 0, -1):
            package = ".".join(parts[:i])
            guards = (self.table(package) or {}).get(dotted)
            if not guards:
                continue
            above = self.reach(package)
            if above is None:
                continue
            ways += [(package, guard | above) for guard in guards]
        return ways

    def reach(self, dotted: str) -> frozenset[str] | None:
        """Packages installed whenever `dotted` is imported through package exports; None when no way in is known."""
        parent = dotted.rpartition(".")[0]
        if not parent or self.table(parent) is None:
            return frozenset()  # the top-level package (`import diffusers` always runs), or a tree cut above
        if dotted not in self._reach:
            ways = self.ways_in(dotted)
            known = [g for _, g in ways if "*" not in g]  # a way that ensures anything drops out of the meet
            self._reach[dotted] = (frozenset.intersection(*known) if known else ANYTHING) if ways else None
        return self._reach[dotted]


_REACH: weakref.WeakKeyDictionary[Project, _Reach] = weakref.WeakKeyDictionary()


def _reach_for(project: Project) -> _Reach:
    reach = _REACH.get(project)
    if reach is None:
        reach = _REACH[project] = _Reach(project)
    return reach


_FAMILY_INIT = "diffusers/pipelines/cosmos/__init__.py"
_PIPELINES_INIT_GUARDED = """
    from ..utils import OptionalDependencyNotAvailable, _LazyModule, is_torch_available, is_transformers_available

    _import_structure = {"controlnet": [], "stable_diffusion": []}
    try:
        if not (is_torch_available() and is_transformers_available()):
            raise OptionalDependencyNotAvailable()
    except OptionalDependencyNotAvailable:
        from ..utils import dummy_torch_and_transformers_objects
    else:
        _import_structure["cosmos"] = ["Cosmos2_5_PredictBasePipeline"]
"""
_COSMOS_INIT = """
    from typing import TYPE_CHECKING

    from ...utils import (
        DIFFUSERS_SLOW_IMPORT,
        OptionalDependencyNotAvailable,
        _LazyModule,
        is_torch_available,
        is_transformers_available,
    )

    _import_structure = {}
    try:
        if not (is_transformers_available() and is_torch_available()):
            raise OptionalDependencyNotAvailable()
    except OptionalDependencyNotAvailable:
        from ...utils import dummy_torch_and_transformers_objects
    else:
        _import_structure["pipeline_cosmos2_5_predict"] = ["Cosmos2_5_PredictBasePipeline"]

    if TYPE_CHECKING or DIFFUSERS_SLOW_IMPORT:
        try:
            if not (is_transformers_available() and is_torch_available()):
                raise OptionalDependencyNotAvailable()
        except OptionalDependencyNotAvailable:
            from ...utils.dummy_torch_and_transformers_objects import *
        else:
            from .pipeline_cosmos2_5_predict import Cosmos2_5_PredictBasePipeline
    else:
        import sys

        sys.modules[__name__] = _LazyModule(__name__, globals()["__file__"], _import_structure, module_spec=__spec__)
"""
_COSMOS_FILES = {"diffusers/pipelines/__init__.py": _PIPELINES_INIT_GUARDED, _FAMILY_INIT: _COSMOS_INIT}
_LOADERS_FILES = {
    "diffusers/__init__.py": """
        _import_structure = {"configuration_utils": ["ConfigMixin"], "loaders": ["FromOriginalModelMixin"]}
    """,
    "diffusers/loaders/__init__.py": """
        from ..utils import _LazyModule
        from ..utils.import_utils import is_torch_available

        _import_structure = {}
        if is_torch_available():
            _import_structure["single_file_model"] = ["FromOriginalModelMixin"]

        _import_structure["peft"] = ["PeftAdapterMixin"]
    """,
}


class OptionalDependencyImportedUnguarded(Rule):
    """
    ## What it does
    Checks diffusers modules for a module-level import of an optional dependency (one that
    `diffusers/utils/import_utils.py` tests with `is_<name>_available()`: `torch`, `transformers`,
    `torchvision`, `ftfy`, `cv2`, `kornia`, …) that runs without that check, in a module that a package
    `__init__` loads (lazily through `_import_structure`, or eagerly) on a path from `import diffusers` where
    no guard ensures the dependency. The guards are the `if is_x_available():` blocks and the
    `try: if not (...): raise OptionalDependencyNotAvailable() … else:` blocks around each export, in every
    enclosing package `__init__` up to `diffusers/__init__.py`.

    ## Why is this bad?
    Diffusers exports a pipeline or model only behind the availability checks of what it needs, and hands
    out a dummy object that says "requires X" otherwise. A module that also needs a dependency its export
    path does not check breaks that contract: `from diffusers import FooPipeline` (or the family package)
    fails with a bare `ModuleNotFoundError` for users without the extra, even if they never use the feature.
    Diffusers fixed this shape for `torchvision` in Cosmos (#13321), `ftfy` in Wan (#11262) and PRX (#13154),
    and `cv2` in ConsisID (#11254).

    ## Example
    ```python
    # diffusers/pipelines/cosmos/__init__.py exports the module under is_torch_available() and
    # is_transformers_available() only
    import torch
    import torchvision.transforms.functional
    from transformers import AutoTokenizer
    ```

    Use instead:
    ```python
    import torch
    from transformers import AutoTokenizer

    from ...utils import is_torchvision_available

    if is_torchvision_available():
        import torchvision.transforms.functional
    ```

    ## Known problems
    Only the ways in through enclosing package `__init__` files are modelled: a module that no enclosing
    package loads (a helper imported by a sibling module, or by users directly, such as
    `consisid_utils.py`) is not checked, and a second way in through another module's import is not seen.
    A way in is judged by the union of the guards along it, so a family `__init__` that guards less than
    `pipelines/__init__.py` does is trusted. Imports inside functions, under `if TYPE_CHECKING:`, in
    `try`/`except ImportError` and under `if is_x_available():` (directly, after `if not …: raise`, or through
    a module-level alias such as `_CAN_USE_KORNIA = is_kornia_available()`) count as guarded; an `is_*()`
    helper the rule does not know is trusted to ensure anything. A few hard requirements of the optional
    packages are assumed (`torchvision` and `peft` bring `torch`, …). Dependencies without an
    `is_<name>_available()` are not checked.
    An unguarded import that the module repeats under the package's own check is DRB611's finding and is
    not reported here.

    ## References
    - huggingface/diffusers#13656, pattern 4
    - huggingface/diffusers#13321 (unguarded `torchvision` import in Cosmos 2.5)
    - huggingface/diffusers#11262 and #13154 (unguarded `ftfy` in Wan and PRX)
    - huggingface/diffusers#11254 (`cv2` in ConsisID)
    """

    code = "DRB404"
    pattern = 4
    severity = "warning"
    message = (
        "`{name}` is imported at module level without `is_{key}_available()`, but `{via}` loads this module "
        "without that check; import it under `if is_{key}_available():`, or add the check where `{via}` exports it."
    )
    REQUIRES_ANY = tuple(f"{verb} {name}" for name in OPTIONAL for verb in ("import", "from"))
    PATHS = ("/diffusers/",)

    VALID = [
        Valid(
            # the family exports the module only behind is_torch_available() and is_transformers_available()
            """
            import torch
            from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

            from ...utils import is_cosmos_guardrail_available, is_torchvision_available

            if is_torchvision_available():
                import torchvision.transforms.functional

            if is_cosmos_guardrail_available():
                from cosmos_guardrail import CosmosSafetyChecker
            """,
            path="diffusers/pipelines/cosmos/pipeline_cosmos2_5_predict.py",
            files=_COSMOS_FILES,
        ),
        Valid(
            # the family guard names opencv too (the #11254 fix), so the plain import is reached only with it
            """
            import cv2
            import torch
            from transformers import T5EncoderModel
            """,
            path="diffusers/pipelines/consisid/pipeline_consisid.py",
            files={
                "diffusers/pipelines/consisid/__init__.py": """
                    from ...utils import is_opencv_available, is_torch_available, is_transformers_available

                    _import_structure = {}
                    try:
                        if not (is_transformers_available() and is_torch_available() and is_opencv_available()):
                            raise OptionalDependencyNotAvailable()
                    except OptionalDependencyNotAvailable:
                        _dummy_objects.update(get_objects_from_module(dummy_torch_and_transformers_and_opencv_objects))
                    else:
                        _import_structure["pipeline_consisid"] = ["ConsisIDPipeline"]
                """,
            },
        ),
        Valid(
            # guards through an alias, try/except ImportError, TYPE_CHECKING, a raise, and function-level imports
            """
            from typing import TYPE_CHECKING

            import torch

            from ..utils import is_kornia_available, is_peft_available, is_scipy_available

            if TYPE_CHECKING:
                import ftfy

            _CAN_USE_KORNIA = is_kornia_available()
            if _CAN_USE_KORNIA:
                from kornia.geometry import pyrup as upsample_and_blur_func
            else:
                upsample_and_blur_func = None

            try:
                import xformers.ops
            except ImportError:
                xformers = None

            if not is_scipy_available():
                raise ImportError("scipy is required")
            import scipy.stats

            def peft_layers():
                from peft.tuners.tuners_utils import BaseTunerLayer
                return BaseTunerLayer
            """,
            path="diffusers/guiders/frequency_decoupled_guidance.py",
            files={
                "diffusers/guiders/__init__.py": """
                    from ..utils import is_torch_available

                    if is_torch_available():
                        from .frequency_decoupled_guidance import FrequencyDecoupledGuidance
                """,
            },
        ),
        Valid(
            # a helper no enclosing package loads (users import it directly) is not judged
            """
            import cv2
            import torch
            """,
            path="diffusers/pipelines/consisid/consisid_utils.py",
            files={
                "diffusers/pipelines/consisid/__init__.py": """
                    _import_structure = {}
                    if is_torch_available():
                        _import_structure["pipeline_consisid"] = ["ConsisIDPipeline"]
                """,
            },
        ),
        Valid(
            # the family lists `pipeline_output` unconditionally, but `diffusers/pipelines/__init__.py` loads the
            # family only behind the torch and transformers checks
            """
            from dataclasses import dataclass

            import numpy as np
            import PIL.Image
            import torch
            import transformers

            from ...utils import BaseOutput, is_torchvision_available

            if is_torchvision_available():
                import torchvision
            """,
            path="diffusers/pipelines/flux/pipeline_output.py",
            files={
                "diffusers/pipelines/__init__.py": """
                    _import_structure = {"controlnet": [], "flux": []}
                    try:
                        if not (is_torch_available() and is_transformers_available()):
                            raise OptionalDependencyNotAvailable()
                    except OptionalDependencyNotAvailable:
                        _dummy_objects.update(get_objects_from_module(dummy_torch_and_transformers_objects))
                    else:
                        _import_structure["flux"].extend(["FluxPipeline"])
                """,
                "diffusers/pipelines/flux/__init__.py": """
                    _import_structure = {"pipeline_output": ["FluxPipelineOutput", "FluxPriorReduxPipelineOutput"]}
                    try:
                        if not (is_transformers_available() and is_torch_available()):
                            raise OptionalDependencyNotAvailable()
                    except OptionalDependencyNotAvailable:
                        _dummy_objects.update(get_objects_from_module(dummy_torch_and_transformers_objects))
                    else:
                        _import_structure["pipeline_flux"] = ["FluxPipeline"]
                """,
            },
        ),
        Valid(
            # an `is_*()` helper the rule does not know (diffusers 0.39 `is_transformers_flax_compatible()`) is
            # trusted to ensure what the module needs
            """
            import flax
            from transformers import CLIPTokenizer, FlaxCLIPTextModel
            """,
            path="diffusers/pipelines/stable_diffusion/pipeline_flax_stable_diffusion.py",
            files={
                "diffusers/pipelines/stable_diffusion/__init__.py": """
                    _import_structure = {"pipeline_output": ["StableDiffusionPipelineOutput"]}
                    try:
                        if not is_transformers_flax_compatible():
                            raise OptionalDependencyNotAvailable()
                    except OptionalDependencyNotAvailable:
                        _dummy_objects.update(get_objects_from_module(dummy_flax_and_transformers_objects))
                    else:
                        _import_structure["pipeline_flax_stable_diffusion"] = ["FlaxStableDiffusionPipeline"]
                """,
            },
        ),
    ]
    INVALID = [
        Invalid(
            # huggingface/diffusers#13321 before the fix
            """
            import numpy as np
            import torch
            import torchvision
            import torchvision.transforms
            import torchvision.transforms.functional
            from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

            from ...utils import is_cosmos_guardrail_available

            if is_cosmos_guardrail_available():
                from cosmos_guardrail import CosmosSafetyChecker
            """,
            path="diffusers/pipelines/cosmos/pipeline_cosmos2_5_predict.py",
            files=_COSMOS_FILES,
            message=(
                "`torchvision` is imported at module level without `is_torchvision_available()`, but "
                "`diffusers/pipelines/cosmos/__init__.py` loads this module without that check; import it under "
                "`if is_torchvision_available():`, or add the check where "
                "`diffusers/pipelines/cosmos/__init__.py` exports it."
            ),
        ),
        Invalid(
            # `diffusers.loaders` exports `PeftAdapterMixin` outside its `is_torch_available()` block
            """
            import safetensors
            import torch

            from ..hooks.group_offloading import _maybe_remove_and_reapply_group_offloading
            from ..utils import is_peft_available
            """,
            path="diffusers/loaders/peft.py",
            files=_LOADERS_FILES,
            message=(
                "`torch` is imported at module level without `is_torch_available()`, but "
                "`diffusers/loaders/__init__.py` loads this module without that check; import it under "
                "`if is_torch_available():`, or add the check where `diffusers/loaders/__init__.py` exports it."
            ),
        ),
        Invalid(
            # huggingface/diffusers#11262 before the fix: every level guards torch and transformers, none ftfy
            """
            import html

            import ftfy
            import regex as re
            import torch
            from transformers import AutoTokenizer, UMT5EncoderModel

            from ...utils import is_torch_xla_available, logging, replace_example_docstring
            """,
            path="diffusers/pipelines/wan/pipeline_wan.py",
            files={
                "diffusers/__init__.py": """
                    from .utils import OptionalDependencyNotAvailable, is_torch_available, is_transformers_available

                    _import_structure = {"configuration_utils": ["ConfigMixin"], "pipelines": []}
                    try:
                        if not (is_torch_available() and is_transformers_available()):
                            raise OptionalDependencyNotAvailable()
                    except OptionalDependencyNotAvailable:
                        from .utils import dummy_torch_and_transformers_objects
                    else:
                        _import_structure["pipelines"].extend(["WanPipeline"])
                """,
                "diffusers/pipelines/__init__.py": _PIPELINES_INIT_GUARDED.replace("cosmos", "wan").replace(
                    "Cosmos2_5_PredictBasePipeline", "WanPipeline"
                ),
                "diffusers/pipelines/wan/__init__.py": _COSMOS_INIT.replace(
                    "pipeline_cosmos2_5_predict", "pipeline_wan"
                ).replace("Cosmos2_5_PredictBasePipeline", "WanPipeline"),
            },
        ),
    ]

    def check(self) -> None:
        candidates: dict[str, tuple[cst.CSTNode, frozenset[str]]] = {}
        statements = module_statements(self.context.module)
        twins = {id(twin[0]) for twin in unguarded_twins(statements)}
        for statement in statements:
            node = statement.node
            if statement.protected or not isinstance(node, (cst.Import, cst.ImportFrom)):
                continue
            if id(node) in twins:
                continue  # the module guards the same import elsewhere: DRB611 reports the leftover
            if isinstance(node, cst.ImportFrom):
                names = [] if node.relative else [dotted_name(node.module) or ""]
            else:
                names = [dotted_name(alias.name) or "" for alias in node.names]
            for name in names:
                top = name.partition(".")[0]
                if top in OPTIONAL and not ensures(statement.guard, top) and top not in candidates:
                    candidates[top] = (node, statement.guard)
        if not candidates:
            return
        reach = _reach_for(self.context.project)
        ways = reach.ways_in(self.context.module_name)
        for top, (imported, guard) in candidates.items():
            lacking = [package for package, ensured in ways if not ensures(ensured | guard, top)]
            if not lacking:
                continue
            via = self.context.project.module_path(lacking[0]) or lacking[0]
            message = self.message.format(name=top, key=OPTIONAL[top], via=via)
            self.report(imported, message, symbol=top, scope="")
