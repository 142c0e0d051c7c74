"""DRB116: a single input is wrapped into a list under an `isinstance` test of another variable."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid


def _wrapped(target: cst.BaseExpression, value: cst.BaseExpression) -> str | None:
    """`x` for `x = [x]`, else None."""
    if not isinstance(target, cst.Name) or not isinstance(value, cst.List) or len(value.elements) != 1:
        return None
    element = value.elements[0]
    if isinstance(element, cst.StarredElement) or not isinstance(element.value, cst.Name):
        return None
    return target.value if element.value.value == target.value else None


def _tested(test: cst.BaseExpression) -> str | None:
    """`y` for `isinstance(y, T)` or `not isinstance(y, T)`, else None."""
    if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
        test = test.expression
    if (
        isinstance(test, cst.Call)
        and isinstance(test.func, cst.Name)
        and test.func.value == "isinstance"
        and len(test.args) == 2
        and isinstance(test.args[0].value, cst.Name)
    ):
        return test.args[0].value.value
    return None


def _single_assign(statement: cst.BaseStatement) -> cst.Assign | None:
    if isinstance(statement, cst.SimpleStatementLine) and len(statement.body) == 1:
        small = statement.body[0]
        if isinstance(small, cst.Assign) and len(small.targets) == 1:
            return small
    return None


class ListWrapTestsOtherVariable(Rule):
    """
    ## What it does
    Checks for a single value wrapped into a one-element list under an `isinstance` test of a *different*
    variable: `image = [image] if isinstance(prompt, PIL.Image.Image) else image`, or an
    `if isinstance(prompt, ...):` block that wraps `image` but leaves `prompt` itself alone.

    ## Why is this bad?
    The wrap normalises a single input into a batch so that the following code can repeat or index it per
    prompt. Testing the type of another variable (a copy-paste slip) means the wrap never runs for the
    input it is meant for: a single init image stays a bare image, the repeat-to-batch step that follows
    (`if isinstance(image, list) and len(image) < batch_size`) is skipped, and the decoder receives one
    image for N embeddings. Diffusers fixed this in the Kandinsky 2.2 combined img2img and inpaint
    pipelines (#9256).

    ## Example
    ```python
    prompt = [prompt] if not isinstance(prompt, (list, tuple)) else prompt
    image = [image] if isinstance(prompt, PIL.Image.Image) else image
    ```

    Use instead:
    ```python
    prompt = [prompt] if not isinstance(prompt, (list, tuple)) else prompt
    image = [image] if isinstance(image, PIL.Image.Image) else image
    ```

    ## Known problems
    Only a one-element list of the assigned name itself is seen (`x = [x]`), under a conditional
    expression or an `if` whose test is a single `isinstance`. A block that wraps the tested variable
    together with its companions (`if isinstance(prompt, str): prompt = [prompt]; images = [images]`) is
    deliberate pairing and is not reported.

    ## References
    - huggingface/diffusers#13656, pattern 1
    - huggingface/diffusers#9256 (Kandinsky 2.2 combined img2img/inpaint tested `prompt` to wrap `image`)
    """

    code = "DRB116"
    pattern = 1
    severity = "error"
    message = (
        "`{wrapped}` is wrapped into a list only when `{tested}` passes the `isinstance` test, so a single "
        "`{wrapped}` is never normalised into a batch; test `isinstance({wrapped}, ...)`."
    )
    REQUIRES_ANY = ("isinstance(",)
    PATHS = ("/diffusers/",)

    VALID = [
        Valid(
            """
            class FooCombinedPipeline(DiffusionPipeline):
                def __call__(self, prompt, image, num_images_per_prompt=1):
                    prompt = [prompt] if not isinstance(prompt, (list, tuple)) else prompt
                    image = [image] if isinstance(image, PIL.Image.Image) else image
                    return self.decoder(image=image, prompt=prompt)
            """
        ),
        Valid(
            # the tested prompt and its companions are wrapped together, deliberately paired
            """
            class FooPipeline(DiffusionPipeline):
                def __call__(self, prompt, input_images=None, content_prompt=None):
                    if isinstance(prompt, str):
                        prompt = [prompt]
                        input_images = [input_images]
                        content_prompt = [content_prompt]
                    return self.run(prompt, input_images, content_prompt)
            """
        ),
        Valid(
            # not the name itself: building a new list from another value
            """
            class FooPipeline(DiffusionPipeline):
                def __call__(self, prompt, image):
                    images = [image] if isinstance(prompt, str) else image
                    if isinstance(prompt, str):
                        image = [prompt]
                    return self.run(prompt, images, image)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class FooImg2ImgCombinedPipeline(DiffusionPipeline):
                def __call__(self, prompt, image, num_images_per_prompt=1):
                    prompt = [prompt] if not isinstance(prompt, (list, tuple)) else prompt
                    image = [image] if isinstance(prompt, PIL.Image.Image) else image
                    if isinstance(image, (list, tuple)) and len(image) < len(prompt):
                        image = image * len(prompt)
                    return self.decoder(image=image, prompt=prompt)
            """,
            message=(
                "`image` is wrapped into a list only when `prompt` passes the `isinstance` test, so a single "
                "`image` is never normalised into a batch; test `isinstance(image, ...)`."
            ),
        ),
        Invalid(
            """
            class FooInpaintCombinedPipeline(DiffusionPipeline):
                def __call__(self, prompt, image, mask_image):
                    if isinstance(prompt, PIL.Image.Image):
                        mask_image = [mask_image]
                    return self.decoder(image=image, mask_image=mask_image, prompt=prompt)
            """
        ),
    ]

    def check(self) -> None:
        module = self.context.module
        for assign in walk.nodes(module, cst.Assign):
            if len(assign.targets) != 1 or not isinstance(assign.value, cst.IfExp):
                continue
            conditional = assign.value
            wrapped = _wrapped(assign.targets[0].target, conditional.body)
            tested = _tested(conditional.test)
            orelse = conditional.orelse
            if wrapped and tested and tested != wrapped and isinstance(orelse, cst.Name) and orelse.value == wrapped:
                self._report(assign, wrapped, tested)
        for block in walk.nodes(module, cst.If):
            tested = _tested(block.test)
            if tested is None or not isinstance(block.body, cst.IndentedBlock):
                continue
            wraps = []
            for statement in block.body.body:
                single = _single_assign(statement)
                wrapped = _wrapped(single.targets[0].target, single.value) if single is not None else None
                if single is not None and wrapped is not None:
                    wraps.append((single, wrapped))
            if not wraps or any(wrapped == tested for _, wrapped in wraps):
                continue  # the tested variable is wrapped too: its companions follow it on purpose
            for assign, wrapped in wraps:
                self._report(assign, wrapped, tested)

    def _report(self, node: cst.CSTNode, wrapped: str, tested: str) -> None:
        self.report(node, self.message.format(wrapped=wrapped, tested=tested), symbol=wrapped)
