"""DRB705: two list arguments of `__call__` are zipped, silently truncated to the shorter, and never compared."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import call_name, parameters, pipeline_classes


def _aliases(function: cst.FunctionDef) -> dict[str, str]:
    """Local names bound to another name: `a = x`, `a, b = x, y` (the last binding wins)."""
    found: dict[str, str] = {}
    for assign in walk.own_nodes(function, cst.Assign):
        if len(assign.targets) != 1:
            continue
        target, value = assign.targets[0].target, assign.value
        if isinstance(target, cst.Name) and isinstance(value, cst.Name):
            found[target.value] = value.value
        elif isinstance(target, (cst.Tuple, cst.List)) and isinstance(value, (cst.Tuple, cst.List)):
            for left, right in zip(target.elements, value.elements, strict=False):
                if isinstance(left.value, cst.Name) and isinstance(right.value, cst.Name):
                    found[left.value.value] = right.value.value
    return found


def _lengths_compared(functions: list[cst.FunctionDef]) -> set[str]:
    """Names whose `len(...)` appears in an `if`/`elif`/`assert` test of `functions`."""
    found: set[str] = set()
    for function in functions:
        tests = [n.test for n in walk.own_nodes(function, cst.If)]
        tests += [n.test for n in walk.own_nodes(function, cst.Assert)]
        for test in tests:
            for call in walk.nodes(test, cst.Call):
                if call_name(call) == "len" and call.args and isinstance(call.args[0].value, cst.Name):
                    found.add(call.args[0].value.value)
    return found


class ParallelArgumentsZippedUnchecked(Rule):
    """
    ## What it does
    Checks for pipelines that `zip(...)` two or more arguments of `__call__` (directly, through a helper
    that takes them under the same names, or through local aliases) while neither `check_inputs` nor
    `__call__` nor the helper compares their lengths.

    ## Why is this bad?
    `zip` stops at the shortest input. Five grounding phrases with four grounding images, or three
    control images with two scales, are not rejected: the extra items are dropped without a word, and
    the user gets an image conditioned on less than they asked for. A length check turns this into an
    actionable error before any model runs.

    ## Example
    ```python
    def check_inputs(self, prompt, boxes, phrases):
        if len(boxes) != len(phrases):
            raise ValueError("`boxes` and `phrases` must have the same length")


    def encode_grounding(self, phrases, images):
        return [self.encode(p, i) for p, i in zip(phrases, images)]
    ```

    Use instead:
    ```python
    def check_inputs(self, prompt, boxes, phrases, images):
        if len(boxes) != len(phrases):
            raise ValueError("`boxes` and `phrases` must have the same length")
        if images is not None and len(images) != len(phrases):
            raise ValueError("`images` and `phrases` must have the same length")
    ```

    ## Known problems
    Only names are followed, not expressions (`zip(a[0], b)`), and a `len(...)` of each name anywhere in a
    test of `check_inputs`, `__call__` or the zipping method counts as the comparison. `zip(..., strict=True)`
    is accepted.

    ## References
    - huggingface/diffusers#13656, pattern 7
    - huggingface/diffusers#10176 (StableDiffusionGLIGENTextImagePipeline zipped `gligen_phrases` with
      `gligen_images` unchecked; the fix validates their lengths)
    """

    code = "DRB705"
    pattern = 7
    severity = "warning"
    message = (
        "`zip({names})` silently drops items when these `__call__` arguments differ in length, and nothing "
        "compares them; raise a `ValueError` in `check_inputs` when their lengths differ."
    )
    REQUIRES_ANY = ("zip(",)
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            class GroundedPipeline(DiffusionPipeline):
                def check_inputs(self, prompt, phrases, images):
                    if images is not None and len(images) != len(phrases):
                        raise ValueError("`images` and `phrases` must have the same length")

                def encode(self, phrases, images):
                    return [self.encoder(p, i) for p, i in zip(phrases, images)]

                def strict(self, boxes, labels):
                    return list(zip(boxes, labels, strict=True))

                def __call__(self, prompt, phrases, images=None, boxes=None, labels=None):
                    self.check_inputs(prompt, phrases, images)
                    steps = [t for t, _ in zip(self.scheduler.timesteps, range(10))]
                    return self.encode(phrases, images), self.strict(boxes, labels), steps
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class GroundedPipeline(DiffusionPipeline):
                def check_inputs(self, prompt, grounding_boxes, grounding_labels):
                    if len(grounding_boxes) != len(grounding_labels):
                        raise ValueError("`grounding_boxes` and `grounding_labels` must have the same length")

                def build_grounding(self, grounding_labels, grounding_crops, device):
                    labels, crops = grounding_labels, grounding_crops
                    crops = [None] * len(labels) if crops is None else crops
                    return [self.embed(label, crop, device) for label, crop in zip(labels, crops)]

                def __call__(self, prompt, grounding_boxes, grounding_labels, grounding_crops=None):
                    self.check_inputs(prompt, grounding_boxes, grounding_labels)
                    return self.build_grounding(grounding_labels, grounding_crops, self._execution_device)
            """,
            message=(
                "`zip(grounding_labels, grounding_crops)` silently drops items when these `__call__` arguments "
                "differ in length, and nothing compares them; raise a `ValueError` in `check_inputs` when their "
                "lengths differ."
            ),
        ),
    ]

    def check(self) -> None:
        for cls in pipeline_classes(self.context):
            methods = self.context.methods(cls)
            call = methods.get("__call__")
            if call is None:
                continue
            call_params = {p.name.value for p in parameters(call)} - {"self"}
            checks = [m for m in (methods.get("check_inputs"), call) if m is not None]
            for method in methods.values():
                own = {p.name.value for p in parameters(method)}
                aliases = _aliases(method)
                compared: set[str] | None = None
                for zipped in walk.own_nodes(method, cst.Call):
                    if call_name(zipped) != "zip" or any(arg.keyword is not None for arg in zipped.args):
                        continue
                    names: list[str] = []
                    for arg in zipped.args:
                        if isinstance(arg.value, cst.Name):
                            resolved = aliases.get(arg.value.value, arg.value.value)
                            if (
                                resolved in call_params
                                and (resolved in own or method is call)
                                and resolved not in names
                            ):
                                names.append(resolved)
                    if len(names) < 2:
                        continue
                    if compared is None:
                        compared = _lengths_compared([*checks, method])
                        compared |= {target for alias, target in aliases.items() if alias in compared}
                    if sum(n in compared for n in names) >= 2:
                        continue
                    symbol = "/".join(names)
                    self.report(zipped, self.message.format(names=", ".join(names)), symbol=symbol)
