"""DRB106: `repeat(1, n, 1)` on a tensor of lower rank puts the per-prompt count on a new axis and tiles the batch."""

from __future__ import annotations

import re

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid


#: names that multiply the effective batch
PER_PROMPT_RE = re.compile(r"^num_\w+_per_prompt$")
FOLDING_METHODS = frozenset({"view", "reshape"})


def _chain(value: cst.BaseExpression) -> tuple[cst.BaseExpression, list[cst.Call]]:
    """(base, method calls innermost first) of `base.a(...).b(...)`."""
    calls: list[cst.Call] = []
    node = value
    while isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute):
        calls.append(node)
        node = node.func.value
    return node, list(reversed(calls))


def _positional(call: cst.Call) -> list[cst.BaseExpression] | None:
    """The arguments of `call` when all are plain positional ones (`repeat(1, n, 1)`), else None."""
    if any(a.keyword is not None or a.star for a in call.args):
        return None
    values = [a.value for a in call.args]
    if len(values) == 1 and isinstance(values[0], (cst.Tuple, cst.List)):  # `repeat((1, n, 1))`
        elements = values[0].elements
        if any(isinstance(e, cst.StarredElement) for e in elements):
            return None
        return [e.value for e in elements]
    return values


def _reads(node: cst.CSTNode, name: str) -> bool:
    return any(n.value == name for n in walk.nodes(node, cst.Name))


def _known_rank(function: cst.FunctionDef, tensor: str) -> int:
    """The rank a shape unpacking shows for `tensor` (`b, s, d = tensor.shape` says 3), else 0."""
    rank = 0
    for assign in walk.own_nodes(function, cst.Assign):
        value = assign.value
        if (
            isinstance(value, cst.Attribute)
            and value.attr.value == "shape"
            and isinstance(value.value, cst.Name)
            and value.value.value == tensor
        ):
            for target in assign.targets:
                if isinstance(target.target, (cst.Tuple, cst.List)):
                    rank = max(rank, len(target.target.elements))
    return rank


