"""DRB308: a function packs the positions its mask keeps by slicing each sample to the mask's count, `key[b, :n]`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.matchers import parameters, target_names, values_read


#: methods that count the positions a mask keeps along an axis (`mask.sum(dim=1)`)
COUNTERS = frozenset({"sum", "count_nonzero"})
#: methods after which a count is still the same count (`lengths[b].item()`, `seqlens.tolist()`)
KEEPS_COUNT = frozenset({"item", "tolist", "int", "long", "to", "cpu", "cuda", "detach", "numpy"})
#: methods after which a mask still marks the same positions (`attn_mask.bool()`, `mask.to(device)`)
KEEPS_MASK = frozenset({"bool", "int", "long", "float", "half", "to", "type", "cpu", "cuda", "detach", "contiguous"})
#: calls that select the positions a mask keeps, whatever the layout of its padding
SELECTORS = frozenset({"nonzero", "argwhere", "masked_select", "argsort", "masked_scatter", "where"})
#: calls that build a mask in which every position is kept: rebinding a mask parameter to one keeps its meaning
ALL_KEPT = frozenset({"torch.ones", "torch.ones_like", "ones_like", "new_ones"})
#: words of a mask parameter's name that say it is a text encoder's padding mask, which the pipeline builds with a
#: tokenizer (right-padded): `encoder_attention_mask`, `prompt_attention_mask`, `text_mask`, `cap_mask`
TEXT_MASK_WORDS = frozenset({"encoder", "prompt", "text", "txt", "caption", "cap", "tokenizer"})
#: unpacked names with "len" in them that are not per-sample counts: cumulative offsets, batch maxima, totals
NOT_PER_SAMPLE = ("cu_", "cum", "max", "min", "total")


@dataclass(frozen=True)
class _Binding:
    """How a name gets a value: `name = source` ("value"), one name of a tuple target unpacked from `source`
    ("unpack"), an element of `source` bound by a `for` ("loop"), or anything else ("other", no source)."""

    kind: str
    source: cst.BaseExpression | None


def _loop_sources(target: cst.BaseExpression, source: cst.BaseExpression | None) -> list[tuple[str, _Binding]]:
    """The names a `for` target binds, each with what it iterates over: `for n in lengths` binds an element of
    `lengths`; `enumerate` and `zip` are followed element by element; anything else is unknown."""
    if isinstance(target, cst.Name):
        return [(target.value, _Binding("loop", source) if source is not None else _Binding("other", None))]
    if isinstance(target, (cst.Tuple, cst.List)) and isinstance(source, cst.Call):
        name = dotted_name(source.func)
        args = [a.value for a in source.args if a.keyword is None and not a.star]
        elements = [e.value for e in target.elements]
        if any(isinstance(e, cst.StarredElement) for e in target.elements):
            elements = []
        if name == "enumerate" and len(elements) == 2 and len(args) >= 1:
            return [*_loop_sources(elements[0], None), *_loop_sources(elements[1], args[0])]
        if name == "zip" and len(elements) == len(args) and not any(a.star for a in source.args):
            return [pair for element, arg in zip(elements, args, strict=True) for pair in _loop_sources(element, arg)]
    return [(name, _Binding("other", None)) for name in target_names(target)]


def _bindings(function: cst.FunctionDef) -> dict[str, list[_Binding]]:
    """Every binding of a name in `function` itself (not in nested scopes), parameters left out."""
    found: dict[str, list[_Binding]] = {}

    def add(name: str, binding: _Binding) -> None:
        found.setdefault(name, []).append(binding)

    for assign in walk.own_nodes(function, cst.Assign):
        for target in assign.targets:
            if isinstance(target.target, cst.Name):
                add(target.target.value, _Binding("value", assign.value))
            else:
                for name in target_names(target.target):
                    add(name, _Binding("unpack", assign.value))
    for annotated in walk.own_nodes(function, cst.AnnAssign):
        if isinstance(annotated.target, cst.Name):
            add(
                annotated.target.value,
                _Binding("value", annotated.value) if annotated.value else _Binding("other", None),
            )
    for augmented in walk.own_nodes(function, cst.AugAssign):
        for name in target_names(augmented.target):
            add(name, _Binding("other", None))
    loops: list[cst.For | cst.CompFor] = [*walk.own_nodes(function, cst.For), *walk.own_nodes(function, cst.CompFor)]
    for loop in loops:
        for name, binding in _loop_sources(loop.target, loop.iter):
            add(name, binding)
    others: list[cst.BaseExpression] = [n.target for n in walk.own_nodes(function, cst.NamedExpr)]
    aliases = [item.asname for item in walk.own_nodes(function, cst.WithItem)]
    aliases += [handler.name for handler in walk.own_nodes(function, cst.ExceptHandler)]
    others += [alias.name for alias in aliases if alias is not None and isinstance(alias.name, cst.BaseExpression)]
    for other in others:
        for name in target_names(other):
            add(name, _Binding("other", None))
    return found


def _is_attention_mask(name: str) -> bool:
    """A mask parameter that may mark any positions: not a text encoder's padding mask, which comes from the
    pipeline's tokenizer with its padding at the end (`encoder_attention_mask`)."""
    words = name.lower().split("_")
    return "mask" in name.lower() and not TEXT_MASK_WORDS.intersection(words)


