"""DRB203: a `__call__` argument is read, but its value never reaches the call where it takes effect."""

from __future__ import annotations

from collections.abc import Iterable

import libcst as cst

from analyzers import walk
from analyzers.core import Definition, Invalid, Rule, Valid
from analyzers.matchers import (
    DENOISER_ATTRS,
    call_name,
    denoiser_calls,
    names_read,
    names_read_outside,
    parameters,
    pipeline_methods,
    self_attribute,
)


#: attention-kwargs dicts a denoiser takes under the same keyword
ATTENTION_KWARGS = ("attention_kwargs", "joint_attention_kwargs", "cross_attention_kwargs")
#: plain values, with the call a reader expects them to reach
VALUE_SINKS = {
    "timesteps": "`retrieve_timesteps(...)` or `self.scheduler.set_timesteps(...)`",
    "sigmas": "`retrieve_timesteps(...)` or `self.scheduler.set_timesteps(...)`",
    "max_sequence_length": "`encode_prompt(...)`",
    "num_frames": "`prepare_latents(...)`",
    "num_images_per_prompt": "`encode_prompt(...)` and `prepare_latents(...)`",
    "num_videos_per_prompt": "`encode_prompt(...)` and `prepare_latents(...)`",
}
#: calls that look at a value without using it: validation, logging, deprecation, its length
NON_CONSUMING_CALLS = frozenset(
    {"len", "isinstance", "type", "str", "repr", "print", "deprecate", "warnings.warn", "ValueError", "TypeError"}
)
LOGGING_SUFFIXES = (".warning", ".warn", ".info", ".debug", ".error", ".warning_once")


def _non_consuming_call(name: str) -> bool:
    return (
        name in NON_CONSUMING_CALLS
        or name.endswith("check_inputs")
        or (name.startswith(("logger.", "logging.")) and name.endswith(LOGGING_SUFFIXES))
    )


def _is_none_comparison(node: cst.Comparison) -> bool:
    return all(
        isinstance(c.operator, (cst.Is, cst.IsNot))
        and isinstance(c.comparator, cst.Name)
        and c.comparator.value == "None"
        for c in node.comparisons
    )


def _validation_only(block: cst.BaseSuite) -> bool:
    """Whether a block only raises, warns or deprecates: the body of an input check."""
    statements = block.body if isinstance(block, (cst.IndentedBlock, cst.SimpleStatementSuite)) else ()
    if not statements:
        return False
    for statement in statements:
        smalls = statement.body if isinstance(statement, cst.SimpleStatementLine) else [statement]
        for small in smalls:
            if isinstance(small, (cst.Raise, cst.Pass)):
                continue
            if isinstance(small, cst.Expr) and isinstance(small.value, cst.Call):
                if _non_consuming_call(call_name(small.value) or ""):
                    continue
            return False
    return True


def _target_names(target: cst.BaseExpression) -> list[str] | None:
    """Names bound by an assignment target; None when it stores into an attribute or a subscript."""
    if isinstance(target, cst.Name):
        return [target.value]
    if isinstance(target, (cst.Tuple, cst.List)):
        names: list[str] = []
        for element in target.elements:
            inner = _target_names(element.value)
            if inner is None:
                return None
            names.extend(inner)
        return names
    if isinstance(target, cst.StarredElement):
        return _target_names(target.value)
    return None


def _unconditional_kill(statement: cst.SimpleStatementLine, arg: str) -> bool:
    """`arg = <value that does not read arg>` (or a tuple target binding `arg`)."""
    for small in statement.body:
        if isinstance(small, cst.Assign):
            bound = [n for t in small.targets for n in (_target_names(t.target) or [])]
            if arg in bound and arg not in {n.value for n in names_read(small.value)}:
                return True
        elif isinstance(small, cst.AnnAssign) and small.value is not None:
            if _target_names(small.target) == [arg] and arg not in {n.value for n in names_read(small.value)}:
                return True
    return False


