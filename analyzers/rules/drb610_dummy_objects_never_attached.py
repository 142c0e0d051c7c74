"""DRB610: a lazy package collects `_dummy_objects` for missing dependencies but never attaches them on that path."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid


DUMMIES = "_dummy_objects"
STRUCTURE = "_import_structure"
#: one step of a statement's place in the module: (compound statement or suite id, role, index in a suite)
_Step = tuple[int, str, int]
_Path = tuple[_Step, ...]


def _statements(body: Sequence[cst.BaseStatement], path: _Path, owner: int) -> Iterator[tuple[cst.CSTNode, _Path]]:
    """Every statement under `body` with its place: the suites, branches and handlers it sits in."""
    for index, statement in enumerate(body):
        here = (*path, (owner, "seq", index))
        yield statement, here
        if isinstance(statement, cst.If):
            yield from _suite(statement.body, (*here, (id(statement), "body", 0)))
            orelse = statement.orelse
            if isinstance(orelse, cst.If):
                yield from _statements([orelse], (*here, (id(statement), "orelse", 0)), id(orelse) + 1)
            elif orelse is not None:
                yield from _suite(orelse.body, (*here, (id(statement), "orelse", 0)))
        elif isinstance(statement, cst.Try):
            yield from _suite(statement.body, (*here, (id(statement), "try", 0)))
            for handler in statement.handlers:
                yield from _suite(handler.body, (*here, (id(statement), "handler", 0)))
            if statement.orelse is not None:
                yield from _suite(statement.orelse.body, (*here, (id(statement), "try-else", 0)))
            if statement.finalbody is not None:
                yield from _suite(statement.finalbody.body, (*here, (id(statement), "final", 0)))
        elif isinstance(statement, (cst.For, cst.While, cst.With)):
            yield from _suite(statement.body, (*here, (id(statement), "body", 0)))


def _suite(suite: cst.BaseSuite, path: _Path) -> Iterator[tuple[cst.CSTNode, _Path]]:
    if isinstance(suite, cst.IndentedBlock):
        yield from _statements(suite.body, path, id(suite))


def _follows(first: _Path, then: _Path) -> bool:
    """Whether the statement at `then` can run after the one at `first` on the same pass through the module."""
    for a, b in zip(first, then, strict=False):
        if a == b:
            continue
        if a[0] != b[0]:
            return False
        if a[1] == "seq":
            return b[2] > a[2]
        if b[1] == "final":
            return True
        return a[1] == "try" and b[1] == "try-else"  # a `try` body, then its `else`
    return False


def _fills(statement: cst.CSTNode) -> bool:
    """`_dummy_objects.update(...)` or `_dummy_objects[name] = value`."""
    if not isinstance(statement, cst.SimpleStatementLine):
        return False
    for small in statement.body:
        if isinstance(small, cst.Expr) and isinstance(small.value, cst.Call):
            func = small.value.func
            if (
                isinstance(func, cst.Attribute)
                and func.attr.value == "update"
                and isinstance(func.value, cst.Name)
                and func.value.value == DUMMIES
            ):
                return True
        if isinstance(small, cst.Assign) and any(
            isinstance(t.target, cst.Subscript)
            and isinstance(t.target.value, cst.Name)
            and t.target.value.value == DUMMIES
            for t in small.targets
        ):
            return True
    return False


def _attaches(statement: cst.CSTNode) -> bool:
    """`for name, value in _dummy_objects.items(): setattr(sys.modules[__name__], name, value)`."""
    if not isinstance(statement, cst.For):
        return False
    if not any(isinstance(n, cst.Name) and n.value == DUMMIES for n in walk.walk(statement.iter)):
        return False
    return any(
        isinstance(call.func, cst.Name) and call.func.value == "setattr"
        for call in walk.nodes(statement.body, cst.Call)
    )


def _installs_lazy_module(statement: cst.CSTNode) -> bool:
    """`sys.modules[__name__] = _LazyModule(...)`."""
    if not isinstance(statement, cst.SimpleStatementLine):
        return False
    return any(
        isinstance(small, cst.Assign)
        and isinstance(small.value, cst.Call)
        and isinstance(small.value.func, cst.Name)
        and small.value.func.value == "_LazyModule"
        for small in statement.body
    )


class DummyObjectsNeverAttached(Rule):
    """
    ## What it does
    Checks the `__init__.py` of a lazily imported package (`sys.modules[__name__] = _LazyModule(...)`) that
    collects placeholder classes in `_dummy_objects` when an optional dependency is missing (`except
    OptionalDependencyNotAvailable: _dummy_objects.update(...)`) for a path on which those placeholders are
    never attached to the module: there is no `for name, value in _dummy_objects.items(): setattr(...)`
    loop at all, or the loop (with the `_LazyModule` install) sits in the branch that runs only when the
    dependencies are available.

    ## Why is this bad?
    The dummies are how diffusers answers `from diffusers.pipelines.x import XPipeline` without torch or
    transformers: a placeholder that raises "XPipeline requires the PyTorch library" when used. Collected
    but not attached, they do nothing: the import fails with a bare `ImportError`/`AttributeError`, or the
    package is not even lazy on that path, and a user without the dependency cannot tell what to install.

    ## Example
    ```python
    try:
        if not is_torch_available():
            raise OptionalDependencyNotAvailable()
    except OptionalDependencyNotAvailable:
        _dummy_objects.update(get_objects_from_module(dummy_torch_objects))
    else:
        _import_structure["pipeline_x"] = ["XPipeline"]

    sys.modules[__name__] = _LazyModule(__name__, globals()["__file__"], _import_structure, module_spec=__spec__)
    ```

    Use instead:
    ```python
    sys.modules[__name__] = _LazyModule(__name__, globals()["__file__"], _import_structure, module_spec=__spec__)
    for name, value in _dummy_objects.items():
        setattr(sys.modules[__name__], name, value)
    ```

    ## Known problems
    Only a dict named `_dummy_objects`, filled with `.update(...)` or item assignment at module level, and a
    `for` loop over it that calls `setattr` are recognised; a package that attaches its dummies some other
    way (a module `__getattr__`) is reported.

    ## References
    - huggingface/diffusers#13656, pattern 6
    - huggingface/diffusers#5036 (text_to_video_synthesis and stable_diffusion_safe dropped their dummies)
    """

    code = "DRB610"
    pattern = 6
    severity = "error"
    message = (
        "`_dummy_objects` is filled here when an optional dependency is missing but {why}, so importing the "
        "package's classes without that dependency fails with a bare import error instead of the dummy's "
        "message; install the `_LazyModule` and `setattr` every dummy on it unconditionally."
    )
    REQUIRES_ANY = (DUMMIES,)

    _HEAD = """
            import sys
            from typing import TYPE_CHECKING

            from ...utils import OptionalDependencyNotAvailable, _LazyModule, get_objects_from_module, is_torch_available

            _dummy_objects = {}
            _import_structure = {}

            try:
                if not is_torch_available():
                    raise OptionalDependencyNotAvailable()
            except OptionalDependencyNotAvailable:
                from ...utils import dummy_pt_objects

                _dummy_objects.update(get_objects_from_module(dummy_pt_objects))
            else:
                _import_structure["pipeline_x"] = ["XPipeline"]
    """
    _PATH = "diffusers/pipelines/x/__init__.py"

    VALID = [
        Valid(
            _HEAD
            + """
            if TYPE_CHECKING:
                from .pipeline_x import XPipeline
            else:
                sys.modules[__name__] = _LazyModule(
                    __name__, globals()["__file__"], _import_structure, module_spec=__spec__
                )
                for name, value in _dummy_objects.items():
                    setattr(sys.modules[__name__], name, value)
            """,
            path=_PATH,
        ),
    ]
    INVALID = [
        Invalid(
            _HEAD
            + """
            if TYPE_CHECKING:
                from .pipeline_x import XPipeline
            else:
                sys.modules[__name__] = _LazyModule(
                    __name__, globals()["__file__"], _import_structure, module_spec=__spec__
                )
            """,
            path=_PATH,
            message=(
                "`_dummy_objects` is filled here when an optional dependency is missing but never attached to the "
                "module, so importing the package's classes without that dependency fails with a bare import error "
                "instead of the dummy's message; install the `_LazyModule` and `setattr` every dummy on it "
                "unconditionally."
            ),
        ),
        Invalid(
            """
            import sys
            from typing import TYPE_CHECKING

            from ...utils import OptionalDependencyNotAvailable, _LazyModule, get_objects_from_module, is_torch_available

            _dummy_objects = {}
            _import_structure = {"pipeline_x": ["XPipeline"]}

            if TYPE_CHECKING:
                from .pipeline_x import XPipeline
            else:
                try:
                    if not is_torch_available():
                        raise OptionalDependencyNotAvailable()
                except OptionalDependencyNotAvailable:
                    from ...utils import dummy_pt_objects

                    _dummy_objects.update(get_objects_from_module(dummy_pt_objects))
                else:
                    sys.modules[__name__] = _LazyModule(
                        __name__, globals()["__file__"], _import_structure, module_spec=__spec__
                    )
                    for name, value in _dummy_objects.items():
                        setattr(sys.modules[__name__], name, value)
            """,
            path=_PATH,
        ),
    ]

    def check(self) -> None:
        module = self.context.module
        placed = list(_statements(module.body, (), id(module)))
        fills = [(s, p) for s, p in placed if _fills(s)]
        if not fills:
            return
        loops = [p for s, p in placed if _attaches(s)]
        installs = [p for s, p in placed if _installs_lazy_module(s)]
        if not installs:
            return  # not a lazy package: the dummies are module globals already
        for statement, path in fills:
            if any(_follows(path, loop) for loop in loops):
                continue
            if not loops:
                why, symbol = "never attached to the module", DUMMIES
            elif not any(_follows(path, install) for install in installs):
                why, symbol = "the `_LazyModule` and the dummies are installed only when it is available", STRUCTURE
            else:
                why, symbol = "the loop that attaches them does not run on that path", DUMMIES
            self.report(statement, self.message.format(why=why), symbol=symbol, scope="")
