"""DRB402: `kwargs.pop("name")` without a default in a public API: a caller who omits `name` gets a `KeyError`."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Definition, Invalid, Rule, Valid
from analyzers.matchers import call_name, calls, string_value


def _star_kwarg(function: cst.FunctionDef) -> str | None:
    star = function.params.star_kwarg
    return star.name.value if isinstance(star, cst.Param) else None


def _mentions_key(node: cst.CSTNode, key: str) -> bool:
    return any(string_value(s) == key for s in walk.nodes(node, cst.SimpleString))


def _inside(node: cst.CSTNode, root: cst.CSTNode) -> bool:
    return any(n is node for n in walk.nodes(root, type(node)))


def _forwards_kwargs(caller: cst.FunctionDef, callee: str) -> bool:
    """Whether `caller` calls `self.<callee>(…)`/`cls.<callee>(…)` passing its own `**kwargs` on."""
    own = _star_kwarg(caller)
    if own is None:
        return False
    for call in calls(caller.body):
        name = call_name(call) or ""
        if name not in (f"self.{callee}", f"cls.{callee}", f"super().{callee}"):
            continue
        for arg in call.args:
            if arg.star == "**" and isinstance(arg.value, cst.Name) and arg.value.value == own:
                return True
    return False


class RequiredKwargsPop(Rule):
    """
    ## What it does
    Checks for `kwargs.pop("name")` without a default on a function's own `**kwargs`, in a public function
    or method (or a private method that a public method of the same class hands its `**kwargs` to), where
    no check that `"name"` is present guards the pop.

    ## Why is this bad?
    `**kwargs` is optional by definition: a caller who leaves `name` out gets a bare `KeyError: 'name'`
    from deep inside the loader instead of the documented default behaviour.

    ## Example
    ```python
    @classmethod
    def from_pretrained(cls, model_id, **kwargs):
        model = cls.load_model(model_id, provider_options=kwargs.pop("provider_options"))
    ```

    Use instead:
    ```python
    @classmethod
    def from_pretrained(cls, model_id, **kwargs):
        model = cls.load_model(model_id, provider_options=kwargs.pop("provider_options", None))
    ```

    ## Known problems
    Only pops on the function's own `**kwargs` parameter with a literal key are seen. A pop is taken as guarded
    when an enclosing `if`/`while`/`try` or a conditional expression mentions the key (`"name" in kwargs`),
    or when the function sets the key itself (`kwargs["name"] = …`, `kwargs.setdefault("name", …)`).

    ## References
    - huggingface/diffusers#13656, pattern 4 ("`kwargs.pop(...)` patterns assume loader or caller internals")
    """

    code = "DRB402"
    pattern = 4
    severity = "warning"
    message = (
        '`{kwargs}.pop("{key}")` raises `KeyError` when the caller of `{function}` omits `{key}`; '
        'pass a default, as in `{kwargs}.pop("{key}", None)`.'
    )
    REQUIRES_ANY = (".pop(",)

    VALID = [
        Valid(
            """
            def from_pretrained(model_id, **kwargs):
                if "enable_pag" in kwargs:
                    enable_pag = kwargs.pop("enable_pag")
                options = kwargs.pop("provider_options", None)
                return load(model_id, options)
            """
        ),
        Valid(
            """
            def _private_helper(model_id, **kwargs):
                return load(model_id, kwargs.pop("provider_options"))

            def load_it(model_id, **kwargs):
                kwargs.setdefault("device", "cpu")
                device = kwargs.pop("device")
                other = {}
                other.pop("x")
                return device
            """
        ),
        Valid(
            """
            def forward(x, joint_attention_kwargs=None, **kwargs):
                if joint_attention_kwargs is not None and "ip" in joint_attention_kwargs:
                    ip = joint_attention_kwargs.pop("ip")
                try:
                    y = kwargs.pop("y")
                except KeyError:
                    y = None
                return x
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class OnnxRuntimeModel:
                @classmethod
                def _from_pretrained(cls, model_id, provider=None, **kwargs):
                    model = cls.load_model(model_id, provider=provider, provider_options=kwargs.pop("provider_options"))
                    return cls(model=model, **kwargs)

                @classmethod
                def from_pretrained(cls, model_id, **model_kwargs):
                    return cls._from_pretrained(model_id=model_id, **model_kwargs)
            """,
            message=(
                '`kwargs.pop("provider_options")` raises `KeyError` when the caller of '
                "`OnnxRuntimeModel.from_pretrained` omits `provider_options`; pass a default, as in "
                '`kwargs.pop("provider_options", None)`.'
            ),
        ),
        Invalid(
            """
            def load_lora(path, **kwargs):
                adapter_name = kwargs.pop("adapter_name")
                return path, adapter_name
            """,
            message=(
                '`kwargs.pop("adapter_name")` raises `KeyError` when the caller of `load_lora` omits '
                '`adapter_name`; pass a default, as in `kwargs.pop("adapter_name", None)`.'
            ),
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            if definition.is_class:
                continue
            function = cst.ensure_type(definition.node, cst.FunctionDef)
            kwargs = _star_kwarg(function)
            if kwargs is None:
                continue
            entry = self._public_entry(definition)
            if entry is None:
                continue
            for call in walk.own_nodes(function, cst.Call):
                if call_name(call) != f"{kwargs}.pop" or len(call.args) != 1 or call.args[0].star:
                    continue
                key = string_value(call.args[0].value)
                if key is None or self._guarded(function, call, kwargs, key):
                    continue
                self.report(
                    call,
                    self.message.format(kwargs=kwargs, key=key, function=entry),
                    symbol=key,
                    scope=definition.qualname,
                )

    def _public_entry(self, definition: Definition) -> str | None:
        """The public function a caller reaches this one through: itself, or a public method of the same class
        that forwards its `**kwargs` to it."""
        name = definition.name
        if not name.startswith("_"):
            return definition.qualname
        if name.startswith("__") or definition.parent is None or not definition.parent.is_class:
            return None
        for other, method in self.context.methods(definition.parent).items():
            if not other.startswith("_") and _forwards_kwargs(method, name):
                return f"{definition.parent.qualname}.{other}"
        return None

    @staticmethod
    def _guarded(function: cst.FunctionDef, pop: cst.Call, kwargs: str, key: str) -> bool:
        for statement in walk.own_nodes(function, cst.If) + walk.own_nodes(function, cst.While):
            if _mentions_key(statement.test, key) and _inside(pop, statement):
                return True
        for ifexp in walk.own_nodes(function, cst.IfExp):
            if _mentions_key(ifexp.test, key) and _inside(pop, ifexp):
                return True
        for attempt in walk.own_nodes(function, cst.Try):
            if _inside(pop, attempt.body) and attempt.handlers:
                return True
        # the function puts the key in itself: `kwargs["key"] = …`, `kwargs.setdefault("key", …)`, `kwargs.update`
        for call in walk.own_nodes(function, cst.Call):
            if call is not pop and call_name(call) in (f"{kwargs}.setdefault", f"{kwargs}.update"):
                return True
        for subscript in walk.own_nodes(function, cst.Subscript):
            if (
                isinstance(subscript.value, cst.Name)
                and subscript.value.value == kwargs
                and _mentions_key(subscript, key)
            ):
                return True
        return False
