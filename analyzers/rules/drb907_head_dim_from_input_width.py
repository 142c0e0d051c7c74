"""DRB907: an attention processor sizes its heads from the input's width instead of the projected width."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import call_name


#: attributes that hold an attention module's number of heads
HEADS_ATTRS = frozenset({"heads", "num_heads", "n_heads"})
#: the projections whose output width is `heads * dim_head`
PROJECTIONS = frozenset({"to_q", "to_k", "to_v", "to_qkv", "to_kv", "add_q_proj", "add_k_proj", "add_v_proj"})
#: calls after which a hidden-states name holds projected or attended values, not the input any more
PROJECTING_CALLS = PROJECTIONS | frozenset(
    {
        "to_out", "scaled_dot_product_attention", "get_attention_scores", "bmm", "baddbmm",
        "memory_efficient_attention", "dispatch_attention_fn", "flash_attn_func", "batch_to_head_dim",
    }
)  # fmt: skip


def _code(node: cst.CSTNode) -> str:
    return " ".join(cst.Module([]).code_for_node(node).split())


def _last(call: cst.Call) -> str:
    return (call_name(call) or "").rpartition(".")[2]


def _is_last_axis(node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus) and _code(node) == "-1"


def _width_of(node: cst.BaseExpression) -> str | None:
    """`x` when `node` reads the last axis of a name: `x.shape[-1]`, `x.size(-1)`."""
    if isinstance(node, cst.Subscript) and len(node.slice) == 1:
        index = node.slice[0].slice
        value = node.value
        if (
            isinstance(index, cst.Index)
            and _is_last_axis(index.value)
            and isinstance(value, cst.Attribute)
            and value.attr.value == "shape"
            and isinstance(value.value, cst.Name)
        ):
            return value.value.value
    if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value == "size":
        if len(node.args) == 1 and _is_last_axis(node.args[0].value) and isinstance(node.func.value, cst.Name):
            return node.func.value.value
    return None


def _is_heads(node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.Attribute) and node.attr.value in HEADS_ATTRS


class HeadDimFromInputWidth(Rule):
    """
    ## What it does
    Checks attention processors (functions that project with `attn.to_q`/`to_k`/`to_v`) for a head size
    computed from the width of an input (`inner_dim = hidden_states.shape[-1]`, then
    `head_dim = inner_dim // attn.heads`), read before the input is projected or attended.

    ## Why is this bad?
    The queries, keys and values are `heads * dim_head` wide, the projected width, while `hidden_states` is
    `query_dim` wide (and `encoder_hidden_states` is `cross_attention_dim` wide). The two agree only when an
    `Attention` happens to be built with `heads * dim_head == query_dim`; for any other model the processor
    reshapes with the wrong head size: a `view` error, or heads of the wrong size and math that silently
    differs from the other processors.

    ## Example
    ```python
    inner_dim = hidden_states.shape[-1]
    query = attn.to_q(hidden_states)
    key = attn.to_k(encoder_hidden_states)
    head_dim = inner_dim // attn.heads
    query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
    ```

    Use instead:
    ```python
    key = attn.to_k(encoder_hidden_states)
    inner_dim = key.shape[-1]
    head_dim = inner_dim // attn.heads
    ```

    ## Known problems
    Only a name whose last axis is read before the function assigns it the output of a projection or of
    the attention (`to_q`, `to_out`, `scaled_dot_product_attention`, `bmm`, ...) counts as an input, and only
    the width itself or one name bound once to it, divided by `.heads`/`.num_heads`. A processor written
    only for modules where the widths agree is reported all the same.

    ## References
    - huggingface/diffusers#13656, pattern 9
    - huggingface/diffusers#4154 (`AttnProcessor2_0` took the head size from `hidden_states`, fixed in 0.19)
    """

    code = "DRB907"
    pattern = 9
    severity = "warning"
    message = (
        "`{division}` takes the head size from the width of the input `{source}` (`query_dim`), not from the "
        "projected query/key (`heads * dim_head`), which differ for any `Attention` built with another inner "
        "width; divide `key.shape[-1]` (read after `attn.to_k`) instead."
    )
    REQUIRES_ANY = ("heads",)

    VALID = [
        # the width of the projected key
        Valid(
            """
            class MyAttnProcessor:
                def __call__(self, attn, hidden_states, encoder_hidden_states=None):
                    batch_size = hidden_states.shape[0]
                    query = attn.to_q(hidden_states)
                    key = attn.to_k(encoder_hidden_states)
                    inner_dim = key.shape[-1]
                    head_dim = inner_dim // attn.heads
                    query = query.view(batch_size, -1, attn.heads, head_dim)
                    return query
            """,
            path="diffusers/models/attention_processor.py",
        ),
        # the width read after the attention: the output is `heads * head_dim` wide
        Valid(
            """
            class MyAttnProcessor:
                def __call__(self, attn, hidden_states, encoder_hidden_states=None):
                    query = attn.to_q(hidden_states)
                    hidden_states = F.scaled_dot_product_attention(query, query, query)
                    head_dim = hidden_states.shape[-1] // attn.heads
                    return hidden_states, head_dim
            """,
            path="diffusers/models/attention_processor.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            class MyAttnProcessor:
                def __call__(self, attn, hidden_states, encoder_hidden_states=None):
                    batch_size, sequence_length, _ = hidden_states.shape
                    inner_dim = hidden_states.shape[-1]
                    query = attn.to_q(hidden_states)
                    key = attn.to_k(encoder_hidden_states)
                    head_dim = inner_dim // attn.heads
                    query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
                    return query
            """,
            message=(
                "`inner_dim // attn.heads` takes the head size from the width of the input `hidden_states` "
                "(`query_dim`), not from the projected query/key (`heads * dim_head`), which differ for any "
                "`Attention` built with another inner width; divide `key.shape[-1]` (read after `attn.to_k`) instead."
            ),
            path="diffusers/models/attention_processor.py",
        ),
        # inline, through `size(-1)`
        Invalid(
            """
            def attention_forward(attn, hidden_states):
                head_dim = hidden_states.size(-1) // attn.heads
                qkv = attn.to_qkv(hidden_states)
                return qkv.view(qkv.shape[0], -1, 3 * attn.heads, head_dim)
            """,
            path="diffusers/models/transformers/transformer_example.py",
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            calls = walk.own_nodes(function, cst.Call)
            if not any(_last(call) in PROJECTIONS for call in calls):
                continue
            self._check(function, definition.qualname)

    def _check(self, function: cst.FunctionDef, scope: str) -> None:
        params = {p.name.value for p in (*function.params.params, *function.params.kwonly_params)}
        projected_at = self._projected_at(function)
        assigns = walk.own_nodes(function, cst.Assign)
        bound: dict[str, list[cst.BaseExpression]] = {}
        for assign in assigns:
            for target in assign.targets:
                if isinstance(target.target, cst.Name):
                    bound.setdefault(target.target.value, []).append(assign.value)
        for division in walk.own_nodes(function, cst.BinaryOperation):
            if not isinstance(division.operator, cst.FloorDivide) or not _is_heads(division.right):
                continue
            width: cst.BaseExpression = division.left
            symbol = None
            if isinstance(width, cst.Name):
                values = bound.get(width.value, [])
                if len(values) != 1:
                    continue
                symbol, width = width.value, values[0]
            source = _width_of(width)
            if source is None or source not in params or "hidden_states" not in source:
                continue
            where = walk.span(width)
            first_projection = projected_at.get(source)
            if where is None or (first_projection is not None and first_projection <= where[0]):
                continue
            message = self.message.format(division=_code(division), source=source)
            self.report(division, message, symbol=symbol or "head_dim", scope=scope)

    @staticmethod
    def _projected_at(function: cst.FunctionDef) -> dict[str, int]:
        """For each name: where (in walk order) it is first assigned a projection's or an attention's output."""
        first: dict[str, int] = {}
        for assign in walk.own_nodes(function, cst.Assign):
            if not any(_last(call) in PROJECTING_CALLS for call in walk.nodes(assign.value, cst.Call)):
                continue
            where = walk.span(assign)
            if where is None:
                continue
            for target in assign.targets:
                if isinstance(target.target, cst.Name):
                    first[target.target.value] = min(where[0], first.get(target.target.value, where[0]))
        return first
