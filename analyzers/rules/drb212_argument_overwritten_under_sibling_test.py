"""DRB212: an optional argument is overwritten in the branch that runs when a *sibling* argument is missing."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import conjuncts, names_read, none_comparison, parameters


def _none_tested(test: cst.BaseExpression) -> set[str]:
    """Names `x` of the `x is None` conjuncts of `test` (`a and x is None and b`)."""
    return {found[0] for part in conjuncts(test) if (found := none_comparison(part)) is not None and found[1]}


def _optional(param: cst.Param) -> bool:
    return isinstance(param.default, cst.Name) and param.default.value == "None"


class ArgumentOverwrittenUnderSiblingTest(Rule):
    """
    ## What it does
    Checks pipeline functions for an optional embeddings argument (default `None`, such as
    `pooled_prompt_embeds`) that is overwritten, from the fresh value of another argument, inside the branch
    guarded by that other argument's `is None` test (`if prompt_embeds is None: ... pooled_prompt_embeds =
    prompt_embeds[0]`), where no enclosing test looks at the overwritten argument and nothing reads it before.

    ## Why is this bad?
    The two arguments are independent inputs: a caller may pass `pooled_prompt_embeds` and let the
    pipeline encode the prompt. The branch that computes the sibling also recomputes this argument, so the
    caller's value is silently discarded whenever the sibling is missing. diffusers shipped this in the
    SDXL `encode_prompt` family, which replaced caller-supplied pooled embeddings with the text encoder's
    output (issue #7365).

    ## Example
    ```python
    def encode_prompt(self, prompt, prompt_embeds=None, pooled_prompt_embeds=None):
        if prompt_embeds is None:
            prompt_embeds = self.text_encoder(self.tokenize(prompt), output_hidden_states=True)
            pooled_prompt_embeds = prompt_embeds[0]
            prompt_embeds = prompt_embeds.hidden_states[-2]
        return prompt_embeds, pooled_prompt_embeds
    ```

    Use instead:
    ```python
    def encode_prompt(self, prompt, prompt_embeds=None, pooled_prompt_embeds=None):
        if prompt_embeds is None:
            prompt_embeds = self.text_encoder(self.tokenize(prompt), output_hidden_states=True)
            if pooled_prompt_embeds is None:
                pooled_prompt_embeds = prompt_embeds[0]
            prompt_embeds = prompt_embeds.hidden_states[-2]
        return prompt_embeds, pooled_prompt_embeds
    ```

    ## Known problems
    Only `x is None` conjuncts of an `if` test are recognised as the sibling's guard, only arguments whose
    name says embeddings (`*embed*`) are followed, and only an assignment that reads the sibling itself is
    reported: a pooled embedding computed by a separate encoder call under the same test (Flux, SD3) is not
    (yet) reported, as that convention is not settled upstream. Arguments that are
    derived from the sibling by construction (an attention mask of the embeddings, `*_mask`, `*_ids`,
    `*_lengths`) are left alone: recomputing them with the embeddings is correct.

    ## References
    - huggingface/diffusers#13656, pattern 2
    - huggingface/diffusers#7926 (SDXL `encode_prompt` overwrote `pooled_prompt_embeds`), issue #7365
    """

    code = "DRB212"
    pattern = 2
    severity = "warning"
    message = (
        "`{name}` is overwritten whenever `{sibling}` is None, so a `{name}` the caller passes without "
        "`{sibling}` is silently discarded; assign it only under `if {name} is None:`."
    )
    REQUIRES_ANY = ("is None",)
    PATHS = ("/pipelines/",)
    #: argument names that belong to the sibling they are computed with
    DERIVED = ("mask", "_ids", "length")

    VALID = [
        Valid(
            """
            class MyXLPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, prompt_embeds=None, pooled_prompt_embeds=None, prompt_attention_mask=None):
                    if prompt_embeds is None:
                        output = self.text_encoder(self.tokenize(prompt), output_hidden_states=True)
                        if pooled_prompt_embeds is None:
                            pooled_prompt_embeds = output[0]
                        prompt_attention_mask = output.attention_mask
                        prompt_embeds = output.hidden_states[-2]
                    return prompt_embeds, pooled_prompt_embeds, prompt_attention_mask
            """
        ),
        Valid(
            # the caller's value is read first: it is used, then replaced
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, latents=None, image_latents=None):
                    if image_latents is None:
                        noise = latents if latents is not None else self.sample()
                        latents = self.scheduler.scale_noise(noise)
                    return self.run(latents)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class MyXLPipeline(DiffusionPipeline):
                def encode_prompt(
                    self, prompt, negative_prompt=None, prompt_embeds=None, pooled_prompt_embeds=None,
                    negative_prompt_embeds=None, negative_pooled_prompt_embeds=None, guidance=True,
                ):
                    if prompt_embeds is None:
                        for tokenizer, text_encoder in zip(self.tokenizers, self.text_encoders):
                            prompt_embeds = text_encoder(tokenizer(prompt), output_hidden_states=True)
                            pooled_prompt_embeds = prompt_embeds[0]
                            prompt_embeds = prompt_embeds.hidden_states[-2]
                    if guidance and negative_prompt_embeds is None:
                        negative_prompt_embeds = self.text_encoder(self.tokenizer(negative_prompt), output_hidden_states=True)
                        negative_pooled_prompt_embeds = negative_prompt_embeds[0]
                        negative_prompt_embeds = negative_prompt_embeds.hidden_states[-2]
                    return prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds
            """
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            params = parameters(function)
            optional = {p.name.value for p in params if _optional(p)}
            candidates = {
                name for name in optional if "embed" in name and not any(part in name for part in self.DERIVED)
            }
            if len(optional) < 2 or not candidates:
                continue
            assigns = [
                a
                for a in walk.own_nodes(function, cst.Assign)
                if len(a.targets) == 1
                and isinstance(a.targets[0].target, cst.Name)
                and a.targets[0].target.value in candidates
            ]
            if not assigns:
                continue
            guards = self._guards(function)
            targets = {id(t.target) for a in walk.own_nodes(function, cst.Assign) for t in a.targets}
            reported: set[str] = set()
            for assign in assigns:
                name = cst.ensure_type(assign.targets[0].target, cst.Name).value
                if name in reported or any(n.value == name for n in names_read(assign.value)):
                    continue
                enclosing = guards.get(id(assign), [])
                if any(name in {n.value for n in names_read(test)} for test, _ in enclosing):
                    continue  # a test of the argument itself guards the assignment
                siblings = [s for test, in_body in enclosing if in_body for s in _none_tested(test)]
                read = {n.value for n in names_read(assign.value)}
                # the argument is taken from the sibling's fresh value (`pooled_prompt_embeds = prompt_embeds[0]`):
                # a by-product of encoding, where the caller's own value was meant to win
                siblings = [s for s in siblings if s in optional and s != name and s in read]
                if not siblings:
                    continue
                if self._read_before(function, name, assign, targets):
                    continue
                reported.add(name)
                self.report(
                    assign,
                    self.message.format(name=name, sibling=siblings[0]),
                    symbol=name,
                    scope=definition.qualname,
                )

    @staticmethod
    def _guards(function: cst.FunctionDef) -> dict[int, list[tuple[cst.BaseExpression, bool]]]:
        """For each node under an `if` of `function`, by id: the tests around it, each with whether the node is in
        that test's body (True) or its `else` (False). `elif` tests count as tests of the `else`."""
        found: dict[int, list[tuple[cst.BaseExpression, bool]]] = {}
        for branch in walk.own_nodes(function, cst.If):
            for node in walk.walk(branch.body):
                found.setdefault(id(node), []).append((branch.test, True))
            if branch.orelse is not None:
                for node in walk.walk(branch.orelse):
                    found.setdefault(id(node), []).append((branch.test, False))
        return found

    @staticmethod
    def _read_before(function: cst.FunctionDef, name: str, assign: cst.Assign, targets: set[int]) -> bool:
        """Whether `name` is read (not merely assigned) anywhere before `assign` in `function`'s body."""
        where = walk.span(assign)
        if where is None:
            return True  # cannot tell the order: stay silent
        for node in names_read(function.body):
            if node.value != name or id(node) in targets:
                continue
            position = walk.span(node)
            if position is not None and position[0] < where[0]:
                return True
        return False
