"""DRB901: a model with attention layers that does not inherit `AttentionMixin`."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from analyzers import walk
from analyzers.core import Definition, FileContext, Invalid, Rule, Valid, dotted_name


# ---------------------------------------------------------------------------------------------
# Class graph helpers (private; could be shared in matchers.py: DRB902 and DRB904 import them)

ATTENTION_MODULE_MIXIN = "AttentionModuleMixin"


def _top(ctx: FileContext) -> str:
    return ctx.module_name.partition(".")[0]


def resolve_class(ctx: FileContext, module: str, name: str) -> tuple[str, cst.ClassDef] | None:
    """The class `name` means inside `module`, only when it lives in the analysed package (never torch)."""
    head = name.partition(".")[0]
    if "." not in name and ctx.project.find_class(module, name) is not None:
        return module, ctx.project.find_class(module, name)  # type: ignore[return-value]
    qualified = ctx.project.imports(module).get(head)
    if qualified is None or not qualified.startswith(_top(ctx) + "."):
        return None
    return ctx.project.locate_class(module, name)


def ancestry(ctx: FileContext, module: str, cls: cst.ClassDef, limit: int = 24) -> list[tuple[str, cst.ClassDef]]:
    """`cls` and its base classes inside the package, nearest first.

    Bases outside the package and bases named `*Mixin` are not loaded (a mixin never leads to a model or
    attention base; loading `ConfigMixin`, `PeftAdapterMixin`, ... costs seconds per scan), so a mixin is
    seen only where a class names it directly.
    """
    found = [(module, cls)]
    seen = {(module, cls.name.value)}
    index = 0
    while index < len(found) and len(found) < limit:
        mod, node = found[index]
        index += 1
        for arg in node.bases:
            name = dotted_name(arg.value)
            if not name or name.endswith("Mixin") or name.rpartition(".")[2] in ("Module", "object"):
                continue
            located = resolve_class(ctx, mod, name)
            if located is not None and (located[0], located[1].name.value) not in seen:
                seen.add((located[0], located[1].name.value))
                found.append(located)
    return found


def ancestor_names(ctx: FileContext, module: str, cls: cst.ClassDef) -> set[str]:
    """Names of every base (resolved or not) of `cls` and of its ancestors inside the package."""
    names: set[str] = set()
    for _, node in ancestry(ctx, module, cls):
        for arg in node.bases:
            name = dotted_name(arg.value)
            if name:
                names.add(name.rpartition(".")[2])
    return names


def class_assignment(cls: cst.ClassDef, name: str) -> cst.BaseExpression | None:
    """The value of `name = ...` in the class body itself, else None."""
    body = cls.body.body if isinstance(cls.body, cst.IndentedBlock) else ()
    for statement in body:
        if not isinstance(statement, cst.SimpleStatementLine):
            continue
        for small in statement.body:
            if isinstance(small, cst.Assign):
                for target in small.targets:
                    if isinstance(target.target, cst.Name) and target.target.value == name:
                        return small.value
            elif isinstance(small, cst.AnnAssign) and isinstance(small.target, cst.Name):
                if small.target.value == name and small.value is not None:
                    return small.value
    return None


def inherited_assignment(ctx: FileContext, module: str, cls: cst.ClassDef, name: str) -> cst.BaseExpression | None:
    """The nearest `name = ...` in `cls` or an ancestor inside the package."""
    for _, node in ancestry(ctx, module, cls):
        value = class_assignment(node, name)
        if value is not None:
            return value
    return None


def defines_method(ctx: FileContext, module: str, cls: cst.ClassDef, name: str) -> bool:
    for _, node in ancestry(ctx, module, cls):
        for statement in node.body.body if isinstance(node.body, cst.IndentedBlock) else ():
            if isinstance(statement, cst.FunctionDef) and statement.name.value == name:
                return True
    return False


def is_model(ctx: FileContext, cls: cst.ClassDef) -> bool:
    """Whether `cls` is a `ModelMixin` subclass (not `ModelMixin` itself)."""
    return cls.name.value != "ModelMixin" and "ModelMixin" in ancestor_names(ctx, ctx.module_name, cls)


def model_classes(ctx: FileContext) -> list[Definition]:
    cache = ctx.__dict__.get("_drb9_models")
    if cache is None:
        cache = [d for d in ctx.classes if d.parent is None and is_model(ctx, d.node)]  # type: ignore[arg-type]
        ctx.__dict__["_drb9_models"] = cache
    return cache


def reachable_classes(ctx: FileContext, cls: cst.ClassDef, limit: int = 80) -> Iterator[cst.ClassDef]:
    """`cls` and every class of the analysed file that it instantiates, transitively (breadth first).

    Only the file's own classes are followed: loading every imported module costs too much per scan.
    """
    local = {d.name: d.node for d in ctx.classes if d.parent is None}
    queue: list[cst.ClassDef] = [cls]
    seen = {cls.name.value}
    index = 0
    while index < len(queue) and index < limit:
        node = queue[index]
        index += 1
        yield node
        for call in walk.nodes(node.body, cst.Call):
            if isinstance(call.func, cst.Name) and call.func.value in local and call.func.value not in seen:
                seen.add(call.func.value)
                queue.append(local[call.func.value])  # type: ignore[arg-type]


def is_attention_layer(ctx: FileContext, cls: cst.ClassDef) -> bool:
    """Whether `cls` is an attention layer built on `AttentionModuleMixin` (named among its bases)."""
    return ATTENTION_MODULE_MIXIN in ancestor_names(ctx, ctx.module_name, cls)


# ---------------------------------------------------------------------------------------------

_MODEL_MIXIN = """
class ModelMixin(torch.nn.Module):
    _supports_gradient_checkpointing = False
    _no_split_modules = None
