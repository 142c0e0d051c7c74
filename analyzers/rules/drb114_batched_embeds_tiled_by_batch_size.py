"""DRB114: embeddings that can already hold one row per prompt are tiled by `batch_size` again."""

from __future__ import annotations

import re

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.matchers import calls, parameters, pipeline_classes, target_names, values_read


#: the per-prompt count that the second `repeat` size folds in
PER_PROMPT_RE = re.compile(r"^num_\w+_per_prompt$")


def _tokenized(value: cst.CSTNode) -> str | None:
    """The name of the prompts `value` tokenizes: `uncond_tokens` in `self.tokenizer(uncond_tokens, ...)`."""
    for call in calls(value):
        name = dotted_name(call.func) or ""
        if name.startswith("self.") and "tokenizer" in name.rpartition(".")[2] and call.args:
            first = call.args[0]
            if first.keyword is None and first.star == "" and isinstance(first.value, cst.Name):
                return first.value.value
    return None


def _per_prompt_rows(value: cst.BaseExpression, params: set[str]) -> bool:
    """Whether `value` gives one prompt per row of the batch: a prompt list the caller passed
    (`uncond_tokens = negative_prompt`) or a list spread over the batch (`[""] * batch_size`)."""
    if isinstance(value, cst.Name):
        return value.value in params and "prompt" in value.value
    if isinstance(value, cst.BinaryOperation) and isinstance(value.operator, cst.Multiply):
        sides = (value.left, value.right)
        return any(isinstance(s, cst.List) for s in sides) and any(
            isinstance(s, cst.Name) and s.value == "batch_size" for s in sides
        )
    return False


def _tiled_by_batch(value: cst.BaseExpression) -> tuple[cst.Call, str] | None:
    """(the call, its tensor) for `x.repeat(batch_size, num_images_per_prompt, 1)`."""
    if not isinstance(value, cst.Call) or not isinstance(value.func, cst.Attribute):
        return None
    if value.func.attr.value != "repeat" or len(value.args) < 3 or not isinstance(value.func.value, cst.Name):
        return None
    first, second = value.args[0], value.args[1]
    if any(a.keyword is not None or a.star != "" for a in (first, second)):
        return None
    if not (isinstance(first.value, cst.Name) and first.value.value == "batch_size"):
        return None
    if not (isinstance(second.value, cst.Name) and PER_PROMPT_RE.match(second.value.value)):
        return None
    return value, value.func.value.value


