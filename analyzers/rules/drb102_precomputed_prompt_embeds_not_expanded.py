"""DRB102: `encode_prompt` expands embeddings by `num_*_per_prompt` only when it computes them itself."""

from __future__ import annotations

import re

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import call_name, calls, keyword, parameters, pipeline_classes


PER_PROMPT_RE = re.compile(r"^num_\w+_per_prompt$")
ENCODE_METHODS = ("encode_prompt", "_encode_prompt")


def _none_test(test: cst.BaseExpression) -> tuple[set[str], set[str]]:
    """Names tested `is None` and `is not None` in an `if` test (through `and`)."""
    is_none: set[str] = set()
    is_not_none: set[str] = set()
    parts = [test]
    while parts:
        part = parts.pop()
        if isinstance(part, cst.BooleanOperation) and isinstance(part.operator, cst.And):
            parts += [part.left, part.right]
            continue
        if (
            isinstance(part, cst.Comparison)
            and isinstance(part.left, cst.Name)
            and len(part.comparisons) == 1
            and isinstance(part.comparisons[0].comparator, cst.Name)
            and part.comparisons[0].comparator.value == "None"
        ):
            operator = part.comparisons[0].operator
            if isinstance(operator, cst.Is):
                is_none.add(part.left.value)
            elif isinstance(operator, cst.IsNot):
                is_not_none.add(part.left.value)
    return is_none, is_not_none


