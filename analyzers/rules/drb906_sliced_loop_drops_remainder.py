"""DRB906: `for i in range(n // size)` over `[i * size:(i + 1) * size]` slices skips the last partial slice."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import call_name, target_names


def _code(node: cst.CSTNode) -> str:
    return " ".join(cst.Module([]).code_for_node(node).split())


def _floor_division(node: cst.BaseExpression) -> cst.BinaryOperation | None:
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.FloorDivide):
        return node
    return None


def _product_of(node: cst.BaseExpression | None, counter: str, size: str, plus_one: bool) -> bool:
    """Whether `node` is `counter * size` / `size * counter` (`plus_one`: `(counter + 1) * size`)."""
    if not isinstance(node, cst.BinaryOperation) or not isinstance(node.operator, cst.Multiply):
        return False
    for factor, other in ((node.left, node.right), (node.right, node.left)):
        if _code(other) != size:
            continue
        if not plus_one and isinstance(factor, cst.Name) and factor.value == counter:
            return True
        if (
            plus_one
            and isinstance(factor, cst.BinaryOperation)
            and isinstance(factor.operator, cst.Add)
            and isinstance(factor.left, cst.Name)
            and factor.left.value == counter
            and _code(factor.right) == "1"
        ):
            return True
    return False


def _start_end(node: cst.BaseExpression | None, counter: str, size: str) -> tuple[bool, bool]:
    """Whether `node` (a bound, or a name bound to one) is the start (`i * size`) or the end (`(i + 1) * size`)."""
    return _product_of(node, counter, size, False), _product_of(node, counter, size, True)


class SlicedLoopDropsRemainder(Rule):
    """
    ## What it does
    Checks loops `for i in range(n // size)` (the count may be a name bound to `n // size`) whose body takes
    the slice `[i * size:(i + 1) * size]` (directly, or through names bound to those bounds), in a function
    that never looks at the remainder `n % size`.

    ## Why is this bad?
    Floor division rounds the number of slices down: when `n` is not a multiple of `size`, the last
    `n % size` rows are never computed. Sliced attention (`enable_attention_slicing`), chunked decoding and
    batched encoding write into a buffer allocated for all `n` rows, so those rows silently stay zero (or
    uninitialised), and the output differs from the unsliced path only for some batch sizes and slice sizes.

    ## Example
    ```python
    hidden_states = torch.zeros((batch_size_attention, query_tokens, head_dim))
    for i in range(batch_size_attention // self.slice_size):
        start_idx = i * self.slice_size
        end_idx = (i + 1) * self.slice_size
        hidden_states[start_idx:end_idx] = attention(query[start_idx:end_idx], key[start_idx:end_idx])
    ```

    Use instead:
    ```python
    for i in range((batch_size_attention - 1) // self.slice_size + 1):
        ...
    ```

    ## Known problems
    A count written as `(n - 1) // size + 1`, `math.ceil(n / size)` or `-(-n // size)` is not a floor
    division and stays silent, and so does any function that takes `% size` somewhere (it pads `n` to a
    multiple first, or handles the rest after the loop) or slices from `count * size` outside the loop. The
    rule cannot tell when `n` is a multiple of `size` by construction (a checked configuration, a power of
    two): such a loop is reported all the same.

    ## References
    - huggingface/diffusers#13656, pattern 9
    - huggingface/diffusers#8836 (`SlicedAttnProcessor` and `SlicedAttnAddedKVProcessor` dropped the last
      slice, fixed in 0.30.0)
    """

    code = "DRB906"
    pattern = 9
    severity = "warning"
    message = (
        "`range({count})` rounds the number of `{size}`-sized slices down, so when it does not divide `{total}` "
        "the last `{total} % {size}` rows are never computed; loop over `({total} - 1) // {size} + 1` slices."
    )
    REQUIRES_ANY = ("//",)

    VALID = [
        # ceil division, and a function that pads to a multiple first
        Valid(
            """
            class SlicedProcessor:
                def __call__(self, attn, query, key):
                    batch_size_attention = query.shape[0]
                    out = torch.zeros_like(query)
                    for i in range((batch_size_attention - 1) // self.slice_size + 1):
                        start_idx = i * self.slice_size
                        end_idx = (i + 1) * self.slice_size
                        out[start_idx:end_idx] = attn(query[start_idx:end_idx], key[start_idx:end_idx])
                    return out

            def encode(self, x, clip_length):
                if x.shape[2] % clip_length != 0:
                    x = pad(x, clip_length)
                return [self.enc(x[:, :, i * clip_length : (i + 1) * clip_length]) for i in range(x.shape[2] // clip_length)]
            """,
            path="diffusers/models/attention_processor.py",
        ),
        # the rest is handled after the loop
        Valid(
            """
            def decode(self, z, chunk):
                num_chunks = z.shape[0] // chunk
                out = [self.decoder(z[i * chunk : (i + 1) * chunk]) for i in range(num_chunks)]
                out.append(self.decoder(z[num_chunks * chunk :]))
                return torch.cat(out)
            """,
            path="diffusers/models/autoencoders/example.py",
        ),
        # the loop does not slice by the divisor
        Valid(
            """
            def build(num_layers):
                for i in range(num_layers // 2):
                    blocks.append(make_block(i))
            """,
            path="diffusers/models/example.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            class SlicedProcessor:
                def __call__(self, attn, query, key):
                    batch_size_attention = query.shape[0]
                    out = torch.zeros_like(query)
                    for i in range(batch_size_attention // self.slice_size):
                        start_idx = i * self.slice_size
                        end_idx = (i + 1) * self.slice_size
                        out[start_idx:end_idx] = attn(query[start_idx:end_idx], key[start_idx:end_idx])
                    return out
            """,
            message=(
                "`range(batch_size_attention // self.slice_size)` rounds the number of `self.slice_size`-sized slices "
                "down, so when it does not divide `batch_size_attention` the last `batch_size_attention % "
                "self.slice_size` rows are never computed; loop over `(batch_size_attention - 1) // "
                "self.slice_size + 1` slices."
            ),
            path="diffusers/models/attention_processor.py",
        ),
        # the count through a name, the bounds inline, a comprehension
        Invalid(
            """
            def decode(self, z, chunk):
                num_chunks = z.shape[0] // chunk
                return torch.cat([self.decoder(z[i * chunk : (i + 1) * chunk]) for i in range(num_chunks)])
            """,
            path="diffusers/models/autoencoders/example.py",
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            loops: list[tuple[cst.CSTNode, cst.BaseExpression, cst.CSTNode | None]] = [
                (loop.target, loop.iter, loop.body) for loop in walk.own_nodes(function, cst.For)
            ]
            for comp in walk.own_nodes(function, cst.CompFor):
                loops.append((comp.target, comp.iter, _comprehension_of(function, comp)))
            if not loops:
                continue
            counts = _floor_divisions_bound(function)
            remainders = {
                _code(op.right)
                for op in walk.own_nodes(function, cst.BinaryOperation)
                if isinstance(op.operator, cst.Modulo)
            }
            remainders |= {
                _code(aug.value)
                for aug in walk.own_nodes(function, cst.AugAssign)
                if isinstance(aug.operator, cst.ModuloAssign)
            }
            for target, iterator, body in loops:
                if not isinstance(target, cst.Name) or body is None:
                    continue
                if not isinstance(iterator, cst.Call) or call_name(iterator) != "range" or len(iterator.args) != 1:
                    continue
                count = iterator.args[0].value
                division = _floor_division(count)
                if division is None and isinstance(count, cst.Name):
                    division = counts.get(count.value)
                if division is None:
                    continue
                size = _code(division.right)
                if size in remainders:
                    continue
                if not _slices_by(body, target.value, size):
                    continue
                if _takes_rest(function, body, {_code(count), _code(division)}):
                    continue
                message = self.message.format(count=_code(count), size=size, total=_code(division.left))
                symbol = size.rpartition(".")[2]
                self.report(iterator, message, symbol=symbol, scope=definition.qualname)


def _comprehension_of(function: cst.FunctionDef, comp: cst.CompFor) -> cst.CSTNode | None:
    """The comprehension whose `for` clause is `comp` (its element is the loop body)."""
    for kind in (cst.ListComp, cst.GeneratorExp, cst.SetComp, cst.DictComp):
        for node in walk.own_nodes(function, kind):
            if node.for_in is comp:
                return node
    return None


def _floor_divisions_bound(function: cst.FunctionDef) -> dict[str, cst.BinaryOperation]:
    """Names bound once in `function`, to a floor division: `num_chunks = n // chunk`."""
    bound: dict[str, list[cst.BaseExpression]] = {}
    for assign in walk.own_nodes(function, cst.Assign):
        for target in assign.targets:
            for name in target_names(target.target):
                bound.setdefault(name, []).append(assign.value)
    found: dict[str, cst.BinaryOperation] = {}
    for name, values in bound.items():
        division = _floor_division(values[0]) if len(values) == 1 else None
        if division is not None:
            found[name] = division
    return found


def _takes_rest(function: cst.FunctionDef, body: cst.CSTNode, counts: set[str]) -> bool:
    """Whether `function` slices from the end of the whole slices outside the loop (`x[num_chunks * size:]`)."""
    inside = {id(n) for n in walk.walk(body)}
    for piece in walk.own_nodes(function, cst.Slice):
        if id(piece) in inside or piece.lower is None:
            continue
        lower = _code(piece.lower)
        if any(count in lower for count in counts):
            return True
    return False


def _slices_by(body: cst.CSTNode, counter: str, size: str) -> bool:
    """Whether `body` takes a `[counter * size:(counter + 1) * size]` slice, with bounds inline or bound to names."""
    bounds: dict[str, tuple[bool, bool]] = {}
    for assign in walk.nodes(body, cst.Assign):
        if len(assign.targets) == 1 and isinstance(assign.targets[0].target, cst.Name):
            bounds[assign.targets[0].target.value] = _start_end(assign.value, counter, size)
    for piece in walk.nodes(body, cst.Slice):
        lower, upper = piece.lower, piece.upper
        starts = isinstance(lower, cst.Name) and bounds.get(lower.value, (False, False))[0]
        starts = starts or _start_end(lower, counter, size)[0]
        ends = isinstance(upper, cst.Name) and bounds.get(upper.value, (False, False))[1]
        ends = ends or _start_end(upper, counter, size)[1]
        if starts and ends:
            return True
    return False