def _code(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)


class _Flow:
    """Which names of one function hold a mask parameter (or the same positions of it), which hold per-sample
    counts of the positions such a mask keeps, and which hold tensors handed in by the caller."""

    def __init__(self, function: cst.FunctionDef) -> None:
        self.function = function
        self.bindings = _bindings(function)
        params = [p.name.value for p in parameters(function)]
        self.masks: dict[str, str] = {}
        for name in params:
            if _is_attention_mask(name) and self._keeps_parameter(name):
                self.masks[name] = name
        self.counts: dict[str, str] = {}
        self.data = {n for n in params if "mask" not in n.lower() and n not in ("self", "cls")}
        if self.masks:
            self._settle()

    def _keeps_parameter(self, mask: str) -> bool:
        """Whether every rebinding of the parameter `mask` keeps the caller's mask (`attn_mask.bool()`,
        `_normalize_attn_mask(attn_mask, ...)`) or keeps every position (`torch.ones(...)`): a mask the function
        builds itself (from a tokenizer, say) is one whose padding it knows."""
        for binding in self.bindings.get(mask, []):
            if binding.kind != "value" or binding.source is None:
                return False
            if mask in {n.value for n in values_read(binding.source)}:
                continue
            if isinstance(binding.source, cst.Call) and (dotted_name(binding.source.func) or "").endswith(
                tuple(ALL_KEPT)
            ):
                continue
            return False
        return True

    def _settle(self) -> None:
        changed = True
        while changed:
            changed = False
            for name, bindings in self.bindings.items():
                if name in self.masks or name in self.counts:
                    continue
                mask = self._all(bindings, self._mask_binding)
                if mask is not None:
                    self.masks[name] = mask
                    changed = True
                    continue
                count = self._any_count(name, bindings)
                if count is not None:
                    self.counts[name] = count
                    changed = True
                    continue
                if name not in self.data and any(
                    b.source is not None and {n.value for n in values_read(b.source)} & self.data for b in bindings
                ):
                    self.data.add(name)
                    changed = True

    @staticmethod
    def _all(bindings: list[_Binding], judge: Callable[[_Binding], str | None]) -> str | None:
        """The mask that `judge` finds behind every one of `bindings`, when it is one and the same."""
        found = {judge(b) for b in bindings}
        if len(found) == 1:
            return found.pop()
        return None

    def _any_count(self, name: str, bindings: list[_Binding]) -> str | None:
        """The mask of which some binding of `name` makes it a count, when one mask does and no binding shifts it
        (`n += 1`): another branch that binds a count of its own (`torch.full((batch_size,), seq_len)`) does not
        make the masked branch right."""
        if any(b.kind == "other" for b in bindings):
            return None
        found = {self._count_binding(name, b) for b in bindings} - {None}
        return found.pop() if len(found) == 1 else None

    def _mask_binding(self, binding: _Binding) -> str | None:
        return self.mask_of(binding.source) if binding.kind == "value" and binding.source is not None else None

    def _count_binding(self, name: str, binding: _Binding) -> str | None:
        if binding.source is None:
            return None
        if binding.kind in ("value", "loop"):
            return self.count_of(binding.source)
        if "len" not in name.lower() or name.lower().startswith(NOT_PER_SAMPLE):
            return None
        if binding.kind == "unpack" and isinstance(binding.source, cst.Call):
            for arg in binding.source.args:
                mask = self.mask_of(arg.value)
                if mask is not None:
                    return mask
        return None

    def mask_of(self, node: cst.BaseExpression) -> str | None:
        """The mask parameter whose positions `node` marks: `attn_mask`, `attn_mask[b].bool()`, `mask > 0`,
        `_normalize_attn_mask(attn_mask, ...)`."""
        if isinstance(node, cst.Name):
            return self.masks.get(node.value)
        if isinstance(node, cst.Subscript):
            return self.mask_of(node.value)
        if isinstance(node, cst.Comparison):
            return self.mask_of(node.left)
        if isinstance(node, cst.Call):
            func = node.func
            if isinstance(func, cst.Attribute) and func.attr.value in KEEPS_MASK:
                return self.mask_of(func.value)
            called = (dotted_name(func) or "").rsplit(".", 1)[-1]
            positional = [a.value for a in node.args if a.keyword is None and not a.star]
            if "mask" in called and not called.startswith("masked") and positional:
                return self.mask_of(positional[0])
        return None

    def count_of(self, node: cst.BaseExpression) -> str | None:
        """The mask parameter of which `node` counts the positions kept in one sample (or in each): `mask.sum(1)`,
        `seqlens_k[b]`, `int(lengths[i])`, `lengths.tolist()`, a name bound to one."""
        if isinstance(node, cst.Name):
            return self.counts.get(node.value)
        if isinstance(node, cst.Subscript):
            if all(isinstance(e.slice, cst.Index) for e in node.slice):
                return self.count_of(node.value)
            return None
        if not isinstance(node, cst.Call):
            return None
        func = node.func
        if isinstance(func, cst.Attribute):
            if func.attr.value in COUNTERS:
                if not node.args:
                    # `mask[b].sum()` counts one sample; `mask.sum()` the whole batch
                    row = func.value
                    if isinstance(row, cst.Subscript) and all(isinstance(e.slice, cst.Index) for e in row.slice):
                        return self.mask_of(row)
                    return None
                owner = dotted_name(func.value)
                if owner == "torch":
                    positional = [a.value for a in node.args if a.keyword is None]
                    return self.mask_of(positional[0]) if len(node.args) >= 2 and positional else None
                return self.mask_of(func.value)
            if func.attr.value in KEEPS_COUNT:
                return self.count_of(func.value)
            return None
        if isinstance(func, cst.Name) and func.value == "int" and len(node.args) == 1:
            return self.count_of(node.args[0].value)
        return None

    def selects(self, mask: str) -> bool:
        """Whether the function selects the positions `mask` keeps: `nonzero`, `masked_select`, `torch.where(mask)`,
        or indexing by the mask (`key[b][attn_mask[b]]`)."""
        names = {name for name, owner in self.masks.items() if owner == mask}
        for call in walk.own_nodes(self.function, cst.Call):
            name = dotted_name(call.func) or (call.func.attr.value if isinstance(call.func, cst.Attribute) else "")
            if name.rsplit(".", 1)[-1] in SELECTORS and names & {n.value for n in values_read(call)}:
                return True
        for subscript in walk.own_nodes(self.function, cst.Subscript):
            for element in subscript.slice:
                if isinstance(element.slice, cst.Index) and self.mask_of(element.slice.value) == mask:
                    return True
        return False


