"""DRB804: the second of two mirrored statements (height/width, query/key, ...) kept a name of the first."""

from __future__ import annotations

import io
import keyword
import re
import token
import tokenize
from collections.abc import Sequence
from dataclasses import dataclass

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.syntax import nested_blocks


#: the axis pairs a mirrored statement swaps, by family: each family is renamed as a whole (both directions at
#: once), one family at a time; word parts of identifiers split on `_` are renamed, never parts of words
FAMILIES: tuple[tuple[tuple[str, str], ...], ...] = (
    (("height", "width"), ("h", "w"), ("H", "W")),
    (("query", "key"), ("q", "k")),
    (("x", "y"),),
    (("rows", "cols"), ("row", "col")),
)
#: every word part that some family renames
AXES = frozenset(part for family in FAMILIES for pair in family for part in pair)
_WORD_PART_RE = re.compile(r"[A-Za-z0-9]+")
#: statements longer than this are not compared: long lines differ in too many ways to call one difference a slip
MAX_CHARS = 200
_SKIPPED_TOKENS = frozenset({token.NL, token.NEWLINE, token.COMMENT, token.INDENT, token.DEDENT, token.ENDMARKER})
_LITERALS = frozenset({token.NUMBER, token.STRING})


@dataclass(frozen=True)
class _Mirror:
    """A statement compared by its parts: the guard of an `if` (or nothing), the assignment's target (with an
    augmented operator) and its value, each as a list of (token type, text)."""

    guard: tuple[tuple[int, str], ...]
    target: tuple[tuple[int, str], ...]
    value: tuple[tuple[int, str], ...]
    assign: cst.Assign | cst.AugAssign
    #: the name the statement binds, when its target is one plain name
    bound: str | None


def _tokens(code: str) -> tuple[tuple[int, str], ...] | None:
    try:
        found = tokenize.generate_tokens(io.StringIO(code).readline)
        return tuple((t.type, t.string) for t in found if t.type not in _SKIPPED_TOKENS)
    except (tokenize.TokenError, SyntaxError):
        return None


def _is_identifier(item: tuple[int, str]) -> bool:
    return item[0] == token.NAME and not keyword.iskeyword(item[1])


def _one_assign(statement: cst.CSTNode) -> cst.Assign | cst.AugAssign | None:
    if isinstance(statement, cst.SimpleStatementLine) and len(statement.body) == 1:
        small = statement.body[0]
        if isinstance(small, cst.AugAssign) or (isinstance(small, cst.Assign) and len(small.targets) == 1):
            return small
    return None


@dataclass(frozen=True)
class _Target:
    """The first half of a `_Mirror`, enough to tell whether two statements can be a pair: the target's tokens
    (with an augmented operator), without generating the code of the value or the guard."""

    test: cst.BaseExpression | None
    target: tuple[tuple[int, str], ...]
    #: the target's code (with an augmented operator), None until `_mirror` needs its length
    target_code: str | None
    assign: cst.Assign | cst.AugAssign
    bound: str | None


def _quick_tokens(node: cst.CSTNode, out: list[tuple[int, str]]) -> bool:
    """Append the tokens of a plain target (the shapes `_quick_names` takes) to `out`, as `_tokens` would find
    them in its code, without generating the code; False for another shape."""
    kind = type(node)
    if kind is cst.Element or kind is cst.StarredElement:
        if kind is cst.StarredElement:
            out.extend(_OPEN * len(node.lpar))  # type: ignore[attr-defined]
            out.append(_STAR)
        if not _quick_tokens(node.value, out):  # type: ignore[attr-defined]
            return False
        if kind is cst.StarredElement:
            out.extend(_CLOSE * len(node.rpar))  # type: ignore[attr-defined]
        if type(node.comma) is cst.Comma:  # type: ignore[attr-defined]
            out.append(_COMMA)
        return True
    if kind is not cst.Name and kind is not cst.Attribute and kind is not cst.Tuple and kind is not cst.List:
        return False
    out.extend(_OPEN * len(node.lpar))  # type: ignore[attr-defined]
    if kind is cst.Name:
        out.append((token.NAME, node.value))  # type: ignore[attr-defined]
    elif kind is cst.Attribute:
        if not _quick_tokens(node.value, out) or not _quick_tokens(node.attr, out):  # type: ignore[attr-defined]
            return False
        out.insert(len(out) - 1 - len(node.attr.rpar), _DOT)  # type: ignore[attr-defined]
    else:
        if kind is cst.List:
            out.append(_OPEN_LIST)
        for element in node.elements:  # type: ignore[attr-defined]
            if not _quick_tokens(element, out):
                return False
        if kind is cst.List:
            out.append(_CLOSE_LIST)
    out.extend(_CLOSE * len(node.rpar))  # type: ignore[attr-defined]
    return True


