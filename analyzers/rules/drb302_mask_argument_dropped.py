"""DRB302: a model `forward` or an attention processor `__call__` accepts a mask argument and never reads it."""

from __future__ import annotations

import re

import libcst as cst

from analyzers import walk
from analyzers.core import Definition, Invalid, Rule, Valid, dotted_name
from analyzers.matchers import names_read, parameters, stub_body


#: words near a mask's name in a comment or docstring that say it is ignored on purpose
ACKNOWLEDGING_RE = re.compile(
    r"not used|unused|ignored|ignores|takes no|no effect|not supported|unsupported|for compatibility", re.IGNORECASE
)


def is_mask_name(name: str) -> bool:
    """An attention / conditioning mask argument: `attention_mask`, `ip_adapter_masks`, `image_mask`, ...

    A bare `mask`/`masks` or a name that starts with `mask` (`mask_image`, `masked_image_latents`) is an
    inpainting input, not an attention mask; those are left to other rules.
    """
    return "mask" in name and not name.startswith("mask")


def is_attention_processor(method: cst.FunctionDef) -> bool:
    """A processor's `__call__(self, attn, hidden_states, ...)`, the signature `Attention.forward` calls."""
    params = parameters(method)
    return method.name.value == "__call__" and len(params) >= 2 and params[1].name.value == "attn"


def acknowledged(module: cst.Module, cls: cst.ClassDef, name: str) -> bool:
    """Whether a comment or docstring line of `cls` names `name` and says it is ignored on purpose."""
    pattern = re.compile(rf"\b{re.escape(name)}\b")
    return any(
        pattern.search(line) and ACKNOWLEDGING_RE.search(line) for line in module.code_for_node(cls).splitlines()
    )


#: a linear attention processor (`SanaLinearAttnProcessor2_0`): no softmax, so no attention mask it could apply
LINEAR_ATTENTION_RE = re.compile(r"LinearAttn")


def builds_linear_attention(cls: cst.ClassDef) -> bool:
    """Whether the class builds an attention layer with a linear attention processor (`processor=...LinearAttn...()`):
    its self-attention has no `attention_mask` to hand on, by design rather than by omission."""
    for call in walk.nodes(cls, cst.Call):
        for arg in call.args:
            if arg.keyword is not None and arg.keyword.value == "processor" and isinstance(arg.value, cst.Call):
                if LINEAR_ATTENTION_RE.search(dotted_name(arg.value.func) or ""):
                    return True
    return False


def reads_by_name(read: set[str]) -> bool:
    """Whether a body that reads these names may read its arguments at run time by name (`locals()`, `vars()`)."""
    return "locals" in read or "vars" in read


