"""diffusers' lazy export tables: the `_import_structure` dict of a package `__init__`, from which `_LazyModule`
imports a submodule only when one of the names listed for it is first used."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import libcst as cst

from analyzers.matchers import string_value
from analyzers.syntax import dotted_name, nested_blocks


TABLE = "_import_structure"


@dataclass(frozen=True)
class LazyExport:
    """One entry of `_import_structure`: what a package exports lazily from one of its submodules."""

    #: the key, relative to the package: `pipeline_output`, `transformers.transformer_flux`
    submodule: str
    #: (name, its string node) for each name the entry lists literally
    names: tuple[tuple[str, cst.BaseExpression], ...]
    #: False only for an entry that visibly lists nothing (`"controlnet": []`, a subpackage listed for its own
    #: exports): importing the package does not load the submodule for it
    exports: bool


def _entry(submodule: str, value: cst.BaseExpression, one_name: bool = False) -> LazyExport:
    """The entry `submodule: value`; `value` is a list or tuple of names, or one name (`one_name`, `.append`)."""
    if one_name:
        elements = [value]
    elif isinstance(value, (cst.List, cst.Tuple)):
        elements = [element.value for element in value.elements]
    else:
        elements = []  # a variable or a call: names that cannot be read here
    names = tuple((name, node) for node in elements for name in [string_value(node)] if name is not None)
    listed_nothing = isinstance(value, (cst.List, cst.Tuple)) and not value.elements
    return LazyExport(submodule, names, exports=not listed_nothing)


def _from_dict(node: cst.BaseExpression) -> list[LazyExport]:
    if not isinstance(node, cst.Dict):
        return []
    return [
        _entry(key, element.value)
        for element in node.elements
        if isinstance(element, cst.DictElement)
        for key in [string_value(element.key)]
        if key
    ]


def _subscript_key(node: cst.BaseExpression) -> str | None:
    """`"pipeline_output"` for `_import_structure["pipeline_output"]`."""
    if isinstance(node, cst.Subscript) and dotted_name(node.value) == TABLE and len(node.slice) == 1:
        index = node.slice[0].slice
        if isinstance(index, cst.Index):
            return string_value(index.value)
    return None


def lazy_exports(statement: cst.BaseSmallStatement) -> list[LazyExport]:
    """The entries one small statement adds to `_import_structure`, in order, in each form diffusers writes:
    `_import_structure = {...}`, `_import_structure["m"] = [...]`, `_import_structure["m"] += [...]`,
    `_import_structure["m"].extend([...])`, `_import_structure["m"].append("Name")` and `_import_structure.update({...})`.
    """
    if isinstance(statement, cst.Assign):
        entries = []
        for target in statement.targets:
            if dotted_name(target.target) == TABLE:
                entries += _from_dict(statement.value)
            key = _subscript_key(target.target)
            if key:
                entries.append(_entry(key, statement.value))
        return entries
    if isinstance(statement, cst.AugAssign):
        key = _subscript_key(statement.target)
        return [_entry(key, statement.value)] if key else []
    if isinstance(statement, cst.Expr) and isinstance(statement.value, cst.Call) and statement.value.args:
        func = statement.value.func
        argument = statement.value.args[0].value
        if isinstance(func, cst.Attribute):
            if dotted_name(func.value) == TABLE and func.attr.value == "update":
                return _from_dict(argument)
            key = _subscript_key(func.value)
            if key and func.attr.value in ("extend", "append"):
                return [_entry(key, argument, one_name=func.attr.value == "append")]
    return []


def top_level_statements(body: Sequence[cst.CSTNode]) -> Iterator[cst.CSTNode]:
    """Every statement that runs at import, descending into `if`/`try`/`with` blocks but not into defs or classes."""
    for statement in body:
        yield statement
        if isinstance(statement, (cst.If, cst.Try, cst.With)):
            for block in nested_blocks(statement):
                yield from top_level_statements(block)


def package_exports(module: cst.Module) -> Iterator[LazyExport]:
    """Every `_import_structure` entry of a package `__init__`, in every branch of its guards, in source order."""
    for statement in top_level_statements(module.body):
        if isinstance(statement, cst.SimpleStatementLine):
            for small in statement.body:
                yield from lazy_exports(small)
