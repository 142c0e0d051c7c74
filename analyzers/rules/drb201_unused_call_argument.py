"""DRB201: a pipeline `__call__` argument that nothing reads, or that only `check_inputs` reads."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import (
    call_name,
    calls,
    names_read,
    names_read_outside,
    parameters,
    pipeline_methods,
    string_value,
)


#: calls that acknowledge an argument on purpose: a deprecation or a warning tells the user it is ignored
ACKNOWLEDGING_CALLS = ("deprecate", "warnings.warn", "logger.warning", "logger.warn", "logger.info")


def callback_tensor_inputs(cls: cst.ClassDef) -> set[str]:
    """The names listed in the class attribute `_callback_tensor_inputs = [...]`."""
    names: set[str] = set()
    for assign in walk.nodes(cls.body, cst.Assign):
        target = assign.targets[0].target if len(assign.targets) == 1 else None
        if isinstance(target, cst.Name) and target.value == "_callback_tensor_inputs":
            for element in walk.nodes(assign.value, cst.SimpleString):
                value = string_value(element)
                if value:
                    names.add(value)
    return names


def _is_check_inputs(call: cst.Call) -> bool:
    return (call_name(call) or "").endswith("check_inputs")


def _only_callback_locals(function: cst.FunctionDef) -> bool:
    """Whether every `locals()` in `function` is subscripted, `locals()[k]`, as the step-callback idiom does."""
    locals_calls = [c for c in calls(function.body) if call_name(c) == "locals" and not c.args]
    subscripted = {id(s.value) for s in walk.nodes(function.body, cst.Subscript) if isinstance(s.value, cst.Call)}
    return all(id(c) in subscripted for c in locals_calls)


class UnusedCallArgument(Rule):
    """
    ## What it does
    Checks for pipeline `__call__` arguments that the body never reads, or reads only to pass them
    to `check_inputs`.

    ## Why is this bad?
    The argument is accepted, documented and perhaps validated, and then silently ignored: the user
    asked for something and got the default. Meta issue #13656 calls this worse than an error, because
    users believe they controlled generation when they did not.

    ## Example
    ```python
    class MyPipeline(DiffusionPipeline):
        def __call__(self, prompt, max_sequence_length=512):
            self.check_inputs(prompt, max_sequence_length=max_sequence_length)
            prompt_embeds = self.encode_prompt(prompt)
            ...
    ```

    Use instead:
    ```python
    class MyPipeline(DiffusionPipeline):
        def __call__(self, prompt, max_sequence_length=512):
            self.check_inputs(prompt, max_sequence_length=max_sequence_length)
            prompt_embeds = self.encode_prompt(prompt, max_sequence_length=max_sequence_length)
            ...
    ```

    ## Known problems
    An argument read only through `locals()` is not seen: the rule takes the step-callback idiom
    `locals()[k]` to read the names of `_callback_tensor_inputs`, and stays silent on any other use of
    `locals()` or `vars()`. An argument that a `deprecate(...)` call or a warning names is taken as
    deliberately ignored.

    ## References
    - huggingface/diffusers#13656, pattern 2
    - huggingface/diffusers#13598 (LLaDA2 `block_length` not passed to the scheduler)
    """

    code = "DRB201"
    pattern = 2
    severity = "error"
    message = "`{arg}` is accepted by `__call__` but never read; pass it on where it takes effect, or deprecate it."
    message_validated = (
        "`{arg}` is only passed to `check_inputs` and never affects generation; pass it on where it takes "
        "effect, or deprecate it."
    )
    REQUIRES_ANY = ("__call__",)

    VALID = [
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, num_images_per_prompt=1, **kwargs):
                    self.check_inputs(prompt)
                    return self.run(prompt, num_images_per_prompt)
            """
        ),
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, callback_steps=None):
                    if callback_steps is not None:
                        deprecate("callback_steps", "1.0.0", "Passing `callback_steps` is deprecated")
                    return self.run(prompt)
            """
        ),
        Valid(
            """
            class NotAPipeline:
                def __call__(self, prompt, unused=None):
                    return prompt
            """
        ),
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, eta=0.0):
                    return self.run(**locals())
            """
        ),
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                _callback_tensor_inputs = ["latents", "prompt_embeds"]

                def __call__(self, prompt, prompt_embeds=None, callback_on_step_end=None):
                    latents = self.run(prompt)
                    if callback_on_step_end is not None:
                        callback_kwargs = {}
                        for k in self._callback_tensor_inputs:
                            callback_kwargs[k] = locals()[k]
                        callback_on_step_end(self, 0, 0, callback_kwargs)
                    return latents
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, num_images_per_prompt=1):
                    return self.run(prompt)
            """,
            message=(
                "`num_images_per_prompt` is accepted by `__call__` but never read; pass it on where it takes "
                "effect, or deprecate it."
            ),
        ),
        Invalid(
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, max_sequence_length=512):
                    self.check_inputs(prompt, max_sequence_length=max_sequence_length)
                    return self.run(prompt)
            """,
            message=(
                "`max_sequence_length` is only passed to `check_inputs` and never affects generation; pass it "
                "on where it takes effect, or deprecate it."
            ),
        ),
        Invalid(
            """
            class MyPipeline(DiffusionPipeline):
                _callback_tensor_inputs = ["latents"]

                def __call__(self, prompt, sigmas=None, callback_on_step_end=None):
                    latents = self.run(prompt)
                    if callback_on_step_end is not None:
                        callback_kwargs = {k: locals()[k] for k in self._callback_tensor_inputs}
                        callback_on_step_end(self, 0, 0, callback_kwargs)
                    return latents
            """,
            message="`sigmas` is accepted by `__call__` but never read; pass it on where it takes effect, or deprecate it.",
        ),
        Invalid(
            """
            class BaseVideoPipeline(DiffusionPipeline):
                pass

            class ChildVideoPipeline(BaseVideoPipeline):
                def __call__(self, prompt, *, guidance_scale=5.0):
                    return self.run(prompt)
            """
        ),
    ]

    def check(self) -> None:
        for cls, method in pipeline_methods(self.context, "__call__"):
            self._check_call(
                f"{cls.qualname}.__call__", method, callback_tensor_inputs(cst.ensure_type(cls.node, cst.ClassDef))
            )

    def _check_call(self, scope: str, function: cst.FunctionDef, by_name: set[str]) -> None:
        read_names = {name.value for name in names_read(function.body)}
        if "vars" in read_names or ("locals" in read_names and not _only_callback_locals(function)):
            return  # arguments may be read by name at run time
        # `callback_kwargs[k] = locals()[k]` reads exactly the names of `_callback_tensor_inputs`
        read_names |= by_name
        validated: set[str] = set()
        acknowledged: set[str] = set()
        for call in calls(function.body):
            name = call_name(call) or ""
            if name.endswith("check_inputs"):
                validated |= {n.value for n in names_read(call)}
            elif name in ACKNOWLEDGING_CALLS:
                acknowledged |= {n.value for n in names_read(call)}
        # names read anywhere outside the check_inputs calls
        outside = {n.value for n in names_read_outside(function.body, _is_check_inputs)}
        for param in parameters(function):
            arg = param.name.value
            if arg in ("self", "cls") or arg.startswith("_") or arg in acknowledged:
                continue
            if arg not in read_names:
                self.report(param, self.message.format(arg=arg), symbol=arg, scope=scope)
            elif arg in validated and arg not in outside:
                self.report(param, self.message_validated.format(arg=arg), symbol=arg, scope=scope)
