"""DRB304: an attention processor's `__call__` accepts `attention_mask` and never reads it."""

from __future__ import annotations

import re

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import names_read, parameters, stub_body


#: words on a line that names the mask and says the processor ignores it on purpose
_ACKNOWLEDGING_RE = re.compile(
    r"not used|unused|ignored|ignores|takes no|no effect|not supported|unsupported|does not support|"
    r"doesn't support|for compatibility",
    re.IGNORECASE,
)
_MASK_WORD_RE = re.compile(r"mask", re.IGNORECASE)


def _is_processor_call(method: cst.FunctionDef) -> bool:
    """`__call__(self, attn, hidden_states, ...)`: the signature an attention module calls its processor with."""
    names = [p.name.value for p in parameters(method)]
    return len(names) >= 3 and names[1] == "attn" and "hidden_states" in names


def _acknowledged(module: cst.Module, cls: cst.ClassDef) -> bool:
    """Whether a comment or docstring line of the class names a mask and says it is unsupported or ignored."""
    return any(
        _MASK_WORD_RE.search(line) and _ACKNOWLEDGING_RE.search(line)
        for line in module.code_for_node(cls).splitlines()
    )


def _attributes_using(module: cst.Module, processor: str) -> set[str]:
    """`attn1` for `self.attn1 = Attention(..., processor=SanaLinearAttnProcessor3_0())` in this file."""
    found: set[str] = set()
    for assign in walk.nodes(module, cst.Assign):
        if not isinstance(assign.value, cst.Call):
            continue
        uses = any(
            arg.keyword is not None
            and arg.keyword.value == "processor"
            and isinstance(arg.value, cst.Call)
            and isinstance(arg.value.func, cst.Name)
            and arg.value.func.value == processor
            for arg in assign.value.args
        )
        if not uses:
            continue
        for target in assign.targets:
            node = target.target
            if isinstance(node, cst.Attribute) and isinstance(node.value, cst.Name) and node.value.value == "self":
                found.add(node.attr.value)
    return found


def _mask_handed_to(module: cst.Module, attributes: set[str]) -> bool:
    """Whether some `self.<attribute>(..., attention_mask=<not None>)` call hands one of them a mask.

    That is the evidence a mask reaches the processor. Without it (the shared `attention_processor.py`, a
    self-attention its block calls without a mask) a processor that ignores the mask ignores nothing anybody
    gives it, and reporting it is noise (why DRB303 was retired).
    """
    for call in walk.nodes(module, cst.Call):
        func = call.func
        if not (isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) and func.value.value == "self"):
            continue
        if func.attr.value not in attributes:
            continue
        for arg in call.args:
            if arg.keyword is not None and arg.keyword.value == "attention_mask":
                if not (isinstance(arg.value, cst.Name) and arg.value.value == "None"):
                    return True
    return False


