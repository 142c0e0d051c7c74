"""A fast, cached walk over libcst trees: every node under a root, grouped by type.

libcst's visitor machinery and `matchers.findall` rebuild each node's children on every walk; rules
ask the same questions of the same function many times. One plain walk over dataclass fields, cached
per root node for the file being analysed (the engine calls `clear()` after each file), is several times
cheaper. Whitespace, comments and punctuation are skipped: no rule looks at them.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import typing
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import TypeVar, cast

import libcst as cst
from libcst import MaybeSentinel


N = TypeVar("N", bound=cst.CSTNode)
_SKIP_PREFIXES = (
    "whitespace",
    "leading_whitespace",
    "trailing_whitespace",
    "lpar",
    "rpar",
    "comma",
    "semicolon",
    "leading_lines",
    "lines_after",
    "header",
    "footer",
    "newline",
    "indent",
    "colon",
    "equal",
    "dot",
    "lbracket",
    "rbracket",
    "lbrace",
    "rbrace",
    "lines_after_decorators",
    "first_line",
    "empty_lines",
    "prefix",
    "quote",
)
_FIELDS: dict[type, tuple[str, ...]] = {}
_CACHE: dict[int, tuple[cst.CSTNode, dict[type, list[cst.CSTNode]]]] = {}


def _fields(kind: type) -> tuple[str, ...]:
    names = _FIELDS.get(kind)
    if names is None:
        names = _FIELDS[kind] = tuple(
            f.name for f in dataclasses.fields(kind) if not f.name.startswith(_SKIP_PREFIXES)
        )
    return names


def walk(root: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """Yield `root` and every node under it, parents before children, children in field order.

    Field order is source order except in a few nodes (a `def`'s return annotation comes after its body,
    `a if b else c` yields `b` first); rules that need exact order compare positions.
    """
    span = _SPAN.get(id(root))
    if span is not None and _ORDER[span[0]] is root:
        yield from _ORDER[span[0] : span[1]]
        return
    yield from _walk(root)


def _walk(root: cst.CSTNode) -> Iterator[cst.CSTNode]:
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(_children(node)))


def _children(node: cst.CSTNode, fields: tuple[str, ...] | None = None) -> list[cst.CSTNode]:
    """The nodes directly under `node`, in field order (whitespace and punctuation left out), or in the order of
    `fields`."""
    if fields is None:
        kind = type(node)
        children_of = _CHILDREN.get(kind) or _children_function(kind)
        return children_of(node)
    return _generic_children(node, fields)


def _generic_children(node: cst.CSTNode, fields: tuple[str, ...]) -> list[cst.CSTNode]:
    is_node = _IS_NODE
    children: list[cst.CSTNode] = []
    for name in fields:
        value = getattr(node, name)
        kind = type(value)
        if kind is tuple or kind is list:
            for item in value:
                item_kind = type(item)
                node_kind = is_node.get(item_kind)
                if node_kind is None:
                    node_kind = is_node[item_kind] = issubclass(item_kind, cst.CSTNode)
                if node_kind:
                    children.append(item)
            continue
        node_kind = is_node.get(kind)
        if node_kind is None:
            node_kind = is_node[kind] = issubclass(kind, cst.CSTNode)
        if node_kind:
            children.append(value)
    return children


#: node type -> a function listing its children, generated from the types its fields declare (`_children_function`)
_CHILDREN: dict[type, Callable[[cst.CSTNode], list[cst.CSTNode]]] = {}


def _is_node_type(hint: object) -> bool:
    return isinstance(hint, type) and issubclass(hint, cst.CSTNode)


def _field_code(name: str, hint: object) -> str:
    """The statement that adds field `name`'s nodes to `out`, from its declared type (libcst declares them all):
    a node, a sequence of nodes, an optional node, or no node at all. Anything else is tested value by value."""
    if _is_node_type(hint):
        return f"    out.append(node.{name})\n"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is collections.abc.Sequence and args:
        (item,) = args
        items = typing.get_args(item) if typing.get_origin(item) is typing.Union else (item,)
        if all(_is_node_type(option) for option in items):
            return f"    out.extend(node.{name})\n"
    if origin is typing.Literal or hint in (str, bool, int):
        return ""  # never a node
    if origin is typing.Union:
        options = [option for option in args if option is not type(None)]
        if all(_is_node_type(option) for option in options):
            return f"    value = node.{name}\n    if value is not None:\n        out.append(value)\n"
        plain = [option for option in options if not _is_node_type(option)]
        if all(option in (str, MaybeSentinel) or typing.get_origin(option) is typing.Literal for option in plain):
            # a node or a marker (MaybeSentinel.DEFAULT, a literal string)
            return f"    value = node.{name}\n    if isinstance(value, _NODE):\n        out.append(value)\n"
    return f"    out.extend(_generic(node, ({name!r},)))\n"


def _children_function(kind: type) -> Callable[[cst.CSTNode], list[cst.CSTNode]]:
    """`_generic_children(node, _fields(kind))` for nodes of exactly `kind`, specialised to its fields' declared
    types: the walk's inner loop, asked once per node of every analysed file (tested equal on diffusers' files)."""
    fields = _FIELDS.get(kind) or _fields(kind)
    try:
        hints = typing.get_type_hints(kind)
        body = "".join(_field_code(name, hints[name]) for name in fields)
    except (NameError, KeyError, TypeError, ValueError):
        body = f"    out.extend(_generic(node, {fields!r}))\n"
    namespace: dict[str, object] = {"_generic": _generic_children, "_NODE": cst.CSTNode}
    exec(f"def children(node):\n    out = []\n{body}    return out\n", namespace)  # noqa: S102 - built above
    function = cast("Callable[[cst.CSTNode], list[cst.CSTNode]]", namespace["children"])
    _CHILDREN[kind] = function
    return function


#: the node types whose fields are not in source order, with their fields in source order
_SOURCE_FIELDS: dict[type, tuple[str, ...]] = {
    cst.Arg: ("star", "keyword", "value"),
    cst.ImportFrom: ("relative", "module", "names"),
    cst.FunctionDef: ("decorators", "asynchronous", "name", "type_parameters", "params", "returns", "body"),
    cst.ClassDef: ("decorators", "name", "type_parameters", "bases", "keywords", "body"),
    cst.IfExp: ("body", "test", "orelse"),
    cst.With: ("asynchronous", "items", "body"),
    cst.For: ("asynchronous", "target", "iter", "body", "orelse"),
    cst.CompFor: ("asynchronous", "target", "iter", "ifs", "inner_for_in"),
    cst.ExceptHandler: ("type", "name", "body"),
    cst.ExceptStarHandler: ("type", "name", "body"),
    cst.MatchCase: ("pattern", "guard", "body"),
    cst.Param: ("star", "name", "annotation", "default"),
    cst.Parameters: ("posonly_params", "posonly_ind", "params", "star_arg", "kwonly_params", "star_kwarg"),
    cst.Index: ("star", "value"),
    cst.Slice: ("lower", "upper", "step"),
}


def visit(root: cst.CSTNode, visitor: cst.CSTVisitor) -> None:
    """Drive a libcst `CSTVisitor` over `root` in source order, as `root.visit(visitor)` does, without libcst
    rebuilding every node it passes (the costly part of its visits): `on_visit`/`visit_<Type>` before a node's
    children (skipped when it returns False), `on_leave`/`leave_<Type>` after. Whitespace, comments and
    punctuation are not visited, and neither are attribute hooks (`visit_<Type>_<field>`)."""
    if visitor.on_visit(root):
        for child in _children(root, _SOURCE_FIELDS.get(type(root))):
            visit(child, visitor)
    visitor.on_leave(root)


#: type -> whether it is a libcst node: `isinstance` against libcst's abstract base classes goes through
#: `ABCMeta.__instancecheck__` on every call, the most expensive step of a walk; an exact-type lookup is not
_IS_NODE: dict[type, bool] = {}
#: the file being analysed in `walk` order, and each of its nodes' [start, end) in it (`prepare`)
_ORDER: list[cst.CSTNode] = []
_SPAN: dict[int, tuple[int, int]] = {}


def prepare(module: cst.Module) -> None:
    """Walk the file being analysed once, in `walk`'s order, and remember where each node's subtree starts and
    ends in that order: a later `walk` or `index` of any node of the file is then a slice of one list, not a walk
    over dataclass fields. Forgotten by `clear()`."""
    clear()
    order: list[cst.CSTNode] = []
    span: dict[int, tuple[int, int]] = {}
    starts: list[int] = []
    stack: list[cst.CSTNode | None] = [module]
    table = _CHILDREN
    while stack:
        node = stack.pop()
        if node is None:  # the end of the subtree opened last
            opened = order[starts[-1]]
            span[id(opened)] = (starts.pop(), len(order))
            continue
        start = len(order)
        order.append(node)
        kind = type(node)
        children = (table.get(kind) or _children_function(kind))(node)
        if not children:  # most nodes are leaves: no end marker needed
            span[id(node)] = (start, start + 1)
            continue
        starts.append(start)
        stack.append(None)
        children.reverse()
        stack.extend(children)
    _ORDER[:] = order
    _SPAN.update(span)


def order_of(module: cst.Module) -> list[cst.CSTNode] | None:
    """The prepared file's nodes in `walk` order, when `module` is the file `prepare` walked (else None)."""
    return _ORDER if _ORDER and _ORDER[0] is module else None


