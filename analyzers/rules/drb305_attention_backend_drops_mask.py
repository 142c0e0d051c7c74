"""DRB305: a registered attention backend takes no attention mask, or never reads the one it takes."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.matchers import names_read, parameters, stub_body


#: the name under which attention dispatchers hand a mask to their backends
MASK_PARAMETER = "attn_mask"


def _registration(function: cst.FunctionDef) -> cst.Call | None:
    """The `@<Registry>.register(...)` decorator call of a backend function, else None.

    Only registries whose name says they hold attention backends count (`_AttentionBackendRegistry`).
    """
    for decorator in function.decorators:
        call = decorator.decorator
        if not isinstance(call, cst.Call):
            continue
        name = dotted_name(call.func) or ""
        owner, _, method = name.rpartition(".")
        if method == "register" and "Attention" in owner and "Registry" in owner:
            return call
    return None


class AttentionBackendDropsMask(Rule):
    """
    ## What it does
    Checks attention backends registered with an attention registry
    (`@_AttentionBackendRegistry.register(...)`) that take `query`, `key` and `value` but no `attn_mask`,
    or take `attn_mask` and never read it, in a module whose dispatcher hands backends an `attn_mask`.

    ## Why is this bad?
    The dispatcher passes every backend the same keyword arguments and drops the ones a backend does not
    accept, at most with a warning behind a debug flag. A backend without `attn_mask` therefore runs
    unmasked attention when a model passes a padding mask: padded text tokens are attended to, and the
    output changes with the backend the user picked, without an error.

    ## Example
    ```python
    @_AttentionBackendRegistry.register(AttentionBackendName.FLASH)
    def _flash_attention(query, key, value, dropout_p=0.0, is_causal=False, scale=None):
        return flash_attn_func(q=query, k=key, v=value, dropout_p=dropout_p, causal=is_causal)
    ```

    Use instead:
    ```python
    @_AttentionBackendRegistry.register(AttentionBackendName.FLASH)
    def _flash_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
        if attn_mask is not None:
            raise ValueError("`attn_mask` is not supported for flash-attn 2.")
        return flash_attn_func(q=query, k=key, v=value, dropout_p=dropout_p, causal=is_causal)
    ```

    ## Known problems
    Only functions decorated with a `register` method of a class whose name has `Attention` and `Registry`
    in it are looked at, and only in a module where some other function takes an `attn_mask` (the
    dispatcher). A backend with `**kwargs` is taken to handle the mask, and so is one whose body is a stub.

    ## References
    - huggingface/diffusers#13656, pattern 3
    - huggingface/diffusers#12892 (flash, flash-3, sage, NPU and XLA backends silently dropped `attn_mask`)
    """

    code = "DRB305"
    pattern = 3
    severity = "error"
    message = (
        "attention backend `{backend}` {problem}, so the dispatcher runs it unmasked when a model passes a padding "
        "mask; accept `attn_mask` and apply it, or raise when it is given."
    )
    REQUIRES_ANY = ("Registry.register",)

    VALID = [
        Valid(
            """
            def dispatch_attention_fn(query, key, value, attn_mask=None, backend=None):
                return _AttentionBackendRegistry.get(backend)(query=query, key=key, value=value, attn_mask=attn_mask)

            @_AttentionBackendRegistry.register(AttentionBackendName.NATIVE)
            def _native_attention(query, key, value, attn_mask=None, scale=None):
                return torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, scale=scale)

            @_AttentionBackendRegistry.register(AttentionBackendName.WINDOWED)
            def _windowed_attention(query, key, value, attn_mask=None, window=256):
                if attn_mask is not None:
                    raise ValueError("windowed attention takes no `attn_mask`")
                return windowed_kernel(query, key, value, window)

            @_AttentionBackendRegistry.register(AttentionBackendName.CUSTOM)
            def _custom_attention(query, key, value, **kwargs):
                return custom_kernel(query, key, value, **kwargs)
            """
        ),
        # a registry of something else, and a module without a dispatcher that passes masks
        Valid(
            """
            @_SchedulerRegistry.register("fast")
            def _fast_step(sample, timestep, scale=None):
                return sample

            @_AttentionBackendRegistry.register(AttentionBackendName.LOCAL)
            def _local_attention(query, key, value, scale=None):
                return local_kernel(query, key, value)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            def dispatch_attention_fn(query, key, value, attn_mask=None, backend=None):
                kwargs = {"query": query, "key": key, "value": value, "attn_mask": attn_mask}
                return _AttentionBackendRegistry.call(backend, kwargs)

            @_AttentionBackendRegistry.register(AttentionBackendName.BLOCKWISE, constraints=[_check_device])
            def _blockwise_attention(query, key, value, dropout_p=0.0, is_causal=False, scale=None):
                return blockwise_kernel(query, key, value, causal=is_causal, softmax_scale=scale)
            """,
            message=(
                "attention backend `_blockwise_attention` takes no `attn_mask`, so the dispatcher runs it unmasked when "
                "a model passes a padding mask; accept `attn_mask` and apply it, or raise when it is given."
            ),
        ),
        # accepted and ignored
        Invalid(
            """
            def dispatch_attention_fn(query, key, value, attn_mask=None, backend=None):
                return _AttentionBackendRegistry.call(backend, query, key, value, attn_mask)

            @_AttentionBackendRegistry.register(AttentionBackendName.QUANTIZED)
            def _quantized_attention(query, key, value, attn_mask=None, is_causal=False):
                out = quantized_kernel(query, key, value, is_causal=is_causal)
                return out
            """,
            message=(
                "attention backend `_quantized_attention` accepts `attn_mask` but never reads it, so the dispatcher "
                "runs it unmasked when a model passes a padding mask; accept `attn_mask` and apply it, or raise when "
                "it is given."
            ),
        ),
    ]

    def check(self) -> None:
        functions = [
            d.node
            for d in self.context.definitions
            if not d.is_class and d.parent is None and isinstance(d.node, cst.FunctionDef)
        ]
        backends = [f for f in functions if _registration(f) is not None]
        if not backends:
            return
        registered = {id(f) for f in backends}
        if not any(
            MASK_PARAMETER in {p.name.value for p in parameters(f)} for f in functions if id(f) not in registered
        ):
            return  # no dispatcher here hands backends a mask
        for function in backends:
            names = {p.name.value for p in parameters(function)}
            if not {"query", "key", "value"} <= names or stub_body(function):
                continue
            if isinstance(function.params.star_kwarg, cst.Param):
                continue
            if MASK_PARAMETER not in names:
                problem = f"takes no `{MASK_PARAMETER}`"
            elif MASK_PARAMETER in {n.value for n in names_read(function.body)} or _reads_by_name(function):
                continue
            else:
                problem = f"accepts `{MASK_PARAMETER}` but never reads it"
            name = function.name.value
            self.report(
                function.name, self.message.format(backend=name, problem=problem), symbol=MASK_PARAMETER, scope=name
            )


def _reads_by_name(function: cst.FunctionDef) -> bool:
    return any(n.value in ("locals", "vars") for n in walk.nodes(function.body, cst.Name))
