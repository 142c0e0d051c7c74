"""DRB902: a transformer model that repeats blocks but declares no `_no_split_modules`."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import FileContext, Invalid, Rule, Valid, dotted_name
from analyzers.models import built_by_other_models, inherited_assignment, model_classes


_MODEL_MIXIN = """
class ModelMixin(torch.nn.Module):
    _supports_gradient_checkpointing = False
    _no_split_modules = None
"""
_FILES = {"diffusers/models/modeling_utils.py": _MODEL_MIXIN}


def repeated_blocks(cls: cst.ClassDef, local: set[str]) -> list[str]:
    """Local classes named `*Block`/`*Layer` that the class instantiates inside an `nn.ModuleList(...)`."""
    found: list[str] = []
    for call in walk.nodes(cls.body, cst.Call):
        name = dotted_name(call.func) or ""
        if name.rpartition(".")[2] != "ModuleList":
            continue
        for inner in walk.nodes(call, cst.Call):
            if isinstance(inner.func, cst.Name):
                block = inner.func.value
                if block in local and block.endswith(("Block", "Layer")) and block not in found:
                    found.append(block)
    return found


def imported_transformer_blocks(ctx: FileContext, cls: cst.ClassDef) -> list[str]:
    """Transformer blocks of another module of the package (`JointTransformerBlock` of `models/attention.py`,
    `WanTransformerBlock` reused by a variant) that the class instantiates inside an `nn.ModuleList(...)`."""
    found: list[str] = []
    prefix = ctx.module_name.partition(".")[0] + ".models."
    for call in walk.nodes(cls.body, cst.Call):
        name = dotted_name(call.func) or ""
        if name.rpartition(".")[2] != "ModuleList":
            continue
        for inner in walk.nodes(call, cst.Call):
            if isinstance(inner.func, cst.Name) and inner.func.value.endswith("TransformerBlock"):
                qualified = ctx.qualified_name(inner.func) or ""
                if qualified.startswith(prefix) and inner.func.value not in found:
                    found.append(inner.func.value)
    return found


class NoSplitModulesMissing(Rule):
    """
    ## What it does
    Checks for transformer models under `diffusers/models/transformers/` that stack transformer blocks
    (of their own file, or `*TransformerBlock` classes of another `diffusers.models` module) in an `nn.ModuleList` but declare no `_no_split_modules` (neither the class nor
    a base model of the package).

    ## Why is this bad?
    `ModelMixin._no_split_modules` tells accelerate which modules must stay on one device.
    `from_pretrained(..., device_map="auto")` walks the model and raises "does not support
    `device_map='auto'`" for any `ModelMixin` whose `_no_split_modules` is `None`. Almost every transformer
    of diffusers declares its blocks; the ones that do not cannot be sharded across devices.

    ## Example
    ```python
    class BriaFiboTransformer2DModel(ModelMixin, ConfigMixin):
        _supports_gradient_checkpointing = True

        def __init__(self):
            self.transformer_blocks = nn.ModuleList([BriaFiboTransformerBlock() for _ in range(8)])
    ```

    Use instead:
    ```python
    class BriaFiboTransformer2DModel(ModelMixin, ConfigMixin):
        _supports_gradient_checkpointing = True
        _no_split_modules = ["BriaFiboTransformerBlock", "BriaFiboSingleTransformerBlock"]
    ```

    ## Known problems
    Only blocks defined in the model's own file and named `*Block`/`*Layer`, and blocks named
    `*TransformerBlock` imported from another module of `diffusers.models`, are looked at; a model that stacks
    other imported blocks is not reported, nor is a model that another module of `diffusers/models/` builds (a
    component such as `TransformerTemporalModel`: `device_map` places the model that contains it). Bases named `*Mixin` are not followed.

    Severity is `note`: a missing `_no_split_modules` is a feature gap, not a silent defect. `device_map`
    already refuses such a model with an error that says what is missing, and everything else works.

    ## References
    - huggingface/diffusers#13656, pattern 9
    - huggingface/diffusers#13618 (Bria Fibo review; follow-up huggingface/diffusers#13983 adds `_no_split_modules`)
    """

    code = "DRB902"
    pattern = 9
    severity = "note"
    message = (
        "`{model}` stacks `{block}` in an `nn.ModuleList` but declares no `_no_split_modules`, so loading it "
        'with a `device_map` raises; set `_no_split_modules = ["{block}"]` (and its other block classes).'
    )
    REQUIRES_ANY = ("ModuleList",)
    PATHS = ("/models/transformers/",)

    VALID = [
        Valid(
            """
            from ..modeling_utils import ModelMixin

            class FooBlock(nn.Module):
                pass

            class FooTransformer(ModelMixin):
                _no_split_modules = ["FooBlock"]

                def __init__(self):
                    self.blocks = nn.ModuleList([FooBlock() for _ in range(2)])
            """,
            path="diffusers/models/transformers/transformer_foo.py",
            files=_FILES,
        ),
        Valid(
            # declared by the family's base model
            """
            from ..modeling_utils import ModelMixin

            class FooBlock(nn.Module):
                pass

            class FooBase(ModelMixin):
                _no_split_modules = ["FooBlock"]

            class FooTransformer(FooBase):
                def __init__(self):
                    self.blocks = nn.ModuleList([FooBlock() for _ in range(2)])
            """,
            path="diffusers/models/transformers/transformer_foo.py",
            files=_FILES,
        ),
        Valid(
            # not a ModelMixin: a plain nn.Module stack is split by its parent model's declaration
            """
            class FooBlock(nn.Module):
                pass

            class FooEncoder(nn.Module):
                def __init__(self):
                    self.blocks = nn.ModuleList([FooBlock() for _ in range(2)])
            """,
            path="diffusers/models/transformers/transformer_foo.py",
            files=_FILES,
        ),
        Valid(
            # a component that the UNet blocks build: `device_map` places the UNet, not this model
            """
            from ..attention import BasicTransformerBlock
            from ..modeling_utils import ModelMixin

            class FooTemporalModel(ModelMixin):
                def __init__(self):
                    self.transformer_blocks = nn.ModuleList([FooTransformerBlock(), FooTransformerBlock()])

            class FooTransformerBlock(nn.Module):
                pass
            """,
            path="diffusers/models/transformers/transformer_foo_temporal.py",
            files={
                **_FILES,
                "diffusers/models/unets/unet_foo_blocks.py": "class FooDownBlock:\n    def __init__(self):\n        self.temporal = FooTemporalModel(8)\n",
            },
        ),
    ]
    INVALID = [
        Invalid(
            """
            from ..modeling_utils import ModelMixin

            class FooTransformerBlock(nn.Module):
                pass

            class FooTransformer(ModelMixin, ConfigMixin):
                _supports_gradient_checkpointing = True

                def __init__(self):
                    self.transformer_blocks = nn.ModuleList([FooTransformerBlock() for _ in range(2)])
            """,
            path="diffusers/models/transformers/transformer_foo.py",
            files=_FILES,
            message=(
                "`FooTransformer` stacks `FooTransformerBlock` in an `nn.ModuleList` but declares no "
                "`_no_split_modules`, so loading it with a `device_map` raises; set "
                '`_no_split_modules = ["FooTransformerBlock"]` (and its other block classes).'
            ),
        ),
        Invalid(
            # `_no_split_modules = None` is the ModelMixin default, not a declaration
            """
            from ..modeling_utils import ModelMixin

            class FooLayer(nn.Module):
                pass

            class FooTransformer(ModelMixin):
                _no_split_modules = None

                def __init__(self):
                    self.layers = torch.nn.ModuleList([FooLayer(), FooLayer()])
            """,
            path="diffusers/models/transformers/transformer_foo.py",
            files=_FILES,
            message=(
                "`FooTransformer` stacks `FooLayer` in an `nn.ModuleList` but declares no `_no_split_modules`, "
                'so loading it with a `device_map` raises; set `_no_split_modules = ["FooLayer"]` (and its '
                "other block classes)."
            ),
        ),
        Invalid(
            # the block class is shared: it lives in `models/attention.py`
            """
            from ..attention import JointTransformerBlock
            from ..modeling_utils import ModelMixin

            class FooTransformer(ModelMixin):
                def __init__(self, num_layers=2):
                    self.transformer_blocks = nn.ModuleList([JointTransformerBlock(dim=64) for _ in range(num_layers)])
            """,
            path="diffusers/models/transformers/transformer_foo.py",
            files=_FILES,
            message=(
                "`FooTransformer` stacks `JointTransformerBlock` in an `nn.ModuleList` but declares no "
                "`_no_split_modules`, so loading it with a `device_map` raises; set "
                '`_no_split_modules = ["JointTransformerBlock"]` (and its other block classes).'
            ),
        ),
    ]

    def check(self) -> None:
        ctx = self.context
        local = {d.name for d in ctx.classes if d.parent is None}
        for definition in model_classes(ctx):
            cls = cst.ensure_type(definition.node, cst.ClassDef)
            blocks = repeated_blocks(cls, local) or imported_transformer_blocks(ctx, cls)
            if not blocks:
                continue
            declared = inherited_assignment(ctx, ctx.module_name, cls, "_no_split_modules")
            if declared is not None and not (isinstance(declared, cst.Name) and declared.value == "None"):
                continue
            if built_by_other_models(ctx, cls.name.value):
                continue  # a component of bigger models (`TransformerTemporalModel`): `device_map` splits those
            message = self.message.format(model=cls.name.value, block=blocks[0])
            self.report(cls.name, message, symbol="_no_split_modules", scope=definition.qualname)
