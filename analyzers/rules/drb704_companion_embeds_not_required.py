"""DRB704: `check_inputs` accepts `prompt_embeds` alone, but `encode_prompt` then uses a companion it never made."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import call_name, names_read, parameters, pipeline_classes


#: (precomputed tensor, the tensor that must come with it)
PAIRS = (
    ("prompt_embeds", "pooled_prompt_embeds"),
    ("negative_prompt_embeds", "negative_pooled_prompt_embeds"),
    ("prompt_embeds", "prompt_attention_mask"),
    ("negative_prompt_embeds", "negative_prompt_attention_mask"),
)


def _is_none_test(node: cst.BaseExpression, name: str) -> bool:
    """Whether `node` contains the comparison `<name> is None`."""
    for comparison in walk.nodes(node, cst.Comparison):
        if (
            isinstance(comparison.left, cst.Name)
            and comparison.left.value == name
            and len(comparison.comparisons) == 1
            and isinstance(comparison.comparisons[0].operator, cst.Is)
            and isinstance(comparison.comparisons[0].comparator, cst.Name)
            and comparison.comparisons[0].comparator.value == "None"
        ):
            return True
    return False


def _assigned(statement: cst.CSTNode, name: str) -> bool:
    if isinstance(statement, cst.Assign):
        return any(n.value == name for t in statement.targets for n in walk.nodes(t.target, cst.Name))
    if isinstance(statement, (cst.AnnAssign, cst.AugAssign)):
        return any(n.value == name for n in walk.nodes(statement.target, cst.Name))
    return False


class CompanionEmbedsNotRequired(Rule):
    """
    ## What it does
    Checks for pipelines whose `encode_prompt` computes a companion tensor (`pooled_prompt_embeds`,
    `prompt_attention_mask` and their negatives) only when `prompt_embeds` is None, then uses it
    (`pooled_prompt_embeds.repeat(...)`), while `check_inputs` lets `prompt_embeds` through without it.

    ## Why is this bad?
    Passing precomputed `prompt_embeds` is a documented path. Without the companion the pipeline fails
    inside `encode_prompt` with `'NoneType' object has no attribute 'repeat'`, an error that names neither
    argument. The sibling pipelines raise a clear `ValueError` in `check_inputs` ("If `prompt_embeds` are
    provided, `pooled_prompt_embeds` also have to be passed"); the variant that lacks the check validates less
    than its runtime needs.

    ## Example
    ```python
    def check_inputs(self, prompt, prompt_embeds=None, pooled_prompt_embeds=None):
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("Cannot forward both `prompt` and `prompt_embeds`.")
    ```

    Use instead:
    ```python
    def check_inputs(self, prompt, prompt_embeds=None, pooled_prompt_embeds=None):
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("Cannot forward both `prompt` and `prompt_embeds`.")
        if prompt_embeds is not None and pooled_prompt_embeds is None:
            raise ValueError("If `prompt_embeds` are provided, `pooled_prompt_embeds` also have to be passed.")
    ```

    ## Known problems
    Only `encode_prompt` and the four pairs above are looked at. Any `if` test of `check_inputs` or
    `__call__` that names both tensors counts as the requirement. A companion that `encode_prompt` only
    passes on (to a model that may accept None) is not reported; only one it dereferences outside a test
    on it is.

    ## References
    - huggingface/diffusers#13656, pattern 7
    - huggingface/diffusers#4309 (StableDiffusionXLControlNetPipeline crashed when `prompt_embeds` came without
      `pooled_prompt_embeds`; the fix added the check)
    """

    code = "DRB704"
    pattern = 7
    severity = "warning"
    message = (
        "`check_inputs` accepts `{tensor}` without `{companion}`, but `encode_prompt` only computes `{companion}` "
        "from a prompt and then uses it; raise a `ValueError` when `{tensor}` is given and `{companion}` is None."
    )
    REQUIRES_ANY = ("def encode_prompt",)
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            class PooledPipeline(DiffusionPipeline):
                def check_inputs(self, prompt, prompt_embeds=None, pooled_prompt_embeds=None):
                    if prompt_embeds is not None and pooled_prompt_embeds is None:
                        raise ValueError("`pooled_prompt_embeds` must come with `prompt_embeds`")

                def encode_prompt(self, prompt, prompt_embeds=None, pooled_prompt_embeds=None, n=1):
                    if prompt_embeds is None:
                        prompt_embeds, pooled_prompt_embeds = self.text_encoder(prompt)
                    pooled_prompt_embeds = pooled_prompt_embeds.repeat(1, n)
                    return prompt_embeds, pooled_prompt_embeds

                def __call__(self, prompt=None, prompt_embeds=None, pooled_prompt_embeds=None):
                    self.check_inputs(prompt, prompt_embeds, pooled_prompt_embeds)
                    return self.encode_prompt(prompt, prompt_embeds, pooled_prompt_embeds)
            """
        ),
        # the mask is made when it is missing, or only handed on
        Valid(
            """
            class MaskPipeline(DiffusionPipeline):
                def check_inputs(self, prompt, prompt_embeds=None):
                    pass

                def encode_prompt(self, prompt, prompt_embeds=None, prompt_attention_mask=None, n=1):
                    if prompt_embeds is None:
                        prompt_embeds, prompt_attention_mask = self.text_encoder(prompt)
                    if prompt_attention_mask is None:
                        prompt_attention_mask = torch.ones(prompt_embeds.shape[:2])
                    return prompt_embeds, prompt_attention_mask.repeat(n, 1)

                def __call__(self, prompt=None, prompt_embeds=None, prompt_attention_mask=None):
                    self.check_inputs(prompt, prompt_embeds)
                    return self.encode_prompt(prompt, prompt_embeds, prompt_attention_mask)

            class HandOnPipeline(DiffusionPipeline):
                def check_inputs(self, prompt, prompt_embeds=None):
                    pass

                def encode_prompt(self, prompt, prompt_embeds=None, prompt_attention_mask=None):
                    if prompt_embeds is None:
                        prompt_embeds, prompt_attention_mask = self.text_encoder(prompt)
                    return prompt_embeds, prompt_attention_mask

                def __call__(self, prompt=None, prompt_embeds=None, prompt_attention_mask=None):
                    self.check_inputs(prompt, prompt_embeds)
                    return self.encode_prompt(prompt, prompt_embeds, prompt_attention_mask)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class PooledImg2ImgPipeline(DiffusionPipeline):
                def check_inputs(self, prompt, strength, prompt_embeds=None, pooled_prompt_embeds=None):
                    if prompt is not None and prompt_embeds is not None:
                        raise ValueError("Cannot forward both `prompt` and `prompt_embeds`.")
                    if not 0 <= strength <= 1:
                        raise ValueError("`strength` must lie in [0, 1]")

                def encode_prompt(self, prompt, prompt_embeds=None, pooled_prompt_embeds=None, n=1):
                    if prompt_embeds is None:
                        outputs = self.text_encoder(prompt, output_hidden_states=True)
                        pooled_prompt_embeds = outputs[0]
                        prompt_embeds = outputs.hidden_states[-2]
                    pooled_prompt_embeds = pooled_prompt_embeds.repeat(1, n).view(-1, 1280)
                    return prompt_embeds, pooled_prompt_embeds

                def __call__(self, prompt=None, strength=0.3, prompt_embeds=None, pooled_prompt_embeds=None):
                    self.check_inputs(prompt, strength, prompt_embeds, pooled_prompt_embeds)
                    return self.encode_prompt(prompt, prompt_embeds, pooled_prompt_embeds)
            """,
            message=(
                "`check_inputs` accepts `prompt_embeds` without `pooled_prompt_embeds`, but `encode_prompt` only "
                "computes `pooled_prompt_embeds` from a prompt and then uses it; raise a `ValueError` when "
                "`prompt_embeds` is given and `pooled_prompt_embeds` is None."
            ),
        ),
    ]

    def check(self) -> None:
        for cls in pipeline_classes(self.context):
            methods = self.context.methods(cls)
            call, encode, check = methods.get("__call__"), methods.get("encode_prompt"), methods.get("check_inputs")
            if call is None or encode is None or check is None:
                continue
            if not any(call_name(c) == "self.check_inputs" for c in walk.own_nodes(call, cst.Call)):
                continue
            call_params = {p.name.value for p in parameters(call)}
            encode_params = {p.name.value for p in parameters(encode)}
            for tensor, companion in PAIRS:
                if tensor not in call_params or tensor not in encode_params:
                    continue
                if not self._made_only_from_prompt(encode, tensor, companion):
                    continue
                if not self._dereferenced(encode, tensor, companion):
                    continue
                if self._required(check, tensor, companion) or self._required(call, tensor, companion):
                    continue
                message = self.message.format(tensor=tensor, companion=companion)
                self.report(check.name, message, symbol=companion, scope=f"{cls.qualname}.check_inputs")

    @staticmethod
    def _made_only_from_prompt(encode: cst.FunctionDef, tensor: str, companion: str) -> bool:
        """Every assignment that makes `companion` (not from itself) sits under `if <tensor> is None:`."""
        guarded: set[int] = set()
        for if_node in walk.own_nodes(encode, cst.If):
            if _is_none_test(if_node.test, tensor):
                guarded.update(id(n) for n in walk.walk(if_node.body))
        statements: list[cst.Assign | cst.AnnAssign | cst.AugAssign] = [
            *walk.own_nodes(encode, cst.Assign),
            *walk.own_nodes(encode, cst.AnnAssign),
            *walk.own_nodes(encode, cst.AugAssign),
        ]
        makes = [
            s
            for s in statements
            if _assigned(s, companion)
            and not (s.value is not None and any(n.value == companion for n in names_read(s.value)))
        ]
        return bool(makes) and all(id(s) in guarded for s in makes)

    @staticmethod
    def _dereferenced(encode: cst.FunctionDef, tensor: str, companion: str) -> bool:
        """`companion.<attr>` read outside the `<tensor> is None` branch and outside any test on `companion`."""
        quiet: set[int] = set()
        tests: list[cst.If | cst.IfExp] = [*walk.own_nodes(encode, cst.If), *walk.own_nodes(encode, cst.IfExp)]
        for node in tests:
            test_names = {n.value for n in names_read(node.test)}
            if companion in test_names or _is_none_test(node.test, tensor):
                quiet.update(id(n) for n in walk.walk(node))
        for attribute in walk.own_nodes(encode, cst.Attribute):
            if isinstance(attribute.value, cst.Name) and attribute.value.value == companion:
                if id(attribute) not in quiet:
                    return True
        return False

    @staticmethod
    def _required(function: cst.FunctionDef, tensor: str, companion: str) -> bool:
        """Whether some `if` test of `function` names both tensors (the requirement, however it is spelled)."""
        for if_node in walk.own_nodes(function, cst.If):
            names = {n.value for n in names_read(if_node.test)}
            if tensor in names and companion in names:
                return True
        return False
