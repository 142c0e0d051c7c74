"""DRB112: a string negative prompt is encoded as one row while the batch may come from `prompt_embeds`."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import names_read, parameters


def _is_str_test(test: cst.BaseExpression, name: str) -> bool:
    """`isinstance(<name>, str)`."""
    return (
        isinstance(test, cst.Call)
        and isinstance(test.func, cst.Name)
        and test.func.value == "isinstance"
        and len(test.args) == 2
        and isinstance(test.args[0].value, cst.Name)
        and test.args[0].value.value == name
        and isinstance(test.args[1].value, cst.Name)
        and test.args[1].value.value == "str"
    )


def _one_row(value: cst.BaseExpression, prompts: set[str]) -> bool:
    """`[negative_prompt]` or `[negative_prompt, negative_prompt_2]`: the prompts themselves, each once."""
    return (
        isinstance(value, cst.List)
        and bool(value.elements)
        and all(isinstance(e.value, cst.Name) and e.value.value in prompts for e in value.elements)
    )


def _batch_from_embeds(function: cst.FunctionDef) -> bool:
    """Whether `function` sets `batch_size = prompt_embeds.shape[0]` (the batch of precomputed embeddings)."""
    for assign in walk.own_nodes(function, cst.Assign):
        targets = [t.target for t in assign.targets]
        value = assign.value
        if not any(isinstance(t, cst.Name) and t.value == "batch_size" for t in targets):
            continue
        if (
            isinstance(value, cst.Subscript)
            and isinstance(value.value, cst.Attribute)
            and value.value.attr.value == "shape"
            and isinstance(value.value.value, cst.Name)
            and value.value.value.value == "prompt_embeds"
        ):
            return True
    return False


class StringNegativePromptOneRow(Rule):
    """
    ## What it does
    Checks `encode_prompt`-like functions that take `negative_prompt` and `prompt_embeds`, set
    `batch_size = prompt_embeds.shape[0]` when only embeddings are given, and encode a string negative
    prompt as a single row (`uncond_tokens = [negative_prompt]` under `isinstance(negative_prompt, str)`)
    before reshaping the negative embeddings to `batch_size` rows.

    ## Why is this bad?
    With `prompt=None` and batched `prompt_embeds`, `batch_size` is the embeddings' batch, but the string
    negative prompt gives one row of negative embeddings. The later `.view(batch_size * num_images_per_prompt,
    seq_len, -1)` then folds the hidden size instead of the batch (a tiny SD pipeline with two embeddings and
    `negative_prompt="blurry"` fails with "Sizes of tensors must match" in `torch.cat`), or pairs rows wrongly
    when the sizes happen to divide.

    ## Example
    ```python
    elif isinstance(negative_prompt, str):
        uncond_tokens = [negative_prompt]
    ```

    Use instead:
    ```python
    elif isinstance(negative_prompt, str):
        uncond_tokens = [negative_prompt] * batch_size
    ```

    ## Known problems
    Only the list literal of the prompts themselves under an `isinstance(..., str)` test is matched, in a
    function that takes the batch from `prompt_embeds.shape[0]`; each `# Copied from` copy of such a function
    is reported on its own (fixing the source and running `make fix-copies` fixes them all).

    ## References
    - huggingface/diffusers#13656, pattern 1
    - huggingface/diffusers#5073 (SDXL: a string negative prompt was one row against batched `prompt_embeds`)
    """

    code = "DRB112"
    pattern = 1
    severity = "error"
    message = (
        "`{code}` encodes a string `{prompt}` as one row, but `batch_size` is `prompt_embeds.shape[0]` when only "
        "embeddings are given, so batched `prompt_embeds` with a string `{prompt}` fail; repeat it per prompt: "
        "`batch_size * [{prompt}]`."
    )
    REQUIRES_ANY = ("isinstance(negative_prompt, str)",)
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, negative_prompt=None, prompt_embeds=None):
                    if prompt is not None:
                        batch_size = len(prompt)
                    else:
                        batch_size = prompt_embeds.shape[0]
                    if negative_prompt is None:
                        uncond_tokens = [""] * batch_size
                    elif isinstance(negative_prompt, str):
                        uncond_tokens = batch_size * [negative_prompt]
                    else:
                        uncond_tokens = negative_prompt
                    return self.encode(uncond_tokens).view(batch_size, 77, -1)
            """
        ),
        # the prompt was spread over the batch before, and the batch is read back from the negative embeddings
        Valid(
            """
            class GemmaPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, negative_prompt=None, prompt_embeds=None):
                    batch_size = len(prompt) if prompt is not None else 1
                    if prompt is None:
                        batch_size = prompt_embeds.shape[0]
                    negative_prompt = batch_size * [negative_prompt] if isinstance(negative_prompt, str) else negative_prompt
                    if isinstance(negative_prompt, str):
                        negative_prompt = [negative_prompt]
                    embeds = self.encode(negative_prompt)
                    return embeds.view(batch_size, 77, -1)

                def _encode(self, prompt, negative_prompt=None, prompt_embeds=None):
                    batch_size = len(prompt) if prompt is not None else 1
                    if prompt is None:
                        batch_size = prompt_embeds.shape[0]
                    if isinstance(negative_prompt, str):
                        negative_prompt = [negative_prompt]
                    embeds = self.encode(negative_prompt)
                    batch_size, seq_len, _ = embeds.shape
                    return embeds.view(batch_size, seq_len, -1)
            """
        ),
        # the batch never comes from the embeddings: a string negative prompt goes with a string prompt
        Valid(
            """
            class OldPipeline(DiffusionPipeline):
                def _encode_prompt(self, prompt, negative_prompt=None):
                    batch_size = len(prompt) if isinstance(prompt, list) else 1
                    if isinstance(negative_prompt, str):
                        uncond_tokens = [negative_prompt]
                    return self.encode(uncond_tokens).view(batch_size, 77, -1)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class StableDiffusionPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, device, num_images_per_prompt, negative_prompt=None, prompt_embeds=None):
                    if prompt is not None and isinstance(prompt, str):
                        batch_size = 1
                    elif prompt is not None and isinstance(prompt, list):
                        batch_size = len(prompt)
                    else:
                        batch_size = prompt_embeds.shape[0]
                    if negative_prompt is None:
                        uncond_tokens = [""] * batch_size
                    elif isinstance(negative_prompt, str):
                        uncond_tokens = [negative_prompt]
                    else:
                        uncond_tokens = negative_prompt
                    negative_prompt_embeds = self.text_encoder(self.tokenizer(uncond_tokens).input_ids)[0]
                    seq_len = negative_prompt_embeds.shape[1]
                    negative_prompt_embeds = negative_prompt_embeds.repeat(1, num_images_per_prompt, 1)
                    return negative_prompt_embeds.view(batch_size * num_images_per_prompt, seq_len, -1)
            """,
            message=(
                "`uncond_tokens = [negative_prompt]` encodes a string `negative_prompt` as one row, but `batch_size` "
                "is `prompt_embeds.shape[0]` when only embeddings are given, so batched `prompt_embeds` with a string "
                "`negative_prompt` fail; repeat it per prompt: `batch_size * [negative_prompt]`."
            ),
        ),
        # SDXL's two negative prompts, one row for both text encoders
        Invalid(
            """
            class StableDiffusionXLPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, negative_prompt=None, negative_prompt_2=None, prompt_embeds=None):
                    if prompt is not None:
                        batch_size = len(prompt)
                    else:
                        batch_size = prompt_embeds.shape[0]
                    if isinstance(negative_prompt, str):
                        uncond_tokens = [negative_prompt, negative_prompt_2]
                    embeds = [self.encode(tokens) for tokens in uncond_tokens]
                    return torch.cat(embeds, dim=-1).view(batch_size, 77, -1)
            """
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            params = {p.name.value for p in parameters(function)}
            prompts = {p for p in params if p.startswith("negative_prompt") and not p.endswith(("_embeds", "_mask"))}
            if "negative_prompt" not in prompts or "prompt_embeds" not in params:
                continue
            if not _batch_from_embeds(function):
                continue
            for branch in walk.own_nodes(function, cst.If):
                if not _is_str_test(branch.test, "negative_prompt"):
                    continue
                for assign in walk.nodes(branch.body, cst.Assign):
                    if len(assign.targets) != 1 or not _one_row(assign.value, prompts):
                        continue
                    target = assign.targets[0].target
                    if not isinstance(target, cst.Name):
                        continue
                    if not self._batch_read_after(function, assign) or self._normalised_before(function, branch):
                        continue
                    code = " ".join(self.context.module.code_for_node(assign).split())
                    message = self.message.format(code=code, prompt="negative_prompt")
                    self.report(assign, message, symbol="negative_prompt", scope=definition.qualname)

    @staticmethod
    def _normalised_before(function: cst.FunctionDef, branch: cst.If) -> bool:
        """Whether `negative_prompt` was already spread over the batch before the `isinstance` test
        (`negative_prompt = batch_size * [negative_prompt] if isinstance(...) else ...`): the test is then dead."""
        start = walk.span(branch)
        for assign in walk.own_nodes(function, cst.Assign):
            span = walk.span(assign)
            if start is None or span is None or span[0] >= start[0]:
                continue
            if any(isinstance(t.target, cst.Name) and t.target.value == "negative_prompt" for t in assign.targets):
                if "batch_size" in {n.value for n in names_read(assign.value)}:
                    return True
        return False

    @staticmethod
    def _batch_read_after(function: cst.FunctionDef, assign: cst.Assign) -> bool:
        """Whether some reshaping call after `assign` is given `batch_size` (`.view(batch_size * n, ...)`), with
        no new `batch_size` in between (`batch_size, seq_len, _ = negative_prompt_embeds.shape` follows the
        negative embeddings and is right)."""
        start = walk.span(assign)
        if start is None:
            return False
        for rebind in walk.own_nodes(function, cst.Assign):
            span = walk.span(rebind)
            bound = {n for t in rebind.targets for n in (x.value for x in walk.nodes(t.target, cst.Name))}
            if span is not None and span[0] > start[0] and "batch_size" in bound:
                return False
        for call in walk.own_nodes(function, cst.Call):
            func = call.func
            if not (isinstance(func, cst.Attribute) and func.attr.value in ("view", "reshape", "repeat")):
                continue
            span = walk.span(call)
            if span is not None and span[0] < start[0]:
                continue
            if any(n.value == "batch_size" for a in call.args for n in names_read(a.value)):
                return True
        return False
