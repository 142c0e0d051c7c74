"""DRB204: an argument is defaulted from its sibling (`prompt_2 = prompt_2 or prompt`) and then never used."""

from __future__ import annotations

from typing import TypeVar

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import call_name, names_read, parameters


N = TypeVar("N", bound=cst.CSTNode)


def _name(node: cst.CSTNode | None) -> str | None:
    return node.value if isinstance(node, cst.Name) else None


def _none_test(test: cst.BaseExpression, negated: bool) -> str | None:
    """`X is None` (or `X is not None` when `negated`): return X."""
    if (
        isinstance(test, cst.Comparison)
        and len(test.comparisons) == 1
        and isinstance(test.comparisons[0].comparator, cst.Name)
        and test.comparisons[0].comparator.value == "None"
        and isinstance(test.comparisons[0].operator, cst.IsNot if negated else cst.Is)
    ):
        return _name(test.left)
    if not negated and isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
        return _name(test.expression)
    return None


def _defaulting(value: cst.BaseExpression, target: str) -> str | None:
    """For `target = <value>`: the sibling `S` when value is `target or S` / `S if target is None else target`."""
    if isinstance(value, cst.BooleanOperation) and isinstance(value.operator, cst.Or):
        if _name(value.left) == target:
            return _name(value.right)
    if isinstance(value, cst.IfExp):
        if _none_test(value.test, negated=False) == target and _name(value.orelse) == target:
            return _name(value.body)
        if _none_test(value.test, negated=True) == target and _name(value.body) == target:
            return _name(value.orelse)
    return None


