"""DRB103: prompt embeddings and their attention mask are expanded by `num_*_per_prompt` in different row orders."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

import libcst as cst

from analyzers import walk
from analyzers.core import Definition, Invalid, Rule, Valid, dotted_name
from analyzers.matchers import calls, parameters


PER_PROMPT_RE = re.compile(r"^num_\w+_per_prompt$")
#: row orders of an expanded batch: per-prompt blocks (p0,p0,p1,p1) or the whole batch tiled (p0,p1,p0,p1)
BLOCKS, TILED = "blocks", "tiled"
#: tokens dropped from a tensor's name to pair a mask with its embeddings
PAIRING_NOISE = frozenset(
    {"mask", "attention", "attn", "embeds", "embed", "embeddings", "prompt", "text", "encoder", "hidden", "states"}
)


def _own_assigns(function: cst.FunctionDef) -> list[cst.Assign]:
    """The assignments of `function`'s body in source order, those of nested functions (and lambdas) left out."""
    body = function.body
    assigns = walk.nodes(body, cst.Assign)
    nested = walk.nodes(body, cst.FunctionDef)
    if not nested or not assigns:
        return assigns
    inner = {id(n) for f in nested for n in walk.nodes(f, cst.Assign)}
    return [a for a in assigns if id(a) not in inner]


@dataclass
class _Expansion:
    order: str | None
    node: cst.CSTNode
    per_prompt: str


def _names(root: cst.CSTNode, *, keep_attr: bool = True) -> list[cst.Name]:
    """Every `Name` under `root` (the `*args`/`**kwargs` parameters `walk` leaves out included).

    With `keep_attr=False`, the attribute of `a.b` and the keyword of `f(x=y)` are left out.
    """
    found = walk.nodes(root, cst.Name)  # a new list
    if not keep_attr:
        excluded = {id(a.attr) for a in walk.nodes(root, cst.Attribute)}
        excluded |= {id(a.keyword) for a in walk.nodes(root, cst.Arg) if a.keyword is not None}
        found = [n for n in found if id(n) not in excluded]
    for params in walk.nodes(root, cst.Parameters):
        for star in (params.star_arg, params.star_kwarg):
            if isinstance(star, cst.Param):
                found.extend(_names(star, keep_attr=keep_attr))
    return found


def _reads(node: cst.CSTNode, name: str) -> bool:
    return any(n.value == name for n in _names(node))


def _assigns(body: cst.CSTNode) -> list[cst.Assign]:
    return walk.nodes(body, cst.Assign)


def _argument(call: cst.Call, name: str, index: int | None) -> cst.BaseExpression | None:
    """The expression `call` passes for parameter `name` (keyword, or positional at `index`), or None."""
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == name:
            return arg.value
    positional = [arg for arg in call.args if arg.keyword is None]
    if any(arg.star for arg in positional):
        return cst.Name("__unknown__")  # `*args`: cannot tell
    if index is not None and index < len(positional):
        return positional[index].value
    return None


def _calls_self_method(value: cst.BaseExpression) -> bool:
    """`self.encode_prompt(...)`: a method of the pipeline, not a tensor operation."""
    return (
        isinstance(value, cst.Call)
        and isinstance(value.func, cst.Attribute)
        and isinstance(value.func.value, cst.Name)
        and value.func.value.value == "self"
    )


def _chain(value: cst.BaseExpression) -> list[cst.Call]:
    """The method calls of `x.a(...).b(...)`, innermost first."""
    chain: list[cst.Call] = []
    node = value
    while isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute):
        chain.append(node)
        node = node.func.value
    return list(reversed(chain))


def _positional(call: cst.Call) -> list[cst.BaseExpression] | None:
    if any(a.keyword is not None or a.star for a in call.args):
        return None
    return [a.value for a in call.args]


def _is_name(node: cst.BaseExpression, name: str) -> bool:
    return isinstance(node, cst.Name) and node.value == name


def _interleave_dim0(call: cst.Call, per_prompt: str) -> bool:
    """`x.repeat_interleave(n, dim=0)` / `x.repeat_interleave(n, 0)`."""
    if not call.args or not _is_name(call.args[0].value, per_prompt) or call.args[0].keyword not in (None,):
        return False
    dims = [a.value for a in call.args[1:] if a.keyword is None or a.keyword.value == "dim"]
    return len(dims) == 1 and isinstance(dims[0], cst.Integer) and dims[0].value == "0"


