"""DRB111: a negative prompt that may be a list is wrapped in a list and multiplied by the batch size."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import names_tested_around, parameters


def _wrapped(operation: cst.BinaryOperation) -> str | None:
    """`x` of `[x] * n` or `n * [x]`, for a name `x` that holds a negative prompt."""
    if not isinstance(operation.operator, cst.Multiply):
        return None
    for side in (operation.left, operation.right):
        if isinstance(side, cst.List) and len(side.elements) == 1:
            element = side.elements[0]
            if isinstance(element, cst.Element) and isinstance(element.value, cst.Name):
                name = element.value.value
                if "negative_prompt" in name and not name.endswith(("_embeds", "_mask")):
                    return name
    return None


class ListNegativePromptNested(Rule):
    """
    ## What it does
    Checks pipeline functions that take a negative prompt (a parameter named `negative_prompt`,
    `negative_prompt_2`, …) and spread it over the batch with `[negative_prompt] * batch_size` (or
    `batch_size * [negative_prompt]`) where no `if` or conditional expression around it tests that prompt
    (`isinstance(negative_prompt, str)`), and no earlier statement of the function does.

    ## Why is this bad?
    Pipelines document the negative prompt as `str | list[str]`. Given a list, one per prompt, the
    expression builds a list of lists (`[["a", "b"], ["a", "b"]]`), which the tokenizer rejects or reads as
    text pairs, so the documented batched form fails or pairs every sample with the wrong negative.

    ## Example
    ```python
    if do_classifier_free_guidance and negative_prompt_embeds is None:
        uncond_tokens = [negative_prompt] * batch_size
    ```

    Use instead:
    ```python
    if do_classifier_free_guidance and negative_prompt_embeds is None:
        uncond_tokens = [negative_prompt] * batch_size if isinstance(negative_prompt, str) else negative_prompt
    ```

    ## Known problems
    Any test of the prompt's name around the expression, or anywhere before it in the function, is taken as
    the guard, whatever it says; a prompt that a caller already turned into a string is not followed, so such
    a helper is reported only when it takes the prompt as a parameter.

    ## References
    - huggingface/diffusers#13656, pattern 1
    - huggingface/diffusers#8299 (PixArt-Sigma: a list `negative_prompt` became a nested list)
    """

    code = "DRB111"
    pattern = 1
    severity = "error"
    message = (
        "`{expr}` nests a list `{name}` (documented as `str | list[str]`) inside another list, so a negative prompt "
        "per sample fails; wrap it only when it is a string: `{expr} if isinstance({name}, str) else {name}`."
    )
    REQUIRES_ANY = ("negative_prompt]",)
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            class PixArtPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, negative_prompt="", batch_size=1):
                    uncond_tokens = [negative_prompt] * batch_size if isinstance(negative_prompt, str) else negative_prompt
                    if isinstance(negative_prompt, str):
                        negative_prompt = [negative_prompt] * batch_size
                    if negative_prompt is None:
                        uncond_tokens = [""] * batch_size
                    elif isinstance(negative_prompt, str):
                        uncond_tokens = [negative_prompt] * batch_size
                    return self.tokenizer(uncond_tokens)
            """
        ),
        # normalised before
        Valid(
            """
            class PixArtPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, negative_prompt="", batch_size=1):
                    negative_prompt = negative_prompt[0] if isinstance(negative_prompt, list) else negative_prompt
                    uncond_tokens = [negative_prompt] * batch_size
                    return self.tokenizer(uncond_tokens)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class PixArtSigmaPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, do_classifier_free_guidance=True, negative_prompt="",
                                  num_images_per_prompt=1, negative_prompt_embeds=None):
                    batch_size = len(prompt) if isinstance(prompt, list) else 1
                    if do_classifier_free_guidance and negative_prompt_embeds is None:
                        uncond_tokens = [negative_prompt] * batch_size
                        uncond_input = self.tokenizer(uncond_tokens, padding="max_length", return_tensors="pt")
                        negative_prompt_embeds = self.text_encoder(uncond_input.input_ids)[0]
                    return negative_prompt_embeds
            """,
            message=(
                "`[negative_prompt] * batch_size` nests a list `negative_prompt` (documented as `str | list[str]`) "
                "inside another list, so a negative prompt per sample fails; wrap it only when it is a string: "
                "`[negative_prompt] * batch_size if isinstance(negative_prompt, str) else negative_prompt`."
            ),
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            params = {p.name.value for p in parameters(function)}
            if not any("negative_prompt" in p for p in params):
                continue
            guarded = names_tested_around(function)
            tested_before = self._isinstance_positions(function)
            for operation in walk.own_nodes(function, cst.BinaryOperation):
                name = _wrapped(operation)
                if name is None or name not in params or name in guarded.get(id(operation), set()):
                    continue
                position = walk.span(operation)
                if any(n == name and position is not None and p < position[0] for n, p in tested_before):
                    continue
                expr = " ".join(self.context.module.code_for_node(operation).split())
                self.report(
                    operation, self.message.format(expr=expr, name=name), symbol=name, scope=definition.qualname
                )

    @staticmethod
    def _isinstance_positions(function: cst.FunctionDef) -> list[tuple[str, int]]:
        """`(name, start)` of every `isinstance(name, …)` in `function`."""
        found = []
        for call in walk.own_nodes(function, cst.Call):
            if isinstance(call.func, cst.Name) and call.func.value == "isinstance" and call.args:
                first = call.args[0].value
                span = walk.span(call)
                if isinstance(first, cst.Name) and span is not None:
                    found.append((first.value, span[0]))
        return found
