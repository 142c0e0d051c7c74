"""Queries over diffusers model classes (ModelMixin subclasses) and their class graph, for pattern 9 rules."""

from __future__ import annotations

import re
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


def built_attention_layer(ctx: FileContext, cls: cst.ClassDef) -> str | None:
    """The name of an attention layer that `cls` (or a class of its file it instantiates) builds, else None.

    A layer counts when its class is built on `AttentionModuleMixin` (defined in the file, or imported from another
    module of the package, such as `WanAttention` into the VACE variant), or else when it is the processor-based
    `Attention` of `models/attention_processor.py`, which takes `set_processor` as well. Blocks imported from another
    module of the package (`BasicTransformerBlock`, a name ending in `Block`) are looked into, one level deep, for
    the same layers. Imported names are resolved only when they look like attention layers (`...Attention`,
    `...Attn...`) or blocks: loading every imported module costs too much per scan.
    """
    local = {d.name for d in ctx.classes if d.parent is None}
    legacy: str | None = None
    for node in reachable_classes(ctx, cls):
        if node is not cls and is_attention_layer(ctx, node):
            return node.name.value
        found, old = _imported_attention(ctx, ctx.module_name, node, local, follow_blocks=True)
        if found is not None:
            return found
        legacy = legacy or old
    return legacy


def _imported_attention(
    ctx: FileContext, module: str, node: cst.ClassDef, local: set[str], follow_blocks: bool
) -> tuple[str | None, str | None]:
    """(a mixin-based attention layer, a processor-based `Attention`) that `node` of `module` instantiates from
    other modules of the package; with `follow_blocks`, also inside the imported blocks it instantiates."""
    top = _top(ctx)
    legacy: str | None = None
    imports = ctx.project.imports(module)
    for call in walk.nodes(node.body, cst.Call):
        if not isinstance(call.func, cst.Name) or call.func.value in local:
            continue
        name = call.func.value
        is_block = follow_blocks and name.endswith("Block")
        if "Attention" not in name and "Attn" not in name and not is_block:
            continue
        qualified = imports.get(name, "")
        if not qualified.startswith(f"{top}.models."):
            continue
        if qualified == f"{top}.models.attention_processor.Attention":
            legacy = legacy or name
            continue
        located = resolve_class(ctx, module, name)
        if located is None:
            continue
        if ATTENTION_MODULE_MIXIN in ancestor_names(ctx, located[0], located[1]):
            return name, legacy
        if is_block:
            block_module, block = located
            block_local = {s.name.value for s in _top_classes(ctx, block_module)}
            inner, old = _imported_attention(ctx, block_module, block, block_local, follow_blocks=False)
            if inner is not None:
                return inner, legacy
            legacy = legacy or old
    return None, legacy


def _top_classes(ctx: FileContext, module: str) -> list[cst.ClassDef]:
    tree = ctx.project.module(module)
    return [s for s in tree.body if isinstance(s, cst.ClassDef)] if tree is not None else []


def built_by_other_models(ctx: FileContext, name: str) -> bool:
    """Whether another module of `diffusers/models/` instantiates class `name` (`TransformerTemporalModel(` in
    `unet_3d_blocks.py`): the model is then a component of bigger models, which carry the shared APIs for it. False
    when the view cannot list the package (a single file analysed alone)."""
    top = _top(ctx)
    pattern = re.compile(rf"(?<![\w.]){re.escape(name)}\(")
    for path in ctx.project.files(f"{top}/models"):
        if path == ctx.path or not path.endswith(".py"):
            continue
        source = ctx.project.source(path) or ""
        if name in source and pattern.search(source):
            return True
    return False