_OPEN, _CLOSE, _STAR, _COMMA, _DOT = (
    ((token.OP, "("),),
    ((token.OP, ")"),),
    (token.OP, "*"),
    (token.OP, ","),
    (token.OP, "."),
)
_OPEN_LIST, _CLOSE_LIST = (token.OP, "["), (token.OP, "]")


def _target(statement: cst.CSTNode, module: cst.Module) -> _Target | None:
    """The target of a simple assignment, or of an `if` without `else` whose body is one simple assignment, when
    it names an axis (only such a statement can be either line of a mirrored pair)."""
    test: cst.BaseExpression | None = None
    if isinstance(statement, cst.If):
        body = statement.body.body if isinstance(statement.body, cst.IndentedBlock) else ()
        if statement.orelse is not None or len(body) != 1:
            return None
        test, statement = statement.test, body[0]
    assign = _one_assign(statement)
    if assign is None:
        return None
    target_node = assign.targets[0].target if isinstance(assign, cst.Assign) else assign.target
    quick = _quick_names(target_node)
    if quick is not None and not any(_has_axis(name) for name in quick):
        return None  # no axis in the target: skip generating its code
    bound = target_node.value if isinstance(target_node, cst.Name) else None
    items: list[tuple[int, str]] = []
    if quick is not None and _quick_tokens(target_node, items):
        # a plain target that names an axis: its code would name it too, and its tokens are known without it
        if isinstance(assign, cst.AugAssign):
            items.append((token.NAME, type(assign.operator).__name__))
        return _Target(test, tuple(items), None, assign, bound)
    target_code = _target_code(assign, module)
    if not AXES.intersection(_WORD_PART_RE.findall(target_code)):
        return None
    target = _tokens(target_code)
    if target is None:
        return None
    return _Target(test, target, target_code, assign, bound)


def _target_code(assign: cst.Assign | cst.AugAssign, module: cst.Module) -> str:
    if isinstance(assign, cst.Assign):
        return module.code_for_node(assign.targets[0].target)
    return module.code_for_node(assign.target) + " " + type(assign.operator).__name__


def _mirror(found: _Target, module: cst.Module) -> _Mirror | None:
    """The parts of a statement whose target `_target` found: its guard, target and value as tokens."""
    target_code = found.target_code if found.target_code is not None else _target_code(found.assign, module)
    value_code = module.code_for_node(found.assign.value)
    if len(target_code) + len(value_code) > MAX_CHARS:
        return None
    guard = _tokens(module.code_for_node(found.test)) if found.test is not None else ()
    value = _tokens(value_code)
    if guard is None or value is None:
        return None
    return _Mirror(guard, found.target, value, found.assign, found.bound)


def _quick_names(node: cst.BaseExpression) -> list[str] | None:
    """The identifiers of a plain target (`a`, `self.a.b`, `a, b`), without generating code; None for another
    shape (a subscript's slice may name an axis too)."""
    if isinstance(node, cst.Name):
        return [node.value]
    if isinstance(node, cst.Attribute):
        inner = _quick_names(node.value)
        return None if inner is None else [*inner, node.attr.value]
    if isinstance(node, (cst.Tuple, cst.List)):
        names: list[str] = []
        for element in node.elements:
            inner = _quick_names(element.value)
            if inner is None:
                return None
            names += inner
        return names
    return None


def _target_names(statement: cst.CSTNode) -> list[str] | None:
    """The identifiers of the target of a statement `_mirror` may take (an `if`'s one assignment included);
    `[]` for any other statement, None when the target needs its code to tell."""
    # exact type tests: none of these libcst node classes has subclasses
    if type(statement) is cst.If:
        body = statement.body
        if type(body) is not cst.IndentedBlock:
            return []  # a one-line `if x: y = 1` is no mirror
        if statement.orelse is not None or len(body.body) != 1:
            return []
        statement = body.body[0]
    if type(statement) is not cst.SimpleStatementLine or len(statement.body) != 1:
        return []
    small = statement.body[0]
    if type(small) is cst.Assign:
        if len(small.targets) != 1:
            return []
        return _quick_names(small.targets[0].target)
    if type(small) is cst.AugAssign:
        return _quick_names(small.target)
    return []