class MaskArgumentDropped(Rule):
    """
    ## What it does
    Checks for a mask argument (`attention_mask`, `encoder_attention_mask`, `ip_adapter_masks`,
    `image_mask`, ...) of a module's `forward` or of an attention processor's `__call__` that the
    body never reads.

    ## Why is this bad?
    A caller builds a mask, the layer accepts it, and drops it: padded tokens take part in attention,
    a regional IP-Adapter mask does nothing, and nothing tells the user. Meta issue #13656 (pattern 3)
    notes that mask bugs keep crossing the pipeline/model boundary this way: the model forward prepares
    a mask, passes it to a block, and the block never hands it to attention.

    ## Example
    ```python
    class MyTransformerBlock(nn.Module):
        def forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None):
            hidden_states = hidden_states + self.attn1(self.norm1(hidden_states))
            return hidden_states + self.attn2(hidden_states, encoder_hidden_states=encoder_hidden_states)
    ```

    Use instead:
    ```python
    class MyTransformerBlock(nn.Module):
        def forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None):
            hidden_states = hidden_states + self.attn1(self.norm1(hidden_states), attention_mask=attention_mask)
            return hidden_states + self.attn2(hidden_states, encoder_hidden_states=encoder_hidden_states)
    ```
    or, where the layer cannot apply a mask, raise when one is given.

    ## Known problems
    A layer's `forward` is reported only when a model (`ModelMixin` subclass) of the same file takes a mask
    of the same name from its users: an internal layer whose callers never pass that mask is left alone.
    The `attention_mask` of an attention processor's `__call__` is not looked at: SD3- and Sana-style
    processors ignore it by design for models that never build one. A bare `mask` (an
    inpainting mask) is not looked at. A mask that a comment or docstring of the class names as unused,
    ignored or unsupported is taken as deliberately ignored, and so is an argument of a method whose body
    is only a stub or that reads arguments through `locals()`. A mask that is read only to be checked
    (`if attention_mask is not None: ...`) counts as read. A block whose self-attention is linear (it builds
    an attention layer with a `...LinearAttn...` processor, as Sana does) is not reported for its
    `attention_mask`: linear attention has no softmax for a mask to enter, so dropping it is by design.

    ## References
    - huggingface/diffusers#13656, pattern 3
    - huggingface/diffusers#13584 (Flux `ip_adapter_masks` accepted but ignored by `FluxIPAdapterAttnProcessor`)
    - huggingface/diffusers#13614 (Sana: the public `attention_mask` never reaches self-attention, which is
      linear attention; see Known problems)
    - huggingface/diffusers#12294 (QwenImage `encoder_hidden_states_mask` unused)
    """

    code = "DRB302"
    pattern = 3
    severity = "warning"
    message = (
        "`{arg}` is accepted by `{owner}` but never read, so the mask is silently dropped; pass it on to the "
        "attention that needs it, or raise when it is given."
    )
    REQUIRES_ANY = ("mask",)

    VALID = [
        # an internal layer whose mask no model of the file takes from its users (T5-FiLM decoder)
        Valid(
            """
            class T5LayerSelfAttentionCond(nn.Module):
                def forward(self, hidden_states, conditioning_emb=None, attention_mask=None):
                    return hidden_states + self.attention(self.layer_norm(hidden_states))

            class T5FilmDecoder(ModelMixin, ConfigMixin):
                def forward(self, encodings_and_masks, decoder_input_tokens, decoder_noise_time):
                    return self.decoder(decoder_input_tokens, encodings_and_masks)
            """
        ),
        Valid(
            """
            class MyTransformerBlock(nn.Module):
                def forward(self, hidden_states, attention_mask=None):
                    return hidden_states + self.attn1(hidden_states, attention_mask=attention_mask)
            """
        ),
        # an attention processor's own `attention_mask` is DRB304's
        Valid(
            """
            class MyAttnProcessor:
                def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None):
                    return attn.to_out[0](hidden_states)
            """
        ),
        # a bare inpainting `mask` is not an attention mask
        Valid(
            """
            class MaskConditionEncoder(nn.Module):
                def forward(self, x, mask=None):
                    return self.layers(x)
            """
        ),
        # acknowledged in a comment
        Valid(
            """
            class DualTransformer(nn.Module):
                def forward(self, hidden_states, encoder_hidden_states, attention_mask=None):
                    # attention_mask is not used yet
                    return self.transformer(hidden_states, encoder_hidden_states)
            """
        ),
        # acknowledged in the class docstring
        Valid(
            '''
            class NattenProcessor:
                """This processor takes no `block_mask`: the kernel encodes the window."""

                def __call__(self, attn, hidden_states, block_mask=None):
                    return attn.na3d(hidden_states)
            '''
        ),
        # linear self-attention (Sana) has no softmax a mask could enter: dropping `attention_mask` is by design
        Valid(
            """
            class SanaTransformerBlock(nn.Module):
                def __init__(self, dim):
                    self.attn1 = Attention(query_dim=dim, processor=SanaLinearAttnProcessor2_0())
                    self.attn2 = Attention(query_dim=dim, cross_attention_dim=dim, processor=SanaAttnProcessor2_0())

                def forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None):
                    hidden_states = hidden_states + self.attn1(self.norm1(hidden_states))
                    return hidden_states + self.attn2(
                        hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=encoder_attention_mask
                    )

            class SanaTransformer2DModel(ModelMixin, ConfigMixin):
                def forward(self, hidden_states, encoder_hidden_states, attention_mask=None, encoder_attention_mask=None):
                    for block in self.transformer_blocks:
                        hidden_states = block(hidden_states, attention_mask, encoder_hidden_states, encoder_attention_mask)
                    return hidden_states
            """
        ),
        # an interface stub and a mask that is only checked
        Valid(
            """
            class BaseBlock(nn.Module):
                def forward(self, hidden_states, encoder_attention_mask=None):
                    raise NotImplementedError

            class StrictBlock(nn.Module):
                def forward(self, hidden_states, encoder_attention_mask=None):
                    if encoder_attention_mask is not None:
                        raise ValueError("masks are not supported")
                    return self.attn(hidden_states)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class SanaTransformerBlock(nn.Module):
                def forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None):
                    hidden_states = hidden_states + self.attn1(self.norm1(hidden_states))
                    return hidden_states + self.attn2(
                        hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=encoder_attention_mask
                    )

            class SanaTransformer2DModel(ModelMixin, ConfigMixin):
                def forward(self, hidden_states, encoder_hidden_states, attention_mask=None, encoder_attention_mask=None):
                    for block in self.transformer_blocks:
                        hidden_states = block(hidden_states, attention_mask, encoder_hidden_states, encoder_attention_mask)
                    return hidden_states
            """,
            message=(
                "`attention_mask` is accepted by `SanaTransformerBlock.forward` but never read, so the mask is "
                "silently dropped; pass it on to the attention that needs it, or raise when it is given."
            ),
        ),
        Invalid(
            """
            class FluxIPAdapterAttnProcessor(torch.nn.Module):
                def __call__(
                    self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                    ip_hidden_states=None, ip_adapter_masks=None,
                ):
                    query = attn.to_q(hidden_states)
                    return dispatch_attention_fn(query, query, query, attn_mask=attention_mask)
            """,
            message=(
                "`ip_adapter_masks` is accepted by `FluxIPAdapterAttnProcessor.__call__` but never read, so the mask "
                "is silently dropped; pass it on to the attention that needs it, or raise when it is given."
            ),
        ),
    ]

    def check(self) -> None:
        context = self.context
        for definition in context.definitions:
            if definition.is_class or definition.name not in ("forward", "__call__"):
                continue
            cls = definition.parent
            if cls is None or not cls.is_class:
                continue
            method = cst.ensure_type(definition.node, cst.FunctionDef)
            processor = is_attention_processor(method)
            if definition.name == "__call__" and not processor:
                continue  # pipelines' `__call__` arguments are DRB201's
            candidates = [
                p
                for p in parameters(method)
                if is_mask_name(p.name.value) and not (processor and p.name.value == "attention_mask")
            ]
            if not candidates or stub_body(method):
                continue
            read = {n.value for n in names_read(method.body)}
            if reads_by_name(read):
                continue
            for param in candidates:
                name = param.name.value
                if name in read or acknowledged(context.module, cst.ensure_type(cls.node, cst.ClassDef), name):
                    continue
                if not processor and name not in self._public_masks():
                    continue  # an internal layer: its callers may never pass this mask at all
                if name == "attention_mask" and builds_linear_attention(cst.ensure_type(cls.node, cst.ClassDef)):
                    continue  # linear self-attention (Sana) has no softmax a mask could enter
                self._report(param, definition, cls, name)

    def _public_masks(self) -> set[str]:
        """Mask parameters of the `forward` of this file's models (`*ModelMixin` subclasses): masks users pass."""
        cached = self.context.__dict__.get("_public_masks")
        if cached is None:
            cached = set()
            for definition in self.context.definitions:
                node = definition.node
                if not isinstance(node, cst.ClassDef) or definition.parent is not None:
                    continue
                if not self.context.inherits_from(
                    node, frozenset({"ModelMixin"}), follow=lambda n: "Model" in n or "Mixin" not in n
                ):
                    continue
                forward = self.context.methods(definition).get("forward")
                if forward is not None:
                    cached |= {p.name.value for p in parameters(forward) if is_mask_name(p.name.value)}
            self.context.__dict__["_public_masks"] = cached
        return cached

    def _report(self, param: cst.Param, definition: Definition, cls: Definition, name: str) -> None:
        owner = f"{cls.name}.{definition.name}"
        self.report(param, self.message.format(arg=name, owner=owner), symbol=name, scope=definition.qualname)
