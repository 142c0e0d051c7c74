"""Shared matchers and small queries over libcst trees that several rules need."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst
import libcst.matchers as m

from analyzers.core import Definition, FileContext, dotted_name


PIPELINE_BASES = frozenset({"DiffusionPipeline"})
#: attributes of a pipeline that hold the denoising network
DENOISER_ATTRS = frozenset({"unet", "transformer", "transformer_2", "prior", "decoder", "dit", "model"})


def pipeline_classes(ctx: FileContext) -> list[Definition]:
    """Top-level classes of the file that are `DiffusionPipeline`s (followed through the project view)."""
    cache = ctx.__dict__.setdefault("_pipeline_classes", None)
    if cache is None:
        cache = [
            d
            for d in ctx.classes
            if d.parent is None and ctx.inherits_from(d.node, PIPELINE_BASES)  # type: ignore[arg-type]
        ]
        ctx.__dict__["_pipeline_classes"] = cache
    return cache


def pipeline_methods(ctx: FileContext, name: str) -> Iterator[tuple[Definition, cst.FunctionDef]]:
    """Yield (class, method) for each pipeline class of the file that defines method `name` itself."""
    for cls in pipeline_classes(ctx):
        method = ctx.methods(cls).get(name)
        if method is not None:
            yield cls, method


def parameters(function: cst.FunctionDef) -> list[cst.Param]:
    """Every named parameter of `function`, `self` included, `*args`/`**kwargs` excluded."""
    params = function.params
    return [*params.posonly_params, *params.params, *params.kwonly_params]


def has_var_keyword(function: cst.FunctionDef) -> bool:
    return isinstance(function.params.star_kwarg, cst.Param)


class _NameReads(cst.CSTVisitor):
    """Collect names that an expression or block reads (not attribute names, not keyword names)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[cst.Name] = []

    def visit_Name(self, node: cst.Name) -> None:
        self.names.append(node)

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        node.value.visit(self)  # `a.b`: only `a` is a name read; `b` is an attribute
        return False

    def visit_Arg(self, node: cst.Arg) -> bool:
        node.value.visit(self)  # `f(x=y)`: the keyword `x` is not a read
        return False

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        # a nested def: its name is a binding; look only at its body, defaults and decorators
        for decorator in node.decorators:
            decorator.visit(self)
        for param in (*node.params.params, *node.params.kwonly_params, *node.params.posonly_params):
            if param.default is not None:
                param.default.visit(self)
        node.body.visit(self)
        return False

    def visit_ImportAlias(self, node: cst.ImportAlias) -> bool:
        return False


def names_read(node: cst.CSTNode) -> list[cst.Name]:
    """Every `Name` under `node` that stands for a variable (assignment targets included)."""
    visitor = _NameReads()
    node.visit(visitor)
    return visitor.names


def self_attribute(node: cst.BaseExpression, attr: str | None = None) -> bool:
    """Whether `node` is `self.<attr>` (any attribute when `attr` is None)."""
    return (
        isinstance(node, cst.Attribute)
        and isinstance(node.value, cst.Name)
        and node.value.value == "self"
        and (attr is None or node.attr.value == attr)
    )


def call_name(call: cst.Call) -> str | None:
    """Dotted name of the called function: `self.check_inputs`, `torch.randn`, `retrieve_timesteps`."""
    return dotted_name(call.func)


def calls(node: cst.CSTNode) -> list[cst.Call]:
    return list(m.findall(node, m.Call()))  # type: ignore[arg-type]


def keyword(call: cst.Call, name: str) -> cst.Arg | None:
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == name:
            return arg
    return None


def denoiser_aliases(function: cst.FunctionDef) -> set[str]:
    """Local names bound to a denoiser: `current_model = self.transformer if … else self.transformer_2`."""
    aliases: set[str] = set()
    for assign in m.findall(function.body, m.Assign(targets=[m.AssignTarget(target=m.Name())])):
        value = assign.value  # type: ignore[attr-defined]
        candidates = [value.body, value.orelse] if isinstance(value, cst.IfExp) else [value]
        if any(self_attribute(c) and c.attr.value in DENOISER_ATTRS for c in candidates):  # type: ignore[attr-defined]
            aliases.add(assign.targets[0].target.value)  # type: ignore[attr-defined]
    return aliases


def denoiser_calls(function: cst.FunctionDef) -> list[cst.Call]:
    """Calls of the denoising network inside `function`: `self.unet(…)`, `self.transformer(…)`, aliases."""
    aliases = denoiser_aliases(function)
    found = []
    for call in calls(function.body):
        func = call.func
        if self_attribute(func) and func.attr.value in DENOISER_ATTRS:  # type: ignore[attr-defined]
            found.append(call)
        elif isinstance(func, cst.Name) and func.value in aliases:
            found.append(call)
    return found


def string_value(node: cst.BaseExpression) -> str | None:
    """The value of a plain string literal, else None."""
    if isinstance(node, cst.SimpleString):
        return node.evaluated_value if isinstance(node.evaluated_value, str) else None
    if isinstance(node, cst.ConcatenatedString):
        value = node.evaluated_value
        return value if isinstance(value, str) else None
    return None