#: each family's renaming, both directions at once
_MAPPINGS: tuple[dict[str, str], ...] = tuple(
    {a: b for a, b in family} | {b: a for a, b in family} for family in FAMILIES
)
#: a name renamed by each family in turn (a cache: names repeat across a file)
_RENAMED: dict[str, tuple[str, ...]] = {}
#: whether a target name has a word part that some family renames (a cache)
_HAS_AXIS: dict[str, bool] = {}


def _renamed(name: str) -> tuple[str, ...]:
    found = _RENAMED.get(name)
    if found is None:
        parts = _parts(name)
        found = _RENAMED[name] = tuple("_".join(mapping.get(part, part) for part in parts) for mapping in _MAPPINGS)
    return found


def _has_axis(name: str) -> bool:
    found = _HAS_AXIS.get(name)
    if found is None:
        found = _HAS_AXIS[name] = bool(AXES.intersection(_WORD_PART_RE.findall(name)))
    return found


def _renames(first: list[str], second: list[str]) -> bool:
    """Whether one family renames the word parts of `first` into `second` (and they differ)."""
    if len(first) != len(second) or first == second:
        return False
    renamed = [_renamed(name) for name in first]
    for index in range(len(_MAPPINGS)):
        if all(names[index] == other for names, other in zip(renamed, second, strict=True)):
            return True
    return False


def _parts(name: str) -> list[str]:
    return name.split("_")


def _rename(items: Sequence[tuple[int, str]], mapping: dict[str, str]) -> tuple[tuple[int, str], ...]:
    renamed = []
    for item in items:
        if _is_identifier(item):
            item = (item[0], "_".join(mapping.get(part, part) for part in _parts(item[1])))
        renamed.append(item)
    return tuple(renamed)


def _axis_tokens(items: Sequence[tuple[int, str]], mapping: dict[str, str]) -> set[str]:
    return {part for item in items if _is_identifier(item) for part in _parts(item[1]) if part in mapping}


def _identifiers(node: cst.CSTNode) -> set[str]:
    """The plain and attribute names that `node` binds or reads (parameters included), less the names it
    `del`etes: those are dropped on purpose."""
    names = {n.value for n in walk.nodes(node, cst.Name)}
    for statement in walk.nodes(node, cst.Del):
        names -= {n.value for n in walk.nodes(statement, cst.Name)}
    return names


def _shown(assign: cst.Assign | cst.AugAssign, name: str, module: cst.Module) -> str:
    """The assignment as the message quotes it: a call whose callee holds `name` loses its arguments."""
    value = assign.value
    if isinstance(value, cst.Call) and name in {n.value for n in walk.nodes(value.func, cst.Name)}:
        value_code = module.code_for_node(value.func) + "(...)"
    else:
        value_code = module.code_for_node(value)
    if isinstance(assign, cst.Assign):
        code = f"{module.code_for_node(assign.targets[0].target)} = {value_code}"
    else:
        operator = module.code_for_node(assign.operator).strip()
        code = f"{module.code_for_node(assign.target)} {operator} {value_code}"
    return " ".join(code.split()) if "\n" in code else code


def _sibling(used: str, expected: str, partner: set[str]) -> bool:
    """Whether `used` is `expected` with another qualifier: as many word parts, the partner axis in the same
    places, another word elsewhere (`tile_sample_stride_width` for `tile_sample_min_width`)."""
    used_parts, expected_parts = _parts(used), _parts(expected)
    if len(used_parts) != len(expected_parts):
        return False
    places = [i for i, part in enumerate(expected_parts) if part in partner]
    return bool(places) and places == [i for i, part in enumerate(used_parts) if part in partner]


