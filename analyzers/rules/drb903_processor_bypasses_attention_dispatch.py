"""DRB903: an attention layer that calls an attention kernel directly in a file that uses `dispatch_attention_fn`."""

from __future__ import annotations

from collections.abc import Sequence

import libcst as cst

from analyzers import walk
from analyzers.core import Definition, Invalid, Rule, Valid, dotted_name
from analyzers.matchers import target_names


#: the shared attention code itself: the dispatcher, the mixins and the legacy processors that predate dispatch
SHARED_FILES = frozenset(
    {
        "diffusers/models/attention_dispatch.py",
        "diffusers/models/attention.py",
        "diffusers/models/attention_processor.py",
    }
)
#: attention kernels, by the last component of the called name, with the name the message shows
KERNELS = {
    "scaled_dot_product_attention": "F.scaled_dot_product_attention",
    "flash_attn_func": "flash_attn_func",
    "flash_attn_varlen_func": "flash_attn_varlen_func",
    "memory_efficient_attention": "xformers.ops.memory_efficient_attention",
    "sageattn": "sageattn",
    "flex_attention": "flex_attention",
}
#: a matrix product in call form
MATMUL_CALLS = ("matmul", "bmm", "baddbmm", "einsum")
DISPATCH = "dispatch_attention_fn"


def _callee(call: cst.Call) -> str:
    """The last component of the called name: `softmax` for `x.float().softmax(-1)` and `torch.softmax(x)`."""
    func = call.func
    if isinstance(func, cst.Attribute):
        return func.attr.value
    return func.value if isinstance(func, cst.Name) else ""


def _is_matmul(node: cst.CSTNode) -> bool:
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.MatrixMultiply):
        return True
    return isinstance(node, cst.Call) and _callee(node) in MATMUL_CALLS


def _contains_matmul(node: cst.CSTNode) -> bool:
    return any(_is_matmul(n) for n in walk.nodes(node, cst.BinaryOperation)) or any(
        _is_matmul(n) for n in walk.nodes(node, cst.Call)
    )


def _names_in(node: cst.CSTNode) -> set[str]:
    return {n.value for n in walk.nodes(node, cst.Name)}


def _matmul_operands(node: cst.BinaryOperation | cst.Call) -> list[cst.BaseExpression]:
    """The operands of `a @ b` or `torch.matmul(a, b)` (the einsum equation included, harmlessly)."""
    if isinstance(node, cst.BinaryOperation):
        return [node.left, node.right]
    return [arg.value for arg in node.args]


def _hand_written_attention(function: cst.FunctionDef) -> cst.Call | None:
    """The `softmax` of `softmax(q @ k^T) @ v` written out in `function`, else None.

    A softmax counts when its input holds a matrix product (directly, or through a name assigned one) and
    its output (directly, or through names assigned from it, in source order) is a matrix product's operand.
    A softmax over routing logits or block statistics (MoE gates, sparse-attention masks) is not.
    """
    softmaxes = [c for c in walk.nodes(function.body, cst.Call) if _callee(c) == "softmax"]
    if not softmaxes:
        return None
    assigns = walk.nodes(function.body, cst.Assign)
    scores: set[str] = set()  # names that hold q @ k^T
    for assign in assigns:
        if _contains_matmul(assign.value):
            for target in assign.targets:
                scores.update(target_names(target.target))
    for softmax in softmaxes:
        source = softmax.func.value if isinstance(softmax.func, cst.Attribute) else None
        inputs = [arg.value for arg in softmax.args[:1]]
        if source is not None and dotted_name(source) not in ("torch", "F", "nn.functional", "torch.nn.functional"):
            inputs.append(source)
        if not any(_contains_matmul(i) or _names_in(i) & scores for i in inputs):
            continue
        probs: set[str] = set()  # names that hold softmax(...)
        for assign in assigns:
            if any(n is softmax for n in walk.nodes(assign.value, cst.Call)) or _names_in(assign.value) & probs:
                for target in assign.targets:
                    probs.update(target_names(target.target))
        candidates: list[cst.BinaryOperation | cst.Call] = [
            *walk.nodes(function.body, cst.BinaryOperation),
            *walk.nodes(function.body, cst.Call),
        ]
        for node in candidates:
            if not _is_matmul(node) or node is softmax:
                continue
            for operand in _matmul_operands(node):
                if any(n is softmax for n in walk.nodes(operand, cst.Call)) or _names_in(operand) & probs:
                    return softmax
    return None


