"""Shared matchers and small queries over libcst trees that several rules need."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from typing import Any, TypeGuard, cast

import libcst as cst

from analyzers import walk
from analyzers.core import Definition, FileContext, dotted_name


PIPELINE_BASES = frozenset({"DiffusionPipeline"})
#: attributes of a pipeline that hold the denoising network
DENOISER_ATTRS = frozenset({"unet", "transformer", "transformer_2", "prior", "decoder", "dit", "model"})


def _may_be_pipeline(name: str) -> bool:
    # Every DiffusionPipeline subclass in diffusers names a *Pipeline* class among its ancestors; mixins
    # (LoRA loaders, single-file loaders, ...) never lead to it, and loading them costs seconds.
    return "Pipeline" in name


def pipeline_classes(ctx: FileContext) -> list[Definition]:
    """Top-level classes of the file that are `DiffusionPipeline`s (followed through the project view).

    Only classes that have `Pipeline` in their own or a base's name are considered, as every pipeline of
    diffusers does; a pipeline class named otherwise is not seen.
    """
    cache = ctx.__dict__.get("_pipeline_classes")
    if cache is None:
        cache = [
            d
            for d in ctx.classes
            if d.parent is None
            and isinstance(d.node, cst.ClassDef)
            and "Pipeline" in d.name + " ".join(ctx.base_names(d.node))
            and ctx.inherits_from(d.node, PIPELINE_BASES, follow=_may_be_pipeline)
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


def names_read(node: cst.CSTNode) -> list[cst.Name]:
    """Every `Name` under `node` that stands for a variable (assignment targets included).

    Not names: the attribute of `a.b`, the keyword of `f(x=y)`, the names a nested `def`/`class`,
    its parameters or an import alias bind.
    """
    groups = cast("dict[type, list[Any]] | None", walk.indexed(node))
    if groups is None:  # not indexed yet: one pass, without building an index few others would ask for
        return _names_read_walking(node)
    # the index groups nodes by exact type: each group holds nodes of its key's type
    excluded = {id(a.attr) for a in groups.get(cst.Attribute, ())}
    excluded |= {id(a.keyword) for a in groups.get(cst.Arg, ()) if a.keyword is not None}
    excluded |= {id(d.name) for kind in (cst.FunctionDef, cst.ClassDef) for d in groups.get(kind, ())}
    excluded |= {id(p.name) for p in groups.get(cst.Param, ())}
    for alias in groups.get(cst.ImportAlias, ()):
        excluded |= {id(n) for n in walk.nodes(alias, cst.Name)}
    names: list[cst.Name] = groups.get(cst.Name, [])
    return [n for n in names if id(n) not in excluded]


def _names_read_walking(node: cst.CSTNode) -> list[cst.Name]:
    """`names_read(node)` in one walk over `node`."""
    names: list[cst.Name] = []
    excluded: set[int] = set()
    for child in walk.walk(node):
        kind = type(child)
        if kind is cst.Name:
            names.append(child)  # type: ignore[arg-type]
        elif kind is cst.Attribute:
            excluded.add(id(child.attr))  # type: ignore[attr-defined]
        elif kind is cst.Arg:
            if child.keyword is not None:  # type: ignore[attr-defined]
                excluded.add(id(child.keyword))  # type: ignore[attr-defined]
        elif kind is cst.FunctionDef or kind is cst.ClassDef or kind is cst.Param:
            excluded.add(id(child.name))  # type: ignore[attr-defined]
        elif kind is cst.ImportAlias:
            excluded.update(id(n) for n in walk.nodes(child, cst.Name))
    return [n for n in names if id(n) not in excluded]


#: attributes that read a tensor's metadata, not its values
METADATA_ATTRIBUTES = frozenset({"shape", "dtype", "device", "ndim", "size", "dim"})


def values_read(node: cst.CSTNode) -> list[cst.Name]:
    """`names_read(node)` less the names only whose metadata is read: `x` in `x * 2` or `x[0]`, not in
    `x.shape[0]`, `x.size(0)` or `x.dtype`."""
    metadata = {
        id(attribute.value)
        for attribute in walk.nodes(node, cst.Attribute)
        if attribute.attr.value in METADATA_ATTRIBUTES and isinstance(attribute.value, cst.Name)
    }
    return [name for name in names_read(node) if id(name) not in metadata]


def names_read_outside(node: cst.CSTNode, skip: Callable[[cst.Call], bool]) -> list[cst.Name]:
    """`names_read(node)`, less the names inside calls that `skip` accepts (`self.check_inputs(...)`, say)."""
    excluded: set[int] = set()
    for call in calls(node):
        if id(call) not in excluded and skip(call):
            excluded.update(id(n) for n in walk.walk(call))
    return [n for n in names_read(node) if id(n) not in excluded]


def target_names(target: cst.BaseExpression) -> list[str]:
    """Names an assignment target binds: `x`, `a, b`, `(a, *b)`; not `self.x` or `d[k]`."""
    if isinstance(target, cst.Name):
        return [target.value]
    if isinstance(target, (cst.Tuple, cst.List)):
        return [name for element in target.elements for name in target_names(element.value)]
    if isinstance(target, cst.StarredElement):
        return target_names(target.value)
    return []


def self_attribute(node: cst.BaseExpression, attr: str | None = None) -> TypeGuard[cst.Attribute]:
    """Whether `node` is `self.<attr>` (any attribute when `attr` is None)."""
    return (
        isinstance(node, cst.Attribute)
        and isinstance(node.value, cst.Name)
        and node.value.value == "self"
        and (attr is None or node.attr.value == attr)
    )


def names_tested_around(function: cst.FunctionDef) -> dict[int, set[str]]:
    """For each node in the body of an `if` (not its `else`) or of `a if test else b`'s `a` in `function`, by id: the
    names those tests read. A node under `if negative_x is not None:` runs only when there is a negative half."""
    around: dict[int, set[str]] = {}
    guards: list[tuple[cst.BaseExpression, cst.CSTNode]] = [(b.test, b.body) for b in walk.own_nodes(function, cst.If)]
    guards += [(c.test, c.body) for c in walk.own_nodes(function, cst.IfExp)]
    for test, body in guards:
        names = {n.value for n in walk.nodes(test, cst.Name)}
        for node in walk.walk(body):
            around.setdefault(id(node), set()).update(names)
    return around


def call_name(call: cst.Call) -> str | None:
    """Dotted name of the called function: `self.check_inputs`, `torch.randn`, `retrieve_timesteps`."""
    return dotted_name(call.func)


def calls(node: cst.CSTNode) -> list[cst.Call]:
    """Every call under `node` (cached per node for the file being analysed)."""
    return walk.nodes(node, cst.Call)


def keyword(call: cst.Call, name: str) -> cst.Arg | None:
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == name:
            return arg
    return None


def denoiser_aliases(function: cst.FunctionDef) -> set[str]:
    """Local names bound to a denoiser: `current_model = self.transformer if … else self.transformer_2`."""
    aliases: set[str] = set()
    for assign in walk.nodes(function.body, cst.Assign):
        if len(assign.targets) != 1 or not isinstance(assign.targets[0].target, cst.Name):
            continue
        value = assign.value
        candidates = [value.body, value.orelse] if isinstance(value, cst.IfExp) else [value]
        if any(self_attribute(c) and c.attr.value in DENOISER_ATTRS for c in candidates):
            aliases.add(assign.targets[0].target.value)
    return aliases


def denoiser_calls(function: cst.FunctionDef) -> list[cst.Call]:
    """Calls of the denoising network inside `function`: `self.unet(…)`, `self.transformer(…)`, aliases."""
    aliases = denoiser_aliases(function)
    found = []
    for call in calls(function.body):
        func = call.func
        if self_attribute(func) and func.attr.value in DENOISER_ATTRS:
            found.append(call)
        elif isinstance(func, cst.Name) and func.value in aliases:
            found.append(call)
    return found


def string_value(node: cst.BaseExpression) -> str | None:
    """The value of a plain string literal, else None."""
    if isinstance(node, cst.SimpleString):
        return _literal(node.value)
    if isinstance(node, cst.ConcatenatedString):
        left, right = string_value(node.left), string_value(node.right)
        return left + right if left is not None and right is not None else None
    return None


def _literal(code: str) -> str | None:
    """The value of string literal `code` (None for bytes), remembered: libcst's `evaluated_value` runs
    `ast.literal_eval` on every call, which costs a parse and leaves reference cycles for the collector."""
    found = _LITERALS.get(code, _UNKNOWN)
    if found is _UNKNOWN:
        node = ast.parse(code, mode="eval").body  # what `literal_eval` does first, without its closures
        found = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None
        if len(_LITERALS) < _LITERALS_KEPT:
            _LITERALS[code] = found
    return found  # type: ignore[return-value]


_UNKNOWN = object()
_LITERALS: dict[str, str | None] = {}
_LITERALS_KEPT = 100_000


def annotation_classes(node: cst.BaseExpression) -> list[str] | None:
    """Dotted class names of an annotation: `Foo`, `models.Foo`, `Optional[Foo]`, `A | B`, `Union[A, B]`."""
    if isinstance(node, cst.Name) and node.value == "None":
        return []
    name = dotted_name(node)
    if name is not None:
        return [name]
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.BitOr):
        left, right = annotation_classes(node.left), annotation_classes(node.right)
        return None if left is None or right is None else left + right
    if isinstance(node, cst.Subscript) and (dotted_name(node.value) or "").rpartition(".")[2] in ("Optional", "Union"):
        found: list[str] = []
        for element in node.slice:
            if not isinstance(element.slice, cst.Index):
                return None
            inner = annotation_classes(element.slice.value)
            if inner is None:
                return None
            found += inner
        return found
    return None  # a string annotation or something else we cannot follow


def stub_body(method: cst.FunctionDef) -> bool:
    """Whether the body is only a docstring, `pass`, `...` or a `raise` (an interface, not an implementation)."""
    body = method.body.body if isinstance(method.body, cst.IndentedBlock) else ()
    for statement in body:
        if not isinstance(statement, cst.SimpleStatementLine):
            return False
        for small in statement.body:
            if isinstance(small, (cst.Pass, cst.Raise)):
                continue
            if isinstance(small, cst.Expr) and isinstance(small.value, (cst.SimpleString, cst.Ellipsis)):
                continue
            return False
    return True


def if_chains(function: cst.FunctionDef) -> list[list[cst.BaseSuite]]:
    """The mutually exclusive blocks of each `if`/`elif`/`else` chain of `function` that has two or more."""
    found: list[list[cst.BaseSuite]] = []
    statements = walk.own_nodes(function, cst.If)
    elifs = {id(s.orelse) for s in statements if isinstance(s.orelse, cst.If)}
    for statement in statements:
        if id(statement) in elifs:
            continue
        branches: list[cst.BaseSuite] = [statement.body]
        rest = statement.orelse
        while isinstance(rest, cst.If):
            branches.append(rest.body)
            rest = rest.orelse
        if isinstance(rest, cst.Else):
            branches.append(rest.body)
        if len(branches) > 1:
            found.append(branches)
    return found


#: gradient checkpointing functions called by their qualified name
CHECKPOINT_FUNCTIONS = frozenset({"torch.utils.checkpoint.checkpoint"})


def is_checkpoint_call(ctx: FileContext, call: cst.Call) -> bool:
    """Whether `call` runs a module under gradient checkpointing: `self._gradient_checkpointing_func(...)` or
    `torch.utils.checkpoint.checkpoint(...)` (under any import name)."""
    name = call_name(call)
    if name is None:
        return False
    if name.endswith("._gradient_checkpointing_func") or name in CHECKPOINT_FUNCTIONS:
        return True
    return ctx.qualified_name(call.func) in CHECKPOINT_FUNCTIONS


def maps_to_unit_range(block: cst.CSTNode) -> bool:
    """Whether `block` maps a decoded sample from [-1, 1] to [0, 1] itself: `x / 2 + 0.5`, `x * 0.5 + 0.5`,
    `x.mul_(std).add_(mean)`, `.clamp(0, 1)`, or an image processor's `postprocess`/`denormalize`."""
    for operation in walk.nodes(block, cst.BinaryOperation):
        if (
            isinstance(operation.operator, cst.Add)
            and isinstance(operation.right, cst.Float)
            and operation.right.value == "0.5"
            and isinstance(operation.left, cst.BinaryOperation)
            and isinstance(operation.left.operator, (cst.Divide, cst.Multiply))
        ):
            return True
    for call in calls(block):
        name = (dotted_name(call.func) or "").rpartition(".")[2]
        if name in ("postprocess", "denormalize", "postprocess_video", "pt_to_numpy"):
            return True
        if name in ("clamp", "clamp_") and [a.value.value for a in call.args if isinstance(a.value, cst.Integer)] == [
            "0",
            "1",
        ]:
            return True
        if name in ("add", "add_") and isinstance(call.func, cst.Attribute):
            inner = call.func.value
            if isinstance(inner, cst.Call) and (dotted_name(inner.func) or "").rpartition(".")[2] in ("mul", "mul_"):
                return True  # `video.mul_(std).add_(mean)`: undo a mean/std normalization
    return False


def conjuncts(test: cst.BaseExpression) -> list[cst.BaseExpression]:
    """`a and b and c` -> [a, b, c]; anything else -> [test]."""
    if isinstance(test, cst.BooleanOperation) and isinstance(test.operator, cst.And):
        return conjuncts(test.left) + conjuncts(test.right)
    return [test]


def none_comparison(test: cst.BaseExpression) -> tuple[str, bool] | None:
    """(`x`, True) for `x is None`, (`x`, False) for `x is not None`, else None."""
    if not (isinstance(test, cst.Comparison) and len(test.comparisons) == 1 and isinstance(test.left, cst.Name)):
        return None
    target = test.comparisons[0]
    if not (isinstance(target.comparator, cst.Name) and target.comparator.value == "None"):
        return None
    if isinstance(target.operator, cst.Is):
        return test.left.value, True
    if isinstance(target.operator, cst.IsNot):
        return test.left.value, False
    return None