class MirroredLineSlip(Rule):
    """
    ## What it does
    Checks pairs of neighbouring statements written once per axis or per projection (height and width, `h` and
    `w`, query and key, `q` and `k`, `x` and `y`, rows and columns): two simple assignments, or two `if`
    statements without `else` whose body is one assignment. When renaming the axis of the first statement (the
    word parts of its names, `tile_latent_min_height` -> `tile_latent_min_width`) gives exactly the second
    statement's target and guard, and the second's value differs from the renamed first's in exactly one name,
    that name is reported as a copy-paste slip when either
    - it is the first statement's own name, left unrenamed (`norm_added_q` where `norm_added_k` belongs), or
    - it names the partner axis with another qualifier in the same place (`tile_sample_stride_width` where the
      first statement reads `tile_sample_min_height`),

    and the expected name (`norm_added_k`, `tile_sample_min_width`) is named elsewhere: in the same function for
    a plain name, in the same file for an attribute.

    ## Why is this bad?
    Mirrored lines are written by copying the first and renaming by hand; a name that escapes the renaming makes
    the second axis silently use the first axis's value (or a sibling setting). Nothing fails: square inputs and
    default configurations, where both values coincide, hide it, and non-square or non-default inputs get wrong
    tiles, wrong padding or a key normalised with the query's weights. Meta issue #13656 (pattern 8) lists such
    copy-paste divergence.

    ## Example
    ```python
    if attn.norm_added_q is not None:
        encoder_hidden_states_query_proj = attn.norm_added_q(encoder_hidden_states_query_proj)
    if attn.norm_added_k is not None:
        encoder_hidden_states_key_proj = attn.norm_added_q(encoder_hidden_states_key_proj)
    ```

    Use instead:
    ```python
    if attn.norm_added_q is not None:
        encoder_hidden_states_query_proj = attn.norm_added_q(encoder_hidden_states_query_proj)
    if attn.norm_added_k is not None:
        encoder_hidden_states_key_proj = attn.norm_added_k(encoder_hidden_states_key_proj)
    ```

    ## Known problems
    Only adjacent statements are compared, only the axis pairs listed above, and only word parts split on `_`
    (`h0`, `posX` are not renamed). Literal constants may differ (`shape[2]` and `shape[3]`); a pair that differs
    in more than one name, in an operator, or is longer than 200 characters is left alone. Also left alone, as
    often intended: a name that the function `del`etes (`del key_rotary_emb`: the query's rotary embedding serves
    both), a tensor read only for its `.device` or `.dtype` (`device=query.device` for the key too), a bare `x`,
    `h` or `q` that the first statement binds (`x = f(x)` then `y = f(x)`: a tensor, not an axis), and a pair
    whose first statement already reads the partner axis, since the rule cannot tell which line is wrong.

    ## References
    - huggingface/diffusers#13656, pattern 8
    - huggingface/diffusers#13533 (AuraFlow: the added key normalised with `norm_added_q`)
    - huggingface/diffusers#11294 (Mochi VAE: `tile_latent_min_width` from `tile_sample_stride_width`),
      huggingface/diffusers#11305 (the same slip in the LTX VAE)
    """

    code = "DRB804"
    pattern = 8
    severity = "warning"
    message = "`{code}` mirrors the line above for `{axis}`, but still uses `{name}`; use `{expected}`."
    message_sibling = (
        "`{code}` mirrors the line above for `{axis}`, but uses `{name}` where the line above uses `{first}`; "
        "use `{expected}`."
    )

    VALID = [
        # a correct mirrored pair, and one whose lines differ only in constants
        Valid(
            """
            def tiles(self, z):
                tile_latent_min_height = self.tile_sample_min_height // self.spatial_compression_ratio
                tile_latent_min_width = self.tile_sample_min_width // self.spatial_compression_ratio
                height = z.shape[2]
                width = z.shape[3]
                return tile_latent_min_height, tile_latent_min_width, height, width
            """
        ),
        Valid(
            """
            def __call__(self, attn, query, key):
                if attn.norm_q is not None:
                    query = attn.norm_q(query)
                if attn.norm_k is not None:
                    key = attn.norm_k(key)
                return query, key
            """
        ),
        # square defaults: the second axis defaults to the first on purpose
        Valid(
            """
            def __call__(self, height=None, width=None):
                height = height or 512
                width = width or height
                if height is None:
                    height = width
                if width is None:
                    width = height
                return height, width
            """
        ),
        # unrelated neighbours, and a second line that reads the name the first one bound
        Valid(
            """
            def forward(self, x, h):
                pad_h = (self.patch - h % self.patch) % self.patch
                scale = self.scale
                pad_w = pad_h
                out_h = h * 2
                out_w = out_h + 1
                return pad_h, pad_w, scale, out_w
            """
        ),
        # the first line reads the second axis: which of the two lines is wrong cannot be told
        Valid(
            """
            def pad(x, p):
                h, w = x.shape[-2:]
                pad_h = (p - w % p) % p
                pad_w = (p - w % p) % p
                return pad_h, pad_w
            """
        ),
        # a bare `x` (or `h`, `q`) bound by the first line is a tensor that the second line reads on purpose
        Valid(
            """
            def forward(self, x):
                x = self.act(x)
                y = self.act(x)
                return x + y
            """
        ),
        # the key of a joint attention is the concatenation `k`, not `img_k`; the key's rotary embedding is
        # dropped on purpose; tensors mirrored for two axes share a device
        Valid(
            """
            def __call__(self, attn, img_q, img_k, txt_k, v, query_rotary_emb=None, key_rotary_emb=None):
                del key_rotary_emb
                k = torch.cat((txt_k, img_k), dim=2)
                query = img_q.transpose(1, 2)
                key = k.transpose(1, 2)
                query = apply_rotary_emb(query, query_rotary_emb)
                key = apply_rotary_emb(key, query_rotary_emb)
                cu_seqlens_q = cu_seqlens_q.to(dtype=torch.int32, device=query.device)
                cu_seqlens_k = cu_seqlens_k.to(dtype=torch.int32, device=query.device)
                return query, key, v
            """
        ),
        # self-attention: the key projection takes `query_dim` when no key dimension exists
        Valid(
            """
            class MyAttention(nn.Module):
                def __init__(self, query_dim, inner_dim):
                    self.to_q = nn.Linear(query_dim, inner_dim)
                    self.to_k = nn.Linear(query_dim, inner_dim)
            """
        ),
        # the expected sibling name exists nowhere: the other qualifier may be intended
        Valid(
            """
            def tiles(self):
                tile_latent_min_height = self.tile_sample_min_height // self.ratio
                tile_latent_min_width = self.tile_sample_stride_width // self.ratio
                return tile_latent_min_height, tile_latent_min_width
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class AuraFlowAttnProcessor2_0:
                def __call__(self, attn, encoder_hidden_states_query_proj, encoder_hidden_states_key_proj):
                    if attn.norm_added_q is not None:
                        encoder_hidden_states_query_proj = attn.norm_added_q(encoder_hidden_states_query_proj)
                    if attn.norm_added_k is not None:
                        encoder_hidden_states_key_proj = attn.norm_added_q(encoder_hidden_states_key_proj)
                    return encoder_hidden_states_query_proj, encoder_hidden_states_key_proj
            """,
            message=(
                "`encoder_hidden_states_key_proj = attn.norm_added_q(...)` mirrors the line above for `key`, but "
                "still uses `norm_added_q`; use `norm_added_k`."
            ),
            path="diffusers/models/attention_processor.py",
        ),
        Invalid(
            """
            class AutoencoderKLMochi(ModelMixin):
                def __init__(self):
                    self.tile_sample_min_height = 256
                    self.tile_sample_min_width = 256
                    self.tile_sample_stride_height = 192
                    self.tile_sample_stride_width = 192

                def _decode(self, z):
                    tile_latent_min_height = self.tile_sample_min_height // self.spatial_compression_ratio
                    tile_latent_min_width = self.tile_sample_stride_width // self.spatial_compression_ratio
                    return tile_latent_min_height, tile_latent_min_width
            """,
            message=(
                "`tile_latent_min_width = self.tile_sample_stride_width // self.spatial_compression_ratio` mirrors "
                "the line above for `width`, but uses `tile_sample_stride_width` where the line above uses "
                "`tile_sample_min_height`; use `tile_sample_min_width`."
            ),
            path="diffusers/models/autoencoders/autoencoder_kl_mochi.py",
        ),
        Invalid(
            """
            def pad(x, p):
                h, w = x.shape[-2:]
                pad_h = (p - h % p) % p
                pad_w = (p - h % p) % p
                return F.pad(x, (0, pad_w, 0, pad_h))
            """,
            message="`pad_w = (p - h % p) % p` mirrors the line above for `w`, but still uses `h`; use `w`.",
        ),
    ]

    def check(self) -> None:
        module = self.context.module
        self._names: dict[int, set[str]] = {}
        self._targets: dict[int, _Target | None] = {}
        self._made: dict[int, _Mirror | None] = {}
        self._visit(module.body, module, "")

    def _target(self, node: cst.CSTNode) -> _Target | None:
        key = id(node)
        targets = self._targets
        if key not in targets:
            targets[key] = _target(node, self.context.module)
        return targets[key]

    def _mirror(self, node: cst.CSTNode, found: _Target) -> _Mirror | None:
        key = id(node)
        made = self._made
        if key not in made:
            made[key] = _mirror(found, self.context.module)
        return made[key]

    def _visit(self, body: Sequence[cst.CSTNode], owner: cst.CSTNode, scope: str) -> None:
        previous: cst.CSTNode | None = None
        previous_names: list[str] | None = []
        for statement in body:
            names = _target_names(statement)
            # a statement that no mirror can be made of (`[]`: not an assignment, or no axis in a plain target)
            # cannot be either line of a pair; two targets that no family renames into each other neither
            if (
                names != []
                and previous_names != []
                and previous is not None
                and (names is None or previous_names is None or _renames(previous_names, names))
            ):
                first_target, second_target = self._target(previous), self._target(statement)
                # `_compare` needs the target of the second to be the renamed target of the first: only then are
                # the values and guards worth generating
                if (
                    first_target is not None
                    and second_target is not None
                    and any(_rename(first_target.target, mapping) == second_target.target for mapping in _MAPPINGS)
                ):
                    first, second = self._mirror(previous, first_target), self._mirror(statement, second_target)
                    if first is not None and second is not None:
                        self._compare(first, second, owner, scope)
            previous, previous_names = statement, names
            kind = type(statement)
            if kind is cst.SimpleStatementLine:
                continue
            if isinstance(statement, (cst.FunctionDef, cst.ClassDef)):
                name = f"{scope}.{statement.name.value}" if scope else statement.name.value
                inner = statement if kind is cst.FunctionDef else owner
                if type(statement.body) is cst.IndentedBlock:
                    self._visit(statement.body.body, inner, name)
            elif isinstance(statement, cst.BaseCompoundStatement):
                for block in nested_blocks(statement):
                    self._visit(block, owner, scope)

    def _known(self, owner: cst.CSTNode, attribute: bool) -> set[str]:
        """Names the expected one may be: those of the enclosing function, or of the file for an attribute."""
        root = self.context.module if attribute else owner
        found = self._names.get(id(root))
        if found is None:
            found = self._names[id(root)] = _identifiers(root)
        return found

    def _compare(self, first: _Mirror, second: _Mirror, owner: cst.CSTNode, scope: str) -> None:
        if bool(first.guard) != bool(second.guard) or len(first.value) != len(second.value):
            return
        for family in FAMILIES:
            mapping = {a: b for a, b in family} | {b: a for a, b in family}
            found = _axis_tokens(first.target, mapping)
            left, right = {a for a, _ in family}, {b for _, b in family}
            axis = left if found and found <= left else right if found and found <= right else None
            if axis is None:
                continue  # no axis in the target, or both
            if _rename(first.target, mapping) != second.target or _rename(first.guard, mapping) != second.guard:
                continue
            if self._slip(first, second, mapping, axis, owner, scope):
                return

    def _slip(
        self, first: _Mirror, second: _Mirror, mapping: dict[str, str], axis: set[str], owner: cst.CSTNode, scope: str
    ) -> bool:
        renamed = _rename(first.value, mapping)
        differences = []
        for index, (want, got) in enumerate(zip(renamed, second.value, strict=True)):
            if want == got:
                continue
            if want[0] in _LITERALS and got[0] in _LITERALS:
                continue  # constants may differ: `shape[2]` and `shape[3]`
            if not (_is_identifier(want) and _is_identifier(got)):
                return False
            differences.append(index)
        if len(differences) != 1:
            return False
        index = differences[0]
        original, expected, used = first.value[index][1], renamed[index][1], second.value[index][1]
        partner = {mapping[a] for a in axis}
        if not axis & set(_parts(original)) or partner & set(_parts(original)):
            return False  # the first statement reads a name of the other axis (or of both): which line is wrong?
        if [text for _, text in second.value[index + 1 : index + 3]] in ([".", "device"], [".", "dtype"]):
            return False  # `device=query.device` for the key too: mirrored tensors share a device and dtype
        attribute = index > 0 and second.value[index - 1][1] == "."
        if expected not in self._known(owner, attribute):
            return False
        target_axis = next(
            mapping[part] for item in first.target if _is_identifier(item) for part in _parts(item[1]) if part in axis
        )
        shown = _shown(second.assign, used, self.context.module)
        if used == original:
            if used == first.bound and used in mapping:
                return False  # `x = f(x)` then `y = f(x)`: a bare `x`, `h`, `q` is as often a tensor as an axis
            message = self.message.format(code=shown, axis=target_axis, name=used, expected=expected)
        else:
            if not _sibling(used, expected, partner):
                return False
            message = self.message_sibling.format(
                code=shown, axis=target_axis, name=used, first=original, expected=expected
            )
        self.report(second.assign, message, symbol=used, scope=scope or None)
        return True
