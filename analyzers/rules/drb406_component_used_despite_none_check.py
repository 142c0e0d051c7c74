"""DRB406: a method tests `self.<component> is None` and elsewhere uses the component with no such test."""

from __future__ import annotations

from collections.abc import Sequence

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.flow import maybe_skipped
from analyzers.matchers import call_name, parameters, pipeline_classes, self_attribute


#: helpers that walk the modules of the model they are handed (`model.modules()`): None makes them fail
MODEL_WALKERS = ("scale_lora_layers", "unscale_lora_layers", "adjust_lora_scale_text_encoder")


def _none_tested_components(node: cst.CSTNode) -> set[str]:
    """Components compared with None under `node`: `self.x is None`, `self.x is not None`."""
    found: set[str] = set()
    for comparison in walk.nodes(node, cst.Comparison):
        if (
            self_attribute(comparison.left)
            and len(comparison.comparisons) == 1
            and isinstance(comparison.comparisons[0].operator, (cst.Is, cst.IsNot))
            and isinstance(comparison.comparisons[0].comparator, cst.Name)
            and comparison.comparisons[0].comparator.value == "None"
        ):
            found.add(comparison.left.attr.value)
    return found


def _mentions(node: cst.CSTNode, component: str) -> bool:
    return any(self_attribute(a, component) for a in walk.nodes(node, cst.Attribute))


def _tests_argument_for_none(test: cst.BaseExpression, arguments: set[str]) -> bool:
    """Whether a test compares an argument with None (`prompt_embeds is None`, `lora_scale is not None`): the block
    is a path the caller opts into (computing embeddings from a prompt, a LoRA scale), which needs the component."""
    for comparison in walk.nodes(test, cst.Comparison):
        if (
            isinstance(comparison.left, cst.Name)
            and comparison.left.value in arguments
            and len(comparison.comparisons) == 1
            and isinstance(comparison.comparisons[0].operator, (cst.Is, cst.IsNot))
        ):
            return True
    return False


def _requires(statement: cst.CSTNode, component: str, helpers: dict[str, cst.FunctionDef]) -> bool:
    """Whether running `statement` surely needs the component: it calls `self.<component>(...)`, or a method of the
    class that mentions `self.<component>` (an encoding helper such as `self._get_t5_prompt_embeds(...)`)."""
    skipped = maybe_skipped(statement)
    for call in walk.nodes(statement, cst.Call):
        if id(call) in skipped or not isinstance(call.func, cst.Attribute) or not self_attribute(call.func):
            continue
        name = call.func.attr.value
        if name == component or (name in helpers and _mentions(helpers[name], component)):
            return True
    return False


def _uses(statement: cst.CSTNode, component: str) -> list[cst.CSTNode]:
    """Uses of `self.<component>` in `statement` that fail on None: `self.c.attr`, `walker(self.c)`; not in
    lambdas, comprehensions, `a if c else b` branches or the right of `and`/`or`."""
    skipped = maybe_skipped(statement)
    found: list[cst.CSTNode] = []
    for attribute in walk.nodes(statement, cst.Attribute):
        if id(attribute) not in skipped and self_attribute(attribute.value, component):
            found.append(attribute)
    for call in walk.nodes(statement, cst.Call):
        if id(call) in skipped:
            continue
        if (call_name(call) or "").rpartition(".")[2] in MODEL_WALKERS and call.args:
            first = call.args[0]
            if first.keyword is None and not first.star and self_attribute(first.value, component):
                found.append(call)
    return found