def span(node: cst.CSTNode) -> tuple[int, int] | None:
    """[start, end) of `node`'s subtree in the prepared file's `walk` order, or None for a node not in it."""
    found = _SPAN.get(id(node))
    if found is None or _ORDER[found[0]] is not node:
        return None
    return found


def index(root: cst.CSTNode) -> dict[type, list[cst.CSTNode]]:
    """Every node under `root` (itself included), grouped by exact type; cached until `clear()`."""
    cached = _CACHE.get(id(root))
    if cached is not None and cached[0] is root:
        return cached[1]
    groups: dict[type, list[cst.CSTNode]] = defaultdict(list)
    for node in walk(root):
        groups[type(node)].append(node)
    _CACHE[id(root)] = (root, groups)
    return groups


def indexed(root: cst.CSTNode) -> dict[type, list[cst.CSTNode]] | None:
    """`index(root)` when it was built already (until `clear()`), else None: builds nothing."""
    cached = _CACHE.get(id(root))
    return cached[1] if cached is not None and cached[0] is root else None


def nodes(root: cst.CSTNode, kind: type[N]) -> list[N]:
    """Every node of type `kind` (exact type, or a subclass) under `root`, in source order."""
    key = id(root)
    cached = _CACHE.get(key)
    if cached is not None and cached[0] is root:
        groups = cached[1]
    else:
        bounds = _SPAN.get(key)
        if bounds is not None:
            start, end = bounds
            if end - start <= _SMALL_SUBTREE and _ORDER[start] is root:
                # a small subtree asked once or twice: filtering its slice costs less than indexing it
                if _SUBCLASSED.get(kind) is False:
                    return [n for n in _ORDER[start:end] if type(n) is kind]
                return [n for n in _ORDER[start:end] if isinstance(n, kind)]
        groups = index(root)
    found = groups.get(kind)
    if found is not None:
        # the index groups nodes by their exact type, so every member of `kind`'s group is a `kind`
        return list(found)  # type: ignore[arg-type]
    if not _has_subclasses(kind):
        return []
    merged: list[N] = []
    for node_type, members in groups.items():
        if issubclass(node_type, kind):
            merged.extend(members)  # type: ignore[arg-type]
    return merged