def _order_of_repeat(repeat_args: int, position: int, rank: int) -> str | None:
    """Row order after `repeat(...)` with the count at `position` on a tensor of `rank`, folded into dim 0.

    `repeat` with more arguments than dimensions prepends size-1 dimensions. The count lands on the
    batch dimension (or on a new leading one): the batch is tiled. It lands on the dimension right
    after the batch: each prompt's rows stay together once the batch is folded back.
    """
    if repeat_args < rank:
        return None
    original_dim = position - (repeat_args - rank)
    if original_dim <= 0:
        return TILED
    if original_dim == 1:
        return BLOCKS
    return None


class MaskExpandedInDifferentOrder(Rule):
    """
    ## What it does
    Checks functions that expand prompt embeddings and their attention mask by
    `num_images_per_prompt` (or `num_videos_per_prompt`, ...) for expansions that put the rows in
    different orders: for example embeddings `repeat(1, n, 1).view(b * n, s, d)` (rows p0, p0, p1, p1)
    with the mask `repeat(n, 1)` or, on a 2-D mask, `repeat(1, n, 1).view(b * n, s)` (rows p0, p1, p0, p1).

    ## Why is this bad?
    With several prompts and `num_*_per_prompt > 1`, each row of embeddings is paired with the mask of
    another prompt. Padded tokens of one prompt are attended to and real tokens of the other are
    masked out, silently, since the shapes still match.

    ## Example
    ```python
    prompt_embeds = prompt_embeds.repeat(1, num_images_per_prompt, 1)
    prompt_embeds = prompt_embeds.view(batch_size * num_images_per_prompt, seq_len, -1)
    prompt_attention_mask = prompt_attention_mask.view(batch_size, -1)
    prompt_attention_mask = prompt_attention_mask.repeat(num_images_per_prompt, 1)
    ```

    Use instead:
    ```python
    prompt_embeds = prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0)
    prompt_attention_mask = prompt_attention_mask.repeat_interleave(num_images_per_prompt, dim=0)
    ```

    ## Known problems
    The rank of a tensor is taken from the `view`/`reshape` that folds the count into the batch (it is
    assumed to restore the tensor's rank), or, for a bare `repeat(n, ...)`, from the number of
    `repeat` arguments. A mask is paired with the embeddings of the same name stem (`prompt_embeds`
    and `prompt_attention_mask`) expanded in the same function; expansions split across functions are
    not compared.

    ## References
    - huggingface/diffusers#13656, pattern 1
    - huggingface/diffusers#13581 (qwenimage review: embeddings [p0,p0,p1,p1] vs mask [p0,p1,p0,p1])
    - huggingface/diffusers#14147 (fix: expand the mask like the embeddings)
    """

    code = "DRB103"
    pattern = 1
    severity = "error"
    message = (
        "`{mask}` is expanded by `{per_prompt}` in {mask_order} order but `{embeds}` in {embeds_order} order, so "
        "batched prompts get each other's masks; expand both the same way, e.g. `.repeat_interleave({per_prompt}, "
        "dim=0)`."
    )
    #: keyed by `_Expansion.order` (only expansions that have one are compared)
    ORDER_WORDS: ClassVar[dict[str | None, str]] = {
        BLOCKS: "per-prompt (p0, p0, p1, p1)",
        TILED: "tiled (p0, p1, p0, p1)",
    }
    REQUIRES_ANY = ("_per_prompt",)
    PATHS = ("/pipelines/",)

    VALID = [
        # the copy is wrong, but every path of this pipeline pins the count to 1 (LTX2 temporal refine)
        Valid(
            """
            class RefinePipeline(DiffusionPipeline):
                def _get_gemma_prompt_embeds(self, prompt, num_videos_per_prompt=1):
                    prompt_embeds, prompt_attention_mask = self._encode(prompt)
                    batch_size, seq_len, _ = prompt_embeds.shape
                    prompt_embeds = prompt_embeds.repeat(1, num_videos_per_prompt, 1)
                    prompt_embeds = prompt_embeds.view(batch_size * num_videos_per_prompt, seq_len, -1)
                    prompt_attention_mask = prompt_attention_mask.view(batch_size, -1)
                    prompt_attention_mask = prompt_attention_mask.repeat(num_videos_per_prompt, 1)
                    return prompt_embeds, prompt_attention_mask

                def encode_prompt(self, prompt, num_videos_per_prompt=1):
                    return self._get_gemma_prompt_embeds(prompt, num_videos_per_prompt=num_videos_per_prompt)

                def __call__(self, prompt, num_videos_per_prompt=1):
                    prompt_embeds, mask = self.encode_prompt(prompt, num_videos_per_prompt=1)
                    return self.transformer(prompt_embeds, encoder_attention_mask=mask)
            """
        ),
        # both per-prompt: 3-D embeds repeat(1, n, 1), 2-D mask repeat(1, n), folded into the batch
        Valid(
            """
            def encode_prompt(self, prompt, num_images_per_prompt=1):
                prompt_embeds, prompt_attention_mask = self._encode(prompt)
                bs_embed, seq_len, _ = prompt_embeds.shape
                prompt_embeds = prompt_embeds.repeat(1, num_images_per_prompt, 1)
                prompt_embeds = prompt_embeds.view(bs_embed * num_images_per_prompt, seq_len, -1)
                prompt_attention_mask = prompt_attention_mask.repeat(1, num_images_per_prompt)
                prompt_attention_mask = prompt_attention_mask.view(bs_embed * num_images_per_prompt, -1)
                return prompt_embeds, prompt_attention_mask
            """
        ),
        # both tiled
        Valid(
            """
            def encode_prompt(self, prompt, num_images_per_prompt=1):
                prompt_embeds, prompt_attention_mask = self._encode(prompt)
                prompt_embeds = prompt_embeds.repeat(num_images_per_prompt, 1, 1)
                prompt_attention_mask = prompt_attention_mask.repeat(num_images_per_prompt, 1)
                return prompt_embeds, prompt_attention_mask
            """
        ),
        # both interleaved; a differently named mask of another tensor is not paired
        Valid(
            """
            def encode_prompt(self, prompt, num_videos_per_prompt=1):
                prompt_embeds, prompt_attention_mask = self._encode(prompt)
                prompt_embeds = prompt_embeds.repeat_interleave(num_videos_per_prompt, dim=0)
                prompt_attention_mask = prompt_attention_mask.repeat_interleave(num_videos_per_prompt, dim=0)
                image_mask = image_mask.repeat(num_videos_per_prompt, 1)
                return prompt_embeds, prompt_attention_mask
            """
        ),
        # AuraFlow: the mismatched mask is returned, but `__call__` never reads it again
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, num_images_per_prompt=1, prompt_attention_mask=None):
                    prompt_embeds, prompt_attention_mask = self._encode(prompt)
                    bs_embed, seq_len, _ = prompt_embeds.shape
                    prompt_embeds = prompt_embeds.repeat(1, num_images_per_prompt, 1)
                    prompt_embeds = prompt_embeds.view(bs_embed * num_images_per_prompt, seq_len, -1)
                    prompt_attention_mask = prompt_attention_mask.reshape(bs_embed, -1)
                    prompt_attention_mask = prompt_attention_mask.repeat(num_images_per_prompt, 1)
                    return prompt_embeds, prompt_attention_mask

                def __call__(self, prompt, num_images_per_prompt=1, prompt_attention_mask=None):
                    prompt_embeds, prompt_attention_mask = self.encode_prompt(
                        prompt, num_images_per_prompt, prompt_attention_mask=prompt_attention_mask
                    )
                    return self.transformer(latents, encoder_hidden_states=prompt_embeds)
            """
        ),
    ]
    INVALID = [
        # QwenImage: `repeat(1, n, 1)` on the 2-D mask prepends an axis and tiles the batch
        Invalid(
            """
            class QwenImagePipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, num_images_per_prompt=1, prompt_embeds=None, prompt_embeds_mask=None):
                    batch_size = len(prompt) if prompt_embeds is None else prompt_embeds.shape[0]
                    if prompt_embeds is None:
                        prompt_embeds, prompt_embeds_mask = self._get_qwen_prompt_embeds(prompt)
                    _, seq_len, _ = prompt_embeds.shape
                    prompt_embeds = prompt_embeds.repeat(1, num_images_per_prompt, 1)
                    prompt_embeds = prompt_embeds.view(batch_size * num_images_per_prompt, seq_len, -1)
                    if prompt_embeds_mask is not None:
                        prompt_embeds_mask = prompt_embeds_mask.repeat(1, num_images_per_prompt, 1)
                        prompt_embeds_mask = prompt_embeds_mask.view(batch_size * num_images_per_prompt, seq_len)
                    return prompt_embeds, prompt_embeds_mask
            """,
            message=(
                "`prompt_embeds_mask` is expanded by `num_images_per_prompt` in tiled (p0, p1, p0, p1) order but "
                "`prompt_embeds` in per-prompt (p0, p0, p1, p1) order, so batched prompts get each other's masks; "
                "expand both the same way, e.g. `.repeat_interleave(num_images_per_prompt, dim=0)`."
            ),
        ),
        # Sana / LTX style: the mask repeated along dim 0
        Invalid(
            """
            def encode_prompt(self, prompt, num_videos_per_prompt=1):
                prompt_embeds, prompt_attention_mask = self._encode(prompt)
                _, seq_len, _ = prompt_embeds.shape
                prompt_embeds = prompt_embeds.repeat(1, num_videos_per_prompt, 1).view(batch_size * num_videos_per_prompt, seq_len, -1)
                prompt_attention_mask = prompt_attention_mask.view(batch_size, -1)
                prompt_attention_mask = prompt_attention_mask.repeat(num_videos_per_prompt, 1)
                return prompt_embeds, prompt_attention_mask
            """,
            message=(
                "`prompt_attention_mask` is expanded by `num_videos_per_prompt` in tiled (p0, p1, p0, p1) order but "
                "`prompt_embeds` in per-prompt (p0, p0, p1, p1) order, so batched prompts get each other's masks; "
                "expand both the same way, e.g. `.repeat_interleave(num_videos_per_prompt, dim=0)`."
            ),
        ),
        # interleaved embeddings, tiled mask
        Invalid(
            """
            def encode_prompt(self, prompt, num_images_per_prompt=1):
                negative_prompt_embeds, negative_attention_mask = self._encode(prompt)
                negative_prompt_embeds = negative_prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0)
                negative_attention_mask = negative_attention_mask.repeat(num_images_per_prompt, 1)
                return negative_prompt_embeds, negative_attention_mask
            """
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            if definition.is_class:
                continue
            function = definition.node
            assert isinstance(function, cst.FunctionDef)
            names = {p.name.value for p in (*function.params.params, *function.params.kwonly_params)}
            for per_prompt in sorted(n for n in names if PER_PROMPT_RE.match(n)):
                self._check_function(definition, function, per_prompt)

    def _masks_dropped_by_call(self, definition: Definition) -> bool:
        """Whether the class's `__call__` unpacks this method's result and never reads any mask of it again.

        Such a mask is returned to the caller but conditions nothing in the pipeline (AuraFlow, JoyImage,
        EasyAnimate). Reads that only build the same masks again (`torch.cat`, `.to`) do not count.
        """
        owner = definition.parent
        if owner is None or not owner.is_class:
            return False
        call = self.context.methods(owner).get("__call__")
        if call is None:
            return False
        for assign in _assigns(call.body):
            value = assign.value
            if not (
                isinstance(value, cst.Call)
                and isinstance(value.func, cst.Attribute)
                and isinstance(value.func.value, cst.Name)
                and value.func.value.value == "self"
                and value.func.attr.value == definition.name
            ):
                continue
            target = assign.targets[0].target if len(assign.targets) == 1 else None
            if not isinstance(target, (cst.Tuple, cst.List)):
                return False
            masks = {
                e.value.value for e in target.elements if isinstance(e.value, cst.Name) and "mask" in e.value.value
            }
            if not masks:
                return False
            # source order without positions: preorder index in `__call__`; the assignment's subtree ends at `after`
            order = {id(node): i for i, node in enumerate(walk.walk(call.body))}
            after = order[id(assign)] + sum(1 for _ in walk.walk(assign)) - 1
            # a read that only feeds a mask again (`mask = torch.cat([neg_mask, mask])`, `mask = mask.to(device)`,
            # `_, mask = self.encode_prompt(prompt_embeds_mask=mask)`) does not condition anything
            feeds_a_mask: set[int] = set()
            for other in _assigns(call.body):
                targets = (
                    {t.value for t in _names(other.targets[0].target, keep_attr=False)}
                    if len(other.targets) == 1
                    else set()
                )
                if (targets and targets <= masks) or (targets & masks and _calls_self_method(other.value)):
                    feeds_a_mask |= {
                        id(n)
                        for n in (
                            *_names(other.value, keep_attr=False),
                            *_names(other.targets[0].target, keep_attr=False),
                        )
                    }
            for name in _names(call.body, keep_attr=False):
                if name.value in masks and id(name) not in feeds_a_mask and order.get(id(name), -1) > after:
                    return False
            return True
        return False

    def _check_function(self, definition: Definition, function: cst.FunctionDef, per_prompt: str) -> None:
        scope = definition.qualname
        expansions = self._expansions(function, per_prompt)
        masks = {name: e for name, e in expansions.items() if "mask" in name and e.order}
        embeds = {
            name: e
            for name, e in expansions.items()
            if "mask" not in name and ("embed" in name or "hidden_states" in name) and e.order
        }
        for mask_name, mask in masks.items():
            partner = self._partner(mask_name, embeds)
            if partner is None:
                continue
            embeds_name, embeds_expansion = partner
            if embeds_expansion.order != mask.order:
                message = self.message.format(
                    mask=mask_name,
                    embeds=embeds_name,
                    per_prompt=per_prompt,
                    mask_order=self.ORDER_WORDS[mask.order],
                    embeds_order=self.ORDER_WORDS[embeds_expansion.order],
                )
                if self._masks_dropped_by_call(definition) or self._count_pinned_to_one(definition, per_prompt):
                    return
                self.report(mask.node, message, symbol=mask_name, scope=scope)

    def _count_pinned_to_one(self, definition: Definition, per_prompt: str, depth: int = 3) -> bool:
        """Whether every call of this method inside its class passes `1` for the count, directly or through
        the callers' own parameters (`__call__` → `encode_prompt(num_videos_per_prompt=1)` → here).

        With the count pinned to 1 the two orders coincide; the copy is wrong, but harmless here.
        """
        owner = definition.parent
        if owner is None or not owner.is_class or depth == 0:
            return False
        function = cst.ensure_type(definition.node, cst.FunctionDef)  # a method of `owner`
        positional = [p.name.value for p in function.params.params]
        index = positional.index(per_prompt) - 1 if per_prompt in positional[1:] else None  # `self` is implicit
        default = next((p.default for p in parameters(function) if p.name.value == per_prompt), None)
        sites = 0
        for caller in self.context.definitions:
            caller_function = caller.node
            if caller.parent is not owner or not isinstance(caller_function, cst.FunctionDef):
                continue
            for c in calls(caller_function.body):
                if dotted_name(c.func) != f"self.{definition.name}":
                    continue
                sites += 1
                value = _argument(c, per_prompt, index)
                if value is None:
                    value = default
                if isinstance(value, cst.Integer) and value.value == "1":
                    continue
                if (
                    isinstance(value, cst.Name)
                    and caller.name != "__call__"
                    and value.value in {p.name.value for p in parameters(caller_function)}
                    and self._count_pinned_to_one(caller, value.value, depth - 1)
                ):
                    continue
                return False
        return sites > 0

    @staticmethod
    def _partner(mask_name: str, embeds: dict[str, _Expansion]) -> tuple[str, _Expansion] | None:
        def stem(name: str) -> tuple[str, ...]:
            return tuple(t for t in name.split("_") if t and t not in PAIRING_NOISE)

        matches = [(name, e) for name, e in embeds.items() if stem(name) == stem(mask_name)]
        return matches[0] if len(matches) == 1 else None

    @staticmethod
    def _expansions(function: cst.FunctionDef, per_prompt: str) -> dict[str, _Expansion]:
        """The last expansion by `per_prompt` of each variable, with the row order it produces."""
        assigns = _own_assigns(function)
        found: dict[str, _Expansion] = {}
        # a `repeat` not yet folded into the batch: name -> (argument count, position of the count, node)
        pending: dict[str, tuple[int, int, cst.CSTNode]] = {}

        def settle(name: str) -> None:
            """A repeat never folded by a view: with the count first, it tiles the batch."""
            if name in pending:
                count, position, node = pending.pop(name)
                if position == 0:
                    found[name] = _Expansion(_order_of_repeat(count, 0, count), node, per_prompt)

        for assign in assigns:
            if len(assign.targets) != 1 or not isinstance(assign.targets[0].target, cst.Name):
                continue
            target = assign.targets[0].target.value
            chain = _chain(assign.value)
            base = assign.value
            while isinstance(base, cst.Call) and isinstance(base.func, cst.Attribute):
                base = base.func.value
            from_itself = isinstance(base, cst.Name) and base.value == target
            state = pending.pop(target, None) if from_itself else None
            if not from_itself:
                settle(target)
            for call in chain:
                method = cst.ensure_type(call.func, cst.Attribute).attr.value  # `_chain` holds method calls only
                args = _positional(call)
                if method == "repeat" and args is not None and any(_is_name(a, per_prompt) for a in args):
                    position = next(i for i, a in enumerate(args) if _is_name(a, per_prompt))
                    state = (len(args), position, assign)
                elif method == "repeat_interleave" and _interleave_dim0(call, per_prompt):
                    found[target] = _Expansion(BLOCKS, assign, per_prompt)
                    state = None
                elif method in ("view", "reshape") and state is not None:
                    if args and _reads(args[0], per_prompt):
                        count, position, _ = state
                        found[target] = _Expansion(_order_of_repeat(count, position, len(args)), assign, per_prompt)
                    state = None
                elif method in ("view", "reshape") and args and not _reads(args[0], per_prompt):
                    continue  # `mask.view(batch_size, -1)` before the repeat
            if state is not None:
                pending[target] = state
        for name in list(pending):
            settle(name)
        return found
