"""DRB403: a component listed in `_optional_components` that `__call__` uses on every path, with no `None` check."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import libcst as cst

from analyzers import walk
from analyzers.core import Definition, Invalid, Rule, Valid
from analyzers.flow import maybe_skipped
from analyzers.matchers import DENOISER_ATTRS, call_name, parameters, pipeline_classes, self_attribute, string_value


#: how deep `self.<method>(…)` calls from `__call__` are followed
MAX_DEPTH = 2


def optional_components(cls: cst.ClassDef) -> list[str]:
    """The names listed in the class's own `_optional_components = [...]`."""
    names: list[str] = []
    for statement in cls.body.body:
        if not isinstance(statement, cst.SimpleStatementLine):
            continue
        for small in statement.body:
            if (
                isinstance(small, cst.Assign)
                and len(small.targets) == 1
                and isinstance(small.targets[0].target, cst.Name)
                and small.targets[0].target.value == "_optional_components"
                and isinstance(small.value, (cst.List, cst.Tuple))
            ):
                for element in small.value.elements:
                    value = string_value(element.value)
                    if value:
                        names.append(value)
    return names


def _unconditional_statements(body: Sequence[cst.CSTNode]) -> Iterator[cst.CSTNode]:
    """Statements (and compound headers) that run whenever the block runs: `with`/`for`/`try` bodies are followed,
    `if` bodies are not. A simple statement that leaves the block ends it."""
    for statement in body:
        if isinstance(statement, cst.SimpleStatementLine):
            yield statement
            if any(isinstance(s, (cst.Return, cst.Raise, cst.Break, cst.Continue)) for s in statement.body):
                return
        elif isinstance(statement, cst.If):
            yield statement.test
        elif isinstance(statement, (cst.For, cst.While)):
            yield statement.iter if isinstance(statement, cst.For) else statement.test
            yield from _unconditional_statements(statement.body.body)
        elif isinstance(statement, cst.With):
            for item in statement.items:
                yield item.item
            yield from _unconditional_statements(statement.body.body)
        elif isinstance(statement, cst.Try):
            yield from _unconditional_statements(statement.body.body)


def _checked_components(cls: cst.ClassDef) -> set[str]:
    """Components the class checks anywhere: `self.x` bare in a test (`if self.x is None`, `if self.x:`,
    `a if self.x else b`, `self.x and …`), `getattr(self, "x", …)`, `hasattr(self, "x")`."""
    checked: set[str] = set()
    tests: list[cst.CSTNode] = [n.test for n in walk.nodes(cls, cst.If)]
    tests += [n.test for n in walk.nodes(cls, cst.IfExp)]
    tests += [n.test for n in walk.nodes(cls, cst.While)]
    tests += [n.test for n in walk.nodes(cls, cst.Assert)]
    tests += walk.nodes(cls, cst.BooleanOperation)
    comparisons = walk.nodes(cls, cst.Comparison)
    tests += [c.comparisons[0].comparator for c in comparisons] + [c.left for c in comparisons]
    for test in tests:
        for attribute in walk.nodes(test, cst.Attribute):
            if self_attribute(attribute):
                checked.add(attribute.attr.value)
    for call in walk.nodes(cls, cst.Call):
        if call_name(call) in ("getattr", "hasattr") and len(call.args) >= 2:
            value = string_value(call.args[1].value)
            if value:
                checked.add(value)
    return checked


def sole_denoiser(init: cst.FunctionDef | None) -> set[str]:
    """The denoiser `__init__` takes (`transformer`, `unet`, …) when it takes only one: a pipeline that lists its only
    denoiser as optional means "load me without it to encode or decode", not "generate without it"."""
    if init is None:
        return set()
    denoisers = {param.name.value for param in parameters(init)} & DENOISER_ATTRS
    return denoisers if len(denoisers) == 1 else set()


