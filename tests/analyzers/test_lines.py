"""Lines from `analyzers.lines` (statements through `ast`, nodes through one statement's code) equal libcst's
`PositionProvider`; `walk.visit` drives a visitor as libcst's own `visit` does, without rebuilding the tree."""

from __future__ import annotations

import textwrap
from pathlib import Path

import libcst as cst
import pytest
from libcst.metadata import MetadataWrapper, PositionProvider

from analyzers import walk
from analyzers.context import FileContext
from analyzers.project import Project


TRICKY = textwrap.dedent(
    '''
    # a comment before anything
    import os; import sys
    from . import (
        a,
        b,
    )


    @decorator
    @other(
        1,
    )
    def f(
        p, /,
        x: int = (1 +
                  2),
        *,
        y=lambda q: q if q else None,
    ) -> dict[
        str, int
    ]:
        """Doc
        string."""
        total = sum(
            v for v in x
            if v
        ); other = 2
        if x: return 1
        elif (y and
              x):
            pass
        else:
            while x > (
                3
            ):
                x -= 1
            # a comment ending the block
        for i, j in zip(
            a, b
        ):
            with open(i) as fh, open(
                j
            ) as gh:
                try:
                    raise ValueError(
                        "x"
                    )
                except (ValueError,
                        TypeError) as error:
                    del error
                finally:
                    pass
        return {
            "k": [x[1:2:3], x[::-1]],
        }


    class C(
        Base,
        metaclass=Meta,
    ):
        z: int = 3
        s = """multi
    line"""

        async def g(self):
            async with self.lock:
                await self.h()
            async for item in self.items():
                yield [x async for x in item if x]
    '''
)


def _compare(path: str, source: str) -> tuple[int, int]:
    """(nodes placed by the fast path, nodes left to libcst); asserts every placed node's lines are libcst's."""
    module = cst.parse_module(source)
    walk.prepare(module)
    try:
        context = FileContext(path, source, module, Project(lambda _: None))
        lines = context._statement_lines
        assert lines.usable
        expected = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
        placed = left = 0
        for node in walk.order_of(module) or []:
            got = lines.lines(node)
            if got is None:
                left += 1
                continue
            code_range = expected[node]
            assert got == (code_range.start.line, code_range.end.line), (
                type(node).__name__,
                module.code_for_node(node),
            )
            placed += 1
        return placed, left
    finally:
        walk.clear()


def test_tricky_syntax_gets_libcst_lines():
    placed, left = _compare("diffusers/tricky.py", TRICKY)
    assert placed > 2 * left  # the fast path answers most nodes, not only the easy ones


def test_real_diffusers_files_get_libcst_lines():
    diffusers = pytest.importorskip("diffusers")
    root = Path(diffusers.__file__).parent
    files = [
        root / "pipelines/flux/pipeline_flux.py",
        root / "pipelines/stable_diffusion/pipeline_stable_diffusion.py",
        root / "models/attention_processor.py",
        root / "schedulers/scheduling_euler_discrete.py",
        root / "loaders/lora_pipeline.py",
    ]
    placed = 0
    for file in files:
        placed += _compare(file.relative_to(root.parent).as_posix(), file.read_text())[0]
    assert placed > 20_000


def test_a_file_ast_cannot_parse_keeps_libcst_positions():
    source = "def f[T](x: T) -> T:\n    return x\n"  # type parameters: ast of Python 3.11 rejects them
    module = cst.parse_module(source)
    walk.prepare(module)
    try:
        context = FileContext("diffusers/generic.py", source, module, Project(lambda _: None))
        returned = module.body[0].body.body[0]
        assert context.position(returned) == (2, 2)
    finally:
        walk.clear()


class _Recorder(cst.CSTVisitor):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, int]] = []

    def on_visit(self, node: cst.CSTNode) -> bool:
        self.events.append(("visit", id(node)))
        return not isinstance(node, cst.Lambda)  # a visitor that prunes: children of a lambda are not seen

    def on_leave(self, original_node: cst.CSTNode) -> None:
        self.events.append(("leave", id(original_node)))


def test_walk_visit_is_libcsts_visit_without_whitespace():
    module = cst.parse_module(TRICKY)
    ours, theirs = _Recorder(), _Recorder()
    walk.visit(module, ours)
    module.visit(theirs)
    # libcst also visits whitespace, comments and punctuation; walk.visit leaves out what `walk` does (and a
    # slice's colons, which `walk` keeps)
    kept = {id(n) for n in walk.walk(module) if not isinstance(n, cst.Colon)}
    assert len(ours.events) > 300
    assert ours.events == [event for event in theirs.events if event[1] in kept]
    lambdas = [n for n in walk.walk(module) if isinstance(n, cst.Lambda)]
    assert lambdas and ("visit", id(lambdas[0].params)) not in ours.events
