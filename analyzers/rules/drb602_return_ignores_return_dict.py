"""DRB602: a pipeline `__call__` that returns an output object on a path where `return_dict=False` wants a tuple."""

from __future__ import annotations

import libcst as cst

from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.fixes import Proposal, insert_before, statement_line
from analyzers.flow import (
    FlowWalker,
    function_returns,
    has_yield,
    returned_symbol,
)
from analyzers.matchers import names_read, parameters, pipeline_classes


#: what the path knows about `return_dict`: True, False, or None (unknown)
Known = bool | None


def _is_return_dict(node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.Name) and node.value == "return_dict"


def _literal_bool(node: cst.BaseExpression) -> bool | None:
    if isinstance(node, cst.Name) and node.value in ("True", "False"):
        return node.value == "True"
    return None


def _truth(test: cst.BaseExpression) -> tuple[Known, Known] | None:
    """(value of `return_dict` when `test` is true, when it is false), or None if `test` says nothing about it."""
    if _is_return_dict(test):
        return True, False
    if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
        inner = _truth(test.expression)
        return None if inner is None else (inner[1], inner[0])
    if isinstance(test, cst.Comparison) and len(test.comparisons) == 1 and _is_return_dict(test.left):
        target = test.comparisons[0]
        value = _literal_bool(target.comparator)
        if value is None:
            return None
        if isinstance(target.operator, (cst.Is, cst.Equal)):
            return value, not value
        if isinstance(target.operator, (cst.IsNot, cst.NotEqual)):
            return not value, value
    return None


def _split(test: cst.BaseExpression) -> tuple[Known, Known]:
    """What the true and the false side of `test` know about `return_dict` (None: nothing)."""
    direct = _truth(test)
    if direct is not None:
        return direct
    if isinstance(test, cst.BooleanOperation):
        left, right = _split(test.left), _split(test.right)
        if isinstance(test.operator, cst.And):  # true side: both hold
            return (left[0] if left[0] is not None else right[0]), None
        if isinstance(test.operator, cst.Or):  # false side: both are false
            return None, (left[1] if left[1] is not None else right[1])
    return None, None


class _ReturnDictFlow(FlowWalker[Known]):
    """State: the value `return_dict` is known to have on the path (None: unknown)."""

    def effect(self, statement: cst.BaseSmallStatement, state: Known) -> Known:
        if isinstance(statement, (cst.Assign, cst.AugAssign, cst.AnnAssign)):
            targets = statement.targets if isinstance(statement, cst.Assign) else [statement]
            for target in targets:
                if any(name.value == "return_dict" for name in names_read(target.target)):
                    return None
        return state

    def split(self, test: cst.BaseExpression, state: Known) -> tuple[Known, Known]:
        yes, no = _split(test)
        return (state if yes is None else yes), (state if no is None else no)

    def join(self, a: Known, b: Known) -> Known:
        return a if a == b else None


def _output_class(node: cst.Return) -> str | None:
    """`StableDiffusionXLPipelineOutput` for `return StableDiffusionXLPipelineOutput(...)`, else None."""
    value = node.value
    if isinstance(value, cst.Call):
        name = dotted_name(value.func)
        if name and name.rpartition(".")[2].endswith("Output"):
            return name.rpartition(".")[2]
    return None


def _tuple_form(node: cst.Return) -> str | None:
    """`(latents,)` for `return XOutput(images=latents)`: the tuple `return_dict=False` asks for, when it is certain
    what it holds: one argument, or positional ones only (their order is the output's), each a name or `None`."""
    call = cst.ensure_type(node.value, cst.Call)
    args = call.args
    if not args or any(arg.star for arg in args) or (len(args) > 1 and any(arg.keyword for arg in args)):
        return None
    names = [dotted_name(arg.value) for arg in args]
    if any(name is None for name in names):
        return None
    return f"({', '.join(str(name) for name in names)},)" if len(names) == 1 else f"({', '.join(map(str, names))})"