class PerPromptRepeatPrependsAxis(Rule):
    """
    ## What it does
    Checks for a tensor expanded by `num_images_per_prompt` (or `num_videos_per_prompt`, ...) with a
    `repeat` that has more arguments than the tensor has dimensions, the count after a leading `1`, and
    then folded back into the batch: `pooled = pooled.repeat(1, n, 1)` followed by
    `pooled.view(batch_size * n, -1)` on a 2-D `(batch, dim)` tensor. The rank is read from that
    `view`/`reshape`.

    ## Why is this bad?
    `repeat` with more sizes than dimensions first prepends axes of size 1. On a 2-D tensor
    `repeat(1, n, 1)` does not copy each prompt's row `n` times: it stacks `n` copies of the whole batch
    (p0, p1, p0, p1). The token embeddings next to it are expanded per prompt (p0, p0, p1, p1), so with
    several prompts and `num_*_per_prompt > 1` each image gets another prompt's pooled embedding, silently.

    ## Example
    ```python
    pooled_prompt_embeds = pooled_prompt_embeds.repeat(1, num_images_per_prompt, 1)
    pooled_prompt_embeds = pooled_prompt_embeds.view(batch_size * num_images_per_prompt, -1)
    ```

    Use instead:
    ```python
    pooled_prompt_embeds = pooled_prompt_embeds.repeat(1, num_images_per_prompt)
    pooled_prompt_embeds = pooled_prompt_embeds.view(batch_size * num_images_per_prompt, -1)
    ```

    ## Known problems
    The fold must follow the `repeat` on the same name in the same function. A shape unpacking that
    shows the tensor has as many dimensions as the `repeat` has sizes keeps the rule silent. Attention
    masks are left to DRB103, which compares them with their embeddings.

    ## References
    - huggingface/diffusers#13656, pattern 1
    - huggingface/diffusers#9280 (Flux: CLIP pooled embeddings repeated with `repeat(1, n, 1)`)
    - huggingface/diffusers#12306 (Stable Diffusion 3: the same on `pooled_prompt_embeds`)
    """

    code = "DRB106"
    pattern = 1
    severity = "error"
    message = (
        "`{tensor}` is folded back into {rank} dimensions, so `repeat({args})` prepends an axis and tiles the batch "
        "(p0, p1, p0, p1) instead of keeping each prompt's copies together; use `{tensor}.repeat_interleave("
        "{per_prompt}, dim=0)` or a `repeat` with one size per dimension."
    )
    REQUIRES_ANY = ("_per_prompt",)
    PATHS = ("/pipelines/",)

    VALID = [
        # one size per dimension: the 3-D token embeddings and the 2-D pooled vector
        Valid(
            """
            def _encode_text(self, prompt, num_videos_per_prompt=1):
                hidden, summary = self.text_encoder(prompt)
                rows, tokens, _ = hidden.shape
                hidden = hidden.repeat(1, num_videos_per_prompt, 1).view(rows * num_videos_per_prompt, tokens, -1)
                summary = summary.repeat(1, num_videos_per_prompt)
                summary = summary.reshape(rows * num_videos_per_prompt, -1)
                return hidden, summary
            """
        ),
        # the count first: tiling on purpose, like every other tensor of this function
        Valid(
            """
            def _encode_text(self, prompt, num_images_per_prompt=1):
                summary = self.text_encoder(prompt).pooler_output
                summary = summary.repeat(num_images_per_prompt, 1, 1).view(-1, summary.shape[-1])
                return summary
            """
        ),
        # a shape unpacking shows three dimensions
        Valid(
            """
            def _encode_text(self, prompt, num_images_per_prompt=1):
                features = self.encoder(prompt)
                rows, tokens, width = features.shape
                features = features.repeat(1, num_images_per_prompt, 1)
                features = features.view(rows * num_images_per_prompt, -1)
                return features
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            def _encode_text(self, prompt, num_images_per_prompt=1):
                summary = self.text_encoder(prompt).pooler_output
                summary = summary.repeat(1, num_images_per_prompt, 1)
                summary = summary.view(len(prompt) * num_images_per_prompt, -1)
                return summary
            """,
            message=(
                "`summary` is folded back into 2 dimensions, so `repeat(1, num_images_per_prompt, 1)` prepends an axis "
                "and tiles the batch (p0, p1, p0, p1) instead of keeping each prompt's copies together; use "
                "`summary.repeat_interleave(num_images_per_prompt, dim=0)` or a `repeat` with one size per dimension."
            ),
        ),
        # one chained expression, `reshape`, a video count
        Invalid(
            """
            def encode_style(self, style, num_videos_per_prompt=1):
                style_vector = self.style_encoder(style)
                style_vector = style_vector.repeat(1, 1, num_videos_per_prompt, 1).reshape(
                    style.shape[0] * num_videos_per_prompt, -1
                )
                return style_vector
            """
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            if definition.is_class or not isinstance(definition.node, cst.FunctionDef):
                continue
            function = definition.node
            for per_prompt in sorted(
                {n.value for n in walk.nodes(function, cst.Name) if PER_PROMPT_RE.match(n.value)}
            ):
                self._check_function(definition.qualname, function, per_prompt)

    def _check_function(self, scope: str, function: cst.FunctionDef, per_prompt: str) -> None:
        # a `repeat` not yet folded into the batch: name -> (its arguments, the assignment)
        pending: dict[str, tuple[list[cst.BaseExpression], cst.Assign]] = {}
        for assign in walk.own_nodes(function, cst.Assign):
            if len(assign.targets) != 1 or not isinstance(assign.targets[0].target, cst.Name):
                continue
            target = assign.targets[0].target.value
            base, chain = _chain(assign.value)
            state = pending.pop(target, None) if isinstance(base, cst.Name) and base.value == target else None
            if isinstance(base, cst.Name) and base.value != target:
                state = None
            for call in chain:
                method = cst.ensure_type(call.func, cst.Attribute).attr.value
                args = _positional(call)
                if method == "repeat" and args is not None and any(_is_count(a, per_prompt) for a in args):
                    state = (args, assign)
                elif method in FOLDING_METHODS and state is not None:
                    if args and _reads(args[0], per_prompt):
                        self._fold(scope, function, target, per_prompt, state, len(args))
                    state = None
                elif method not in ("to", "contiguous", "clone"):
                    state = None
            if state is not None:
                pending[target] = state

    def _fold(
        self,
        scope: str,
        function: cst.FunctionDef,
        tensor: str,
        per_prompt: str,
        state: tuple[list[cst.BaseExpression], cst.Assign],
        rank: int,
    ) -> None:
        args, repeat_assign = state
        position = next(i for i, a in enumerate(args) if _is_count(a, per_prompt))
        prepended = len(args) - rank
        if prepended <= 0 or position == 0 or position - prepended > 0:
            return  # one size per dimension, or the count lands on an original axis after the batch
        if "mask" in tensor or _known_rank(function, tensor) >= len(args):
            return
        rendered = ", ".join(cst.Module([]).code_for_node(a) for a in args)
        message = self.message.format(tensor=tensor, rank=rank, args=rendered, per_prompt=per_prompt)
        self.report(repeat_assign, message, symbol=tensor, scope=scope)


def _is_count(node: cst.BaseExpression, per_prompt: str) -> bool:
    return isinstance(node, cst.Name) and node.value == per_prompt
