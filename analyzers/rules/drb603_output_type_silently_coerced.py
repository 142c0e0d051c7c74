"""DRB603: `output_type` values that fall through, unvalidated, into a NumPy conversion meant for another value."""

from __future__ import annotations

import re
from collections.abc import Callable

import libcst as cst

from analyzers import walk
from analyzers.core import Definition, Invalid, Rule, Valid
from analyzers.flow import DEAD, FlowWalker, function_returns, has_yield
from analyzers.matchers import calls, names_read, parameters, pipeline_methods, self_attribute, string_value


_QUOTED = re.compile(r"""[`"']{1,2}(\w+)[`"']{1,2}""")
#: the variables that certainly hold a NumPy conversion of the result
_Converted = frozenset[str]
#: the effect of a simple statement on `_Converted`, for one `output_type` value
_Assigned = Callable[[cst.BaseSmallStatement, str, _Converted], _Converted]


def _reads_output_type(node: cst.CSTNode) -> bool:
    return any(name.value == "output_type" for name in names_read(node))


def _literals(node: cst.BaseExpression) -> list[str] | None:
    """The strings of a literal string, or of a list/tuple/set of literal strings; None otherwise."""
    single = string_value(node)
    if single is not None:
        return [single]
    if isinstance(node, (cst.List, cst.Tuple, cst.Set)):
        values = [string_value(element.value) for element in node.elements]
        strings = [v for v in values if v is not None]
        return strings if len(strings) == len(values) else None
    return None


def evaluate(test: cst.BaseExpression, value: str) -> bool | None:
    """The truth of `test` when `output_type == value`, or None when it depends on something else."""
    if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
        inner = evaluate(test.expression, value)
        return None if inner is None else not inner
    if isinstance(test, cst.BooleanOperation):
        left_truth, right_truth = evaluate(test.left, value), evaluate(test.right, value)
        if isinstance(test.operator, cst.And):
            if left_truth is False or right_truth is False:
                return False
            return True if left_truth is True and right_truth is True else None
        if left_truth is True or right_truth is True:
            return True
        return False if left_truth is False and right_truth is False else None
    if isinstance(test, cst.Comparison) and len(test.comparisons) == 1:
        target = test.comparisons[0]
        left, right = test.left, target.comparator
        if isinstance(right, cst.Name) and right.value == "output_type":
            left, right = right, left
        if not (isinstance(left, cst.Name) and left.value == "output_type"):
            return None
        options = _literals(right)
        if options is None:
            return None
        if isinstance(target.operator, (cst.Equal, cst.Is, cst.In)):
            return value in options
        if isinstance(target.operator, (cst.NotEqual, cst.IsNot, cst.NotIn)):
            return value not in options
    return None


def compared_values(function: cst.FunctionDef) -> set[str]:
    """Every string literal that `output_type` is compared with in `function`."""
    found: set[str] = set()
    for comparison in walk.nodes(function.body, cst.Comparison):
        if _reads_output_type(comparison):
            for node in walk.nodes(comparison, cst.SimpleString):
                text = string_value(node)
                if text is not None:
                    found.add(text)
    return found


def documented_values(function: cst.FunctionDef) -> set[str]:
    """Quoted values in the `output_type (...)` entry of the docstring of `function`."""
    doc = function.get_docstring(clean=True) or ""
    match = re.search(r"^\s*output_type \(.*?(?=^\s*\w+ \(|^\s*(Returns|Examples?):|\Z)", doc, re.S | re.M)
    if not match:
        return set()
    entry = match.group(0).split(":", 1)[-1]
    return {word for word in _QUOTED.findall(entry) if word.islower() and len(word) <= 8}


#: the `output_type` values of the shared output contract (`VaeImageProcessor.postprocess`, `output_type="latent"`)
STANDARD = ("latent", "pil", "np", "pt")