class OptionalComponentUsedUnguarded(Rule):
    """
    ## What it does
    Checks pipelines for a component listed in `_optional_components` that `__call__` (or a method it calls on
    every path) dereferences (`self.<component>.<attr>`, `self.<component>(…)`) on every path, while the class
    never checks it for `None`.

    ## Why is this bad?
    `_optional_components` tells `from_pretrained` and users that the pipeline works with the component set to
    `None`. If the default call path uses it anyway, loading without it succeeds and generation then fails with
    `AttributeError: 'NoneType' object has no attribute …`, far from the cause.

    ## Example
    ```python
    class MyPipeline(DiffusionPipeline):
        _optional_components = ["vae"]

        def __call__(self, prompt):
            latents = self.denoise(prompt)
            return self.vae.decode(latents / self.vae.config.scaling_factor)
    ```

    Use instead:
    ```python
    class MyPipeline(DiffusionPipeline):
        _optional_components = ["vae"]

        def __call__(self, prompt, output_type="pil"):
            latents = self.denoise(prompt)
            if output_type == "latent" or self.vae is None:
                return latents
            return self.vae.decode(latents / self.vae.config.scaling_factor)
    ```

    ## Known problems
    Only the unconditional part of `__call__` is looked at, and methods of the same class it calls there (two
    levels deep); uses under any `if` are taken as guarded. A class that checks the component for `None`
    anywhere is trusted, even if the check is on another path. Components listed only by a parent class are
    not seen. A pipeline's only denoiser (the one `transformer`, `unet`, … its `__init__` takes) is left alone:
    no pipeline generates without it, so listing it optional lets the pipeline load without it for other work
    (encoding prompts, decoding latents) rather than promising that `__call__` runs without it.

    ## References
    - huggingface/diffusers#13656, pattern 4
    """

    code = "DRB403"
    pattern = 4
    severity = "warning"
    message = (
        "`self.{component}` is listed in `_optional_components` but `{function}` uses it on every path; check "
        "`self.{component} is not None` first, or drop it from `_optional_components`."
    )
    REQUIRES_ANY = ("_optional_components",)
    PATHS = ("/pipelines/",)

    VALID = [
        # the only denoiser listed as optional: the pipeline loads without it to encode or decode (Helios)
        Valid(
            """
            class HeliosPipeline(DiffusionPipeline):
                _optional_components = ["transformer"]

                def __init__(self, tokenizer, text_encoder, vae, scheduler, transformer):
                    self.register_modules(vae=vae, transformer=transformer)

                def __call__(self, prompt):
                    return self.vae.decode(self.transformer(prompt))
            """
        ),
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                _optional_components = ["safety_checker", "image_encoder"]

                def run_safety_checker(self, image):
                    if self.safety_checker is None:
                        return image, None
                    return self.safety_checker(image)

                def encode_image(self, image):
                    return self.image_encoder(image).image_embeds

                def __call__(self, prompt, ip_adapter_image=None):
                    if ip_adapter_image is not None:
                        embeds = self.encode_image(ip_adapter_image)
                    image = self.unet(prompt)
                    image, nsfw = self.run_safety_checker(image)
                    return image
            """
        ),
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                _optional_components = ["transformer", "transformer_2"]

                def __call__(self, prompt):
                    dtype = self.transformer.dtype if self.transformer is not None else self.transformer_2.dtype
                    channels = getattr(self, "transformer_2", None) and self.transformer_2.config.in_channels
                    return self.run(prompt, dtype)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class MyPipeline(DiffusionPipeline):
                _optional_components = ["vae"]

                def __call__(self, prompt):
                    latents = self.unet(prompt)
                    return self.vae.decode(latents)
            """,
            message=(
                "`self.vae` is listed in `_optional_components` but `MyPipeline.__call__` uses it on every path; "
                "check `self.vae is not None` first, or drop it from `_optional_components`."
            ),
        ),
        # of two denoisers, either may be missing: the other one must then do the work
        Invalid(
            """
            class MyPipeline(DiffusionPipeline):
                _optional_components = ["transformer_2"]

                def __init__(self, transformer, transformer_2=None):
                    self.register_modules(transformer=transformer, transformer_2=transformer_2)

                def __call__(self, prompt):
                    return self.transformer_2(self.transformer(prompt))
            """,
            message=(
                "`self.transformer_2` is listed in `_optional_components` but `MyPipeline.__call__` uses it on every "
                "path; check `self.transformer_2 is not None` first, or drop it from `_optional_components`."
            ),
        ),
        Invalid(
            """
            class MyPipeline(DiffusionPipeline):
                _optional_components = ["watermarker"]

                def postprocess(self, image):
                    for i in range(2):
                        image = self.watermarker(image)
                    return image

                def __call__(self, prompt):
                    image = self.unet(prompt)
                    with self.progress_bar(total=1):
                        image = self.postprocess(image)
                    return image
            """,
            message=(
                "`self.watermarker` is listed in `_optional_components` but `MyPipeline.postprocess` uses it on "
                "every path; check `self.watermarker is not None` first, or drop it from `_optional_components`."
            ),
        ),
    ]

    def check(self) -> None:
        for cls in pipeline_classes(self.context):
            node = cst.ensure_type(cls.node, cst.ClassDef)
            optional = set(optional_components(node))
            if not optional:
                continue
            optional -= _checked_components(node)
            methods = self.context.methods(cls)
            optional -= sole_denoiser(methods.get("__init__"))
            if not optional or "__call__" not in methods:
                continue
            reported: set[str] = set()
            self._walk(cls, methods, "__call__", optional, reported, depth=0, seen=set())

    def _walk(
        self,
        cls: Definition,
        methods: dict[str, cst.FunctionDef],
        name: str,
        optional: set[str],
        reported: set[str],
        depth: int,
        seen: set[str],
    ) -> None:
        seen.add(name)
        function = methods[name]
        scope = f"{cls.qualname}.{name}"
        for statement in _unconditional_statements(function.body.body):
            conditional = maybe_skipped(statement, nested_defs=True)
            for attribute in walk.nodes(statement, cst.Attribute):
                if id(attribute) in conditional:
                    continue
                inner = attribute.value
                if isinstance(inner, cst.Attribute) and self_attribute(inner) and inner.attr.value in optional:
                    # self.<component>.<attr>
                    component = inner.attr.value
                    if component not in reported:
                        reported.add(component)
                        self.report(
                            attribute,
                            self.message.format(component=component, function=scope),
                            symbol=component,
                            scope=scope,
                        )
            for call in walk.nodes(statement, cst.Call):
                func = call.func
                if id(call) in conditional or not isinstance(func, cst.Attribute) or not self_attribute(func):
                    continue
                attr = func.attr.value
                if attr in optional and attr not in reported:  # self.<component>(…)
                    reported.add(attr)
                    self.report(call, self.message.format(component=attr, function=scope), symbol=attr, scope=scope)
                elif attr in methods and attr not in seen and depth < MAX_DEPTH:
                    self._walk(cls, methods, attr, optional, reported, depth + 1, seen)