class BatchedEmbedsTiledByBatchSize(Rule):
    """
    ## What it does
    Checks pipeline methods for prompt embeddings tiled with `x.repeat(batch_size, num_images_per_prompt, 1)`
    (the batch multiplied by `batch_size`) where `x` was encoded from a list of prompts that one branch of the
    same method fills with one prompt per row: the caller's `negative_prompt` list, or `[""] * batch_size`.

    ## Why is this bad?
    Tiling by `batch_size` is only right for a single encoded row. When the list holds `batch_size` prompts the
    embeddings already have `batch_size` rows and end up with `batch_size ** 2 * num_images_per_prompt`: the
    following `view(batch_size * num_images_per_prompt, ...)` fails, or the rows no longer line up with the
    prompts. Passing a list of negative prompts breaks the pipeline for more than one prompt.

    ## Example
    ```python
    if negative_prompt is None:
        uncond_tokens = [""]
    else:
        uncond_tokens = negative_prompt  # batch_size prompts
    uncond_input = self.tokenizer(uncond_tokens, padding="max_length", return_tensors="pt")
    uncond_embeddings = self.text_encoder(uncond_input.input_ids.to(device))[0]
    uncond_embeddings = uncond_embeddings.repeat(batch_size, num_images_per_prompt, 1)
    ```

    Use instead:
    ```python
    uncond_tokens = [""] * batch_size if negative_prompt is None else negative_prompt
    ...
    uncond_embeddings = uncond_embeddings.repeat(1, num_images_per_prompt, 1)
    ```

    ## Known problems
    The prompts must reach the tokenizer under one name, and the embeddings must be tiled under a name that reads
    the tokenizer's output within the method. A single concept string tokenized for every prompt
    (`self.tokenizer([concept], ...)`) is left alone: it has one row.

    ## References
    - huggingface/diffusers#13656, pattern 1
    - huggingface/diffusers#4335 (SemanticStableDiffusionPipeline: negative embeddings repeated by the batch twice)
    """

    code = "DRB114"
    pattern = 1
    severity = "error"
    message = (
        "`{tensor}` is tiled by `batch_size` although `{tokens}` can already hold one prompt per row "
        "(`{tokens} = {source}`), so it gets `batch_size` times too many rows; encode one prompt per row in every "
        "branch and repeat by the per-prompt count only: `{tensor}.repeat(1, {per_prompt}, 1)`."
    )
    REQUIRES_ALL = ("tokenizer", "batch_size")
    PATHS = ("/pipelines/",)

    VALID = [
        # one row in every branch: tiling by the batch is right
        Valid(
            """
            class SafePipeline(DiffusionPipeline):
                def __call__(self, prompt, num_images_per_prompt=1):
                    batch_size = len(prompt)
                    concept = self.tokenizer([self.concept], padding="max_length", return_tensors="pt")
                    concept_embeds = self.text_encoder(concept.input_ids)[0]
                    concept_embeds = concept_embeds.repeat(batch_size, num_images_per_prompt, 1)
            """
        ),
        # the list holds one prompt per row and the repeat leaves the batch alone
        Valid(
            """
            class SemanticPipeline(DiffusionPipeline):
                def __call__(self, prompt, negative_prompt=None, num_images_per_prompt=1):
                    batch_size = len(prompt)
                    uncond_tokens = [""] * batch_size if negative_prompt is None else negative_prompt
                    uncond_input = self.tokenizer(uncond_tokens, padding="max_length", return_tensors="pt")
                    uncond_embeddings = self.text_encoder(uncond_input.input_ids)[0]
                    uncond_embeddings = uncond_embeddings.repeat(1, num_images_per_prompt, 1)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class SemanticPipeline(DiffusionPipeline):
                def __call__(self, prompt, negative_prompt=None, num_images_per_prompt=1):
                    batch_size = len(prompt)
                    if negative_prompt is None:
                        uncond_tokens = [""]
                    elif isinstance(negative_prompt, str):
                        uncond_tokens = [negative_prompt]
                    else:
                        uncond_tokens = negative_prompt
                    uncond_input = self.tokenizer(uncond_tokens, padding="max_length", return_tensors="pt")
                    uncond_embeddings = self.text_encoder(uncond_input.input_ids.to(self.device))[0]
                    seq_len = uncond_embeddings.shape[1]
                    uncond_embeddings = uncond_embeddings.repeat(batch_size, num_images_per_prompt, 1)
                    uncond_embeddings = uncond_embeddings.view(batch_size * num_images_per_prompt, seq_len, -1)
            """,
            message=(
                "`uncond_embeddings` is tiled by `batch_size` although `uncond_tokens` can already hold one prompt "
                "per row (`uncond_tokens = negative_prompt`), so it gets `batch_size` times too many rows; encode "
                "one prompt per row in every branch and repeat by the per-prompt count only: "
                "`uncond_embeddings.repeat(1, num_images_per_prompt, 1)`."
            ),
        ),
        # the list spread over the batch, the tokenizer's output read through another name
        Invalid(
            """
            class VideoPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, batch_size, num_videos_per_prompt=1):
                    texts = [""] * batch_size
                    ids = self.tokenizer_2(texts, return_tensors="pt").input_ids
                    embeds = self.text_encoder_2(ids)[0]
                    return embeds.repeat(batch_size, num_videos_per_prompt, 1)
            """
        ),
    ]

    def check(self) -> None:
        for cls in pipeline_classes(self.context):
            for name, method in self.context.methods(cls).items():
                self._check_method(f"{cls.qualname}.{name}", method)

    def _check_method(self, scope: str, method: cst.FunctionDef) -> None:
        params = {p.name.value for p in parameters(method)}
        assigns = [a for a in walk.own_nodes(method, cst.Assign) if len(a.targets) == 1]
        values: dict[str, list[cst.BaseExpression]] = {}
        for assign in assigns:
            for name in target_names(assign.targets[0].target):
                values.setdefault(name, []).append(assign.value)
        tiled = [_tiled_by_batch(r.value) for r in walk.own_nodes(method, cst.Return) if r.value is not None]
        tiled += [_tiled_by_batch(a.value) for a in assigns]
        for found in tiled:
            if found is None:
                continue
            call, tensor = found
            tokens = self._tokens_behind(tensor, values)
            if tokens is None:
                continue
            source = next((v for v in values.get(tokens, []) if _per_prompt_rows(v, params)), None)
            if source is None:
                continue
            self.report(
                call,
                self.message.format(
                    tensor=tensor,
                    tokens=tokens,
                    source=_code(source),
                    per_prompt=_code(call.args[1].value),
                ),
                symbol=tensor,
                scope=scope,
            )

    @staticmethod
    def _tokens_behind(tensor: str, values: dict[str, list[cst.BaseExpression]]) -> str | None:
        """The prompts tokenized on the way to `tensor`, following the names its assignments read."""
        seen: set[str] = set()
        todo = [tensor]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            for value in values.get(name, []):
                tokens = _tokenized(value)
                if tokens is not None:
                    return tokens
                todo.extend(n.value for n in values_read(value))
        return None


def _code(node: cst.CSTNode) -> str:
    return cst.Module(body=[]).code_for_node(node)
