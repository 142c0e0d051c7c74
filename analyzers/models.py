"""Queries over diffusers model classes (ModelMixin subclasses) and their class graph, for pattern 9 rules."""

from __future__ import annotations

from collections.abc import Iterator

import libcst as cst

from analyzers import walk
from analyzers.core import Definition, FileContext, dotted_name


ATTENTION_MODULE_MIXIN = "AttentionModuleMixin"


def _top(ctx: FileContext) -> str:
    return ctx.module_name.partition(".")[0]


def resolve_class(ctx: FileContext, module: str, name: str) -> tuple[str, cst.ClassDef] | None:
    """The class `name` means inside `module`, only when it lives in the analysed package (never torch)."""
    head = name.partition(".")[0]
    found = ctx.project.find_class(module, name) if "." not in name else None
    if found is not None:
        return module, found
    qualified = ctx.project.imports(module).get(head)
    if qualified is None or not qualified.startswith(_top(ctx) + "."):
        return None
    return ctx.project.locate_class(module, name)


def ancestry(ctx: FileContext, module: str, cls: cst.ClassDef, limit: int = 24) -> list[tuple[str, cst.ClassDef]]:
    """`cls` and its base classes inside the package, nearest first.

    Bases outside the package and bases named `*Mixin` are not loaded (a mixin never leads to a model or
    attention base; loading `ConfigMixin`, `PeftAdapterMixin`, ... costs seconds per scan), so a mixin is
    seen only where a class names it directly.
    """
    found = [(module, cls)]
    seen = {(module, cls.name.value)}
    index = 0
    while index < len(found) and len(found) < limit:
        mod, node = found[index]
        index += 1
        for arg in node.bases:
            name = dotted_name(arg.value)
            if not name or name.endswith("Mixin") or name.rpartition(".")[2] in ("Module", "object"):
                continue
            located = resolve_class(ctx, mod, name)
            if located is not None and (located[0], located[1].name.value) not in seen:
                seen.add((located[0], located[1].name.value))
                found.append(located)
    return found


def ancestor_names(ctx: FileContext, module: str, cls: cst.ClassDef) -> set[str]:
    """Names of every base (resolved or not) of `cls` and of its ancestors inside the package."""
    names: set[str] = set()
    for _, node in ancestry(ctx, module, cls):
        for arg in node.bases:
            name = dotted_name(arg.value)
            if name:
                names.add(name.rpartition(".")[2])
    return names


def class_assignment(cls: cst.ClassDef, name: str) -> cst.BaseExpression | None:
    """The value of `name = ...` in the class body itself, else None."""
    body = cls.body.body if isinstance(cls.body, cst.IndentedBlock) else ()
    for statement in body:
        if not isinstance(statement, cst.SimpleStatementLine):
            continue
        for small in statement.body:
            if isinstance(small, cst.Assign):
                for target in small.targets:
                    if isinstance(target.target, cst.Name) and target.target.value == name:
                        return small.value
            elif isinstance(small, cst.AnnAssign) and isinstance(small.target, cst.Name):
                if small.target.value == name and small.value is not None:
                    return small.value
    return None


def inherited_assignment(ctx: FileContext, module: str, cls: cst.ClassDef, name: str) -> cst.BaseExpression | None:
    """The nearest `name = ...` in `cls` or an ancestor inside the package."""
    for _, node in ancestry(ctx, module, cls):
        value = class_assignment(node, name)
        if value is not None:
            return value
    return None


def defines_method(ctx: FileContext, module: str, cls: cst.ClassDef, name: str) -> bool:
    for _, node in ancestry(ctx, module, cls):
        for statement in node.body.body if isinstance(node.body, cst.IndentedBlock) else ():
            if isinstance(statement, cst.FunctionDef) and statement.name.value == name:
                return True
    return False


def is_model(ctx: FileContext, cls: cst.ClassDef) -> bool:
    """Whether `cls` is a `ModelMixin` subclass (not `ModelMixin` itself)."""
    return cls.name.value != "ModelMixin" and "ModelMixin" in ancestor_names(ctx, ctx.module_name, cls)


def model_classes(ctx: FileContext) -> list[Definition]:
    cache = ctx.__dict__.get("_drb9_models")
    if cache is None:
        cache = [
            d for d in ctx.classes if d.parent is None and isinstance(d.node, cst.ClassDef) and is_model(ctx, d.node)
        ]
        ctx.__dict__["_drb9_models"] = cache
    return cache


def reachable_classes(ctx: FileContext, cls: cst.ClassDef, limit: int = 80) -> Iterator[cst.ClassDef]:
    """`cls` and every class of the analysed file that it instantiates, transitively (breadth first).

    Only the file's own classes are followed: loading every imported module costs too much per scan.
    """
    local = {d.name: d.node for d in ctx.classes if d.parent is None and isinstance(d.node, cst.ClassDef)}
    queue: list[cst.ClassDef] = [cls]
    seen = {cls.name.value}
    index = 0
    while index < len(queue) and index < limit:
        node = queue[index]
        index += 1
        yield node
        for call in walk.nodes(node.body, cst.Call):
            if isinstance(call.func, cst.Name) and call.func.value in local and call.func.value not in seen:
                seen.add(call.func.value)
                queue.append(local[call.func.value])


def is_attention_layer(ctx: FileContext, cls: cst.ClassDef) -> bool:
    """Whether `cls` is an attention layer built on `AttentionModuleMixin` (named among its bases)."""
    return ATTENTION_MODULE_MIXIN in ancestor_names(ctx, ctx.module_name, cls)


# ---------------------------------------------------------------------------------------------