def near_miss(text: str) -> str | None:
    """The standard value that `text` misspells (`"latents"`, `"PIL"`), else None."""
    for value in STANDARD:
        if text != value and (text == value + "s" or text.lower() == value):
            return value
    return None


def misspelled_tests(function: cst.FunctionDef) -> list[tuple[cst.Comparison, str, str]]:
    """(comparison, literal, standard value) for each test of `output_type` against a misspelling of a standard
    value that `function` never compares `output_type` with itself."""
    compared = compared_values(function)
    found = []
    for comparison in walk.nodes(function.body, cst.Comparison):
        if len(comparison.comparisons) != 1:
            continue
        left, right = comparison.left, comparison.comparisons[0].comparator
        if isinstance(right, cst.Name) and right.value == "output_type":
            left, right = right, left
        if not (isinstance(left, cst.Name) and left.value == "output_type"):
            continue
        for text in _literals(right) or ():
            value = near_miss(text)
            if value is not None and value not in compared:
                found.append((comparison, text, value))
                break
    return found


class _NumpyFlow(FlowWalker[_Converted]):
    """State: the variables that certainly hold a NumPy conversion of the result, for one `output_type`."""

    def __init__(self, on_return: Callable[[cst.Return, _Converted], None], value: str, assigned: _Assigned) -> None:
        super().__init__(on_return)
        self.value = value
        self.assigned = assigned

    def effect(self, statement: cst.BaseSmallStatement, state: _Converted) -> _Converted:
        return self.assigned(statement, self.value, state)

    def split(self, test: cst.BaseExpression, state: _Converted) -> tuple[_Converted, _Converted]:
        truth = evaluate(test, self.value)
        return (DEAD if truth is False else state), (DEAD if truth is True else state)

    def join(self, a: _Converted, b: _Converted) -> _Converted:
        return a & b