class AttentionProcessorIgnoresMask(Rule):
    """
    ## What it does
    Checks for an attention processor (a class whose `__call__` takes `attn` and `hidden_states`) under
    `diffusers/models/` that accepts `attention_mask` and never reads it.

    ## Why is this bad?
    `Attention.forward` hands every processor the `attention_mask` its caller gave, and the processor's
    signature is what tells `Attention` that the argument is understood: no "unexpected kwargs" warning is
    printed. A processor that then never applies the mask drops it silently, and padded or masked-out
    tokens take part in attention. Meta issue #13656 (pattern 3) lists custom attention processors among
    the layers that drop masks; Flux and Mochi both shipped processors that ignored the mask they were
    given until it was passed on to `scaled_dot_product_attention`.

    ## Example
    ```python
    class MyAttnProcessor2_0:
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None):
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
            hidden_states = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
            return attn.to_out[0](hidden_states)
    ```

    Use instead:
    ```python
    class MyAttnProcessor2_0:
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None):
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
            hidden_states = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
            )
            return attn.to_out[0](hidden_states)
    ```
    or, where the kernel cannot apply a mask (linear attention), raise when one is given.

    ## Known problems
    It reports only a processor that a block of the same file installs on an attention module
    (`self.attn = Attention(..., processor=FooAttnProcessor())`) and then calls with a mask
    (`self.attn(..., attention_mask=attention_mask)`): that is the evidence a mask actually reaches it. So the legacy processors of the shared `attention_processor.py` (SD3's joint processors,
    Sana's linear-attention processors) are never reported: their callers live in other files, and for models
    that never build a mask ignoring it is by design (a precision review of the retired DRB303 found 0 of 6
    such findings worth a maintainer's time). Only the `attention_mask` parameter is looked at (other mask
    arguments are DRB302's), and only a mask that is never read at all. A processor whose class has a
    comment or docstring line that names a mask and says it is unused, ignored or unsupported, one that
    writes `del attention_mask`, one whose body is only a stub, and one that reads its arguments through
    `locals()` or `vars()` are left alone.

    ## References
    - huggingface/diffusers#13656, pattern 3
    - huggingface/diffusers#10122 (`FluxAttnProcessor2_0` accepted `attention_mask` and never passed it to SDPA)
    - huggingface/diffusers#10033 (Mochi quality fix: the processor starts honouring the prompt mask)
    - huggingface/diffusers#8673 (SD3: attention masks are missing to mask out text padding tokens)
    - huggingface/diffusers#13614 (Sana: the public `attention_mask` never reaches self-attention)
    """

    code = "DRB304"
    pattern = 3
    severity = "warning"
    message = (
        "`attention_mask` is accepted by `{owner}` but never read, so a mask given to this processor is "
        "silently dropped; apply it to the attention (`attn_mask=attention_mask`), or raise when it is given."
    )
    REQUIRES_ANY = ("attention_mask",)
    PATHS = ("/models/",)

    VALID = [
        Valid(
            """
            class AttnProcessor2_0:
                def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
                    if attention_mask is not None:
                        attention_mask = attn.prepare_attention_mask(attention_mask, hidden_states.shape[1], 1)
                    query = attn.to_q(hidden_states)
                    return F.scaled_dot_product_attention(query, query, query, attn_mask=attention_mask)
            """,
            path="diffusers/models/attention_processor.py",
        ),
        # rejects a mask it cannot apply
        Valid(
            """
            class LinearAttnProcessor:
                def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None):
                    if attention_mask is not None:
                        raise ValueError("LinearAttnProcessor does not support `attention_mask`.")
                    return attn.to_out[0](F.relu(attn.to_q(hidden_states)))
            """,
            path="diffusers/models/attention_processor.py",
        ),
        # documents that masks are not supported
        Valid(
            '''
            class SlidingWindowAttnProcessor:
                """Attention within a local window. Masks are not supported: the window is the mask."""

                def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None):
                    return attn.to_out[0](attn.window_attention(hidden_states))
            ''',
            path="diffusers/models/transformers/transformer_example.py",
        ),
        # discards it explicitly
        Valid(
            """
            class RefinerAttnProcessor:
                def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, kv_cache=None):
                    del encoder_hidden_states, attention_mask
                    return attn.to_out[0](dispatch_attention_fn(attn.to_q(hidden_states), kv_cache.k, kv_cache.v))
            """,
            path="diffusers/models/transformers/transformer_example.py",
        ),
        # an abstract interface, and a processor that reads its arguments by name
        Valid(
            """
            class BaseAttnProcessor:
                def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None):
                    raise NotImplementedError

            class ForwardingAttnProcessor:
                def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None):
                    return self.inner(**locals())
            """,
            path="diffusers/models/attention_processor.py",
        ),
        # a processor of the shared legacy file: nothing in this file hands it a mask
        Valid(
            """
            class JointAttnProcessor2_0:
                def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
                    query = attn.to_q(hidden_states)
                    return attn.to_out[0](F.scaled_dot_product_attention(query, query, query))

            class Attention(nn.Module):
                def forward(self, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
                    return self.processor(self, hidden_states, encoder_hidden_states, attention_mask=attention_mask)
            """,
            path="diffusers/models/attention_processor.py",
        ),
        # SanaVideo: the mask goes to the cross-attention (a processor that honours it), not to self-attention
        Valid(
            """
            class SanaLinearAttnProcessor3_0:
                def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
                    return attn.to_out[0](F.relu(attn.to_q(hidden_states)))

            class SanaVideoTransformerBlock(nn.Module):
                def __init__(self, dim):
                    super().__init__()
                    self.attn1 = Attention(dim, processor=SanaLinearAttnProcessor3_0())
                    self.attn2 = Attention(dim, processor=SanaAttnProcessor2_0())

                def forward(self, hidden_states, encoder_hidden_states, encoder_attention_mask=None):
                    hidden_states = hidden_states + self.attn1(hidden_states)
                    return hidden_states + self.attn2(hidden_states, encoder_hidden_states, attention_mask=encoder_attention_mask)
            """,
            path="diffusers/models/transformers/transformer_sana_video.py",
        ),
        # not a processor: a module's `forward` is DRB302's; and a processor outside `diffusers/models/`
        Valid(
            """
            class MyBlock(nn.Module):
                def __call__(self, hidden_states, attention_mask=None):
                    return self.attn(hidden_states)

            class MyCustomAttnProcessor:
                def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None):
                    return attn.to_out[0](hidden_states)
            """,
            path="diffusers/pipelines/example/pipeline_example.py",
        ),
    ]
    INVALID = [
        # FluxAttnProcessor2_0 before huggingface/diffusers#10122
        Invalid(
            """
            class FluxAttnProcessor2_0:
                def __call__(
                    self,
                    attn: Attention,
                    hidden_states: torch.FloatTensor,
                    encoder_hidden_states: torch.FloatTensor = None,
                    attention_mask: torch.FloatTensor | None = None,
                    image_rotary_emb: torch.Tensor | None = None,
                ) -> torch.FloatTensor:
                    batch_size, _, _ = hidden_states.shape
                    query = attn.to_q(hidden_states)
                    key = attn.to_k(hidden_states)
                    value = attn.to_v(hidden_states)
                    if image_rotary_emb is not None:
                        query = apply_rotary_emb(query, image_rotary_emb)
                        key = apply_rotary_emb(key, image_rotary_emb)
                    hidden_states = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
                    return hidden_states

            class FluxTransformerBlock(nn.Module):
                def __init__(self, dim):
                    super().__init__()
                    self.attn = Attention(query_dim=dim, processor=FluxAttnProcessor2_0())

                def forward(self, hidden_states, encoder_hidden_states, attention_mask=None, image_rotary_emb=None):
                    return self.attn(
                        hidden_states, encoder_hidden_states, attention_mask=attention_mask, image_rotary_emb=image_rotary_emb
                    )
            """,
            message=(
                "`attention_mask` is accepted by `FluxAttnProcessor2_0.__call__` but never read, so a mask given to "
                "this processor is silently dropped; apply it to the attention (`attn_mask=attention_mask`), or "
                "raise when it is given."
            ),
            path="diffusers/models/transformers/transformer_flux.py",
        ),
        # a new-style processor in a transformer module, with `*args, **kwargs`
        Invalid(
            """
            class JointAttnProcessor2_0:
                \"\"\"Attention processor used typically in processing the SD3-like self-attention projections.\"\"\"

                def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
                    query = attn.to_q(hidden_states)
                    hidden_states = dispatch_attention_fn(query, query, query, backend=self._attention_backend)
                    return attn.to_out[0](hidden_states)

            class ExampleBlock(nn.Module):
                def __init__(self, dim):
                    super().__init__()
                    self.attention = ExampleAttention(dim, processor=JointAttnProcessor2_0())

                def forward(self, hidden_states, encoder_hidden_states, attention_mask):
                    return self.attention(hidden_states, encoder_hidden_states, attention_mask=attention_mask)
            """,
            path="diffusers/models/transformers/transformer_example.py",
        ),
    ]

    def check(self) -> None:
        context = self.context
        for definition in context.definitions:
            if definition.is_class or definition.name != "__call__":
                continue
            cls = definition.parent
            if cls is None or not cls.is_class:
                continue
            method = cst.ensure_type(definition.node, cst.FunctionDef)
            if not _is_processor_call(method):
                continue
            param = next((p for p in parameters(method) if p.name.value == "attention_mask"), None)
            if param is None or stub_body(method):
                continue
            read = {n.value for n in names_read(method.body)}
            if "attention_mask" in read or "locals" in read or "vars" in read:  # `del attention_mask` reads it too
                continue
            if _acknowledged(context.module, cst.ensure_type(cls.node, cst.ClassDef)):
                continue
            if not _mask_handed_to(context.module, _attributes_using(context.module, cls.name)):
                continue
            owner = f"{cls.name}.__call__"
            self.report(param, self.message.format(owner=owner), symbol="attention_mask", scope=definition.qualname)
