"""DRB303: an attention processor's `__call__` receives `attention_mask` and never reads it."""

from __future__ import annotations

import libcst as cst

from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import names_read, parameters
from analyzers.rules.drb302_mask_argument_dropped import (
    acknowledged,
    is_attention_processor,
    only_stub_body,
    reads_by_name,
)


class AttentionProcessorIgnoresMask(Rule):
    """
    ## What it does
    Checks for attention processors (`__call__(self, attn, hidden_states, ..., attention_mask=None, ...)`)
    that never read the `attention_mask` they receive.

    ## Why is this bad?
    `Attention.forward` hands every processor the caller's `attention_mask`, and pipelines forward
    `joint_attention_kwargs` / `cross_attention_kwargs` (which may carry one) straight to the processor. A
    processor that accepts the argument and ignores it lets padded text tokens take part in attention and
    gives the caller no sign of it: a processor without the parameter would at least make
    `Attention.forward` warn that the keyword is ignored. Meta issue #13656 (pattern 3) lists custom
    attention processors among the layers that each implement only part of the mask convention.

    ## Example
    ```python
    class MyJointAttnProcessor:
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None):
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
            return F.scaled_dot_product_attention(query, key, value)
    ```

    Use instead:
    ```python
    class MyJointAttnProcessor:
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None):
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
            return F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
    ```
    or, where the attention cannot take a mask (linear attention), raise when one is given.

    ## Known problems
    Some processors serve models that never pass a mask (SD3's joint attention, Sana's linear
    self-attention); the rule still reports them, because a mask given through the attention kwargs is
    dropped without a word. A processor whose class names `attention_mask` in a comment or docstring as
    unused, ignored or unsupported is taken as deliberate, and so is a stub body or one that reads its
    arguments through `locals()`. A mask read only to be checked counts as read.

    ## References
    - huggingface/diffusers#13656, pattern 3
    - huggingface/diffusers#8673 (SD3: attention masks are missing for padded text tokens)
    - huggingface/diffusers#13614 (Sana: self-attention masks silently ignored)
    """

    code = "DRB303"
    pattern = 3
    message = (
        "`{processor}.__call__` receives `attention_mask` but never reads it, so masked tokens still take part "
        "in attention; pass it to the attention call, or raise when it is not `None`."
    )
    REQUIRES_ANY = ("attention_mask",)

    VALID = [
        Valid(
            """
            class AttnProcessor2_0:
                def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None):
                    if attention_mask is not None:
                        attention_mask = attn.prepare_attention_mask(attention_mask, 1, 1)
                    return F.scaled_dot_product_attention(hidden_states, hidden_states, hidden_states, attn_mask=attention_mask)
            """
        ),
        # refuses a mask instead of dropping it
        Valid(
            """
            class LinearAttnProcessor:
                def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None):
                    if attention_mask is not None:
                        raise ValueError("linear attention does not support `attention_mask`")
                    return attn.to_out(hidden_states)
            """
        ),
        # not a processor: a block's `__call__` without `attn` (and forward masks are DRB302's)
        Valid(
            """
            class Helper:
                def __call__(self, hidden_states, attention_mask=None):
                    return hidden_states
            """
        ),
        # acknowledged
        Valid(
            """
            class XLAFlashProcessor:
                def __call__(self, attn, hidden_states, attention_mask=None):
                    # attention_mask is not supported by this kernel
                    return attn.to_out(hidden_states)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class JointAttnProcessor2_0:
                def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
                    query = attn.to_q(hidden_states)
                    key = attn.to_k(hidden_states)
                    value = attn.to_v(hidden_states)
                    return F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
            """,
            message=(
                "`JointAttnProcessor2_0.__call__` receives `attention_mask` but never reads it, so masked tokens "
                "still take part in attention; pass it to the attention call, or raise when it is not `None`."
            ),
        ),
        Invalid(
            """
            class SanaLinearAttnProcessor2_0:
                def __call__(self, attn: "Attention", hidden_states, encoder_hidden_states=None, attention_mask=None):
                    query = attn.to_q(hidden_states)
                    return attn.to_out(F.relu(query))
            """,
            message=(
                "`SanaLinearAttnProcessor2_0.__call__` receives `attention_mask` but never reads it, so masked "
                "tokens still take part in attention; pass it to the attention call, or raise when it is not `None`."
            ),
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
            method: cst.FunctionDef = definition.node  # type: ignore[assignment]
            if not is_attention_processor(method) or only_stub_body(method):
                continue
            param = next((p for p in parameters(method) if p.name.value == "attention_mask"), None)
            if param is None:
                continue
            read = {n.value for n in names_read(method.body)}
            if "attention_mask" in read or reads_by_name(read):
                continue
            if acknowledged(context.module, cls.node, "attention_mask"):  # type: ignore[arg-type]
                continue
            self.report(
                param,
                self.message.format(processor=cls.name),
                symbol="attention_mask",
                scope=definition.qualname,
            )
