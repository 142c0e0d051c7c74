"""DRB901: a model with attention layers that does not inherit `AttentionMixin`."""

from __future__ import annotations

import libcst as cst

from analyzers.core import FileContext, Invalid, Rule, Valid
from analyzers.models import (
    ancestor_names,
    ancestry,
    built_attention_layer,
    built_by_other_models,
    defines_method,
    model_classes,
)


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


def _takes_timestep(ctx: FileContext, cls: cst.ClassDef) -> bool:
    """Whether the nearest `forward` of `cls` (its own or a base's) takes a timestep: `timestep`, `timesteps`,
    `t`, `sigma`, ... A denoiser or a controlnet does; a VAE, a text conditioner or a codec decoder does not."""
    for _, node in ancestry(ctx, ctx.module_name, cls):
        for statement in node.body.body if isinstance(node.body, cst.IndentedBlock) else ():
            if isinstance(statement, cst.FunctionDef) and statement.name.value == "forward":
                params = statement.params
                names = [p.name.value for p in (*params.posonly_params, *params.params, *params.kwonly_params)]
                return any("timestep" in n or "sigma" in n or n == "t" for n in names)
    return False


class ModelAttentionMixinMissing(Rule):
    """
    ## What it does
    Checks for `ModelMixin` subclasses under `diffusers/models/` that contain attention layers built on
    `AttentionModuleMixin`, or on the processor-based `Attention` of `attention_processor.py` (instantiated by the
    model or by the blocks it builds) but inherit neither `AttentionMixin` nor their own `attn_processors`. Only models whose `forward` takes a timestep (denoisers and
    controlnets, the models pipelines configure through the processor API) are checked.

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
    class BriaTransformer2DModel(ModelMixin, ConfigMixin, PeftAdapterMixin, CacheMixin, AttentionMixin): ...
    ```

    ## Known problems
    Attention layers are found by following the classes the model instantiates inside its own file, up
    to 80 classes, and the attention classes those instantiate from other modules of the package (a name
    with `Attention` or `Attn` in it); blocks imported from another module are not followed, and layers created
    through a factory are not seen. Models that define `attn_processors` themselves are left alone, as are
    auxiliary models whose
    `forward` takes no timestep (VAEs, text conditioners, codec decoders) and models that another module of
    `diffusers/models/` builds (`TransformerTemporalModel` inside the 3-D UNet blocks): the enclosing model carries
    the API for them. Mixins are recognised where a
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
    message_no_mixin = (
        "`{model}` contains `{layer}` attention layers but defines no `attn_processors` or `set_attn_processor`, "
        "so the processor API that the other denoisers offer is missing; add both, as `UNet2DConditionModel` does."
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
        Valid(
            # an auxiliary model (a VAE, a text conditioner, a codec decoder) takes no timestep: pipelines call no
            # processor API on it
            """
            from ..attention import AttentionModuleMixin
            from ..modeling_utils import ModelMixin

            class FooAttnBlock(nn.Module, AttentionModuleMixin):
                pass

            class FooTextConditioner(ModelMixin):
                def __init__(self):
                    self.attn = FooAttnBlock()

                def forward(self, hidden_states, attention_mask=None):
                    return self.attn(hidden_states)
            """,
            path="diffusers/models/condition_embedders/condition_embedder_foo.py",
            files=_FILES,
        ),
        Valid(
            # a component that the UNet blocks build: the UNet carries the processor API for it
            """
            from ..attention_processor import Attention
            from ..modeling_utils import ModelMixin

            class FooTemporalModel(ModelMixin):
                def __init__(self):
                    self.attn = Attention(query_dim=8)

                def forward(self, hidden_states, timestep=None):
                    return hidden_states
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

                def forward(self, hidden_states, timestep, encoder_hidden_states=None):
                    return hidden_states
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
                def forward(self, sample, t):
                    return sample

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
        Invalid(
            # the processor-based `Attention` takes processors too: the model needs the API to reach them
            """
            from ..attention_processor import Attention
            from ..modeling_utils import ModelMixin

            class FooBlock(nn.Module):
                def __init__(self):
                    self.attn = Attention(query_dim=64)

            class FooVideoTransformer(ModelMixin):
                def __init__(self):
                    self.blocks = nn.ModuleList([FooBlock()])

                def forward(self, hidden_states, timestep):
                    return hidden_states
            """,
            path="diffusers/models/transformers/transformer_foo_video.py",
            files=_FILES,
            message=(
                "`FooVideoTransformer` contains `Attention` attention layers but does not inherit `AttentionMixin`, "
                "so `attn_processors`, `set_attn_processor` and `fuse_qkv_projections` are missing; add "
                "`AttentionMixin` to its bases."
            ),
        ),
        Invalid(
            # a release without `AttentionMixin`: the model owes the two methods themselves; the attention layer sits
            # in a block imported from another module
            """
            from ..attention import BasicTransformerBlock
            from ..modeling_utils import ModelMixin

            class FooDiT(ModelMixin):
                def __init__(self):
                    self.blocks = nn.ModuleList([BasicTransformerBlock(64, 8, 8)])

                def forward(self, hidden_states, timestep=None):
                    return hidden_states
            """,
            path="diffusers/models/transformers/foo_dit.py",
            files={
                "diffusers/models/modeling_utils.py": _MODEL_MIXIN,
                "diffusers/models/attention_processor.py": _ATTENTION_PROCESSOR,
                "diffusers/models/attention.py": """
                    from .attention_processor import Attention

                    class BasicTransformerBlock(nn.Module):
                        def __init__(self, dim, heads, head_dim):
                            self.attn1 = Attention(query_dim=dim, heads=heads, dim_head=head_dim)
                    """,
            },
            message=(
                "`FooDiT` contains `Attention` attention layers but defines no `attn_processors` or "
                "`set_attn_processor`, so the processor API that the other denoisers offer is missing; add both, as "
                "`UNet2DConditionModel` does."
            ),
        ),
    ]

    def check(self) -> None:
        ctx = self.context
        for definition in model_classes(ctx):
            cls = cst.ensure_type(definition.node, cst.ClassDef)
            if not _takes_timestep(ctx, cls):
                continue  # an auxiliary model (VAE, conditioner, codec): not the denoiser the pipelines configure
            if "AttentionMixin" in ancestor_names(ctx, ctx.module_name, cls):
                continue
            if defines_method(ctx, ctx.module_name, cls, "attn_processors"):
                continue
            layer = built_attention_layer(ctx, cls)
            if layer is not None and not built_by_other_models(ctx, cls.name.value):
                # releases before `AttentionMixin` (0.35) gave each model the two methods by hand
                top = ctx.module_name.partition(".")[0]
                has_mixin = ctx.project.find_class(f"{top}.models.attention", "AttentionMixin") is not None
                template = self.message if has_mixin else self.message_no_mixin
                message = template.format(model=cls.name.value, layer=layer)
                self.report(cls.name, message, symbol=layer, scope=definition.qualname)