class _ValueFlow(cst.CSTVisitor):
    """Follow one argument through a function body, in source order, and decide whether its value is used.

    A read is *consuming* unless it sits in a call that only inspects it (`check_inputs`, `len`, logging,
    `deprecate`), in a `raise`, in an `is None` test, or in the test of an `if` whose body only raises or
    warns. A read in the value of an assignment to plain names makes those names aliases, followed the same
    way. An unconditional reassignment of the argument (not reading it) ends the argument's life.
    """

    def __init__(self, arg: str) -> None:
        super().__init__()
        self.arg = arg
        self.tracked: set[str] = {arg}
        self.killed = False
        self.stack: list[cst.CSTNode] = []
        self.conditional = 0  # depth of if/for/while/try/match around the current statement
        self.consumed = False

    # -- bookkeeping ------------------------------------------------------------------------
    def on_visit(self, node: cst.CSTNode) -> bool:
        # on_leave runs for every node on_visit saw, so push first, whatever is returned
        self.stack.append(node)
        if isinstance(node, (cst.If, cst.For, cst.While, cst.Try, cst.TryStar, cst.Match)):
            self.conditional += 1
        if self.consumed:
            return False
        if isinstance(node, (cst.FunctionDef, cst.Lambda, cst.ClassDef)):
            # a nested function or lambda that reads the argument: assume it is used there
            if any(n.value in self.tracked for n in names_read(node)):
                self.consumed = True
            return False
        return super().on_visit(node)

    def on_leave(self, original_node: cst.CSTNode) -> None:
        super().on_leave(original_node)
        self.stack.pop()
        if isinstance(original_node, (cst.If, cst.For, cst.While, cst.Try, cst.TryStar, cst.Match)):
            self.conditional -= 1
        if (
            isinstance(original_node, cst.SimpleStatementLine)
            and not self.killed
            and self.conditional == 0
            and _unconditional_kill(original_node, self.arg)
        ):
            self.killed = True
            self.tracked.discard(self.arg)

    # -- reads ------------------------------------------------------------------------------
    def visit_Attribute(self, node: cst.Attribute) -> bool:
        walk.visit(node.value, self)  # `a.b`: only `a` can be a read
        return False

    def visit_Arg(self, node: cst.Arg) -> bool:
        walk.visit(node.value, self)  # `f(x=y)`: the keyword is not a read
        return False

    def visit_Param(self, node: cst.Param) -> bool:
        return False

    def visit_AssignTarget(self, node: cst.AssignTarget) -> bool:
        # `x[i] = …` / `x.a = …` read x; a plain name target is a binding
        return not isinstance(node.target, (cst.Name, cst.Tuple, cst.List))

    def visit_Name(self, node: cst.Name) -> None:
        if node.value in self.tracked and not self._is_binding(node):
            self._classify(node)

    def _is_binding(self, node: cst.Name) -> bool:
        parent = self.stack[-2] if len(self.stack) >= 2 else None
        return isinstance(parent, (cst.AnnAssign, cst.AugAssign)) and getattr(parent, "target", None) is node

    def _classify(self, name: cst.Name) -> None:
        stack = self.stack
        for i in range(len(stack) - 2, -1, -1):
            node, child = stack[i], stack[i + 1]
            if isinstance(node, cst.Call):
                if child is node.func:
                    break
                if _non_consuming_call(call_name(node) or ""):
                    return
                break
            if isinstance(node, cst.Comparison) and _is_none_comparison(node):
                return
            if isinstance(node, cst.Raise):
                return
            if isinstance(node, cst.If) and child is node.test:
                if node.orelse is None and _validation_only(node.body):
                    return
                break
            if isinstance(node, (cst.Assign, cst.AnnAssign)) and child is node.value:
                targets = [t.target for t in node.targets] if isinstance(node, cst.Assign) else [node.target]
                bound = [_target_names(t) for t in targets]
                if any(b is None for b in bound):
                    break  # stored into an attribute or a subscript: assume it is used there
                self.tracked.update(n for b in bound for n in b or [])  # an alias; follow it
                return
            if isinstance(node, cst.BaseStatement):
                break
        self.consumed = True


def _is_check_inputs(call: cst.Call) -> bool:
    return (call_name(call) or "").endswith("check_inputs")


