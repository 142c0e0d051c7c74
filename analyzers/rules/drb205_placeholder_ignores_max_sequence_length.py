"""DRB205: a placeholder embedding is sized by the tokenizer's length, not by the `max_sequence_length` argument."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import call_name, names_read, parameters


#: tensor factories that build a placeholder from a shape
FACTORIES = ("zeros", "ones", "empty", "full", "randn")
#: the parameter a caller sets to choose the text length
LENGTH_ARGUMENT = "max_sequence_length"


def _tokenizer_length(expr: cst.BaseExpression) -> str | None:
    """`self.tokenizer_max_length`, `self.tokenizer_3.model_max_length` and the like: the spelling, or None."""
    if not isinstance(expr, cst.Attribute):
        return None
    attr = expr.attr.value
    inner = expr.value
    if isinstance(inner, cst.Name) and inner.value == "self" and attr.startswith("tokenizer") and "max_length" in attr:
        return f"self.{attr}"
    if (
        attr == "model_max_length"
        and isinstance(inner, cst.Attribute)
        and isinstance(inner.value, cst.Name)
        and inner.value.value == "self"
        and inner.attr.value.startswith("tokenizer")
    ):
        return f"self.{inner.attr.value}.model_max_length"
    return None


def _shape_elements(call: cst.Call) -> list[cst.BaseExpression]:
    """The dimensions of `torch.zeros((a, b, c), ...)` or `torch.zeros(a, b, c, ...)`."""
    positional = [a.value for a in call.args if a.keyword is None and a.star == ""]
    shape = [a.value for a in call.args if a.keyword is not None and a.keyword.value == "size"]
    candidates = shape or positional
    first = candidates[0] if candidates else None
    if isinstance(first, (cst.Tuple, cst.List)):
        return [e.value for e in first.elements]
    return positional


class PlaceholderIgnoresMaxSequenceLength(Rule):
    """
    ## What it does
    Checks for a function that takes `max_sequence_length` and builds a placeholder embedding
    (`torch.zeros(...)` and the like, for a missing text encoder) whose sequence length is the
    tokenizer's (`self.tokenizer_max_length`, `self.tokenizer.model_max_length`) instead of
    `max_sequence_length`, while the encoder path uses `max_sequence_length`.

    ## Why is this bad?
    The caller's `max_sequence_length` takes effect on one path and is ignored on the other: without
    the encoder (SD3 with `text_encoder_3=None`) the zero embeddings keep the tokenizer's length, so
    the sequence length of the conditioning depends on which components are loaded, not on the
    argument the user passed (meta issue #13656, pattern 2: public arguments accepted but ignored).

    ## Example
    ```python
    def _get_t5_prompt_embeds(self, prompt, max_sequence_length=256):
        if self.text_encoder_3 is None:
            return torch.zeros((len(prompt), self.tokenizer_max_length, 4096))
        ids = self.tokenizer_3(prompt, max_length=max_sequence_length).input_ids
    ```

    Use instead:
    ```python
    def _get_t5_prompt_embeds(self, prompt, max_sequence_length=256):
        if self.text_encoder_3 is None:
            return torch.zeros((len(prompt), max_sequence_length, 4096))
        ids = self.tokenizer_3(prompt, max_length=max_sequence_length).input_ids
    ```

    ## Known problems
    Only a function that has a `max_sequence_length` parameter and reads it elsewhere is looked at,
    and only a tokenizer length written directly in the shape (not through a local name).

    ## References
    - huggingface/diffusers#13656, pattern 2
    """

    code = "DRB205"
    pattern = 2
    severity = "warning"
    message = (
        "The placeholder is sized by `{spelling}`, not `max_sequence_length`, so the caller's "
        "`max_sequence_length` is ignored on this path; size it by `max_sequence_length`."
    )
    REQUIRES_ANY = (LENGTH_ARGUMENT,)
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def _get_t5_prompt_embeds(self, prompt, max_sequence_length=256):
                    if self.text_encoder_2 is None:
                        return torch.zeros((len(prompt), max_sequence_length, 64))
                    ids = self.tokenizer_2(prompt, max_length=max_sequence_length).input_ids
                    return self.text_encoder_2(ids)[0]

                def _get_clip_prompt_embeds(self, prompt):
                    return torch.zeros(len(prompt), self.tokenizer_max_length, 64)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class MyPipeline(DiffusionPipeline):
                def _get_t5_prompt_embeds(self, prompt, max_sequence_length=256, device=None):
                    if self.text_encoder_2 is None:
                        return torch.ones(len(prompt), self.tokenizer_2.model_max_length, 64, device=device)
                    ids = self.tokenizer_2(prompt, max_length=max_sequence_length).input_ids
                    return self.text_encoder_2(ids)[0]
            """,
            message=(
                "The placeholder is sized by `self.tokenizer_2.model_max_length`, not `max_sequence_length`, so the "
                "caller's `max_sequence_length` is ignored on this path; size it by `max_sequence_length`."
            ),
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            if definition.is_class:
                continue
            function = cst.ensure_type(definition.node, cst.FunctionDef)
            if LENGTH_ARGUMENT not in {p.name.value for p in parameters(function)}:
                continue
            if LENGTH_ARGUMENT not in {n.value for n in names_read(function.body)}:
                continue  # never used at all: DRB201's
            for call in walk.nodes(function.body, cst.Call):
                name = call_name(call) or ""
                if not name.startswith("torch.") or name.rsplit(".", 1)[-1] not in FACTORIES:
                    continue
                for element in _shape_elements(call):
                    spelling = _tokenizer_length(element)
                    if spelling is not None:
                        message = self.message.format(spelling=spelling)
                        self.report(call, message, symbol=LENGTH_ARGUMENT, scope=definition.qualname)
                        break
