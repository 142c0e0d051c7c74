"""DRB901: a model with attention layers that does not inherit `AttentionMixin`."""

from __future__ import annotations

import libcst as cst

from analyzers.core import Invalid, Rule, Valid
from analyzers.models import ancestor_names, defines_method, is_attention_layer, model_classes, reachable_classes


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
    severity = "warning"
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
            cls = cst.ensure_type(definition.node, cst.ClassDef)
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