class ReturnIgnoresReturnDict(Rule):
    """
    ## What it does
    Checks for a pipeline `__call__` that takes `return_dict` and returns an output object
    (`XPipelineOutput(...)`) on a path where `return_dict` may be `False`, typically an early
    `output_type == "latent"` return placed before the `if not return_dict: return (image,)` check. Other
    methods of the pipeline that take `return_dict` (a helper that builds the result, such as
    `_retrieve_video_frames(latents, output_type, return_dict)`) are held to the same contract.

    ## Why is this bad?
    `return_dict=False` promises a plain tuple. Code written against that contract (`image, = pipe(...,
    return_dict=False)`, `pipe(...)[0]` on a tuple of arrays, pipelines that chain other pipelines) gets an
    output dataclass on one path and a tuple on the others. Meta issue #13656 lists this under "Output and
    Cleanup Contracts Diverge": return types become non-standard and downstream code cannot rely on the
    pipeline output contract.

    ## Example
    ```python
    class MyPipeline(DiffusionPipeline):
        def __call__(self, prompt, output_type="pil", return_dict=True):
            latents = self.denoise(prompt)
            if output_type == "latent":
                return MyPipelineOutput(images=latents)
            image = self.decode(latents)
            if not return_dict:
                return (image,)
            return MyPipelineOutput(images=image)
    ```

    Use instead:
    ```python
    class MyPipeline(DiffusionPipeline):
        def __call__(self, prompt, output_type="pil", return_dict=True):
            latents = self.denoise(prompt)
            image = latents if output_type == "latent" else self.decode(latents)
            if not return_dict:
                return (image,)
            return MyPipelineOutput(images=image)
    ```

    ## Known problems
    Only returns of a call to a class whose name ends in `Output` are checked; an early `return latents`
    (neither tuple nor output object) is not reported. What the path knows about `return_dict` comes from
    `if return_dict`, `if not return_dict`, `return_dict is False`/`== False` tests and `and`/`or` of them;
    a return whose own expression reads `return_dict` is trusted. A value stored in another variable
    (`as_dict = return_dict`) is not followed.

    ## References
    - huggingface/diffusers#13656, pattern 6
    - huggingface/diffusers#13610 (SDXL inpaint / InstructPix2Pix latent early return ignores `return_dict`)
    - huggingface/diffusers#14680 (proposed fix)
    """

    code = "DRB602"
    pattern = 6
    severity = "error"
    message = (
        "`{returned}` is returned even when `return_dict=False` asks for a tuple; check `return_dict` on this "
        "path too and return a tuple when it is `False`."
    )
    REQUIRES_ANY = ("return_dict",)
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="pil", return_dict=True):
                    latents = self.unet(prompt)
                    if output_type == "latent":
                        if not return_dict:
                            return (latents,)
                        return MyPipelineOutput(images=latents)
                    image = self.vae.decode(latents)
                    if return_dict is False:
                        return (image,)
                    return MyPipelineOutput(images=image)
            """
        ),
        Valid(
            # the return expression decides itself; `return_dict and ...` narrows the true side
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="pil", return_dict=True):
                    latents = self.unet(prompt)
                    if return_dict and output_type == "latent":
                        return MyPipelineOutput(images=latents)
                    image = self.vae.decode(latents)
                    return MyPipelineOutput(images=image) if return_dict else (image,)
            """
        ),
        Valid(
            # no `return_dict` parameter: always returning the output object is the contract
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="pil"):
                    latents = self.unet(prompt)
                    if output_type == "latent":
                        return MyPipelineOutput(images=latents)
                    return MyPipelineOutput(images=self.vae.decode(latents))
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class MyXLPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="pil", return_dict=True):
                    latents = self.unet(prompt)
                    if not output_type == "latent":
                        image = self.vae.decode(latents, return_dict=False)[0]
                    else:
                        return StableDiffusionXLPipelineOutput(images=latents)
                    self.maybe_free_model_hooks()
                    if not return_dict:
                        return (image,)
                    return StableDiffusionXLPipelineOutput(images=image)
            """,
            fixed="""
            class MyXLPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="pil", return_dict=True):
                    latents = self.unet(prompt)
                    if not output_type == "latent":
                        image = self.vae.decode(latents, return_dict=False)[0]
                    else:
                        if not return_dict:
                            return (latents,)
                        return StableDiffusionXLPipelineOutput(images=latents)
                    self.maybe_free_model_hooks()
                    if not return_dict:
                        return (image,)
                    return StableDiffusionXLPipelineOutput(images=image)
            """,
            message=(
                "`return StableDiffusionXLPipelineOutput` is returned even when `return_dict=False` asks for a "
                "tuple; check `return_dict` on this path too and return a tuple when it is `False`."
            ),
        ),
        Invalid(
            # the tuple is returned only for one branch; the other reaches the output object unchecked
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="pil", return_dict=True):
                    latents = self.unet(prompt)
                    if output_type == "latent":
                        image = latents
                    else:
                        image = self.vae.decode(latents)
                        if not return_dict:
                            return (image,)
                    # the output object
                    return ImagePipelineOutput(images=image)
            """,
            fixed="""
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="pil", return_dict=True):
                    latents = self.unet(prompt)
                    if output_type == "latent":
                        image = latents
                    else:
                        image = self.vae.decode(latents)
                        if not return_dict:
                            return (image,)
                    # the output object
                    if not return_dict:
                        return (image,)
                    return ImagePipelineOutput(images=image)
            """,
            message=(
                "`return ImagePipelineOutput` is returned even when `return_dict=False` asks for a tuple; check "
                "`return_dict` on this path too and return a tuple when it is `False`."
            ),
        ),
        Invalid(
            # the helper that builds the result takes `return_dict` and forgets it on the latent path
            """
            class MyVideoPipeline(DiffusionPipeline):
                def _finish(self, latents, output_type, return_dict):
                    if output_type == "latent":
                        return MyVideoOutput(frames=latents)
                    frames = self.decode(latents)
                    if not return_dict:
                        return (frames,)
                    return MyVideoOutput(frames=frames)

                def __call__(self, prompt, output_type="pil", return_dict=True):
                    latents = self.unet(prompt)
                    return self._finish(latents, output_type, return_dict)
            """,
            fixed="""
            class MyVideoPipeline(DiffusionPipeline):
                def _finish(self, latents, output_type, return_dict):
                    if output_type == "latent":
                        if not return_dict:
                            return (latents,)
                        return MyVideoOutput(frames=latents)
                    frames = self.decode(latents)
                    if not return_dict:
                        return (frames,)
                    return MyVideoOutput(frames=frames)

                def __call__(self, prompt, output_type="pil", return_dict=True):
                    latents = self.unet(prompt)
                    return self._finish(latents, output_type, return_dict)
            """,
            message=(
                "`return MyVideoOutput` is returned even when `return_dict=False` asks for a tuple; check "
                "`return_dict` on this path too and return a tuple when it is `False`."
            ),
        ),
        Invalid(
            # no fix: which field comes first in the tuple is the output class's business, not the call's
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="pil", return_dict=True):
                    latents = self.unet(prompt)
                    if output_type == "latent":
                        return MyPipelineOutput(images=latents, nsfw_content_detected=None)
                    image = self.vae.decode(latents)
                    if not return_dict:
                        return (image, None)
                    return MyPipelineOutput(images=image, nsfw_content_detected=None)
            """,
        ),
    ]

    def check(self) -> None:
        for cls in pipeline_classes(self.context):
            # `__call__`, and the helpers that build its result (`_retrieve_video_frames(latents, output_type,
            # return_dict)`): any method that takes `return_dict` owes the caller the same contract
            for name, method in self.context.methods(cls).items():
                if any(param.name.value == "return_dict" for param in parameters(method)):
                    self._check_call(f"{cls.qualname}.{name}", method)

    def _check_call(self, scope: str, function: cst.FunctionDef) -> None:
        if not isinstance(function.body, cst.IndentedBlock) or has_yield(function):
            return
        if not any(_output_class(node) for node in function_returns(function)):
            return
        wrong: list[cst.Return] = []

        def on_return(node: cst.Return, known: Known) -> None:
            if known is True or _output_class(node) is None:
                return
            if any(name.value == "return_dict" for name in names_read(node)):
                return
            wrong.append(node)

        _ReturnDictFlow(on_return).block(function.body.body, None)
        for node in wrong:
            returned = returned_symbol(node)
            line = statement_line(function.body, node)
            form = _tuple_form(node)
            fix = None
            if line is not None and form is not None:
                code = f"if not return_dict:\n{self.context.module.default_indent}return {form}\n"
                fix = Proposal(
                    f"return `{form}` first when `return_dict` is `False`",
                    (insert_before(line, code, self.context.module),),
                )
            self.report(node, self.message.format(returned=returned), symbol=returned, scope=scope, fix=fix)
