"""DRB407: a component run only when an argument is None (`prompt_embeds`) is still dereferenced on every path."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.flow import maybe_skipped
from analyzers.matchers import parameters, pipeline_classes, self_attribute


#: attributes read from a model that fail on None; other attributes may be plain values of the pipeline
MODEL_ATTRIBUTES = frozenset({"dtype", "device", "config"})


def _tests_argument_for_none(test: cst.BaseExpression, arguments: set[str]) -> bool:
    for comparison in walk.nodes(test, cst.Comparison):
        if (
            isinstance(comparison.left, cst.Name)
            and comparison.left.value in arguments
            and len(comparison.comparisons) == 1
            and isinstance(comparison.comparisons[0].operator, (cst.Is, cst.IsNot))
            and isinstance(comparison.comparisons[0].comparator, cst.Name)
            and comparison.comparisons[0].comparator.value == "None"
        ):
            return True
    return False


def _pieces(
    statements: Sequence[cst.CSTNode], arguments: set[str], gated: bool, guards: frozenset[str]
) -> Iterator[tuple[cst.CSTNode, bool, frozenset[str]]]:
    """(piece of code, whether it runs only under an `if <argument> is None` test, components tested around it)."""
    for statement in statements:
        if isinstance(statement, cst.SimpleStatementLine):
            yield statement, gated, guards
        elif isinstance(statement, cst.If):
            yield statement.test, gated, guards
            inner_gated = gated or _tests_argument_for_none(statement.test, arguments)
            tested = frozenset(a.attr.value for a in walk.nodes(statement.test, cst.Attribute) if self_attribute(a))
            yield from _pieces(statement.body.body, arguments, inner_gated, guards | tested)
            orelse = statement.orelse
            if isinstance(orelse, cst.If):
                yield from _pieces([orelse], arguments, inner_gated, guards | tested)
            elif isinstance(orelse, cst.Else):
                yield from _pieces(orelse.body.body, arguments, inner_gated, guards | tested)
        elif isinstance(statement, (cst.For, cst.While, cst.With, cst.Try)):
            if isinstance(statement, cst.For):
                yield statement.iter, gated, guards
            elif isinstance(statement, cst.While):
                yield statement.test, gated, guards
            elif isinstance(statement, cst.With):
                for item in statement.items:
                    yield item.item, gated, guards
            yield from _pieces(statement.body.body, arguments, gated, guards)


class SkippableComponentDereferenced(Rule):
    """
    ## What it does
    Checks pipeline methods that run a component only when an argument is None (`self.text_encoder(...)` under
    `if prompt_embeds is None:`), yet read `self.<component>.dtype` (`.device`, `.config`) on every path.

    ## Why is this bad?
    The guard says the component is only needed to compute what the caller did not pass: with precomputed
    `prompt_embeds`, a pipeline loaded with `text_encoder=None` should work. The unguarded
    `prompt_embeds.to(dtype=self.text_encoder.dtype)` then fails with `AttributeError: 'NoneType' object has no
    attribute 'dtype'` on exactly that documented path.

    ## Example
    ```python
    def encode_prompt(self, prompt, device, prompt_embeds=None):
        if prompt_embeds is None:
            prompt_embeds = self.text_encoder(self.tokenizer(prompt).input_ids.to(device))[0]
        prompt_embeds = prompt_embeds.to(dtype=self.text_encoder.dtype, device=device)
    ```

    Use instead:
    ```python
        if self.text_encoder is not None:
            dtype = self.text_encoder.dtype
        else:
            dtype = self.unet.dtype
        prompt_embeds = prompt_embeds.to(dtype=dtype, device=device)
    ```

    ## Known problems
    Only `dtype`, `device` and `config` reads are reported, only in the method that gates the calls, and only when
    every call of the component there is gated (a method that also calls it unconditionally needs it anyway).
    Reads under an `if` that names the component or tests an argument against None, in `a if c else b` branches
    and on the right of `and`/`or` (`dtype or self.text_encoder.dtype`) count as guarded.

    ## References
    - huggingface/diffusers#13656, pattern 4
    - huggingface/diffusers#4396 (Stable Diffusion pipelines read `self.text_encoder.dtype` with precomputed
      embeddings and no text encoder)
    - huggingface/diffusers#6995 (the same in StableDiffusionInstructPix2PixPipeline)
    """

    code = "DRB407"
    pattern = 4
    severity = "warning"
    message = (
        "`self.{component}` only runs when `{arguments}` is None, but `self.{component}.{attr}` is read on every "
        "path, so precomputed inputs without the component fail; fall back to another component's `{attr}` when it "
        "is None."
    )
    REQUIRES_ANY = (" is None",)
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            class FooPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, device, prompt_embeds=None, dtype=None):
                    if prompt_embeds is None:
                        prompt_embeds = self.text_encoder(prompt)[0]
                    if self.text_encoder is not None:
                        dtype = self.text_encoder.dtype
                    dtype = dtype or self.text_encoder.dtype
                    return prompt_embeds.to(dtype=dtype, device=device)

                def encode_image(self, image, image_embeds=None):
                    features = self.image_encoder(image)
                    if image_embeds is None:
                        image_embeds = self.image_encoder(image).image_embeds
                    return image_embeds.to(self.image_encoder.dtype)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class FooPipeline(DiffusionPipeline):
                def _encode_prompt(self, prompt, device, prompt_embeds=None, negative_prompt_embeds=None):
                    if prompt_embeds is None:
                        text_inputs = self.tokenizer(prompt, return_tensors="pt")
                        prompt_embeds = self.text_encoder(text_inputs.input_ids.to(device))[0]
                    prompt_embeds = prompt_embeds.to(dtype=self.text_encoder.dtype, device=device)
                    return prompt_embeds
            """,
            message=(
                "`self.text_encoder` only runs when `prompt_embeds` is None, but `self.text_encoder.dtype` is read on "
                "every path, so precomputed inputs without the component fail; fall back to another component's "
                "`dtype` when it is None."
            ),
        ),
    ]

    def check(self) -> None:
        for cls in pipeline_classes(self.context):
            for name, method in self.context.methods(cls).items():
                if not isinstance(method.body, cst.IndentedBlock):
                    continue
                arguments = {p.name.value for p in parameters(method)} - {"self"}
                pieces = list(_pieces(method.body.body, arguments, gated=False, guards=frozenset()))
                gated_calls: set[str] = set()
                ungated_calls: set[str] = set()
                reads: dict[str, cst.Attribute] = {}
                for piece, gated, guards in pieces:
                    conditional = maybe_skipped(piece)
                    for call in walk.nodes(piece, cst.Call):
                        if isinstance(call.func, cst.Attribute) and self_attribute(call.func):
                            component = call.func.attr.value
                            if gated:
                                gated_calls.add(component)
                            elif id(call) not in conditional:
                                ungated_calls.add(component)
                    if gated:
                        continue
                    for attribute in walk.nodes(piece, cst.Attribute):
                        inner = attribute.value
                        if (
                            id(attribute) not in conditional
                            and attribute.attr.value in MODEL_ATTRIBUTES
                            and isinstance(inner, cst.Attribute)
                            and self_attribute(inner)
                            and inner.attr.value not in guards
                        ):
                            reads.setdefault(inner.attr.value, attribute)
                for component, read in reads.items():
                    if component not in gated_calls or component in ungated_calls:
                        continue
                    gates = sorted(self._gates(method, arguments, component))
                    message = self.message.format(
                        component=component, arguments="`/`".join(gates), attr=read.attr.value
                    )
                    self.report(read, message, symbol=component, scope=f"{cls.qualname}.{name}")

    @staticmethod
    def _gates(method: cst.FunctionDef, arguments: set[str], component: str) -> set[str]:
        """The arguments whose None test gates the first call of the component (the outermost such `if`)."""
        found: set[str] = set()
        for statement in walk.own_nodes(method, cst.If):
            if not _tests_argument_for_none(statement.test, arguments):
                continue
            calls = [
                c
                for c in walk.nodes(statement.body, cst.Call)
                if isinstance(c.func, cst.Attribute) and self_attribute(c.func, component)
            ]
            if not calls:
                continue
            for comparison in walk.nodes(statement.test, cst.Comparison):
                if isinstance(comparison.left, cst.Name) and comparison.left.value in arguments:
                    found.add(comparison.left.value)
            if found:
                return found
        return {"an argument"}
