"""libcst's parser, building its nodes the short way: the parse every analysed file and every neighbour goes through.

Every libcst node is a frozen dataclass. Its generated `__init__` sets each field with `object.__setattr__` (a
frozen class refuses plain assignment) and then calls `CSTNode.__post_init__`, which checks the node (parentheses
balanced, the whitespace a keyword needs, ...). That guards trees that code builds by hand. A tree that the parser
builds from source text is valid by construction, and building its nodes is a good part of a parse: the checks are
about an eighth of `libcst.parse_module`'s time, the slow field assignment a tenth more. libcst says as much beside
the call: "It might make more sense to move validation work into the visitor, which would allow us to avoid
validating the tree when parsing a file." libcst has no switch for it, so this module gives each node class an
`__init__` of the same signature that, while `parse_module` runs, stores the fields straight into the node's slots
and checks nothing; at any other time it is the dataclass's own `__init__`.

- The trees are the same: the fields, their order and their defaults come from the dataclass itself, and the
  check only checks, it never changes a node. On 4,000 files (diffusers, the packages installed beside it, the
  standard library) both parses accept and reject the same files and give back the same code
  (`tests/analyzers/test_parsing.py` compares whole trees on a sample of them).
- Nodes built by hand are still checked: outside a parse every node class builds as before.
- While one thread parses, a node another thread builds is not checked either. Parses take a lock, so two
  never overlap. Scans and reviews analyse in one thread per process.
- If libcst ever builds or checks nodes some other way (another `__post_init__`, a field the constructor does
  not take, a hand-written `__init__`), `parse_module` is plain `libcst.parse_module`.

The node classes also get an `isinstance` without `ABCMeta`'s Python-level check (`_FastNodeMeta`): every libcst
node class is an abstract base class, so `isinstance(node, cst.BaseExpression)`, the most frequent question rules
ask, went through `ABCMeta.__instancecheck__` each time (a sixth of a profiled scan's calls, about 5% of its time).
libcst registers no virtual subclasses, so the plain subclass test gives the same answers (tested against every pair
of node classes); abstract methods are still enforced, and classes derived later are still built by `ABCMeta`.
"""

from __future__ import annotations

import abc
import dataclasses
import threading
from collections.abc import Callable
from types import MemberDescriptorType
from typing import cast

import libcst as cst


CSTNode = cst.CSTNode
_CHECK = CSTNode.__dict__.get("__post_init__")
_LOCK = threading.Lock()


class _Parsing(threading.local):
    """Whether this thread is inside `parse_module` (the node constructors read it)."""

    active = False


_STATE = _Parsing()


def _node_classes() -> list[type]:
    found: list[type] = []
    seen: set[type] = set()
    stack = list(CSTNode.__subclasses__())
    while stack:
        kind = stack.pop()
        if kind in seen:
            continue
        seen.add(kind)
        stack.extend(kind.__subclasses__())
        found.append(kind)
    return found


def _hook_is_shared(classes: list[type]) -> bool:
    """Whether every libcst node validates through `CSTNode.__post_init__` alone, as in libcst 1.x."""
    if _CHECK is None or getattr(_CHECK, "__qualname__", "") != "CSTNode.__post_init__":
        return False
    return not any("__post_init__" in kind.__dict__ for kind in classes)


class _Factory:
    """Marks a parameter whose dataclass default is a factory, as dataclasses' own `__init__` does."""


def _setter(kind: type, name: str) -> Callable[[object, object], None]:
    """Store field `name` of a `kind` node: straight into its slot, else as a frozen dataclass does."""
    for base in kind.__mro__:
        slot = base.__dict__.get(name)
        if isinstance(slot, MemberDescriptorType):  # a `__slots__` entry
            return slot.__set__

    def assign(node: object, value: object) -> None:
        object.__setattr__(node, name, value)

    return assign


def _quick_init(kind: type) -> Callable | None:
    """An `__init__` for `kind` with the dataclass's signature that, during a parse, only stores the fields;
    None when `kind` is not a plain dataclass node this module understands."""
    original = kind.__dict__.get("__init__")
    if original is None or not dataclasses.is_dataclass(kind) or original.__code__.co_filename != "<string>":
        return None
    fields = dataclasses.fields(kind)
    if any(not f.init for f in fields):
        return None
    names: dict[str, object] = {"_STATE": _STATE, "_ORIGINAL": original, "_FACTORY": _Factory}
    params: list[str] = ["self"]
    factories: list[str] = []
    stores: list[str] = []
    keyword_only = False
    for f in fields:
        if f.kw_only and not keyword_only:
            params.append("*")
            keyword_only = True
        names[f"_set_{f.name}"] = _setter(kind, f.name)
        if f.default is not dataclasses.MISSING:
            names[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            names[f"_factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_FACTORY")
            factories.append(f"    if {f.name} is _FACTORY:\n        {f.name} = _factory_{f.name}()\n")
        else:
            params.append(f.name)
        stores.append(f"        _set_{f.name}(self, {f.name})")
    arguments = ", ".join(f"{f.name}={f.name}" for f in fields)
    source = (
        f"def __init__({', '.join(params)}):\n"
        + "".join(factories)
        + "    if _STATE.active:\n"
        + ("\n".join(stores) or "        pass")
        + "\n"
        "    else:\n"
        f"        _ORIGINAL(self, {arguments})\n"
    )
    exec(source, names)  # noqa: S102 - the code is built above from the dataclass's own field list
    init = cast("Callable", names["__init__"])
    init.__qualname__ = f"{kind.__qualname__}.__init__"
    init.__doc__ = original.__doc__
    return init


def _install() -> bool:
    classes = _node_classes()
    if not _hook_is_shared(classes):
        return False
    quick = {}
    for kind in classes:
        if "__init__" not in kind.__dict__:
            continue  # inherits an `__init__`: the class it comes from gets the quick one
        init = _quick_init(kind)
        if init is None:
            return False
        quick[kind] = init
    for kind, init in quick.items():
        kind.__init__ = init  # type: ignore[misc]
    return True


SKIPS_VALIDATION = _install()


class _FastNodeMeta(abc.ABCMeta):
    """`ABCMeta` with `type`'s own instance and subclass tests: no virtual subclasses, no Python-level call."""

    __instancecheck__ = type.__instancecheck__
    __subclasscheck__ = type.__subclasscheck__


def _fast_isinstance() -> bool:
    """Give every libcst node class built by `ABCMeta` the `_FastNodeMeta` metaclass (the same layout)."""
    classes = [CSTNode, *_node_classes()]
    dump = getattr(abc, "_get_dump", None)  # the C implementation of `abc` (CPython's default) has it
    if dump is None or any(dump(kind)[0] for kind in classes if type(kind) is abc.ABCMeta):
        return False  # virtual subclasses registered, or an `abc` this cannot look into: keep ABCMeta's answers
    for kind in classes:
        if type(kind) is abc.ABCMeta:
            kind.__class__ = _FastNodeMeta
    return True


FAST_ISINSTANCE = _fast_isinstance()


def parse_module(source: str) -> cst.Module:
    """`libcst.parse_module(source)`, the same tree and the same errors, its nodes built without checks."""
    if not SKIPS_VALIDATION:
        return cst.parse_module(source)
    with _LOCK:
        _STATE.active = True
        try:
            return cst.parse_module(source)
        finally:
            _STATE.active = False