class _GuardedReads(cst.CSTVisitor):
    """Reads of `name`, each with the set of variables known to be `None` where it is read."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.guards: list[set[str]] = [set()]
        self.reads: list[tuple[cst.Name, frozenset[str]]] = []

    def visit_If(self, node: cst.If) -> bool:
        walk.visit(node.test, self)
        is_none, is_not_none = _none_test(node.test)
        self.guards.append(self.guards[-1] | is_none)
        walk.visit(node.body, self)
        self.guards.pop()
        if node.orelse is not None:
            # `else` of `if x is not None` (only when the test is that single comparison)
            only = isinstance(node.test, cst.Comparison) and is_not_none
            self.guards.append(self.guards[-1] | (is_not_none if only else set()))
            walk.visit(node.orelse, self)
            self.guards.pop()
        return False

    def visit_Name(self, node: cst.Name) -> None:
        if node.value == self.name:
            self.reads.append((node, frozenset(self.guards[-1])))

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        walk.visit(node.value, self)
        return False

    def visit_Arg(self, node: cst.Arg) -> bool:
        walk.visit(node.value, self)
        return False


def _reads(node: cst.CSTNode, name: str) -> bool:
    visitor = _GuardedReads(name)
    walk.visit(node, visitor)
    return bool(visitor.reads)


def _multiplies(node: cst.CSTNode, left: str, right: str) -> bool:
    for op in walk.nodes(node, cst.BinaryOperation):
        if isinstance(op.operator, cst.Multiply):
            names = {n.value for n in (op.left, op.right) if isinstance(n, cst.Name)}
            if names == {left, right}:
                return True
    return False


class PrecomputedPromptEmbedsNotExpanded(Rule):
    """
    ## What it does
    Checks `encode_prompt` methods whose only uses of `num_images_per_prompt` (or
    `num_videos_per_prompt`, ...) sit where the embeddings are computed, under
    `if prompt_embeds is None:` (often by handing it to `_get_*_prompt_embeds` helpers that do the
    `repeat(1, n, 1).view(...)`), while the pipeline's `__call__` sizes the latents
    `batch_size * num_images_per_prompt`.

    ## Why is this bad?
    Embeddings the user passes in (`prompt_embeds=...`, and usually the negative and pooled variants)
    skip the expansion and keep one row per prompt, while the latents get one row per image. With
    `num_images_per_prompt > 1` the denoiser receives batches of different sizes and fails (for
    example `RuntimeError: size of tensor a (8) must match size of tensor b (4)`), although the same
    call works with `prompt=`.

    ## Example
    ```python
    def encode_prompt(self, prompt, num_images_per_prompt=1, prompt_embeds=None):
        if prompt_embeds is None:
            prompt_embeds = self._get_t5_prompt_embeds(prompt, num_images_per_prompt=num_images_per_prompt)
        return prompt_embeds
    ```

    Use instead:
    ```python
    def encode_prompt(self, prompt, num_images_per_prompt=1, prompt_embeds=None):
        if prompt_embeds is None:
            prompt_embeds = self._get_t5_prompt_embeds(prompt)
        batch_size, seq_len, _ = prompt_embeds.shape
        prompt_embeds = prompt_embeds.repeat(1, num_images_per_prompt, 1)
        prompt_embeds = prompt_embeds.view(batch_size * num_images_per_prompt, seq_len, -1)
        return prompt_embeds
    ```

    ## Known problems
    The rule stays silent when `encode_prompt` reads the per-prompt count anywhere outside a
    `... is None` branch of an embeddings argument, or when `__call__` expands `prompt_embeds` itself,
    even if that expansion misses a case. A pipeline that expects the user to pass already expanded
    embeddings, and documents it, is still reported.

    ## References
    - huggingface/diffusers#13656, pattern 1
    - huggingface/diffusers#13611 (stable_diffusion_3 review), huggingface/diffusers#10712
    - huggingface/diffusers#13755 (fix: expand after the `if`/`else`, as SDXL does)
    """

    code = "DRB102"
    pattern = 1
    severity = "error"
    message = (
        "`prompt_embeds` passed by the caller skip the `{per_prompt}` expansion, which runs only when "
        "`encode_prompt` computes the embeddings, while `__call__` sizes the latents `batch_size * {per_prompt}`; "
        "expand the embeddings after the `if prompt_embeds is None:` branch."
    )
    REQUIRES_ANY = ("prompt_embeds is ",)
    PATHS = ("/pipelines/",)

    _CALL = """
                def __call__(self, prompt=None, prompt_embeds=None, num_images_per_prompt=1):
                    batch_size = len(prompt) if prompt is not None else prompt_embeds.shape[0]
                    prompt_embeds = self.encode_prompt(
                        prompt, num_images_per_prompt=num_images_per_prompt, prompt_embeds=prompt_embeds
                    )
                    latents = self.prepare_latents(batch_size * num_images_per_prompt)
                    return self.transformer(latents, encoder_hidden_states=prompt_embeds)
    """

    VALID = [
        # CogVideoX Fun: `__call__` pins the count to 1, so given embeddings and latents always agree
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, num_videos_per_prompt=1, prompt_embeds=None):
                    if prompt_embeds is None:
                        prompt_embeds = self._get_t5_prompt_embeds(prompt, num_videos_per_prompt=num_videos_per_prompt)
                    return prompt_embeds

                def __call__(self, prompt=None, prompt_embeds=None, num_videos_per_prompt=1):
                    batch_size = len(prompt) if prompt is not None else prompt_embeds.shape[0]
                    num_videos_per_prompt = 1
                    prompt_embeds = self.encode_prompt(
                        prompt, num_videos_per_prompt=num_videos_per_prompt, prompt_embeds=prompt_embeds
                    )
                    latents = self.prepare_latents(batch_size * num_videos_per_prompt)
                    return self.transformer(latents, encoder_hidden_states=prompt_embeds)
            """
        ),
        # SDXL style: the expansion runs after the if, for computed and given embeddings alike
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, num_images_per_prompt=1, prompt_embeds=None):
                    if prompt_embeds is None:
                        prompt_embeds = self._get_t5_prompt_embeds(prompt)
                    bs, seq_len, _ = prompt_embeds.shape
                    prompt_embeds = prompt_embeds.repeat(1, num_images_per_prompt, 1)
                    prompt_embeds = prompt_embeds.view(bs * num_images_per_prompt, seq_len, -1)
                    return prompt_embeds
            """
            + _CALL
        ),
        # given embeddings are expanded in the `else` branch, through an intermediate name
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, num_images_per_prompt=1, prompt_embeds=None):
                    if prompt_embeds is None:
                        prompt_embeds = self._get_t5_prompt_embeds(prompt, num_images_per_prompt=num_images_per_prompt)
                    else:
                        expanded = prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0)
                        prompt_embeds = expanded.to(self.dtype)
                    return prompt_embeds
            """
            + _CALL
        ),
        # the latents follow the embeddings' batch, not batch_size * num_images_per_prompt
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, num_images_per_prompt=1, prompt_embeds=None):
                    if prompt_embeds is None:
                        prompt_embeds = self._get_t5_prompt_embeds(prompt, num_images_per_prompt)
                    return prompt_embeds

                def __call__(self, prompt=None, prompt_embeds=None, num_images_per_prompt=1):
                    prompt_embeds = self.encode_prompt(prompt, num_images_per_prompt, prompt_embeds)
                    latents = self.prepare_latents(prompt_embeds.shape[0])
                    return self.transformer(latents, encoder_hidden_states=prompt_embeds)
            """
        ),
        # __call__ expands the given embeddings itself
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, num_images_per_prompt=1, prompt_embeds=None):
                    if prompt_embeds is None:
                        prompt_embeds = self._get_t5_prompt_embeds(prompt, num_images_per_prompt)
                    return prompt_embeds

                def __call__(self, prompt=None, prompt_embeds=None, num_images_per_prompt=1):
                    batch_size = prompt_embeds.shape[0]
                    if prompt_embeds is not None:
                        prompt_embeds = prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0)
                    prompt_embeds = self.encode_prompt(prompt, num_images_per_prompt, prompt_embeds)
                    latents = self.prepare_latents(batch_size * num_images_per_prompt)
                    return self.transformer(latents, encoder_hidden_states=prompt_embeds)
            """
        ),
    ]
    INVALID = [
        # SD3 / Flux style: the helpers expand, and they run only when prompt_embeds is None
        Invalid(
            """
            class StableDiffusion3Pipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, num_images_per_prompt=1, prompt_embeds=None, negative_prompt_embeds=None):
                    if prompt_embeds is None:
                        prompt_embeds = self._get_t5_prompt_embeds(prompt, num_images_per_prompt=num_images_per_prompt)
                    if do_classifier_free_guidance and negative_prompt_embeds is None:
                        negative_prompt_embeds = self._get_t5_prompt_embeds("", num_images_per_prompt=num_images_per_prompt)
                    return prompt_embeds, negative_prompt_embeds
            """
            + _CALL,
            message=(
                "`prompt_embeds` passed by the caller skip the `num_images_per_prompt` expansion, which runs only "
                "when `encode_prompt` computes the embeddings, while `__call__` sizes the latents "
                "`batch_size * num_images_per_prompt`; expand the embeddings after the `if prompt_embeds is None:` "
                "branch."
            ),
        ),
        # two text encoders: the token embeddings expand inside the `is None` branch, only the pooled ones after it
        Invalid(
            """
            class MyDualEncoderPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, num_images_per_prompt=1, prompt_embeds=None, pooled_prompt_embeds=None):
                    if prompt_embeds is None:
                        hidden = []
                        for encoder in self.encoders:
                            output = encoder(prompt)
                            pooled_prompt_embeds = output.pooled
                            rows, tokens, _ = output.hidden.shape
                            expanded = output.hidden.repeat(1, num_images_per_prompt, 1)
                            hidden.append(expanded.view(rows * num_images_per_prompt, tokens, -1))
                        prompt_embeds = torch.cat(hidden, dim=-1)
                    pooled_prompt_embeds = pooled_prompt_embeds.repeat_interleave(num_images_per_prompt, dim=0)
                    return prompt_embeds, pooled_prompt_embeds
            """
            + _CALL
        ),
        # the repeat written inline in the `else` of `if prompt_embeds is not None`
        Invalid(
            """
            class MyVideoPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, num_videos_per_prompt=1, prompt_embeds=None):
                    if prompt_embeds is not None:
                        return prompt_embeds
                    else:
                        prompt_embeds = self.text_encoder(prompt)[0]
                        prompt_embeds = prompt_embeds.repeat_interleave(num_videos_per_prompt, dim=0)
                    return prompt_embeds

                def __call__(self, prompt=None, prompt_embeds=None, num_videos_per_prompt=1):
                    batch_size = len(prompt) if prompt is not None else prompt_embeds.shape[0]
                    prompt_embeds = self.encode_prompt(prompt, num_videos_per_prompt, prompt_embeds)
                    latents = self.prepare_latents(num_videos_per_prompt * batch_size)
                    return self.unet(latents, encoder_hidden_states=prompt_embeds)
            """,
            message=(
                "`prompt_embeds` passed by the caller skip the `num_videos_per_prompt` expansion, which runs only "
                "when `encode_prompt` computes the embeddings, while `__call__` sizes the latents "
                "`batch_size * num_videos_per_prompt`; expand the embeddings after the `if prompt_embeds is None:` "
                "branch."
            ),
        ),
    ]

    def check(self) -> None:
        for cls in pipeline_classes(self.context):
            methods = self.context.methods(cls)
            call = methods.get("__call__")
            if call is None:
                continue
            for name in ENCODE_METHODS:
                encode = methods.get(name)
                if encode is not None:
                    self._check_encode(cls.qualname, name, encode, call)

    def _check_encode(self, owner: str, name: str, encode: cst.FunctionDef, call: cst.FunctionDef) -> None:
        params = {p.name.value for p in parameters(encode)}
        if "prompt_embeds" not in params:
            return
        embeds_params = {p for p in params if p.endswith("_embeds")}
        for per_prompt in sorted(p for p in params if PER_PROMPT_RE.match(p)):
            visitor = _GuardedReads(per_prompt)
            walk.visit(encode.body, visitor)
            guarded = [node for node, guards in visitor.reads if "prompt_embeds" in guards]
            if not guarded:
                continue
            # a read where no embeddings argument is known to be None expands something for given embeddings too:
            # that is enough unless it only expands other tensors (SDXL's pooled embeddings) and not `prompt_embeds`
            unguarded = {id(node) for node, guards in visitor.reads if not (guards & embeds_params)}
            if unguarded and self._expands_given_embeds(encode, per_prompt, unguarded):
                continue
            if not self._call_sizes_latents(call, name, per_prompt):
                continue
            self.report(
                guarded[0],
                self.message.format(per_prompt=per_prompt),
                symbol="prompt_embeds",
                scope=f"{owner}.{name}",
            )
            return

    @staticmethod
    def _expands_given_embeds(encode: cst.FunctionDef, per_prompt: str, unguarded: set[int]) -> bool:
        """Whether a read of the count outside the `is None` branches reaches `prompt_embeds`.

        It does when it sits in an assignment to `prompt_embeds` (`prompt_embeds = prompt_embeds.repeat(1, n, 1)`),
        or in one to a name that a later assignment to `prompt_embeds` reads, or anywhere that is not an
        assignment (a bare call may expand in place; cannot tell). Expansions of other tensors alone
        (`pooled_prompt_embeds = pooled_prompt_embeds.repeat(1, n)`) leave given `prompt_embeds` as they are.
        """
        statements: list[tuple[cst.CSTNode, list[cst.BaseExpression]]] = []
        for assign in walk.nodes(encode.body, cst.Assign):
            statements.append((assign, [t.target for t in assign.targets]))
        for augmented in walk.nodes(encode.body, cst.AugAssign):
            statements.append((augmented, [augmented.target]))
        covered: set[int] = set()
        feeding: set[str] = set()
        for statement, targets in statements:
            names = {id(n) for n in walk.nodes(statement, cst.Name)}
            hits = names & unguarded
            if not hits:
                continue
            covered |= hits
            bound = {n for t in targets for n in _bound(t)}
            if "prompt_embeds" in bound or not bound:
                return True
            feeding |= bound
        if unguarded - covered:
            return True  # a read in a call statement, a return, a test: cannot tell what it expands
        for assign in walk.nodes(encode.body, cst.Assign):
            bound_names = {n for t in assign.targets for n in _bound(t.target)}
            if "prompt_embeds" in bound_names and _reads_any(assign.value, feeding):
                return True
        return False

    @staticmethod
    def _call_sizes_latents(call: cst.FunctionDef, encode_name: str, per_prompt: str) -> bool:
        """`__call__` hands the count to `self.<encode>`, sizes `batch_size * count`, never expands embeds itself."""
        if not _multiplies(call.body, "batch_size", per_prompt):
            return False
        for statement in _assign_statements(call.body):
            # `num_videos_per_prompt = 1`: the count is pinned, so embeddings and latents always agree
            if isinstance(statement.value, (cst.Integer, cst.Float)) and any(
                isinstance(t.target, cst.Name) and t.target.value == per_prompt for t in statement.targets
            ):
                return False
        hands_on = False
        for c in calls(call.body):
            if call_name(c) == f"self.{encode_name}" and (
                keyword(c, per_prompt) is not None or any(_reads(a.value, per_prompt) for a in c.args)
            ):
                hands_on = True
        if not hands_on:
            return False
        for statement in _assign_statements(call.body):
            targets = {t.target.value for t in statement.targets if isinstance(t.target, cst.Name)}
            if targets & {"prompt_embeds"} and _reads(statement.value, per_prompt):
                if not (isinstance(statement.value, cst.Call) and call_name(statement.value) == f"self.{encode_name}"):
                    return False
        return True


def _assign_statements(body: cst.CSTNode) -> list[cst.Assign]:
    return walk.nodes(body, cst.Assign)


def _bound(target: cst.BaseExpression) -> list[str]:
    """Names a target binds: `x`, `a, b`; `self.x` and `d[k]` bind none."""
    if isinstance(target, cst.Name):
        return [target.value]
    if isinstance(target, (cst.Tuple, cst.List)):
        return [n for element in target.elements for n in _bound(element.value)]
    if isinstance(target, cst.StarredElement):
        return _bound(target.value)
    return []


def _reads_any(node: cst.CSTNode, names: set[str]) -> bool:
    return any(n.value in names for n in walk.nodes(node, cst.Name))