def _declares_backend(cls: cst.ClassDef) -> bool:
    body = cls.body.body if isinstance(cls.body, cst.IndentedBlock) else ()
    for statement in body:
        if isinstance(statement, cst.SimpleStatementLine):
            for small in statement.body:
                targets: Sequence[cst.AssignTarget | cst.AnnAssign] = ()
                if isinstance(small, cst.Assign):
                    targets = small.targets
                elif isinstance(small, cst.AnnAssign):
                    targets = (small,)
                for target in targets:
                    node = target.target
                    if isinstance(node, cst.Name) and node.value in ("_attention_backend", "_parallel_config"):
                        return True
    return False


class ProcessorBypassesAttentionDispatch(Rule):
    """
    ## What it does
    Checks for attention code that calls an attention kernel itself (`F.scaled_dot_product_attention`,
    `flash_attn_func`, `xformers.ops.memory_efficient_attention`, `sageattn`, `flex_attention`, or a
    hand-written `softmax(q @ k^T) @ v`) inside a model file whose other attention processors go through
    `dispatch_attention_fn`, or inside a processor class that declares `_attention_backend` /
    `_parallel_config` itself.

    ## Why is this bad?
    `model.set_attention_backend("flash")`, the `attention_backend(...)` context manager, the
    `DIFFUSERS_ATTN_BACKEND` variable and context parallelism (`_parallel_config`) all act through
    `dispatch_attention_fn`. A layer that calls the kernel itself ignores them: the user asks for a backend
    (or for context parallelism), the family's other layers honour it, and this one silently keeps running
    PyTorch SDPA on the full sequence. Meta issue #13656 (pattern 9) lists custom families that bypass the
    shared attention integration points.

    ## Example
    ```python
    class FooSoftmaxAttention(nn.Module):
        def forward(self, query, key, value):
            return F.scaled_dot_product_attention(query, key, value)


    class FooCrossAttnProcessor:
        _attention_backend = None
        _parallel_config = None

        def __call__(self, attn, hidden_states, encoder_hidden_states):
            ...
            return dispatch_attention_fn(query, key, value, backend=self._attention_backend)
    ```

    Use instead:
    ```python
    class FooSoftmaxAttention(nn.Module):
        def forward(self, query, key, value):
            # no `backend=`: the active backend, which `set_attention_backend` and `attention_backend(...)` set
            return dispatch_attention_fn(query, key, value)
    ```
    (a processor that declares `_attention_backend` passes `backend=self._attention_backend,
    parallel_config=self._parallel_config`).

    ## Known problems
    Only methods of the file's top-level classes are looked at, and a class that calls
    `dispatch_attention_fn` anywhere is taken as routed (a direct kernel in one of its branches, a fallback
    say, is not reported). A kernel called through a module-level helper function is not seen. The shared
    attention modules (`attention_dispatch.py`, `attention.py`, `attention_processor.py`, whose legacy
    processors such as `AttnProcessor2_0` predate the dispatcher) and files that never use the dispatcher
    are left alone: there a direct SDPA call is the family's design, not a bypass.

    ## References
    - huggingface/diffusers#13656, pattern 9
    - huggingface/diffusers#12591 (moves HunyuanVideo's processors from SDPA to `dispatch_attention_fn`)
    """

    code = "DRB903"
    pattern = 9
    severity = "warning"
    message = (
        "`{cls}` calls `{kernel}` directly while {why}, so `set_attention_backend(...)` and context parallelism "
        "silently skip it; {remedy}."
    )
    message_hand_written = (
        "`{cls}` computes `softmax(q @ k^T) @ v` by hand while {why}, so `set_attention_backend(...)` and context "
        "parallelism silently skip it; {remedy}."
    )
    WHY_DECLARED = "it declares `_attention_backend`"
    WHY_SIBLINGS = "this model's other attention processors go through `dispatch_attention_fn`"
    REMEDY_DECLARED = (
        "call `dispatch_attention_fn(..., backend=self._attention_backend, parallel_config=self._parallel_config)` "
        "instead"
    )
    REMEDY_SIBLINGS = "route it through `dispatch_attention_fn` as those processors do"
    REQUIRES_ANY = (DISPATCH, "_attention_backend")

    VALID = [
        Valid(
            # the processor goes through the dispatcher
            """
            import torch.nn.functional as F
            from ..attention_dispatch import dispatch_attention_fn

            class FooAttnProcessor:
                _attention_backend = None
                _parallel_config = None

                def __call__(self, attn, hidden_states):
                    query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
                    return dispatch_attention_fn(
                        query, key, value, backend=self._attention_backend, parallel_config=self._parallel_config
                    )
            """,
            path="diffusers/models/transformers/transformer_foo.py",
        ),
        Valid(
            # a family that never adopted the dispatcher: SDPA is its design (the legacy processor API)
            """
            import torch.nn.functional as F

            class SanaAttnProcessor2_0:
                def __call__(self, attn, hidden_states):
                    query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
                    return F.scaled_dot_product_attention(query, key, value)
            """,
            path="diffusers/models/transformers/sana_transformer.py",
        ),
        Valid(
            # the legacy processors of the shared module predate the dispatcher
            """
            import torch.nn.functional as F
            from .attention_dispatch import dispatch_attention_fn

            class AttnProcessor2_0:
                def __call__(self, attn, hidden_states):
                    return F.scaled_dot_product_attention(hidden_states, hidden_states, hidden_states)

            class FluxAttnProcessor2_0:
                _attention_backend = None

                def __call__(self, attn, hidden_states):
                    return dispatch_attention_fn(hidden_states, hidden_states, hidden_states)
            """,
            path="diffusers/models/attention_processor.py",
        ),
        Valid(
            # a fallback branch inside a processor that otherwise dispatches
            """
            import torch.nn.functional as F
            from ..attention_dispatch import dispatch_attention_fn

            class FooAttnProcessor:
                _attention_backend = None

                def __call__(self, attn, query, key, value, attention_mask=None):
                    if attention_mask is not None and attention_mask.dtype == torch.float32:
                        return F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
                    return dispatch_attention_fn(query, key, value, backend=self._attention_backend)
            """,
            path="diffusers/models/transformers/transformer_foo.py",
        ),
        Valid(
            # a softmax over block statistics builds a sparse mask; the attention itself is dispatched
            """
            import torch
            from ..attention_dispatch import dispatch_attention_fn

            class FooSparseAttnProcessor:
                _attention_backend = "flex"

                def __call__(self, attn, query, key, value):
                    query_blocks = query.mean(-2)
                    key_blocks = key.mean(-2).transpose(-2, -1)
                    block_map = torch.softmax((query_blocks @ key_blocks) / 8.0, dim=-1)
                    mask = block_map.cumsum(-1) > 0.1
                    return dispatch_attention_fn(query, key, value, attn_mask=mask, backend=self._attention_backend)

            class FooMoEGate(nn.Module):
                def forward(self, hidden_states):
                    logits = hidden_states @ self.weight.T
                    scores = logits.softmax(dim=-1)
                    return torch.topk(scores, k=2, dim=-1)
            """,
            path="diffusers/models/transformers/transformer_foo.py",
        ),
        Valid(
            # `hasattr(F, "scaled_dot_product_attention")` is a version check, not a call
            """
            import torch.nn.functional as F
            from ..attention_dispatch import dispatch_attention_fn

            class FooAttnProcessor:
                _attention_backend = None

                def __init__(self):
                    if not hasattr(F, "scaled_dot_product_attention"):
                        raise ImportError("FooAttnProcessor requires PyTorch 2.0")

                def __call__(self, attn, query, key, value):
                    return dispatch_attention_fn(query, key, value, backend=self._attention_backend)
            """,
            path="diffusers/models/transformers/transformer_foo.py",
        ),
    ]
    INVALID = [
        Invalid(
            # SANA-WM: the softmax layers bypass the dispatcher the cross-attention processor uses
            """
            import torch.nn.functional as F
            from torch import nn
            from ..attention_dispatch import dispatch_attention_fn

            class SanaWMCrossAttnProcessor:
                _attention_backend = None
                _parallel_config = None

                def __call__(self, attn, hidden_states, encoder_hidden_states):
                    query, key, value = attn.to_q(hidden_states), attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
                    return dispatch_attention_fn(
                        query, key, value, backend=self._attention_backend, parallel_config=self._parallel_config
                    )

            class SanaWMSoftmaxAttention(nn.Module):
                def forward(self, query, key, value, rotary_emb=None):
                    query, key, value = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
                    hidden_states = F.scaled_dot_product_attention(query, key, value)
                    return hidden_states.transpose(1, 2)
            """,
            path="diffusers/models/transformers/transformer_sana_wm.py",
            message=(
                "`SanaWMSoftmaxAttention` calls `F.scaled_dot_product_attention` directly while this model's other "
                "attention processors go through `dispatch_attention_fn`, so `set_attention_backend(...)` and context "
                "parallelism silently skip it; route it through `dispatch_attention_fn` as those processors do."
            ),
        ),
        Invalid(
            # the processor declares a backend and then never uses it
            """
            import torch

            class FooAttnProcessor:
                _attention_backend = None
                _parallel_config = None

                def __call__(self, attn, hidden_states):
                    query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
                    return torch.nn.functional.scaled_dot_product_attention(query, key, value)
            """,
            path="diffusers/models/transformers/transformer_foo.py",
            message=(
                "`FooAttnProcessor` calls `F.scaled_dot_product_attention` directly while it declares "
                "`_attention_backend`, so `set_attention_backend(...)` and context parallelism silently skip it; "
                "call `dispatch_attention_fn(..., backend=self._attention_backend, "
                "parallel_config=self._parallel_config)` instead."
            ),
        ),
        Invalid(
            # a hand-written attention next to dispatched processors
            """
            import torch
            from ..attention_dispatch import dispatch_attention_fn

            class FooAttnProcessor:
                _attention_backend = None

                def __call__(self, attn, query, key, value):
                    return dispatch_attention_fn(query, key, value, backend=self._attention_backend)

            class FooTemporalAttnProcessor:
                def __call__(self, attn, query, key, value):
                    scores = query @ key.transpose(-2, -1) * attn.scale
                    probs = scores.softmax(dim=-1).to(value.dtype)
                    return torch.matmul(probs, value)
            """,
            path="diffusers/models/transformers/transformer_foo.py",
            message=(
                "`FooTemporalAttnProcessor` computes `softmax(q @ k^T) @ v` by hand while this model's other "
                "attention processors go through `dispatch_attention_fn`, so `set_attention_backend(...)` and "
                "context parallelism silently skip it; route it through `dispatch_attention_fn` as those processors do."
            ),
        ),
    ]

    def check(self) -> None:
        ctx = self.context
        if ctx.path in SHARED_FILES:
            return
        top = [d for d in ctx.classes if d.parent is None]
        dispatching = {d.qualname for d in top if self._dispatches(d)}
        for definition in top:
            if definition.qualname in dispatching:
                continue
            cls = cst.ensure_type(definition.node, cst.ClassDef)
            if _declares_backend(cls):
                self._check_class(definition, self.WHY_DECLARED, self.REMEDY_DECLARED)
            elif dispatching:
                self._check_class(definition, self.WHY_SIBLINGS, self.REMEDY_SIBLINGS)

    def _dispatches(self, definition: Definition) -> bool:
        return any(_callee(call) == DISPATCH for call in walk.nodes(definition.node, cst.Call))

    def _check_class(self, definition: Definition, why: str, remedy: str) -> None:
        name = definition.name
        for method_name, method in self.context.methods(definition).items():
            scope = f"{definition.qualname}.{method_name}"
            kernel = self._direct_kernel(method)
            if kernel is not None:
                call, shown = kernel
                message = self.message.format(cls=name, kernel=shown, why=why, remedy=remedy)
                self.report(call, message, symbol=shown.rpartition(".")[2], scope=scope)
                continue
            softmax = _hand_written_attention(method)
            if softmax is not None:
                message = self.message_hand_written.format(cls=name, why=why, remedy=remedy)
                self.report(softmax, message, symbol="softmax", scope=scope)

    def _direct_kernel(self, method: cst.FunctionDef) -> tuple[cst.Call, str] | None:
        for call in walk.nodes(method.body, cst.Call):
            shown = KERNELS.get(_callee(call))
            if shown is not None:
                return call, shown
        return None