def _items(sliced: cst.BaseExpression) -> str:
    root = sliced
    while isinstance(root, cst.Subscript):
        root = root.value
    name = root.value if isinstance(root, cst.Name) else ""
    for prefix, items in (("key", "keys"), ("value", "values"), ("quer", "queries")):
        if name.startswith(prefix):
            return items
    return "positions"


def _remedy(subscript: cst.Subscript, mask: str) -> str:
    """`key[b][attn_mask[b].bool()]` for `key[b, :n]` and `key[b][:n]`; boolean indexing by the mask otherwise."""
    elements = subscript.slice
    sample: cst.BaseExpression | None = None
    tensor: cst.BaseExpression | None = None
    if len(elements) == 2 and isinstance(elements[0].slice, cst.Index):
        sample, tensor = elements[0].slice.value, subscript.value
    elif (
        len(elements) == 1
        and isinstance(subscript.value, cst.Subscript)
        and len(subscript.value.slice) == 1
        and isinstance(subscript.value.slice[0].slice, cst.Index)
    ):
        sample, tensor = subscript.value.slice[0].slice.value, subscript.value.value
    if isinstance(sample, (cst.Name, cst.Integer)) and tensor is not None:
        index = _code(sample)
        return f"`{_code(tensor)}[{index}][{mask}[{index}].bool()]`"
    return f"boolean indexing by `{mask}`"