class ComponentUsedDespiteNoneCheck(Rule):
    """
    ## What it does
    Checks pipeline methods that test a component for None (`if self.text_encoder is not None:`), so the
    method knows the pipeline may be loaded without it, and elsewhere use the same component with no test:
    read an attribute of it (`self.text_encoder.dtype`), call it, or hand it to a helper that walks its modules
    (`unscale_lora_layers(self.text_encoder)`).

    ## Why is this bad?
    Loading a pipeline with `text_encoder=None` and passing precomputed `prompt_embeds` is a documented path; the
    None check shows the author meant to support it. The one unguarded use then fails with
    `AttributeError: 'NoneType' object has no attribute ...`, often at the very end of `encode_prompt`, after
    all the work succeeded.

    ## Example
    ```python
    def encode_prompt(self, prompt, device, prompt_embeds=None):
        if prompt_embeds is None:
            prompt_embeds = self.text_encoder(self.tokenizer(prompt).input_ids)[0]
        if self.text_encoder is not None:
            dtype = self.text_encoder.dtype
        else:
            dtype = self.unet.dtype
        prompt_embeds = prompt_embeds.to(dtype=dtype, device=device)
        if USE_PEFT_BACKEND:
            unscale_lora_layers(self.text_encoder)
        return prompt_embeds
    ```

    Use instead:
    ```python
        if self.text_encoder is not None and USE_PEFT_BACKEND:
            unscale_lora_layers(self.text_encoder)
    ```

    ## Known problems
    Only methods of pipeline classes, and only components the same method compares with None, are looked at.
    Uses under an `if` (or `elif`/`else`) whose test names the component, or compares an argument of the method
    with None (`if prompt_embeds is None:`, `if lora_scale is not None:`: a path the caller opts into, which
    needs the component), count as guarded; so do uses after `if self.x is None: return/raise`. A component passed
    on as an argument is followed only into the LoRA scaling helpers. A method that calls the component, or a
    method of the class that names it, on every path before the use cannot run without it, and is left alone
    (its None check is copied boilerplate); so is an attribute the method assigns (`if self.x is None: self.x = …`
    initialises a cache).

    ## References
    - huggingface/diffusers#13656, pattern 4
    - huggingface/diffusers#8297 (34 Stable Diffusion pipelines called `unscale_lora_layers(self.text_encoder, …)`
      with `text_encoder=None`)
    - huggingface/diffusers#5301 (SDXL pipelines without text encoders)
    """

    code = "DRB406"
    pattern = 4
    severity = "warning"
    message = (
        "`{function}` checks `self.{component}` for None but uses it here with no such check; guard this use "
        "with `if self.{component} is not None:` too."
    )
    REQUIRES_ANY = ("is not None", "is None")
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            class FooPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, prompt_embeds=None, lora_scale=None):
                    if lora_scale is not None:
                        scale_lora_layers(self.text_encoder, lora_scale)
                    if prompt_embeds is None:
                        prompt_embeds = self.text_encoder(prompt)[0]
                    if self.text_encoder is not None:
                        dtype = self.text_encoder.dtype
                    else:
                        dtype = self.unet.dtype
                    if self.text_encoder is not None and USE_PEFT_BACKEND:
                        unscale_lora_layers(self.text_encoder, lora_scale)
                    encoders = [self.text_encoder] if self.text_encoder is not None else []
                    return prompt_embeds.to(dtype), encoders

                def decode(self, latents):
                    if self.vae is None:
                        return latents
                    return self.vae.decode(latents)

                def _get_t5_embeds(self, prompt):
                    embeds = self.text_encoder_3(prompt)[0]
                    dtype = self.text_encoder_3.dtype if self.text_encoder_3 is not None else embeds.dtype
                    return embeds.to(self.text_encoder_3.dtype)

                def encode_required(self, prompt):
                    embeds = self._get_t5_embeds(prompt)
                    if self.text_encoder_3 is not None and USE_PEFT_BACKEND:
                        unscale_lora_layers(self.text_encoder_3)
                    return embeds.to(self.text_encoder_3.dtype)

                def __call__(self, image):
                    if self.empty_embedding is None:
                        self.empty_embedding = self.encode_required("")
                    return self.empty_embedding.repeat(2, 1)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class FooPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, prompt_embeds=None, lora_scale=None):
                    if prompt_embeds is None:
                        prompt_embeds = self.text_encoder(prompt)[0]
                    if self.text_encoder is not None:
                        dtype = self.text_encoder.dtype
                    else:
                        dtype = self.unet.dtype
                    if isinstance(self, LoraLoaderMixin) and USE_PEFT_BACKEND:
                        unscale_lora_layers(self.text_encoder, lora_scale)
                    return prompt_embeds.to(dtype)
            """,
            message=(
                "`FooPipeline.encode_prompt` checks `self.text_encoder` for None but uses it here with no such "
                "check; guard this use with `if self.text_encoder is not None:` too."
            ),
        ),
        Invalid(
            """
            class BarPipeline(DiffusionPipeline):
                def prepare(self, image):
                    size = self.image_processor.config.size
                    if self.image_processor is None:
                        size = 512
                    return size
            """,
            message=(
                "`BarPipeline.prepare` checks `self.image_processor` for None but uses it here with no such "
                "check; guard this use with `if self.image_processor is not None:` too."
            ),
        ),
    ]

    def check(self) -> None:
        for cls in pipeline_classes(self.context):
            for name, method in self.context.methods(cls).items():
                if not isinstance(method.body, cst.IndentedBlock):
                    continue
                components = _none_tested_components(method.body)
                if not components:
                    continue
                arguments = {p.name.value for p in parameters(method)} - {"self"}
                self._helpers = {other: m for other, m in self.context.methods(cls).items() if other != name}
                # `if self.x is None: self.x = ...` initialises a cache; it is not an optional component
                components -= {
                    t.target.attr.value
                    for assign in walk.own_nodes(method, cst.Assign)
                    for t in assign.targets
                    if isinstance(t.target, cst.Attribute) and self_attribute(t.target)
                }
                scope = f"{cls.qualname}.{name}"
                for component in sorted(components):
                    use = self._first_unguarded(method.body.body, component, arguments, top=True)
                    if use is not None:
                        self.report(
                            use,
                            self.message.format(function=scope, component=component),
                            symbol=component,
                            scope=scope,
                        )

    def _first_unguarded(
        self, statements: Sequence[cst.CSTNode], component: str, arguments: set[str], top: bool
    ) -> cst.CSTNode | None:
        """The first use of the component outside every test of it, in the order the statements run; None once the
        method leaves, or surely needs the component anyway (`top`: the statements run on every path)."""
        for statement in statements:
            if isinstance(statement, cst.SimpleStatementLine):
                if top and _requires(statement, component, self._helpers):
                    return None  # the method cannot work without it: the None check is boilerplate
                uses = _uses(statement, component)
                if uses:
                    return uses[0]
                if any(isinstance(s, (cst.Return, cst.Raise)) for s in statement.body):
                    return None
            elif isinstance(statement, cst.If):
                uses = _uses(statement.test, component)
                if uses and not _mentions(statement.test, component):
                    return uses[0]
                if _mentions(statement.test, component) or _tests_argument_for_none(statement.test, arguments):
                    if component in _none_tested_components(statement.test) and _leaves(statement.body.body):
                        return None  # `if self.x is None: return` — the rest of the method has it
                    continue
                for block in _branches(statement, component, arguments):
                    use = self._first_unguarded(block, component, arguments, top=False)
                    if use is not None:
                        return use
            elif isinstance(statement, (cst.For, cst.While)):
                header = statement.iter if isinstance(statement, cst.For) else statement.test
                uses = _uses(header, component)
                if uses:
                    return uses[0]
                use = self._first_unguarded(statement.body.body, component, arguments, top=False)
                if use is not None:
                    return use
            elif isinstance(statement, cst.With):
                for item in statement.items:
                    uses = _uses(item.item, component)
                    if uses:
                        return uses[0]
                use = self._first_unguarded(statement.body.body, component, arguments, top)
                if use is not None:
                    return use
            elif isinstance(statement, cst.Try):
                use = self._first_unguarded(statement.body.body, component, arguments, top=False)
                if use is not None:
                    return use
        return None


def _branches(statement: cst.If, component: str, arguments: set[str]) -> list[Sequence[cst.CSTNode]]:
    """The blocks of an `if`/`elif`/`else` chain up to the first test that names the component or an argument's
    None check (from there on the chain is guarded)."""
    blocks: list[Sequence[cst.CSTNode]] = [statement.body.body]
    orelse = statement.orelse
    while isinstance(orelse, cst.If):
        if _mentions(orelse.test, component) or _tests_argument_for_none(orelse.test, arguments):
            return blocks
        blocks.append(orelse.body.body)
        orelse = orelse.orelse
    if isinstance(orelse, cst.Else):
        blocks.append(orelse.body.body)
    return blocks


def _leaves(statements: Sequence[cst.CSTNode]) -> bool:
    if not statements:
        return False
    last = statements[-1]
    return isinstance(last, cst.SimpleStatementLine) and any(isinstance(s, (cst.Return, cst.Raise)) for s in last.body)
