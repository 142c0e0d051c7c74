"""analyzers.parsing: libcst's parse without per-node validation gives the same trees and errors, and leaves
validation on for everything else."""

from __future__ import annotations

import abc
from pathlib import Path

import libcst as cst
import pytest

from analyzers import parsing
from analyzers.scan import installed_diffusers


SNIPPETS = [
    "x = (1,\n     2)\n",
    "type Embeds = list[float]\n",  # Python 3.12 syntax
    'name = f"{height!r:>{width}} {x=}"\n',
    "async def f():\n    async with a as (b, c):\n        yield [i async for i in b if await c]\n",
    "match value:\n    case {'k': [1, *rest]} if rest:\n        pass\n    case _:\n        pass\n",
    "lambda: (yield)\n",
    "@decorator\nclass A(B, metaclass=M):\n    x: int = 1\n\n\n\n# trailing comment",
]
UNPARSABLE = ["this is not python (", "def f(:\n    pass\n", "x = = 1\n", "\tif x:\n  pass\n"]


def _outcome(parse, source: str):
    try:
        return "tree", parse(source).code
    except cst.ParserSyntaxError as error:
        return "error", (error.message, error.raw_line, error.raw_column)


def test_the_validation_hook_is_the_one_this_module_knows():
    # libcst 1.x: if this fails, libcst changed how nodes validate, and parse_module is plain libcst again
    assert parsing.SKIPS_VALIDATION


@pytest.mark.parametrize("source", SNIPPETS + UNPARSABLE)
def test_same_code_and_same_errors_as_libcst(source):
    assert _outcome(parsing.parse_module, source) == _outcome(cst.parse_module, source)


def test_same_trees_as_libcst_on_diffusers_files():
    files = sorted(Path(installed_diffusers()).rglob("*.py"))[::40]
    assert len(files) > 20
    for file in files:
        source = file.read_text(encoding="utf-8")
        ours = parsing.parse_module(source)
        assert ours.code == source
        assert ours.deep_equals(cst.parse_module(source)), file


def test_parsing_skips_validation_and_hands_it_back(monkeypatch):
    checked: list[str] = []
    real = cst.Name._validate

    def counting(self):
        checked.append(self.value)
        return real(self)

    monkeypatch.setattr(cst.Name, "_validate", counting)
    parsing.parse_module("height = width * 2\n")
    assert checked == []  # the parser's nodes are not checked
    cst.parse_module("height = width * 2\n")
    assert checked  # while libcst's own parse checks every name
    with pytest.raises(cst.ParserSyntaxError):
        parsing.parse_module("height = (\n")
    # after a parse and after a failed one, a node built by hand is checked again
    with pytest.raises(cst.CSTValidationError):
        cst.Name("")
    with pytest.raises(cst.CSTValidationError):
        cst.Name("x", lpar=[cst.LeftParen()])  # parentheses that do not balance


def test_nodes_built_by_hand_keep_the_dataclass_defaults():
    # outside a parse a node class builds as its dataclass does: a default factory gives a fresh node each time
    first, second = cst.TypeParameters(params=[]), cst.TypeParameters(params=[])
    assert first.lbracket.deep_equals(cst.LeftSquareBracket()) and first.lbracket is not second.lbracket
    assert cst.Name("x").lpar == () and cst.Name("x", lpar=[]).lpar == []
    # and inside a parse the parser's nodes carry the same fields as libcst's own parse gives them
    ours, theirs = parsing.parse_module("type T[X] = list[X]\n"), cst.parse_module("type T[X] = list[X]\n")
    assert ours.deep_equals(theirs)


def test_node_classes_answer_isinstance_as_abcmeta_would():
    assert parsing.FAST_ISINSTANCE
    classes = [cst.CSTNode, *parsing._node_classes()]
    assert all(isinstance(kind, parsing._FastNodeMeta) for kind in classes)
    for kind in classes:
        for base in classes:
            assert issubclass(kind, base) == abc.ABCMeta.__subclasscheck__(base, kind), (kind, base)
    name = cst.Name("x")
    assert isinstance(name, cst.BaseExpression) and not isinstance(name, cst.BaseStatement)
    with pytest.raises(TypeError, match="abstract"):
        cst.BaseExpression()  # abstract methods are still enforced


def test_a_class_derived_later_is_still_built_by_abcmeta():
    class Derived(cst.BaseExpression):
        pass

    assert isinstance(Derived, abc.ABCMeta) and Derived.__abstractmethods__