class MaskedKeysPackedByCount(Rule):
    """
    ## What it does
    Checks functions that take a mask (a parameter with `mask` in its name) and slice a tensor they were
    handed to a per-sample count of that mask: `key[b, :n]` where `n` comes from `attn_mask.sum(dim=1)` (through
    names, `seqlens[b]`, `int(...)`, `.item()`, `.tolist()` or a loop over them), or is a `*len*` name unpacked
    from a helper that received the mask (`_prepare_for_flash_attn_or_sage_varlen(..., attn_mask=attn_mask)`).

    ## Why is this bad?
    A count says how many positions the mask keeps, not where they are. Slicing to the first `n` positions is
    right only when all padding sits at the end of each row. A left-padded mask, or a joint `[text, image]` mask
    whose text part is padded in the middle, keeps padded keys and drops valid ones: attention runs on the wrong
    tokens, silently.

    ## Example
    ```python
    (_, seqlens_k), (cu_seqlens_q, cu_seqlens_k), (max_seqlen_q, max_seqlen_k) = _prepare_for_flash_attn_or_sage_varlen(
        batch_size, seq_len_q, seq_len_kv, attn_mask=attn_mask, device=device
    )
    key_valid, value_valid = [], []
    for b in range(batch_size):
        valid_len = seqlens_k[b]
        key_valid.append(key[b, :valid_len])
        value_valid.append(value[b, :valid_len])
    key_packed = torch.cat(key_valid, dim=0)
    ```

    Use instead:
    ```python
    indices_k = attn_mask.flatten().nonzero(as_tuple=False).flatten()
    key_packed = key.flatten(0, 1)[indices_k]
    value_packed = value.flatten(0, 1)[indices_k]
    ```

    ## Known problems
    The mask must be a parameter of the function: a mask the function builds itself (from a tokenizer, whose
    padding side it knows) is not followed, and neither is one rebound to anything but itself or all ones. A text
    encoder's padding mask (a name with `encoder`, `prompt`, `text`, `txt`, `cap` or `caption` in it, such as a
    transformer's `encoder_attention_mask`) is taken to come from the pipeline's tokenizer, padded at the end, so
    a model whose pipeline pads on the left is missed. A function that also selects positions by the mask
    (`nonzero`, `masked_select`, `argsort`, `where`, boolean indexing) is taken to handle the padding. Counts
    combined with arithmetic (`offset + n`) and batch maxima (`mask.sum(1).max()`) are not followed, and the
    sliced tensor must come from another parameter. A function whose callers only ever pass right-padded masks is
    still reported: say so with `# drbot: ignore[DRB308]`.

    ## References
    - huggingface/diffusers#13656, pattern 3
    - huggingface/diffusers#13479 (0.39.0: `_flash_varlen_attention_hub` packed keys by count; fixed with
      `nonzero()` indices)
    - huggingface/diffusers#14115 (0.40.0: the same fix for `_flash_attention_3_varlen_hub`)
    """

    code = "DRB308"
    pattern = 3
    severity = "error"
    message = (
        "`{slice}` keeps the first `{count}` {items} of each sample, counted from `{mask}`, which is right only when "
        "all padding is at the end; select the positions `{mask}` keeps instead ({remedy}, or `nonzero()` indices)."
    )
    REQUIRES_ANY = ("mask",)

    VALID = [
        # the fixed backend: the kept positions are selected with `nonzero()`
        Valid(
            """
            def _flash_varlen_attention_hub(query, key, value, attn_mask=None, scale=None):
                batch_size, seq_len_q, _, _ = query.shape
                _, seq_len_kv, _, _ = key.shape
                if attn_mask is not None:
                    attn_mask = _normalize_attn_mask(attn_mask, batch_size, seq_len_kv)
                    (_, seqlens_k), (cu_seqlens_q, cu_seqlens_k), (max_seqlen_q, max_seqlen_k) = (
                        _prepare_for_flash_attn_or_sage_varlen_with_mask(batch_size, seq_len_q, attn_mask, query.device)
                    )
                    indices_k = attn_mask.flatten().nonzero(as_tuple=False).flatten()
                    key_packed = key.reshape(-1, *key.shape[2:])[indices_k]
                    value_packed = value.reshape(-1, *value.shape[2:])[indices_k]
                else:
                    key_packed, value_packed = key.flatten(0, 1), value.flatten(0, 1)
                return func(query.flatten(0, 1), key_packed, value_packed, cu_seqlens_q, cu_seqlens_k)
            """,
            path="diffusers/models/attention_dispatch.py",
        ),
        # boolean indexing by the mask row
        Valid(
            """
            def pack(hidden_states, attention_mask):
                lengths = attention_mask.sum(dim=1)
                out = [hidden_states[i][attention_mask[i].bool()] for i in range(hidden_states.shape[0])]
                return torch.cat(out), lengths
            """,
            path="diffusers/models/transformers/transformer_example.py",
        ),
        # a count that does not come from a mask
        Valid(
            """
            def crop(hidden_states, attention_mask, lengths):
                out = []
                for i, n in enumerate(lengths):
                    out.append(hidden_states[i, :n])
                return out, attention_mask
            """,
            path="diffusers/models/transformers/transformer_example.py",
        ),
        # the mask comes from the tokenizer in the same function: its padding side is known
        Valid(
            """
            class ExamplePipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, prompt_embeds=None, prompt_attention_mask=None):
                    if prompt_embeds is None:
                        text_inputs = self.tokenizer(prompt, padding="max_length", return_tensors="pt")
                        prompt_attention_mask = text_inputs.attention_mask
                        prompt_embeds = self.text_encoder(text_inputs.input_ids, attention_mask=prompt_attention_mask)[0]
                    lengths = prompt_attention_mask.sum(dim=1)
                    return [prompt_embeds[i, : lengths[i]] for i in range(len(prompt))]
            """,
        ),
        # a text encoder's padding mask, which the pipeline's tokenizer pads at the end
        Valid(
            """
            class ExampleTransformer(ModelMixin):
                def forward(self, hidden_states, encoder_hidden_states, encoder_attention_mask):
                    encoder_seq_lengths = encoder_attention_mask.sum(dim=1).tolist()
                    joint = hidden_states.new_zeros(hidden_states.shape[0], self.max_len, self.dim)
                    for i, n in enumerate(encoder_seq_lengths):
                        joint[i, :n] = encoder_hidden_states[i, :n]
                    return joint
            """,
            path="diffusers/models/transformers/transformer_example.py",
        ),
        # slicing the mask itself
        Valid(
            """
            def trim(attention_mask):
                lengths = attention_mask.sum(-1).tolist()
                return [attention_mask[i, :n] for i, n in enumerate(lengths)]
            """,
            path="diffusers/models/transformers/transformer_example.py",
        ),
        # positions built in the function, in the packed layout, not handed in
        Valid(
            """
            def rope(hidden_states, attention_mask):
                cap_lens = attention_mask.sum(dim=1).tolist()
                freqs = self.freqs(torch.arange(max(cap_lens) + hidden_states.shape[1]))
                return [freqs[:n] for n in cap_lens]
            """,
            path="diffusers/models/transformers/transformer_example.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            @_AttentionBackendRegistry.register(AttentionBackendName.FLASH_VARLEN)
            def _flash_varlen_attention(query, key, value, attn_mask=None, scale=None):
                batch_size, seq_len_q, _, _ = query.shape
                _, seq_len_kv, _, _ = key.shape
                if attn_mask is not None:
                    attn_mask = _normalize_attn_mask(attn_mask, batch_size, seq_len_kv)
                (_, seqlens_k), (cu_seqlens_q, cu_seqlens_k), (max_seqlen_q, max_seqlen_k) = (
                    _prepare_for_flash_attn_or_sage_varlen(
                        batch_size, seq_len_q, seq_len_kv, attn_mask=attn_mask, device=query.device
                    )
                )
                key_valid, value_valid = [], []
                for b in range(batch_size):
                    valid_len = seqlens_k[b]
                    key_valid.append(key[b, :valid_len])
                    value_valid.append(value[b, :valid_len])
                key_packed = torch.cat(key_valid, dim=0)
                value_packed = torch.cat(value_valid, dim=0)
                return flash_attn_varlen_func(query.flatten(0, 1), key_packed, value_packed, cu_seqlens_q, cu_seqlens_k)
            """,
            message=(
                "`key[b, :valid_len]` keeps the first `valid_len` keys of each sample, counted from `attn_mask`, "
                "which is right only when all padding is at the end; select the positions `attn_mask` keeps instead "
                "(`key[b][attn_mask[b].bool()]`, or `nonzero()` indices)."
            ),
            path="diffusers/models/attention_dispatch.py",
        ),
        # 0.35.0's shape: the count comes from the mask in one branch, a constant length in the other
        Invalid(
            """
            def _sage_varlen_attention(query, key, value, cu_seqlens_k=None, max_seqlen_k=None, attn_mask=None):
                batch_size, seq_len_q, _, _ = query.shape
                _, seq_len_kv, _, _ = key.shape
                if cu_seqlens_k is None:
                    (_, seqlens_k), (cu_seqlens_q, cu_seqlens_k), (max_seqlen_q, max_seqlen_k) = (
                        _prepare_for_flash_attn_or_sage_varlen(batch_size, seq_len_q, seq_len_kv, attn_mask=attn_mask)
                    )
                else:
                    seqlens_k = torch.full((batch_size,), max_seqlen_k, dtype=torch.int32)
                key_packed = torch.cat([key[b, : seqlens_k[b]] for b in range(batch_size)], dim=0)
                return sageattn_varlen(query.flatten(0, 1), key_packed, cu_seqlens_k=cu_seqlens_k)
            """,
            path="diffusers/models/attention_dispatch.py",
        ),
        # another spelling: counts listed with `.tolist()`, then a loop over them
        Invalid(
            """
            class ExampleConnector(nn.Module):
                def forward(self, hidden, attention_mask):
                    lengths = attention_mask.sum(-1).tolist()
                    out = []
                    for i, n in enumerate(lengths):
                        out.append(hidden[i, :n])
                    return torch.cat(out)
            """,
            message=(
                "`hidden[i, :n]` keeps the first `n` positions of each sample, counted from `attention_mask`, "
                "which is right only when all padding is at the end; select the positions `attention_mask` keeps "
                "instead (`hidden[i][attention_mask[i].bool()]`, or `nonzero()` indices)."
            ),
            path="diffusers/models/transformers/transformer_example.py",
        ),
        # the count inline, rows paired with `zip`
        Invalid(
            """
            def split_tokens(tokens, padding_mask):
                return [row[: int(n)] for row, n in zip(tokens, padding_mask.bool().sum(dim=1))]
            """,
            message=(
                "`row[: int(n)]` keeps the first `int(n)` positions of each sample, counted from `padding_mask`, "
                "which is right only when all padding is at the end; select the positions `padding_mask` keeps "
                "instead (boolean indexing by `padding_mask`, or `nonzero()` indices)."
            ),
            path="diffusers/models/transformers/transformer_example.py",
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            if definition.is_class or not isinstance(definition.node, cst.FunctionDef):
                continue
            function = definition.node
            if not any(_is_attention_mask(p.name.value) for p in parameters(function)):
                continue
            flow = _Flow(function)
            if not flow.masks:
                continue
            self._check_function(definition.qualname, flow)

    def _check_function(self, scope: str, flow: _Flow) -> None:
        written: set[int] = set()
        for assign in walk.own_nodes(flow.function, cst.Assign):
            for target in assign.targets:
                written.update(id(n) for n in walk.walk(target.target))
        for augmented in walk.own_nodes(flow.function, cst.AugAssign):
            written.update(id(n) for n in walk.walk(augmented.target))
        for annotated in walk.own_nodes(flow.function, cst.AnnAssign):
            written.update(id(n) for n in walk.walk(annotated.target))
        cleared: dict[str, bool] = {}
        for subscript in walk.own_nodes(flow.function, cst.Subscript):
            if id(subscript) in written:
                continue
            for element in subscript.slice:
                part = element.slice
                if not isinstance(part, cst.Slice) or part.upper is None or part.step is not None:
                    continue
                if part.lower is not None and not (isinstance(part.lower, cst.Integer) and part.lower.value == "0"):
                    continue
                mask = flow.count_of(part.upper)
                if mask is None or flow.mask_of(subscript.value) is not None:
                    continue
                if not {n.value for n in values_read(subscript.value)} & flow.data:
                    continue
                if mask not in cleared:
                    cleared[mask] = flow.selects(mask)
                if cleared[mask]:
                    continue
                message = self.message.format(
                    slice=_code(subscript),
                    count=_code(part.upper),
                    items=_items(subscript.value),
                    mask=mask,
                    remedy=_remedy(subscript, mask),
                )
                self.report(subscript, message, symbol=mask, scope=scope)
                return
