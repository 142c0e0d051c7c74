"""DRB107: a fallback tensor is returned with `batch_size` rows where the function's result has `batch_size * n`."""

from __future__ import annotations

import re

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import call_name, parameters


#: parameters that multiply the effective batch
PER_PROMPT_RE = re.compile(r"^num_\w+_per_prompt$")
#: calls that create a tensor of a given shape
CREATORS = frozenset(
    {"zeros", "ones", "empty", "full", "randn", "rand", "new_zeros", "new_ones", "new_empty", "new_full"}
)


def _leading_dimension(call: cst.Call) -> cst.BaseExpression | None:
    """The first size of the shape a creation call gets: `zeros((b, s, d))`, `zeros([b, s])`, `zeros(b, s, d)`."""
    name = call_name(call) or ""
    method = name.rpartition(".")[2]
    if method not in CREATORS or not (name.startswith("torch.") or method.startswith("new_")):
        return None
    positional = [a for a in call.args if a.keyword is None and not a.star]
    size = next((a.value for a in call.args if a.keyword is not None and a.keyword.value == "size"), None)
    first = size if size is not None else (positional[0].value if positional else None)
    if isinstance(first, (cst.Tuple, cst.List)):
        elements = first.elements
        if not elements or isinstance(elements[0], cst.StarredElement):
            return None
        return elements[0].value
    return first


def _multiplied_by(function: cst.FunctionDef, name: str, per_prompt: str) -> bool:
    """Whether `name * per_prompt` (either order) occurs in the function."""
    for op in walk.own_nodes(function, cst.BinaryOperation):
        if isinstance(op.operator, cst.Multiply):
            names = {n.value for n in (op.left, op.right) if isinstance(n, cst.Name)}
            if names == {name, per_prompt}:
                return True
    return False


class PlaceholderSizedByBatchSizeOnly(Rule):
    """
    ## What it does
    Checks functions that take `num_images_per_prompt` (or `num_videos_per_prompt`, ...) and size their
    result `batch_size * num_images_per_prompt` for a `return` of a freshly created tensor
    (`torch.zeros(...)`, `torch.ones(...)`, `x.new_zeros(...)`, ...) whose leading dimension is
    `batch_size` alone, typically the fallback for a missing text encoder or an absent condition.

    ## Why is this bad?
    Callers concatenate or stack this result with tensors of `batch_size * num_images_per_prompt` rows.
    The fallback path has `batch_size` rows, so it works with the default count of 1 and fails as soon as
    more images per prompt are asked for, only on the configuration that takes the fallback.

    ## Example
    ```python
    def _get_t5_prompt_embeds(self, prompt, num_images_per_prompt=1):
        batch_size = len(prompt)
        if self.text_encoder_3 is None:
            return torch.zeros((batch_size, self.max_length, self.dim))
        ...
        return prompt_embeds.view(batch_size * num_images_per_prompt, seq_len, -1)
    ```

    Use instead:
    ```python
            return torch.zeros((batch_size * num_images_per_prompt, self.max_length, self.dim))
    ```

    ## Known problems
    Only a creation call written in the `return` itself, or assigned to a name that is returned as it is, is
    looked at, and only when the same function multiplies that `batch_size` by the count elsewhere.

    ## References
    - huggingface/diffusers#13656, pattern 1
    - huggingface/diffusers#8558 (Stable Diffusion 3 without T5: placeholder embeddings sized `batch_size`)
    """

    code = "DRB107"
    pattern = 1
    severity = "error"
    message = (
        "`{call}` returns `{rows}` rows where this function's result otherwise has `{rows} * {per_prompt}`, so "
        "`{per_prompt} > 1` breaks on this path; size it `{rows} * {per_prompt}`."
    )
    REQUIRES_ANY = ("_per_prompt",)
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            def _encode_long_text(self, prompt, num_images_per_prompt=1):
                rows = len(prompt)
                if self.long_text_encoder is None:
                    return torch.zeros(rows * num_images_per_prompt, self.max_length, self.width)
                hidden = self.long_text_encoder(prompt)
                return hidden.repeat_interleave(num_images_per_prompt, dim=0)
            """
        ),
        # the fallback is expanded like the encoded tensor before it is returned
        Valid(
            """
            def _encode_long_text(self, prompt, num_images_per_prompt=1):
                batch_size = len(prompt)
                if self.long_text_encoder is None:
                    hidden = torch.zeros((batch_size, self.max_length, self.width))
                else:
                    hidden = self.long_text_encoder(prompt)
                hidden = hidden.repeat(1, num_images_per_prompt, 1)
                return hidden.view(batch_size * num_images_per_prompt, self.max_length, -1)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            def _encode_long_text(self, prompt, num_images_per_prompt=1, dtype=None):
                batch_size = len(prompt)
                if self.long_text_encoder is None:
                    return torch.zeros([batch_size, self.max_length, self.width], dtype=dtype)
                hidden = self.long_text_encoder(prompt)
                _, tokens, _ = hidden.shape
                hidden = hidden.repeat(1, num_images_per_prompt, 1)
                return hidden.view(batch_size * num_images_per_prompt, tokens, -1)
            """,
            message=(
                "`torch.zeros` returns `batch_size` rows where this function's result otherwise has "
                "`batch_size * num_images_per_prompt`, so `num_images_per_prompt > 1` breaks on this path; size it "
                "`batch_size * num_images_per_prompt`."
            ),
        ),
        # through a name, with `new_zeros`, video count
        Invalid(
            """
            def _encode_audio(self, prompt, audio=None, num_videos_per_prompt=1):
                count = len(prompt)
                if audio is None:
                    silence = self.reference.new_zeros(count, self.tokens, self.width)
                    return silence, None
                features = self.audio_encoder(audio).repeat_interleave(num_videos_per_prompt, dim=0)
                return features.view(count * num_videos_per_prompt, self.tokens, -1), audio
            """
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            if definition.is_class or not isinstance(definition.node, cst.FunctionDef):
                continue
            function = definition.node
            for per_prompt in (p.name.value for p in parameters(function) if PER_PROMPT_RE.match(p.name.value)):
                self._check_function(definition.qualname, function, per_prompt)

    def _check_function(self, scope: str, function: cst.FunctionDef, per_prompt: str) -> None:
        assigns = {
            a.targets[0].target.value: a
            for a in walk.own_nodes(function, cst.Assign)
            if len(a.targets) == 1 and isinstance(a.targets[0].target, cst.Name)
        }
        reassigned: dict[str, int] = {}
        for assign in walk.own_nodes(function, cst.Assign):
            for target in assign.targets:
                if isinstance(target.target, cst.Name):
                    reassigned[target.target.value] = reassigned.get(target.target.value, 0) + 1
        for statement in walk.own_nodes(function, cst.Return):
            value = statement.value
            if value is None:
                continue
            parts = [e.value for e in value.elements] if isinstance(value, cst.Tuple) else [value]
            for part in parts:
                created = part if isinstance(part, cst.Call) else None
                if isinstance(part, cst.Name) and reassigned.get(part.value) == 1 and part.value in assigns:
                    candidate = assigns[part.value].value
                    created = candidate if isinstance(candidate, cst.Call) else None
                if created is None:
                    continue
                rows = _leading_dimension(created)
                if not isinstance(rows, cst.Name) or not _multiplied_by(function, rows.value, per_prompt):
                    continue
                name = (call_name(created) or "").rpartition(".")
                shown = f"torch.{name[2]}" if name[0] == "torch" else f".{name[2]}"
                message = self.message.format(call=shown, rows=rows.value, per_prompt=per_prompt)
                self.report(created, message, symbol=rows.value, scope=scope)
