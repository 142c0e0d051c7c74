"""DRB306: a model builds a (batch, ...) attention mask without a head axis and its processor hands it to SDPA as is."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import call_name, parameters, target_names


#: functions that take `attn_mask` broadcast against (batch, heads, query, key) scores
SDPA_CALLS = frozenset(
    {
        "F.scaled_dot_product_attention",
        "torch.nn.functional.scaled_dot_product_attention",
        "nn.functional.scaled_dot_product_attention",
        "scaled_dot_product_attention",
    }
)
CREATORS = frozenset({"torch.zeros", "torch.ones", "torch.full", "torch.empty"})


def _shape(call: cst.Call) -> list[cst.BaseExpression] | None:
    """The sizes a creation call gets: `zeros((b, n, n))`, `zeros([b, n])`, `zeros(b, n, n)`; None when unknown."""
    positional = [a for a in call.args if a.keyword is None]
    if any(a.star for a in positional) or not positional:
        return None
    first = positional[0].value
    if isinstance(first, (cst.Tuple, cst.List)):
        if any(isinstance(e, cst.StarredElement) for e in first.elements):
            return None
        return [e.value for e in first.elements]
    if call_name(call) == "torch.full":
        return None  # `full(size, fill_value)`: the size is the first argument, a tuple
    return [a.value for a in positional]


def _is_batch(size: cst.BaseExpression) -> bool:
    """`batch_size`, `bsz`, `hidden_states.shape[0]`."""
    if isinstance(size, cst.Name):
        return "batch" in size.value or size.value in ("bsz", "bs", "b")
    if isinstance(size, cst.Subscript) and isinstance(size.value, cst.Attribute) and size.value.attr.value == "shape":
        index = size.slice[0].slice
        return isinstance(index, cst.Index) and isinstance(index.value, cst.Integer) and index.value.value == "0"
    return False


def _passes_mask_unchanged(function: cst.FunctionDef) -> bool:
    """Whether `function` hands its own `attention_mask` parameter to SDPA as `attn_mask` without touching it."""
    names = {p.name.value for p in parameters(function)}
    for call in walk.own_nodes(function, cst.Call):
        if call_name(call) not in SDPA_CALLS:
            continue
        for arg in call.args:
            if arg.keyword is None or arg.keyword.value != "attn_mask" or not isinstance(arg.value, cst.Name):
                continue
            mask = arg.value.value
            if mask not in names:
                continue
            rebound = any(
                mask in {n for t in a.targets for n in target_names(t.target)}
                for a in walk.own_nodes(function, cst.Assign)
            )
            if not rebound:
                return True
    return False


class AttentionMaskMissingHeadAxis(Rule):
    """
    ## What it does
    Checks model files in which an attention processor passes its `attention_mask` argument unchanged to
    `scaled_dot_product_attention` as `attn_mask`, while a `forward` of the same file builds the mask it
    hands down as a 2-D `(batch, keys)` or 3-D `(batch, queries, keys)` tensor
    (`torch.zeros(batch_size, seq_len, seq_len, dtype=torch.bool)`) and never adds a head axis.

    ## Why is this bad?
    `scaled_dot_product_attention` broadcasts `attn_mask` against scores shaped
    `(batch, heads, queries, keys)` from the right. A `(batch, queries, keys)` mask lines its batch axis up
    with the heads: with one sample it happens to work, with two or more samples it fails (batch size
    against the number of heads) or, when they are equal, masks each head with another sample's padding.

    ## Example
    ```python
    attention_mask = torch.zeros(batch_size, seq_len, seq_len, dtype=torch.bool, device=device)
    for i in range(batch_size):
        attention_mask[i, : lengths[i], : lengths[i]] = True
    for block in self.blocks:
        hidden_states = block(hidden_states, attention_mask=attention_mask)
    ```

    Use instead:
    ```python
    attention_mask = attention_mask.unsqueeze(1)  # (batch, 1, queries, keys): one mask for every head
    ```

    ## Known problems
    Only masks created with `torch.zeros`/`ones`/`empty` whose first size is a batch size, assigned to a
    name that the `forward` never rebinds, and only processors of the same file that pass their own
    `attention_mask` parameter straight to SDPA are matched; masks reshaped inside blocks or built in
    helpers are not followed.

    ## References
    - huggingface/diffusers#13656, pattern 3
    - huggingface/diffusers#10454, huggingface/diffusers#10548 (HunyuanVideo: `[B, N, N]` mask broadcast
      against the heads; batches of two or more failed)
    """

    code = "DRB306"
    pattern = 3
    severity = "error"
    message = (
        "`{mask}` is built as a {rank}-D `({dims})` mask and reaches `scaled_dot_product_attention` without a head "
        "axis, so its batch axis lines up with the heads; add one, e.g. `{mask} = {suggestion}`."
    )
    REQUIRES_ANY = ("scaled_dot_product_attention",)
    PATHS = ("/models/",)

    _PROCESSOR = """
        class MyAttnProcessor:
            def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None):
                query, key, value = attn.qkv(hidden_states)
                return F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
    """

    VALID = [
        Valid(
            _PROCESSOR
            + """
        class MyTransformer(ModelMixin):
            def forward(self, hidden_states, encoder_attention_mask):
                batch_size, seq_len = hidden_states.shape[:2]
                attention_mask = torch.zeros(batch_size, seq_len, seq_len, dtype=torch.bool)
                attention_mask[:, :, :seq_len] = encoder_attention_mask[:, None, :].bool()
                attention_mask = attention_mask.unsqueeze(1)
                for block in self.blocks:
                    hidden_states = block(hidden_states, attention_mask=attention_mask)
                return hidden_states
            """,
            path="diffusers/models/transformers/transformer_example.py",
        ),
        # the processor reshapes the mask itself
        Valid(
            """
            class MyAttnProcessor:
                def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None):
                    if attention_mask is not None:
                        attention_mask = attention_mask[:, None]
                    query, key, value = attn.qkv(hidden_states)
                    return F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)

            class MyTransformer(ModelMixin):
                def forward(self, hidden_states):
                    batch_size, seq_len = hidden_states.shape[:2]
                    attention_mask = torch.ones(batch_size, seq_len, dtype=torch.bool)
                    return self.block(hidden_states, attention_mask=attention_mask)
            """,
            path="diffusers/models/transformers/transformer_example.py",
        ),
    ]
    INVALID = [
        Invalid(
            _PROCESSOR
            + """
        class MyTransformer(ModelMixin):
            def forward(self, hidden_states, encoder_attention_mask):
                batch_size, seq_len = hidden_states.shape[:2]
                valid = encoder_attention_mask.sum(dim=1) + seq_len
                attention_mask = torch.zeros((batch_size, seq_len, seq_len), dtype=torch.bool)
                for i in range(batch_size):
                    attention_mask[i, : valid[i], : valid[i]] = True
                for block in self.blocks:
                    hidden_states = block(hidden_states, attention_mask)
                return hidden_states
            """,
            message=(
                "`attention_mask` is built as a 3-D `(batch_size, seq_len, seq_len)` mask and reaches "
                "`scaled_dot_product_attention` without a head axis, so its batch axis lines up with the heads; add "
                "one, e.g. `attention_mask = attention_mask.unsqueeze(1)`."
            ),
            path="diffusers/models/transformers/transformer_example.py",
        ),
        # a key-padding mask of two dimensions
        Invalid(
            _PROCESSOR
            + """
        class MyVideoTransformer(ModelMixin):
            def forward(self, hidden_states, lengths):
                padding_mask = torch.ones(hidden_states.shape[0], hidden_states.shape[1], dtype=torch.bool)
                for i, length in enumerate(lengths):
                    padding_mask[i, length:] = False
                return self.block(hidden_states, attention_mask=padding_mask)
            """,
            path="diffusers/models/transformers/transformer_example.py",
        ),
    ]

    def check(self) -> None:
        functions = [d for d in self.context.definitions if not d.is_class and isinstance(d.node, cst.FunctionDef)]
        if not any(_passes_mask_unchanged(cst.ensure_type(d.node, cst.FunctionDef)) for d in functions):
            return
        for definition in functions:
            if definition.name != "forward":
                continue
            self._check_forward(definition.qualname, cst.ensure_type(definition.node, cst.FunctionDef))

    def _check_forward(self, scope: str, function: cst.FunctionDef) -> None:
        assigns = walk.own_nodes(function, cst.Assign)
        bindings: dict[str, int] = {}
        for assign in assigns:
            for name in {n for t in assign.targets for n in target_names(t.target)}:
                bindings[name] = bindings.get(name, 0) + 1
        for assign in assigns:
            if len(assign.targets) != 1 or not isinstance(assign.targets[0].target, cst.Name):
                continue
            mask = assign.targets[0].target.value
            value = assign.value
            if "mask" not in mask or not isinstance(value, cst.Call) or call_name(value) not in CREATORS:
                continue
            sizes = _shape(value)
            if sizes is None or len(sizes) not in (2, 3) or not _is_batch(sizes[0]) or bindings.get(mask) != 1:
                continue
            if not self._handed_on(function, mask):
                continue
            dims = ", ".join(cst.Module([]).code_for_node(s) for s in sizes)
            suggestion = f"{mask}.unsqueeze(1)" if len(sizes) == 3 else f"{mask}[:, None, None, :]"
            message = self.message.format(mask=mask, rank=len(sizes), dims=dims, suggestion=suggestion)
            self.report(assign, message, symbol=mask, scope=scope)

    @staticmethod
    def _handed_on(function: cst.FunctionDef, mask: str) -> bool:
        """Whether `mask` itself is an argument of a call (a block, a layer) in `function`."""
        for call in walk.own_nodes(function, cst.Call):
            for arg in call.args:
                if isinstance(arg.value, cst.Name) and arg.value.value == mask:
                    return True
        return False
