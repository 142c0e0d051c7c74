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


def _reads_by_name(function: cst.FunctionDef) -> bool:
    """Whether `function` may read its arguments by name at run time (`locals()`, `vars()`)."""
    return bool({"locals", "vars"} & {n.value for n in names_read(function.body)})


def _acknowledged(function: cst.FunctionDef) -> set[str]:
    """Names that a `deprecate(...)` or warning call in `function` reads: arguments ignored on purpose."""
    found: set[str] = set()
    for call in calls(function.body):
        if (call_name(call) or "") in ACKNOWLEDGING_CALLS:
            found |= {n.value for n in names_read(call)}
    return found


class UnusedCallArgument(Rule):
    """
    ## What it does
    Checks for pipeline `__call__` arguments that the body never reads, or reads only to pass them
    to `check_inputs`, or only hands on to a helper of the class (`self.encode_prompt(...,
    max_sequence_length=max_sequence_length)`) whose matching parameter is never read.

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
    deliberately ignored. A helper is followed only when `__call__` passes the argument as `name=name`
    to a method of the same class, and only when `__call__` uses the argument nowhere else.

    ## References
    - huggingface/diffusers#13656, pattern 2
    - huggingface/diffusers#13598 (LLaDA2 `block_length` not passed to the scheduler)
    - huggingface/diffusers#13379 (QwenImage ControlNet `encode_prompt` ignored `max_sequence_length`)
    """

    code = "DRB201"
    pattern = 2
    severity = "error"
    message = "`{arg}` is accepted by `__call__` but never read; pass it on where it takes effect, or deprecate it."
    message_forwarded = (
        "`{arg}` is passed to `{method}` by `__call__` but `{method}` never reads it, so the caller's value has no "
        "effect; use it in `{method}`, or stop passing it."
    )
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
        Valid(
            # the helper ignores `generator`, but `__call__` uses it itself
            """
            class MyPipeline(DiffusionPipeline):
                def prepare_latents(self, shape, generator=None):
                    return torch.zeros(shape)

                def __call__(self, prompt, generator=None):
                    latents = self.prepare_latents((1, 4), generator=generator)
                    noise = randn_tensor(latents.shape, generator=generator)
                    return self.run(prompt, latents + noise)
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
        Invalid(
            """
            class MyPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, num_images_per_prompt=1, max_sequence_length=256):
                    embeds = self.text_encoder(self.tokenizer(prompt))
                    return embeds.repeat(num_images_per_prompt, 1, 1)

                def __call__(self, prompt, num_images_per_prompt=1, max_sequence_length=256):
                    self.check_inputs(prompt, max_sequence_length=max_sequence_length)
                    embeds = self.encode_prompt(
                        prompt, num_images_per_prompt=num_images_per_prompt, max_sequence_length=max_sequence_length
                    )
                    return self.run(embeds)
            """,
            message=(
                "`max_sequence_length` is passed to `encode_prompt` by `__call__` but `encode_prompt` never reads "
                "it, so the caller's value has no effect; use it in `encode_prompt`, or stop passing it."
            ),
        ),
    ]

    def check(self) -> None:
        for cls, method in pipeline_methods(self.context, "__call__"):
            self._check_call(
                f"{cls.qualname}.__call__", method, callback_tensor_inputs(cst.ensure_type(cls.node, cst.ClassDef))
            )
            self._check_helpers(cls.qualname, method, self.context.methods(cls))

    def _check_helpers(self, owner: str, call_method: cst.FunctionDef, methods: dict[str, cst.FunctionDef]) -> None:
        """Report a helper parameter that `__call__` fills with one of its own arguments and the helper never reads:
        `self.encode_prompt(..., max_sequence_length=max_sequence_length)` into an `encode_prompt` that drops it."""
        own = {p.name.value for p in parameters(call_method)}
        forwarded: dict[str, set[str]] = {}
        for call in calls(call_method.body):
            func = call.func
            if not (
                isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) and func.value.value == "self"
            ):
                continue
            name = func.attr.value
            if name == "__call__" or name.endswith("check_inputs") or name not in methods:
                continue
            for given in call.args:
                # only `name=name`: the caller's own argument handed on under its own name
                if (
                    given.keyword is not None
                    and isinstance(given.value, cst.Name)
                    and given.value.value == given.keyword.value
                    and given.keyword.value in own
                ):
                    forwarded.setdefault(name, set()).add(given.keyword.value)
        dropped: dict[str, list[tuple[str, cst.Param]]] = {}  # argument -> the helpers that ignore it
        for name, args in sorted(forwarded.items()):
            helper = methods[name]
            if isinstance(helper.params.star_kwarg, cst.Param) or _reads_by_name(helper):
                continue
            read = {n.value for n in names_read(helper.body)} | _acknowledged(helper)
            for param in parameters(helper):
                if param.name.value in args and param.name.value not in read:
                    dropped.setdefault(param.name.value, []).append((name, param))
        for arg, helpers in sorted(dropped.items()):
            ignoring = {name for name, _ in helpers}

            def skip(call: cst.Call, ignoring: set[str] = ignoring) -> bool:
                name = call_name(call) or ""
                return name.endswith("check_inputs") or name.removeprefix("self.") in ignoring

            # silent when `__call__` also uses the argument elsewhere: the caller's value takes effect there
            if any(n.value == arg for n in names_read_outside(call_method.body, skip)):
                continue
            for name, param in helpers:
                message = self.message_forwarded.format(arg=arg, method=name)
                self.report(param, message, symbol=arg, scope=f"{owner}.{name}")

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