def _acknowledged(body: cst.CSTNode) -> set[str]:
    """Names a `deprecate(...)` reads or mentions, or a warning's text mentions: arguments ignored on purpose."""
    found: set[str] = set()
    for node in walk.nodes(body, cst.Call):
        name = call_name(node) or ""
        if name == "deprecate":
            found.update(n.value for n in names_read(node))
        if name in ("deprecate", "warnings.warn", "logger.warning", "logger.warn"):
            texts = [t.value for t in walk.nodes(node, cst.SimpleString)]
            texts += [t.value for t in walk.nodes(node, cst.FormattedStringText)]
            for text in texts:
                found.update(part.strip("'\"()[],.:;") for part in text.replace("`", " ").split())
    return found


class ArgumentNeverReachesSink(Rule):
    """
    ## What it does
    Checks for pipeline `__call__` arguments that are read, so they do not look unused, but whose value
    never reaches the place where it takes effect:

    - an `attention_kwargs` / `joint_attention_kwargs` / `cross_attention_kwargs` dict that is stored or
      read for its LoRA `scale`, while no denoiser call (`self.transformer(...)`, `self.unet(...)`, …) of
      the class receives an attention-kwargs keyword;
    - `timesteps`, `sigmas`, `max_sequence_length`, `num_frames`, `num_images_per_prompt` or
      `num_videos_per_prompt` that are only checked, logged or measured with `len(...)`, or that are
      overwritten before any use (`timesteps = self.scheduler.timesteps`, `num_videos_per_prompt = 1`).

    ## Why is this bad?
    The argument is documented and accepted, and the pipeline even touches it, but the user's value has
    no effect on generation: a custom sigma schedule is replaced by the default one, attention-processor
    options and the LoRA scale never reach the model. Meta issue #13656 (pattern 2) names exactly these
    arguments; a silent no-op is worse than an error.

    ## Example
    ```python
    def __call__(self, prompt, timesteps=None, joint_attention_kwargs=None):
        self._joint_attention_kwargs = joint_attention_kwargs
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        for t in timesteps:
            noise_pred = self.transformer(latents, t, encoder_hidden_states=prompt_embeds)
    ```

    Use instead:
    ```python
    def __call__(self, prompt, timesteps=None, joint_attention_kwargs=None):
        self._joint_attention_kwargs = joint_attention_kwargs
        timesteps, num_inference_steps = retrieve_timesteps(self.scheduler, num_inference_steps, device, timesteps)
        for t in timesteps:
            noise_pred = self.transformer(
                latents, t, encoder_hidden_states=prompt_embeds, joint_attention_kwargs=self.joint_attention_kwargs
            )
    ```

    ## Known problems
    Arguments that `__call__` never reads, or reads only in `check_inputs`, are DRB201's. Attention
    kwargs are reported only when the class itself calls a denoiser and no such call takes an
    attention-kwargs keyword or a `**kwargs` splat, and when the dict is not handed to any other call
    than a controlnet's (a helper might pass it on). A value handed to any call, stored on `self`, or
    used in any expression is taken as used; only a `__call__` is looked at, not `invert` and the like.

    ## References
    - huggingface/diffusers#13656, pattern 2
    - huggingface/diffusers#13630 (OvisImage: `joint_attention_kwargs` not threaded through the transformer)
    - huggingface/diffusers#13618 (Bria FIBO: `timesteps` ignored)
    """

    code = "DRB203"
    pattern = 2
    severity = "error"
    message_attention = (
        "`{arg}` is read by `__call__` but no denoiser call receives it, so attention options and the LoRA "
        "`scale` never reach the model; pass `{arg}={value}` to each `{denoiser}(...)` call."
    )
    message_overwritten = (
        "`{arg}` is overwritten before its value is used, so the caller's `{arg}` has no effect; pass it to "
        "{sink}, or deprecate it."
    )
    message_inspected = (
        "`{arg}` is only checked, logged or measured and never affects generation; pass it to {sink}, or deprecate it."
    )
    REQUIRES_ANY = ("attention_kwargs", "timesteps", "sigmas", "max_sequence_length", "num_frames", "_per_prompt")
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            # attention kwargs stored and passed through the property; timesteps reach retrieve_timesteps
            """
            class MyPipeline(DiffusionPipeline):
                @property
                def joint_attention_kwargs(self):
                    return self._joint_attention_kwargs

                def __call__(self, prompt, timesteps=None, joint_attention_kwargs=None, max_sequence_length=512):
                    self._joint_attention_kwargs = joint_attention_kwargs
                    lora_scale = self.joint_attention_kwargs.get("scale") if self.joint_attention_kwargs else None
                    if max_sequence_length > 512:
                        raise ValueError("too long")
                    embeds = self.encode_prompt(prompt, lora_scale=lora_scale, max_sequence_length=max_sequence_length)
                    timesteps, n = retrieve_timesteps(self.scheduler, 28, "cuda", timesteps)
                    for t in timesteps:
                        latents = self.transformer(latents, t, embeds, joint_attention_kwargs=self.joint_attention_kwargs)
                    return latents
            """
        ),
        Valid(
            # kwargs handed on through a `**` splat; sigmas through an alias; no denoiser call in the class
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, sigmas=None, attention_kwargs=None, num_frames=81):
                    custom_sigmas = sigmas
                    self.scheduler.set_timesteps(sigmas=custom_sigmas)
                    timesteps = self.scheduler.timesteps
                    model_kwargs = {"attention_kwargs": attention_kwargs}
                    latents = self.prepare_latents(num_frames if num_frames > 1 else 1)
                    for t in timesteps:
                        latents = self.transformer(latents, t, **model_kwargs)
                    return latents

            class MyCombinedPipeline(DiffusionPipeline):
                def __call__(self, prompt, joint_attention_kwargs=None):
                    self._joint_attention_kwargs = joint_attention_kwargs
                    return self.generation_pipe(prompt, joint_attention_kwargs=joint_attention_kwargs)
            """
        ),
        Valid(
            # defaulted only when missing, then used; overwritten only inside a branch; deprecated on purpose
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, timesteps=None, sigmas=None, num_frames=None):
                    if timesteps is None:
                        timesteps = self.default_timesteps()
                    if sigmas is not None:
                        deprecate("sigmas", "1.0.0", "`sigmas` is ignored")
                    sigmas = None
                    self.scheduler.set_timesteps(timesteps=timesteps)
                    if video is not None:
                        num_frames = video.shape[2]
                    return self.prepare_latents(num_frames)
            """
        ),
        Valid(
            # the LoRA scale is applied to the denoiser itself
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, attention_kwargs=None):
                    lora_scale = attention_kwargs.get("scale", 1.0) if attention_kwargs else 1.0
                    scale_lora_layers(self.transformer, lora_scale)
                    for t in self.scheduler.timesteps:
                        latents = self.transformer(latents, t)
                    return latents
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class MyVideoPipeline(DiffusionPipeline):
                def __call__(self, prompt, num_frames=16, num_videos_per_prompt=1):
                    num_videos_per_prompt = 1
                    prompt_embeds = self.encode_prompt(prompt, num_videos_per_prompt=num_videos_per_prompt)
                    latents = self.prepare_latents(len(prompt) * num_videos_per_prompt, num_frames)
                    return self.unet(latents, encoder_hidden_states=prompt_embeds)
            """,
            message=(
                "`num_videos_per_prompt` is overwritten before its value is used, so the caller's "
                "`num_videos_per_prompt` has no effect; pass it to `encode_prompt(...)` and `prepare_latents(...)`, "
                "or deprecate it."
            ),
        ),
        Invalid(
            """
            class LongCatImagePipeline(DiffusionPipeline):
                @property
                def joint_attention_kwargs(self):
                    return self._joint_attention_kwargs

                def __call__(self, prompt, joint_attention_kwargs=None):
                    self._joint_attention_kwargs = joint_attention_kwargs
                    if self.joint_attention_kwargs is None:
                        self._joint_attention_kwargs = {}
                    lora_scale = self.joint_attention_kwargs.get("scale", None)
                    prompt_embeds = self.encode_prompt(prompt, lora_scale=lora_scale)
                    for t in self.scheduler.timesteps:
                        noise_pred = self.transformer(hidden_states=latents, timestep=t, return_dict=False)[0]
                        noise_pred = self.controlnet(latents, t, joint_attention_kwargs=self.joint_attention_kwargs)
                    return latents
            """,
            message=(
                "`joint_attention_kwargs` is read by `__call__` but no denoiser call receives it, so attention "
                "options and the LoRA `scale` never reach the model; pass "
                "`joint_attention_kwargs=self.joint_attention_kwargs` to each `self.transformer(...)` call."
            ),
        ),
        Invalid(
            """
            class StableCascadePriorPipeline(DiffusionPipeline):
                def __call__(self, prompt, num_inference_steps=20, timesteps=None):
                    self.scheduler.set_timesteps(num_inference_steps, device=self.device)
                    timesteps = self.scheduler.timesteps
                    for i, t in enumerate(self.progress_bar(timesteps)):
                        latents = self.prior(latents, t)
                    return latents
            """,
            message=(
                "`timesteps` is overwritten before its value is used, so the caller's `timesteps` has no effect; "
                "pass it to `retrieve_timesteps(...)` or `self.scheduler.set_timesteps(...)`, or deprecate it."
            ),
        ),
        Invalid(
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, max_sequence_length=512):
                    if max_sequence_length > 512:
                        raise ValueError(f"`max_sequence_length` must be at most 512, got {max_sequence_length}")
                    logger.info(f"using {len(max_sequence_length)}")
                    prompt_embeds = self.encode_prompt(prompt)
                    return self.transformer(prompt_embeds)
            """,
            message=(
                "`max_sequence_length` is only checked, logged or measured and never affects generation; pass it "
                "to `encode_prompt(...)`, or deprecate it."
            ),
        ),
    ]

    def check(self) -> None:
        for cls, method in pipeline_methods(self.context, "__call__"):
            names = [p.name.value for p in parameters(method)]
            wanted = [n for n in names if n in ATTENTION_KWARGS or n in VALUE_SINKS]
            if not wanted:
                continue
            outside = {n.value for n in names_read_outside(method.body, _is_check_inputs)}
            acknowledged = None
            for param in parameters(method):
                arg = param.name.value
                if arg not in wanted or arg not in outside:
                    continue  # never read outside check_inputs: DRB201 reports it
                if acknowledged is None:
                    acknowledged = _acknowledged(method.body)
                if arg in acknowledged:
                    continue
                scope = f"{cls.qualname}.__call__"
                if arg in ATTENTION_KWARGS:
                    self._check_attention(cls, method, param, scope)
                elif arg.endswith("_per_prompt") and not _pinned(method, arg):
                    continue  # the count is only ever lost by pinning it: `num_videos_per_prompt = 1`
                else:
                    self._check_value(method, param, scope)

    # -- attention kwargs ----------------------------------------------------------------------
    def _check_attention(self, cls: Definition, method: cst.FunctionDef, param: cst.Param, scope: str) -> None:
        arg = param.name.value
        methods = self.context.methods(cls)
        denoising: list[cst.Call] = []
        for function in methods.values():
            denoising.extend(denoiser_calls(function))
        if not denoising:
            return  # the class calls no denoiser itself (a combined pipeline, a helper elsewhere)
        for call in denoising:
            for a in call.args:
                if a.star == "**" or (a.keyword is not None and a.keyword.value in ATTENTION_KWARGS):
                    return
        if self._handed_on(methods.values(), method, arg):
            return
        for function in methods.values():
            for call in _all_calls(function.body):
                # the LoRA scale applied to the denoiser directly: the `scale` key at least takes effect
                if (call_name(call) or "").endswith("scale_lora_layers") and call.args:
                    first = call.args[0].value
                    if (
                        isinstance(first, cst.Attribute)
                        and self_attribute(first)
                        and first.attr.value in DENOISER_ATTRS
                    ):
                        return
        first = denoising[0]
        denoiser = call_name(first) or "self.transformer"
        if not denoiser.startswith("self."):
            denoiser = "self.transformer" if "transformer" in denoiser else denoiser
        value = f"self.{arg}" if arg in methods else arg  # the property the class defines, if any
        self.report(
            param,
            self.message_attention.format(arg=arg, value=value, denoiser=denoiser),
            symbol=arg,
            scope=scope,
        )

    @staticmethod
    def _handed_on(functions: Iterable[cst.FunctionDef], call_method: cst.FunctionDef, arg: str) -> bool:
        """Whether the dict (the argument, a local alias, or `self.<arg>`/`self._<arg>`) is an argument of any call
        other than a controlnet's or `check_inputs`: a helper or a sub-pipeline may pass it to the model."""
        attrs = set(ATTENTION_KWARGS) | {f"_{a}" for a in ATTENTION_KWARGS}
        aliases = {arg}
        for node in _assignments(call_method.body):
            if _dict_alias(node.value, aliases):
                for target in node.targets:
                    aliases.update(_target_names(target.target) or [])

        def carries(expr: cst.BaseExpression, local: bool) -> bool:
            if isinstance(expr, cst.Attribute) and self_attribute(expr) and expr.attr.value in attrs:
                return True
            if local and isinstance(expr, cst.Name) and expr.value in aliases:
                return True
            if isinstance(expr, (cst.Dict, cst.Tuple, cst.List)):
                return any(carries(e.value, local) for e in expr.elements if hasattr(e, "value"))
            return False

        for function in functions:
            local = function is call_method
            for call in _all_calls(function.body):
                name = (call_name(call) or "").lower()
                if "controlnet" in name or name.endswith("check_inputs"):
                    continue
                if any(carries(a.value, local) for a in call.args):
                    return True
        return False

    # -- plain values -------------------------------------------------------------------------
    def _check_value(self, method: cst.FunctionDef, param: cst.Param, scope: str) -> None:
        arg = param.name.value
        flow = _ValueFlow(arg)
        walk.visit(method.body, flow)
        if flow.consumed:
            return
        template = self.message_overwritten if flow.killed else self.message_inspected
        self.report(param, template.format(arg=arg, sink=VALUE_SINKS[arg]), symbol=arg, scope=scope)