def _has_subclasses(kind: type) -> bool:
    known = _SUBCLASSED.get(kind)
    if known is None:
        known = _SUBCLASSED[kind] = bool(kind.__subclasses__())
    return known


#: subtrees of at most this many nodes are filtered, not indexed, by `nodes`
_SMALL_SUBTREE = 64
_SUBCLASSED: dict[type, bool] = {}


def clear() -> None:
    """Forget cached walks; the engine calls this after each file."""
    _CACHE.clear()
    _OWN.clear()
    _ORDER.clear()
    _SPAN.clear()


_SCOPES = (cst.FunctionDef, cst.ClassDef, cst.Lambda)


def own_nodes(function: cst.FunctionDef | cst.Module | cst.BaseSuite, kind: type[N]) -> list[N]:
    """Nodes of type `kind` that belong to `function` itself: not inside a nested def, class or lambda."""
    key = (id(function), "own", kind)
    cached = _OWN.get(key)
    if cached is not None and cached[0] is function:
        return list(cached[1])
    body = function.body if isinstance(function, cst.FunctionDef) else function
    nested: set[int] = set()
    for scope_kind in _SCOPES:
        for scope in nodes(body, scope_kind):
            if id(scope) not in nested:
                nested.update(id(n) for n in walk(scope))
    found = [n for n in nodes(body, kind) if id(n) not in nested]
    _OWN[key] = (function, found)
    return list(found)


_OWN: dict[tuple, tuple[cst.CSTNode, list]] = {}