class OutputTypeSilentlyCoerced(Rule):
    """
    ## What it does
    Checks for a pipeline `__call__` that converts its result to NumPy for every `output_type` it does not
    test for, without validating `output_type`, when a value the pipeline supports lands in that
    conversion. A value is supported when the `output_type` entry of the `__call__` docstring quotes it
    (`"latent"`, `"pt"`), and `"pt"` always: the result is a `torch.Tensor` right before `.numpy()`, and
    `"pt"` is part of the shared output contract. The rule only looks at a `__call__` that neither hands
    `output_type` to a call (`image_processor.postprocess`, `check_inputs`) nor raises under a test of it.
    It also checks for a `__call__` that tests `output_type` against a misspelling of a standard value
    (`"latents"`, `"PIL"`: the value plus `s`, or in another case) and never against the standard value.

    ## Why is this bad?
    `output_type="pt"` or `output_type="latent"` is part of the diffusers output contract
    (`VaeImageProcessor.postprocess` supports `pil`, `np`, `pt` and `latent`). When `if output_type ==
    "pil": ...` is the only test, every other value silently becomes a NumPy array: the caller asked for
    tensors or latents and gets decoded NumPy images, with no error. Meta issue #13656 lists this under
    "Output and Cleanup Contracts Diverge". Likewise, a pipeline that skips decoding only for
    `output_type == "latents"` decodes and post-processes `output_type="latent"`, the value every other
    pipeline (and every caller chaining pipelines) uses (Latte, #10558).

    ## Example
    ```python
    class MyPipeline(DiffusionPipeline):
        def __call__(self, batch_size=1, output_type="pil", return_dict=True):
            image = self.denoise(batch_size)
            image = image.cpu().permute(0, 2, 3, 1).numpy()
            if output_type == "pil":
                image = self.numpy_to_pil(image)
            return ImagePipelineOutput(images=image)
    ```

    Use instead:
    ```python
    class MyPipeline(DiffusionPipeline):
        def __call__(self, batch_size=1, output_type="pil", return_dict=True):
            if output_type not in ("pil", "np", "pt"):
                raise ValueError(f"Unsupported output_type {output_type!r}")
            image = self.denoise(batch_size)
            if output_type != "pt":
                image = image.cpu().permute(0, 2, 3, 1).numpy()
                if output_type == "pil":
                    image = self.numpy_to_pil(image)
            return ImagePipelineOutput(images=image)
    ```

    ## Known problems
    Only conversions to NumPy are recognised: a `.numpy()` call, or a call of a method of the same class
    that returns through `.numpy()` (`self.decode_latents(...)`), assigned to a variable that a `return`
    returns. Values are followed through `==`, `!=`, `in`, `not in`, `not`, `and`, `or` tests of
    `output_type`; a branch that depends on anything else is taken on both sides and the conversion must
    happen on both. A pipeline whose documented values all land where they should (DDPM in 0.42.1:
    `"pil"`, `"np"`, `"pt"`) is not reported even though an unknown value still becomes NumPy.
    Misspellings are only the standard values (`"latent"`, `"pil"`, `"np"`, `"pt"`) with a trailing `s` or in
    another case; a `__call__` that also tests the standard value (a deprecation shim mapping `"latents"` onto
    `"latent"`) is not reported.

    ## References
    - huggingface/diffusers#13656, pattern 6
    - huggingface/diffusers#13649 (DDPM: any `output_type` other than `"pil"` silently became NumPy)
    - huggingface/diffusers#13671 (fix proposal: validate `output_type`, support `"pt"`)
    - huggingface/diffusers#10558 (Latte skipped decoding only for `"latents"`)
    """

    code = "DRB603"
    pattern = 6
    severity = "error"
    message = (
        "`output_type={values}` is not tested for and silently falls through to the NumPy conversion; handle "
        "each supported value and raise a `ValueError` for the rest, or pass `output_type` to "
        "`image_processor.postprocess`."
    )
    message_spelling = (
        '`output_type` is tested against `"{text}"`, but the library value is `"{value}"`, which this `__call__` '
        'never tests for: `output_type="{value}"` silently takes the other branch; test `"{value}"` (and map '
        '`"{text}"` onto it with a deprecation if it was accepted).'
    )
    REQUIRES_ANY = ("output_type",)
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            # a deprecation shim maps the old spelling onto the standard value, which is then tested
            """
            class LattePipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="pil", return_dict=True):
                    latents = self.denoise(prompt)
                    if output_type == "latents":
                        deprecate("output_type_latents", "1.0.0", "use output_type='latent'")
                        output_type = "latent"
                    if not output_type == "latent":
                        video = self.video_processor.postprocess_video(self.decode_latents(latents), output_type=output_type)
                    else:
                        video = latents
                    return (video,)
            """
        ),
        Valid(
            # the 0.42.1 DDPM shape: "pil", "np" and "pt" are all documented and all land where they should
            """
            class DDPMPipeline(DiffusionPipeline):
                def __call__(self, batch_size=1, output_type="pil", return_dict=True):
                    '''
                    Args:
                        output_type (`str`, *optional*, defaults to `"pil"`):
                            Choose between `"pil"` (`PIL.Image`), `"np"` (`np.array`) or `"pt"` (`torch.Tensor`).
                    '''
                    image = self.unet(batch_size)
                    if output_type != "pt":
                        image = image.cpu().permute(0, 2, 3, 1).numpy()
                        if output_type == "pil":
                            image = self.numpy_to_pil(image)
                    if not return_dict:
                        return (image,)
                    return ImagePipelineOutput(images=image)
            """
        ),
        Valid(
            # validation before the fall-through
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, output_type="pil"):
                    if output_type not in ["pil", "np"]:
                        raise ValueError(f"unsupported {output_type}")
                    latents = self.unet()
                    image = self.vae.decode(latents).cpu().numpy()
                    if output_type == "pil":
                        image = self.numpy_to_pil(image)
                    return ImagePipelineOutput(images=image)
            """
        ),
        Valid(
            # the shared postprocess validates and converts
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, output_type="pil"):
                    latents = self.unet()
                    image = self.vae.decode(latents)
                    image = self.image_processor.postprocess(image, output_type=output_type)
                    return ImagePipelineOutput(images=image)
            """
        ),
        Valid(
            # the fall-through keeps the tensor: nothing is converted to another format
            """
            class MyAudioPipeline(DiffusionPipeline):
                def __call__(self, output_type="pt"):
                    audio = self.transformer()
                    if output_type == "np":
                        audio = audio.cpu().numpy()
                    return AudioPipelineOutput(audios=audio)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class LattePipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="pil", return_dict=True):
                    latents = self.denoise(prompt)
                    if not output_type == "latents":
                        video = self.video_processor.postprocess_video(self.decode_latents(latents), output_type=output_type)
                    else:
                        video = latents
                    return (video,)
            """,
            message=(
                '`output_type` is tested against `"latents"`, but the library value is `"latent"`, which this '
                '`__call__` never tests for: `output_type="latent"` silently takes the other branch; test '
                '`"latent"` (and map `"latents"` onto it with a deprecation if it was accepted).'
            ),
        ),
        Invalid(
            # the 0.35.2 DDPM shape
            """
            class DDPMPipeline(DiffusionPipeline):
                def __call__(self, batch_size=1, output_type="pil", return_dict=True):
                    image = self.unet(batch_size)
                    image = (image / 2 + 0.5).clamp(0, 1)
                    image = image.cpu().permute(0, 2, 3, 1).numpy()
                    if output_type == "pil":
                        image = self.numpy_to_pil(image)
                    if not return_dict:
                        return (image,)
                    return ImagePipelineOutput(images=image)
            """,
            message=(
                '`output_type="pt"` is not tested for and silently falls through to the NumPy conversion; '
                "handle each supported value and raise a `ValueError` for the rest, or pass `output_type` to "
                "`image_processor.postprocess`."
            ),
        ),
        Invalid(
            # `decode_latents` returns NumPy: the documented "latent" is decoded anyway
            """
            class MyLDMPipeline(DiffusionPipeline):
                def decode_latents(self, latents):
                    image = self.vae.decode(latents).sample
                    image = image.cpu().permute(0, 2, 3, 1).float().numpy()
                    return image

                def __call__(self, prompt, output_type="pil", return_dict=True):
                    '''
                    Args:
                        output_type (`str`, *optional*, defaults to `"pil"`):
                            `"pil"`, `"np"`, `"pt"` or `"latent"`.
                        return_dict (`bool`, *optional*, defaults to `True`):
                            Whether to return an output object.
                    '''
                    latents = self.unet(prompt)
                    if output_type == "pt":
                        image = self.vae.decode(latents).sample
                    else:
                        image = self.decode_latents(latents)
                        if output_type == "pil":
                            image = self.numpy_to_pil(image)
                    return ImagePipelineOutput(images=image)
            """,
            message=(
                '`output_type="latent"` is not tested for and silently falls through to the NumPy conversion; '
                "handle each supported value and raise a `ValueError` for the rest, or pass `output_type` to "
                "`image_processor.postprocess`."
            ),
        ),
    ]

    def check(self) -> None:
        for cls, method in pipeline_methods(self.context, "__call__"):
            if any(param.name.value == "output_type" for param in parameters(method)):
                self._check_call(cls, method)
                self._check_spelling(cls, method)

    def _check_spelling(self, cls: Definition, function: cst.FunctionDef) -> None:
        for comparison, text, value in misspelled_tests(function)[:1]:
            message = self.message_spelling.format(text=text, value=value)
            self.report(comparison, message, symbol="output_type", scope=f"{cls.qualname}.__call__")

    def _check_call(self, cls: Definition, function: cst.FunctionDef) -> None:
        if not isinstance(function.body, cst.IndentedBlock) or has_yield(function):
            return
        if self._validated_or_delegated(function):
            return
        returns = function_returns(function)
        returned = {name.value for node in returns if node.value is not None for name in names_read(node.value)}
        numpy_methods = self._numpy_methods(cls)

        def assigned(statement: cst.BaseSmallStatement, value: str, state: _Converted) -> _Converted:
            """A conversion marks its target; a fresh value (one that does not read the target) unmarks it."""
            if not isinstance(statement, (cst.Assign, cst.AnnAssign)) or statement.value is None:
                return state
            targets = statement.targets if isinstance(statement, cst.Assign) else [statement]
            names = {n.value for t in targets for n in names_read(t.target)} & returned
            if not names:
                return state
            if self._converts(statement.value, value, numpy_methods):
                return state | names
            read = {n.value for n in names_read(statement.value)}
            return frozenset(n for n in state if n not in names or n in read)

        candidates = documented_values(function) | {"pt"}
        candidates -= compared_values(function) | {"np"}
        coerced = [value for value in sorted(candidates) if self._lands_in_numpy(function, value, assigned)]
        if coerced:
            values = ", ".join(f'"{v}"' for v in coerced)
            self.report(
                function.name,
                self.message.format(values=values),
                symbol="output_type",
                scope=f"{cls.qualname}.__call__",
            )

    @staticmethod
    def _lands_in_numpy(function: cst.FunctionDef, value: str, assigned: _Assigned) -> bool:
        """Whether, for `output_type == value`, some `return` returns a variable that holds a NumPy conversion."""
        hits: list[bool] = []

        def on_return(node: cst.Return, state: _Converted) -> None:
            hits.append(node.value is not None and any(n.value in state for n in names_read(node.value)))

        _NumpyFlow(on_return, value, assigned).block(function.body.body, frozenset())
        return any(hits)

    @staticmethod
    def _validated_or_delegated(function: cst.FunctionDef) -> bool:
        for call in calls(function.body):
            if any(_reads_output_type(arg.value) for arg in call.args):
                return True
        for assertion in walk.nodes(function.body, cst.Assert):
            if _reads_output_type(assertion.test):
                return True
        for test in walk.nodes(function.body, cst.If):
            if _reads_output_type(test.test) and walk.nodes(test.body, cst.Raise):
                return True
        return False

    def _numpy_methods(self, cls: Definition) -> set[str]:
        """Methods of `cls` whose `return` goes through `.numpy()` (`decode_latents`)."""
        found: set[str] = set()
        for name, method in self.context.methods(cls).items():
            if name == "__call__":
                continue
            for node in function_returns(method):
                if node.value is not None and self._has_numpy_call(node.value):
                    found.add(name)
            # `image = ....numpy(); return image`
            if name not in found:
                for assign in walk.nodes(method.body, cst.Assign):
                    if self._has_numpy_call(assign.value) and any(
                        isinstance(r.value, cst.Name)
                        and any(
                            isinstance(t.target, cst.Name) and t.target.value == r.value.value for t in assign.targets
                        )
                        for r in function_returns(method)
                    ):
                        found.add(name)
        return found

    @staticmethod
    def _has_numpy_call(node: cst.CSTNode) -> bool:
        return any(
            isinstance(c.func, cst.Attribute) and c.func.attr.value == "numpy" and not c.args for c in calls(node)
        )

    def _converts(self, expr: cst.BaseExpression, value: str, numpy_methods: set[str]) -> bool:
        if isinstance(expr, cst.IfExp):
            truth = evaluate(expr.test, value)
            if truth is None:
                return self._converts(expr.body, value, numpy_methods) and self._converts(
                    expr.orelse, value, numpy_methods
                )
            return self._converts(expr.body if truth else expr.orelse, value, numpy_methods)
        if self._has_numpy_call(expr):
            return True
        return any(
            isinstance(call.func, cst.Attribute)
            and self_attribute(call.func)
            and call.func.attr.value in numpy_methods
            for call in calls(expr)
        )