def _pinned(method: cst.FunctionDef, arg: str) -> bool:
    """Whether `method` assigns a literal to `arg` (`num_videos_per_prompt = 1`): a cheap gate before the flow walk."""
    return any(
        isinstance(a.value, cst.Integer)
        and any(isinstance(t.target, cst.Name) and t.target.value == arg for t in a.targets)
        for a in walk.nodes(method.body, cst.Assign)
    )


def _dict_alias(expr: cst.BaseExpression, aliases: set[str]) -> bool:
    """Whether `expr` is the dict itself or a copy of it: `kw`, `kw or {}`, `kw if … else {}`, `dict(kw)`,
    `kw.copy()`, `{**kw, …}`. `kw.get("scale")` is not: the LoRA scale alone does not carry the dict."""
    if isinstance(expr, cst.Name):
        return expr.value in aliases
    if isinstance(expr, cst.BooleanOperation):
        return _dict_alias(expr.left, aliases) or _dict_alias(expr.right, aliases)
    if isinstance(expr, cst.IfExp):
        return _dict_alias(expr.body, aliases) or _dict_alias(expr.orelse, aliases)
    if isinstance(expr, cst.Call):
        name = call_name(expr) or ""
        if name == "dict" and expr.args:
            return _dict_alias(expr.args[0].value, aliases)
        if isinstance(expr.func, cst.Attribute) and expr.func.attr.value == "copy":
            return _dict_alias(expr.func.value, aliases)
    if isinstance(expr, cst.Dict):
        return any(isinstance(e, cst.StarredDictElement) and _dict_alias(e.value, aliases) for e in expr.elements)
    return False


def _assignments(body: cst.CSTNode) -> list[cst.Assign]:
    return walk.nodes(body, cst.Assign)


def _all_calls(body: cst.CSTNode) -> list[cst.Call]:
    return walk.nodes(body, cst.Call)