"""
_ATTENTION = """
class AttentionMixin:
    @property
    def attn_processors(self):
        return {}

class AttentionModuleMixin:
    _supports_qkv_fusion = True
"""
_ATTENTION_PROCESSOR = """
class Attention(nn.Module):
    def get_processor(self):
        return self.processor
"""
_FILES = {
    "diffusers/models/modeling_utils.py": _MODEL_MIXIN,
    "diffusers/models/attention.py": _ATTENTION,
    "diffusers/models/attention_processor.py": _ATTENTION_PROCESSOR,
}


class ModelAttentionMixinMissing(Rule):
    """
    ## What it does
    Checks for `ModelMixin` subclasses under `diffusers/models/` that contain attention layers built on
    `AttentionModuleMixin` (instantiated by the model or by the blocks it builds) but inherit neither
    `AttentionMixin` nor their own `attn_processors`.

    ## Why is this bad?
    `AttentionMixin` is what gives a model `attn_processors`, `set_attn_processor`,
    `fuse_qkv_projections` and `unfuse_qkv_projections`. Pipelines and users call these on every
    denoiser; on a model without the mixin they raise `AttributeError`, although its attention layers
    support them. Meta issue #13656 (pattern 9) lists models that bypass the shared mixins.

    ## Example
    ```python
    class BriaTransformer2DModel(ModelMixin, ConfigMixin, PeftAdapterMixin, CacheMixin):
        def __init__(self):
            self.blocks = nn.ModuleList([BriaTransformerBlock() for _ in range(19)])  # holds BriaAttention
    ```

    Use instead:
    ```python
    class BriaTransformer2DModel(ModelMixin, ConfigMixin, PeftAdapterMixin, CacheMixin, AttentionMixin):
        ...
    ```

    ## Known problems
    Attention layers are found by following the classes the model instantiates inside its own file, up
    to 80 classes; layers imported from another module or created through a factory are not seen. Models
    built on the legacy `Attention` class of `attention_processor.py` (which predates the mixins) are left
    alone on purpose, as are models that define `attn_processors` themselves. Mixins are recognised where a
    class names them among its bases; a mixin inherited through another mixin is not seen.

    ## References
    - huggingface/diffusers#13656, pattern 9
    - huggingface/diffusers#13618 (Bria Fibo review)
    """

    code = "DRB901"
    pattern = 9
    message = (
        "`{model}` contains `{layer}` attention layers but does not inherit `AttentionMixin`, so "
        "`attn_processors`, `set_attn_processor` and `fuse_qkv_projections` are missing; add `AttentionMixin` "
        "to its bases."
    )
    REQUIRES_ANY = ("ModelMixin",)
    PATHS = ("/models/",)

    VALID = [
        Valid(
            """
            from ..attention import AttentionMixin, AttentionModuleMixin
            from ..modeling_utils import ModelMixin

            class FooAttention(nn.Module, AttentionModuleMixin):
                pass

            class FooBlock(nn.Module):
                def __init__(self):
                    self.attn = FooAttention()

            class FooTransformer(ModelMixin, AttentionMixin):
                def __init__(self):
                    self.blocks = nn.ModuleList([FooBlock() for _ in range(2)])
            """,
            path="diffusers/models/transformers/transformer_foo.py",
            files=_FILES,
        ),
        Valid(
            # no attention layer anywhere: a convolutional VAE needs no processor API
            """
            from ..modeling_utils import ModelMixin

            class FooResBlock(nn.Module):
                def __init__(self):
                    self.conv = nn.Conv2d(4, 4, 3)

            class FooVAE(ModelMixin):
                def __init__(self):
                    self.blocks = nn.ModuleList([FooResBlock()])
            """,
            path="diffusers/models/autoencoders/autoencoder_foo.py",
            files=_FILES,
        ),
        Valid(
            # the model implements the processor API itself
            """
            from ..attention import AttentionModuleMixin
            from ..modeling_utils import ModelMixin

            class FooAttention(torch.nn.Module, AttentionModuleMixin):
                pass

            class FooUNet(ModelMixin):
                def __init__(self):
                    self.attn = FooAttention()

                @property
                def attn_processors(self):
                    return {}
            """,
            path="diffusers/models/unets/unet_foo.py",
            files=_FILES,
        ),
        Valid(
            # a torch module named Attention is not diffusers' attention layer
            """
            from torch.nn import MultiheadAttention as Attention
            from ..modeling_utils import ModelMixin

            class FooModel(ModelMixin):
                def __init__(self):
                    self.attn = Attention(64, 8)
            """,
            path="diffusers/models/transformers/transformer_foo.py",
            files=_FILES,
        ),
    ]
    INVALID = [
        Invalid(
            """
            from ..attention import AttentionModuleMixin
            from ..modeling_utils import ModelMixin

            class FooAttention(nn.Module, AttentionModuleMixin):
                pass

            class FooBlock(nn.Module):
                def __init__(self):
                    self.attn = FooAttention()

            class FooTransformer(ModelMixin, ConfigMixin):
                def __init__(self):
                    self.blocks = nn.ModuleList([FooBlock() for _ in range(2)])
            """,
            path="diffusers/models/transformers/transformer_foo.py",
            files=_FILES,
            message=(
                "`FooTransformer` contains `FooAttention` attention layers but does not inherit `AttentionMixin`, "
                "so `attn_processors`, `set_attn_processor` and `fuse_qkv_projections` are missing; add "
                "`AttentionMixin` to its bases."
            ),
        ),
        Invalid(
            # the model reaches ModelMixin through a base model of the family
            """
            from ..attention import AttentionModuleMixin
            from ..modeling_utils import ModelMixin

            class BarAttention(torch.nn.Module, AttentionModuleMixin):
                pass

            class FooBase(ModelMixin):
                pass

            class FooTransformer(FooBase):
                def __init__(self):
                    self.attn = BarAttention()
            """,
            path="diffusers/models/transformers/transformer_foo.py",
            files=_FILES,
            message=(
                "`FooTransformer` contains `BarAttention` attention layers but does not inherit `AttentionMixin`, "
                "so `attn_processors`, `set_attn_processor` and `fuse_qkv_projections` are missing; add "
                "`AttentionMixin` to its bases."
            ),
        ),
    ]

    def check(self) -> None:
        ctx = self.context
        for definition in model_classes(ctx):
            cls: cst.ClassDef = definition.node  # type: ignore[assignment]
            if "AttentionMixin" in ancestor_names(ctx, ctx.module_name, cls):
                continue
            if defines_method(ctx, ctx.module_name, cls, "attn_processors"):
                continue
            for node in reachable_classes(ctx, cls):
                if node is not cls and is_attention_layer(ctx, node):
                    layer = node.name.value
                    message = self.message.format(model=cls.name.value, layer=layer)
                    self.report(cls.name, message, symbol=layer, scope=definition.qualname)
                    break