class DefaultedArgumentUnused(Rule):
    """
    ## What it does
    Checks for an argument that is given a default from a sibling argument (`if prompt_2 is None:
    prompt_2 = prompt`, `prompt_2 = prompt_2 or prompt`) and is never read afterwards, while the sibling
    goes on to be used: typically the sibling is passed to the second text encoder where the defaulted
    argument was meant.

    ## Why is this bad?
    The defaulting line shows the author meant the argument to take effect, but the value the caller
    passes is dropped: `encode_prompt(prompt="a", prompt_2="b")` gives the same embeddings as
    `prompt_2="c"`. Nothing fails, so the user believes they controlled the second encoder (meta issue
    #13656, pattern 2: public arguments accepted but ignored).

    ## Example
    ```python
    if pooled_prompt_embeds is None:
        if prompt_2 is None:
            prompt_2 = prompt
        pooled_prompt_embeds = self._get_clip_prompt_embeds(prompt, num_videos_per_prompt)
    ```

    Use instead:
    ```python
    if pooled_prompt_embeds is None:
        if prompt_2 is None:
            prompt_2 = prompt
        pooled_prompt_embeds = self._get_clip_prompt_embeds(prompt_2, num_videos_per_prompt)
    ```

    ## Known problems
    Both names must be parameters of the function, and the default must be the sibling itself (a
    `Name`). Reads of the argument by `check_inputs`, or by a statement that only rebinds it
    (`prompt_2 = [prompt_2] if isinstance(prompt_2, str) else prompt_2`), do not count as uses. The
    analysis ignores order: a use anywhere in the function, before the default included, keeps it silent.

    ## References
    - huggingface/diffusers#13656, pattern 2
    - huggingface/diffusers#13588 (HunyuanVideo: `prompt_2` defaulted, then `prompt` passed to CLIP)
    """

    code = "DRB204"
    pattern = 2
    severity = "error"
    message = (
        "`{arg}` is defaulted to `{sibling}` and never used afterwards, so a `{arg}` the caller passes is ignored; "
        "pass `{arg}` where `{sibling}` stands in for it."
    )
    REQUIRES_ANY = (" is None", " or ")
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, prompt_2=None, pooled_prompt_embeds=None):
                    if pooled_prompt_embeds is None:
                        if prompt_2 is None:
                            prompt_2 = prompt
                        pooled_prompt_embeds = self._get_clip_prompt_embeds(prompt_2)
                    return self._get_t5_prompt_embeds(prompt), pooled_prompt_embeds
            """
        ),
        Valid(
            # reshaped after the default, then used
            """
            class MyPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, prompt_2=None):
                    prompt_2 = prompt_2 or prompt
                    prompt_2 = [prompt_2] if isinstance(prompt_2, str) else prompt_2
                    return self.encode(prompt), self.encode_2(prompt_2)
            """
        ),
        Valid(
            # a local (not a parameter) defaulted from another local
            """
            def upsample(hidden_states, encoder_hidden_states=None):
                context = None
                if context is None:
                    context = hidden_states
                return hidden_states
            """,
        ),
    ]
    INVALID = [
        Invalid(
            """
            class HunyuanVideoPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, prompt_2=None, pooled_prompt_embeds=None, device=None):
                    if pooled_prompt_embeds is None:
                        if prompt_2 is None:
                            prompt_2 = prompt
                        pooled_prompt_embeds = self._get_clip_prompt_embeds(prompt, device=device, max_sequence_length=77)
                    return pooled_prompt_embeds
            """,
            message=(
                "`prompt_2` is defaulted to `prompt` and never used afterwards, so a `prompt_2` the caller passes is "
                "ignored; pass `prompt_2` where `prompt` stands in for it."
            ),
        ),
        Invalid(
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, negative_prompt=None, negative_prompt_2=None):
                    self.check_inputs(prompt, negative_prompt, negative_prompt_2)
                    negative_prompt_2 = negative_prompt_2 or negative_prompt
                    negative_prompt_2 = [negative_prompt_2] if isinstance(negative_prompt_2, str) else negative_prompt_2
                    return self.encode_prompt(prompt, negative_prompt, negative_prompt)
            """,
            message=(
                "`negative_prompt_2` is defaulted to `negative_prompt` and never used afterwards, so a "
                "`negative_prompt_2` the caller passes is ignored; pass `negative_prompt_2` where `negative_prompt` "
                "stands in for it."
            ),
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            if definition.is_class:
                continue
            function = cst.ensure_type(definition.node, cst.FunctionDef)
            params = {p.name.value for p in parameters(function)} - {"self", "cls"}
            if len(params) < 2:
                continue
            self._check_function(definition.qualname, function, params)

    def _check_function(self, scope: str, function: cst.FunctionDef, params: set[str]) -> None:
        defaults = self._defaults(function.body, params)
        if not defaults:
            return
        # every read in the function, with the reads that do not count as uses taken out
        ignored: set[int] = set()
        for arg, _sibling, statement, test in defaults:
            ignored |= {id(n) for n in names_read(statement) if n.value == arg}
            if test is not None:
                ignored |= {id(n) for n in names_read(test) if n.value == arg}
        for call in self._calls_named(function.body, "check_inputs"):
            ignored |= {id(n) for n in names_read(call)}
        # `prompt_2 = [prompt_2] if isinstance(prompt_2, str) else prompt_2` only reshapes the argument
        defaulted = {arg for arg, *_ in defaults}
        for assign in self._self_rebindings(function.body, defaulted):
            target = _name(assign.targets[0].target)
            ignored |= {id(n) for n in names_read(assign) if n.value == target}
        reads: dict[str, int] = {}
        for name in names_read(function.body):
            if id(name) not in ignored:
                reads[name.value] = reads.get(name.value, 0) + 1
        reported: set[str] = set()
        for arg, sibling, statement, _test in defaults:
            if arg in reported or reads.get(arg, 0) > 0 or reads.get(sibling, 0) == 0:
                continue
            reported.add(arg)
            self.report(statement, self.message.format(arg=arg, sibling=sibling), symbol=arg, scope=scope)

    @staticmethod
    def _self_rebindings(body: cst.CSTNode, names: set[str]) -> list[cst.Assign]:
        return [
            node
            for node in _own_nodes(body, cst.Assign)
            if len(node.targets) == 1 and _name(node.targets[0].target) in names
        ]

    @staticmethod
    def _calls_named(body: cst.CSTNode, suffix: str) -> list[cst.Call]:
        return [node for node in _own_nodes(body, cst.Call) if (call_name(node) or "").endswith(suffix)]

    @staticmethod
    def _defaults(
        body: cst.BaseSuite, params: set[str]
    ) -> list[tuple[str, str, cst.CSTNode, cst.BaseExpression | None]]:
        """(argument, sibling, assigning statement, `is None` test or None) for each defaulting of a parameter."""
        found: list[tuple[str, str, cst.CSTNode, cst.BaseExpression | None]] = []
        for test in _own_nodes(body, cst.If):
            arg = _none_test(test.test, negated=False)
            if (
                arg is None
                or arg not in params
                or test.orelse is not None
                or not isinstance(test.body, cst.IndentedBlock)
            ):
                continue
            if len(test.body.body) != 1 or not isinstance(test.body.body[0], cst.SimpleStatementLine):
                continue
            line = test.body.body[0]
            small = line.body[0] if len(line.body) == 1 else None
            if not isinstance(small, cst.Assign) or len(small.targets) != 1 or _name(small.targets[0].target) != arg:
                continue
            sibling = _name(small.value)
            if sibling is not None and sibling in params - {arg}:
                found.append((arg, sibling, small, test.test))
        for assign in _own_nodes(body, cst.Assign):
            if len(assign.targets) != 1:
                continue
            arg = _name(assign.targets[0].target)
            if arg is None or arg not in params:
                continue
            sibling = _defaulting(assign.value, arg)
            if sibling is not None and sibling in params - {arg}:
                found.append((arg, sibling, assign, None))
        return found


def _own_nodes(body: cst.CSTNode, kind: type[N]) -> list[N]:
    """Nodes of `kind` under `body`, leaving out those of nested functions (they have their own parameters)."""
    nested = walk.nodes(body, cst.FunctionDef)
    if not nested:
        return walk.nodes(body, kind)
    inner = {id(n) for function in nested for n in walk.nodes(function, kind)}
    return [n for n in walk.nodes(body, kind) if id(n) not in inner]
