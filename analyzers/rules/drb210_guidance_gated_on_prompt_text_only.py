"""DRB210: guidance is switched on by the negative prompt's text only, so precomputed negative embeddings are ignored."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import parameters, pipeline_methods


def _tested_not_none(test: cst.BaseExpression, names: set[str]) -> list[str]:
    """The names of `names` that `test` compares with `is not None`."""
    found = []
    for comparison in walk.nodes(test, cst.Comparison):
        left = comparison.left
        for target in comparison.comparisons:
            if (
                isinstance(target.operator, cst.IsNot)
                and isinstance(target.comparator, cst.Name)
                and target.comparator.value == "None"
                and isinstance(left, cst.Name)
                and left.value in names
            ):
                found.append(left.value)
    return found


def _mentions_guidance(node: cst.CSTNode) -> bool:
    words = [n.value for n in walk.nodes(node, cst.Name)] + [a.attr.value for a in walk.nodes(node, cst.Attribute)]
    return any("cfg" in w or "guidance" in w for w in words)


class GuidanceGatedOnPromptTextOnly(Rule):
    """
    ## What it does
    Checks pipeline `__call__` methods that accept both a negative prompt and its precomputed embeddings
    (`negative_prompt` and `negative_prompt_embeds`) for a guidance switch, an assignment or an `if` that
    involves the guidance (`true_cfg_scale`, `do_classifier_free_guidance`), which tests
    `negative_prompt is not None` and never looks at `negative_prompt_embeds`.

    ## Why is this bad?
    A caller who encodes the prompts once and passes `negative_prompt_embeds` (the documented way to reuse
    embeddings, or to weight prompts) gets no guidance at all: the switch stays off because the text is
    None, and the embeddings are silently ignored.

    ## Example
    ```python
    do_true_cfg = true_cfg_scale > 1 and negative_prompt is not None
    ```

    Use instead:
    ```python
    has_neg_prompt = negative_prompt is not None or negative_prompt_embeds is not None
    do_true_cfg = true_cfg_scale > 1 and has_neg_prompt
    ```

    ## Known problems
    Only a test written in the `__call__` body is seen; a switch computed by a helper or a property is not.
    The embeddings' name is the prompt's name with `_embeds` appended.

    ## References
    - huggingface/diffusers#13656, pattern 2
    - huggingface/diffusers#10539 (Flux: true CFG ignored `negative_prompt_embeds`), huggingface/diffusers#13957
      (Flux img2img, missed when that fix was propagated)
    """

    code = "DRB210"
    pattern = 2
    severity = "error"
    message = (
        "`{test}` switches guidance on only when `{prompt}` is given, so precomputed `{embeds}` are silently "
        "ignored; test `{prompt} is not None or {embeds} is not None`."
    )
    REQUIRES_ANY = ("negative_prompt_embeds",)
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            class FluxPipeline(DiffusionPipeline):
                def __call__(self, prompt=None, negative_prompt=None, negative_prompt_embeds=None, true_cfg_scale=1.0):
                    has_neg_prompt = negative_prompt is not None or negative_prompt_embeds is not None
                    do_true_cfg = true_cfg_scale > 1 and has_neg_prompt
                    if negative_prompt is not None and isinstance(negative_prompt, str):
                        negative_prompt = [negative_prompt]
                    return self.run(prompt, negative_prompt, do_true_cfg)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class FluxPipeline(DiffusionPipeline):
                def __call__(self, prompt=None, negative_prompt=None, negative_prompt_embeds=None, true_cfg_scale=1.0):
                    do_true_cfg = true_cfg_scale > 1 and negative_prompt is not None
                    if do_true_cfg:
                        negative_prompt_embeds = self.encode_prompt(negative_prompt, negative_prompt_embeds)
                    return self.run(prompt, negative_prompt_embeds, do_true_cfg)
            """,
            message=(
                "`true_cfg_scale > 1 and negative_prompt is not None` switches guidance on only when "
                "`negative_prompt` is given, so precomputed `negative_prompt_embeds` are silently ignored; test "
                "`negative_prompt is not None or negative_prompt_embeds is not None`."
            ),
        ),
    ]

    def check(self) -> None:
        for cls, method in pipeline_methods(self.context, "__call__"):
            params = {p.name.value for p in parameters(method)}
            prompts = {p for p in params if "negative_prompt" in p and f"{p}_embeds" in params}
            if not prompts:
                continue
            tests: list[cst.BaseExpression] = [a.value for a in walk.own_nodes(method, cst.Assign)]
            tests += [b.test for b in walk.own_nodes(method, cst.If)]
            reported: set[str] = set()
            for test in tests:
                if not _mentions_guidance(test):
                    continue
                read = {n.value for n in walk.nodes(test, cst.Name)}
                for prompt in _tested_not_none(test, prompts):
                    embeds = f"{prompt}_embeds"
                    if embeds in read or prompt in reported:
                        continue
                    reported.add(prompt)
                    code = " ".join(self.context.module.code_for_node(test).split())
                    message = self.message.format(test=code, prompt=prompt, embeds=embeds)
                    self.report(test, message, symbol=embeds, scope=f"{cls.qualname}.__call__")
