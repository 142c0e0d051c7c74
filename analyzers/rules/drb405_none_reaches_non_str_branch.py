"""DRB405: the branch taken when `isinstance(prompt, str)` fails dereferences `prompt`, which may be None there."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import TypeVar

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.flow import maybe_skipped
from analyzers.matchers import call_name, names_read, parameters, target_names


N = TypeVar("N", bound=cst.CSTNode)


def _isinstance_of(test: cst.BaseExpression) -> tuple[str, bool] | None:
    """`isinstance(x, T)` -> ("x", True); `not isinstance(x, T)` -> ("x", False); else None."""
    positive = True
    if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
        positive, test = False, test.expression
    if (
        isinstance(test, cst.Call)
        and call_name(test) == "isinstance"
        and len(test.args) == 2
        and isinstance(test.args[0].value, cst.Name)
        and "None" not in {n.value for n in names_read(test.args[1].value)}
    ):
        return test.args[0].value.value, positive
    return None


def _none_comparisons(node: cst.CSTNode, name: str) -> list[cst.Comparison]:
    """Every `name is None` / `name is not None` under `node`."""
    found = []
    for comparison in walk.nodes(node, cst.Comparison):
        if (
            isinstance(comparison.left, cst.Name)
            and comparison.left.value == name
            and len(comparison.comparisons) == 1
            and isinstance(comparison.comparisons[0].operator, (cst.Is, cst.IsNot))
            and isinstance(comparison.comparisons[0].comparator, cst.Name)
            and comparison.comparisons[0].comparator.value == "None"
        ):
            found.append(comparison)
    return found


def _embeds_alternative(function: cst.FunctionDef, name: str, names: set[str]) -> bool:
    """Whether the function takes `<name>_embeds` too and tests it against None: `prompt` may then be left out."""
    alternative = f"{name}_embeds"
    return alternative in names and bool(_none_comparisons(function.body, alternative))


def _normalises(statement: cst.SimpleStatementLine, name: str) -> bool:
    """`prompt = [prompt] if isinstance(prompt, str) else prompt`: None goes through unchanged."""
    if len(statement.body) != 1 or not isinstance(statement.body[0], cst.Assign):
        return False
    assign = statement.body[0]
    value = assign.value
    return (
        len(assign.targets) == 1
        and isinstance(assign.targets[0].target, cst.Name)
        and assign.targets[0].target.value == name
        and isinstance(value, cst.IfExp)
        and _isinstance_of(value.test) == (name, True)
        and isinstance(value.orelse, cst.Name)
        and value.orelse.value == name
    )


def _dereference(statements: Sequence[cst.CSTNode], name: str) -> cst.CSTNode | None:
    """The first `len(name)`, `name.attr`, `name[...]` or `for _ in name` in the simple statements (and compound
    headers) that run whenever the branch runs; None when the branch tests `name` against None first."""
    for statement in statements:
        if isinstance(statement, cst.SimpleStatementLine):
            roots: list[cst.CSTNode] = [statement]
        elif isinstance(statement, cst.For):
            if isinstance(statement.iter, cst.Name) and statement.iter.value == name:
                return statement.iter
            roots = [statement.iter]
        elif isinstance(statement, (cst.If, cst.While)):
            if _none_comparisons(statement.test, name):
                return None
            roots = [statement.test]
        else:
            return None
        for root in roots:
            for node in _reads_in_order(root):
                if _derefs(node, name):
                    return node
        if isinstance(statement, cst.SimpleStatementLine):
            if any(name in target_names(t.target) for a in walk.nodes(statement, cst.Assign) for t in a.targets):
                return None  # rebound
    return None


def _reads_in_order(root: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """Nodes under `root` that always run: not in lambdas, comprehensions, `a if c else b` branches or the right
    of `and`/`or`."""
    skipped = maybe_skipped(root)
    for found in walk.walk(root):
        if id(found) not in skipped:
            yield found


def _derefs(node: cst.CSTNode, name: str) -> bool:
    if isinstance(node, cst.Call) and call_name(node) == "len" and len(node.args) == 1:
        value = node.args[0].value
        return isinstance(value, cst.Name) and value.value == name
    if isinstance(node, (cst.Attribute, cst.Subscript)):
        return isinstance(node.value, cst.Name) and node.value.value == name
    return False


def _rejects(statements: Sequence[cst.CSTNode]) -> bool:
    """Whether the block starts by raising."""
    if not statements:
        return False
    first = statements[0]
    return isinstance(first, cst.SimpleStatementLine) and any(isinstance(s, cst.Raise) for s in first.body)


class NoneReachesNonStrBranch(Rule):
    """
    ## What it does
    Checks for an argument that the function itself treats as optional (it tests `x is None` together with
    another condition, as in `prompt is None and prompt_embeds is None`) and that is then split with
    `isinstance(x, str)`: the branch taken when the test fails calls `len(x)`, indexes it or reads an attribute
    (`else: batch_size = len(prompt)`), or rejects it (`if not isinstance(prompt, str): raise ...`).

    The same holds for a statement that dereferences such an argument on every path of the function
    (`prompt = [prompt] if isinstance(prompt, str) else prompt; batch_size = len(prompt)` in an `encode_prompt`
    that also takes `prompt_embeds`); taking `<x>_embeds` and testing it against None counts as accepting a
    missing `x`.

    ## Why is this bad?
    `None` is not a `str` either: a caller who passes `prompt_embeds` instead of `prompt` lands in the "list"
    branch and gets `TypeError: object of type 'NoneType' has no len()`, or a `ValueError` that forbids the
    documented precomputed-embeddings path.

    ## Example
    ```python
    def check_inputs(self, prompt, image, prompt_embeds=None):
        if prompt is None and prompt_embeds is None:
            raise ValueError("Provide either `prompt` or `prompt_embeds`.")
        if isinstance(prompt, str):
            batch_size = 1
        else:
            batch_size = len(prompt)
    ```

    Use instead:
    ```python
    def check_inputs(self, prompt, image, prompt_embeds=None):
        if prompt is None and prompt_embeds is None:
            raise ValueError("Provide either `prompt` or `prompt_embeds`.")
        if prompt is not None and isinstance(prompt, str):
            batch_size = 1
        elif prompt is not None and isinstance(prompt, list):
            batch_size = len(prompt)
        else:
            batch_size = prompt_embeds.shape[0]
    ```

    ## Known problems
    Only a test that is exactly `isinstance(x, ...)` or `not isinstance(x, ...)` (and `elif` chains of them) is
    looked at, inside no other `if` that tests `x`, with no earlier `if x is None: raise/return` and no
    rebinding of `x` before it. A function that never tests `x is None` together with another condition is
    trusted to require `x`. A `raise` is reported only at the top level of the function: under another
    condition (`if text_images is not None:`) requiring a real prompt may be the point.

    ## References
    - huggingface/diffusers#13656, pattern 4
    - huggingface/diffusers#4278 (StableDiffusionUpscalePipeline crashed on `len(prompt)` when only
      `prompt_embeds` was given)
    - huggingface/diffusers#13656 pattern 4's first example: `prompt_embeds` given without `prompt` crashing on
      `len(prompt)`
    - huggingface/diffusers#12251 (WanVACEPipeline rejected `prompt=None` with `if not isinstance(prompt, str)`)
    """

    code = "DRB405"
    pattern = 4
    severity = "warning"
    message_deref = (
        "`{name}` may be None here (the function accepts it missing), but the branch taken when "
        "`isinstance({name}, ...)` fails dereferences it; test `{name} is not None` first."
    )
    message_first = (
        "`{name}` may be None here (the function accepts it missing), but this statement dereferences it on "
        "every path; test `{name} is not None` first."
    )
    message_reject = (
        "`not isinstance({name}, ...)` also rejects `{name}=None`, which the function otherwise accepts; "
        "test `{name} is not None and not isinstance({name}, ...)`."
    )
    REQUIRES_ANY = ("isinstance(",)
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            def check_inputs(self, prompt, image, prompt_embeds=None):
                if prompt is None and prompt_embeds is None:
                    raise ValueError("either")
                if prompt is not None:
                    if isinstance(prompt, str):
                        batch_size = 1
                    else:
                        batch_size = len(prompt)
                if isinstance(image, list):
                    n = 1
                else:
                    n = image.shape[0]
                return batch_size, n
            """
        ),
        Valid(
            """
            def encode(self, prompt=None, prompt_embeds=None):
                if prompt is None:
                    raise ValueError("prompt is required")
                if isinstance(prompt, str):
                    n = 1
                else:
                    n = len(prompt)
                return n

            def helper(prompt=None, negative_prompt=None, embeds=None):
                if negative_prompt is None and embeds is None:
                    negative_prompt = ""
                if isinstance(prompt, (str, type(None))):
                    n = 1
                else:
                    n = len(prompt)
                if isinstance(negative_prompt, str):
                    negative_prompt = [negative_prompt]
                else:
                    negative_prompt = list(negative_prompt)
                return n, negative_prompt

            def encode_prompt(self, prompt=None, prompt_embeds=None, device=None):
                prompt = [prompt] if isinstance(prompt, str) else prompt
                if prompt is not None:
                    batch_size = len(prompt)
                else:
                    batch_size = prompt_embeds.shape[0]
                if prompt_embeds is None:
                    prompt_embeds = self._encode(prompt)
                return prompt_embeds, batch_size

            def check_free_noise(prompt, prompt_embeds, negative_prompt_embeds, num_frames):
                if not isinstance(prompt, (str, dict)):
                    raise ValueError("`prompt` has to be a str or a dict")
                if prompt_embeds is not None or negative_prompt_embeds is not None:
                    raise ValueError("`prompt_embeds` is not supported here")
                return max(prompt.keys()) < num_frames

            def check_text_images(prompt=None, text_images=None, prompt_embeds=None):
                if prompt is None and prompt_embeds is None:
                    raise ValueError("either")
                if text_images is not None:
                    if not isinstance(prompt, str):
                        raise ValueError("`text_images` need a caption in `prompt`")
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class ImagePipeline(DiffusionPipeline):
                def encode_prompt(self, prompt=None, num_images_per_prompt=1, prompt_embeds=None):
                    prompt = [prompt] if isinstance(prompt, str) else prompt
                    batch_size = len(prompt)
                    if prompt_embeds is None:
                        prompt_embeds = self._encode(prompt)
                    return prompt_embeds.repeat(num_images_per_prompt, 1, 1), batch_size
            """,
            message=(
                "`prompt` may be None here (the function accepts it missing), but this statement dereferences it "
                "on every path; test `prompt is not None` first."
            ),
        ),
        Invalid(
            """
            class UpscalePipeline(DiffusionPipeline):
                def check_inputs(self, prompt, image, prompt_embeds=None):
                    if prompt is None and prompt_embeds is None:
                        raise ValueError("Provide either `prompt` or `prompt_embeds`.")
                    if isinstance(image, list):
                        if isinstance(prompt, str):
                            batch_size = 1
                        elif isinstance(prompt, tuple):
                            batch_size = 2
                        else:
                            batch_size = len(prompt)
                        if batch_size != len(image):
                            raise ValueError("batch sizes differ")
            """,
            message=(
                "`prompt` may be None here (the function accepts it missing), but the branch taken when "
                "`isinstance(prompt, ...)` fails dereferences it; test `prompt is not None` first."
            ),
        ),
        Invalid(
            """
            class VideoPipeline(DiffusionPipeline):
                def __call__(self, prompt=None, negative_prompt=None, prompt_embeds=None):
                    if not isinstance(prompt, str):
                        raise ValueError("Passing a list of prompts is not yet supported.")
                    if prompt is not None and isinstance(prompt, str):
                        batch_size = 1
                    else:
                        batch_size = prompt_embeds.shape[0]
                    return batch_size
            """,
            message=(
                "`not isinstance(prompt, ...)` also rejects `prompt=None`, which the function otherwise accepts; "
                "test `prompt is not None and not isinstance(prompt, ...)`."
            ),
        ),
    ]

    def check(self) -> None:
        self._bound: dict[int, set[str]] = {}  # `_bound_names` by id of the statement
        self._file: _FileIndex | None = _FileIndex(walk.order_of(self.context.module))
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef) or not isinstance(function.body, cst.IndentedBlock):
                continue
            names = {p.name.value for p in parameters(function)} - {"self", "cls"}
            # a None test next to another condition says None is fine for the `isinstance` branches; a statement
            # that dereferences the argument on every path is reported only where the function takes `<x>_embeds`
            # instead (a None test next to another condition is too weak a hint there)
            self._accepted = names & self._none_accepted(function) if names else set()
            self._alternatives = {name for name in names if f"{name}_embeds" in names}
            if self._alternatives:  # `_embeds_alternative`: the body tests `<name>_embeds` against None
                assert self._file is not None
                tested = _none_tested(self._file.nodes(function.body, cst.Comparison))
                self._alternatives = {name for name in self._alternatives if f"{name}_embeds" in tested}
            accepted = self._accepted | self._alternatives
            if not accepted:
                continue
            self._scope = definition.qualname
            self._block(function.body.body, accepted, set(), nested=False)

    def _block(self, statements: Sequence[cst.CSTNode], names: set[str], reported: set[str], nested: bool) -> None:
        live = set(names)
        for statement in statements:
            if not live:
                return
            if isinstance(statement, cst.If):
                self._if(statement, live, reported, nested)
                tested = {n.value for n in names_read(statement.test)}
                inner = live - tested  # under `if prompt is not None:` (or any test of it) the value is known
                self._block(statement.body.body, inner, reported, nested=True)
                orelse = statement.orelse
                while isinstance(orelse, cst.If):
                    tested |= {n.value for n in names_read(orelse.test)}
                    self._block(orelse.body.body, live - tested, reported, nested=True)
                    orelse = orelse.orelse
                if isinstance(orelse, cst.Else):
                    self._block(orelse.body.body, live - tested, reported, nested=True)
                # `if x is None: raise/return` leaves x known afterwards, and so do `if not isinstance(x, T): raise`,
                # `if x_embeds is not None: raise` (x is then required) and a branch that rebinds x
                leaves = _rejects_or_returns(statement.body.body)
                for name in list(live):
                    if leaves and (
                        _none_comparisons(statement.test, name) == [statement.test]
                        or _isinstance_of(statement.test) == (name, False)
                        or (
                            # `if prompt_embeds is not None: raise` (not `if prompt is not None and prompt_embeds
                            # is not None:`, which only forbids both)
                            name not in {n.value for n in names_read(statement.test)}
                            and any(
                                isinstance(comparison.comparisons[0].operator, cst.IsNot)
                                for comparison in _none_comparisons(statement.test, f"{name}_embeds")
                            )
                        )
                    ):
                        live.discard(name)
                    elif self._binds(statement, name):
                        live.discard(name)
            elif isinstance(statement, cst.SimpleStatementLine):
                normalised = {name for name in live if _normalises(statement, name)}
                if not nested:
                    for name in sorted((live & self._alternatives) - reported - normalised):
                        node = next((n for n in _reads_in_order(statement) if _derefs(n, name)), None)
                        if node is not None:
                            reported.add(name)
                            message = self.message_first.format(name=name)
                            self.report(node, message, symbol=name, scope=self._scope)
                live_after = set(live)
                assert self._file is not None
                for assign in self._file.nodes(statement, cst.Assign):
                    for target in assign.targets:
                        live -= set(target_names(target.target))
                updates: list[cst.AugAssign | cst.AnnAssign] = [
                    *self._file.nodes(statement, cst.AugAssign),
                    *self._file.nodes(statement, cst.AnnAssign),
                ]
                for update in updates:
                    live -= set(target_names(update.target))
                live |= live_after & normalised
            elif isinstance(statement, (cst.For, cst.While, cst.With, cst.Try)):
                # bindings inside make the name unknown afterwards; reads inside loops are left alone
                live -= {n for n in live if self._binds(statement, n)}
                if isinstance(statement, cst.With):
                    self._block(statement.body.body, live, reported, nested)

    def _binds(self, statement: cst.CSTNode, name: str) -> bool:
        """Whether `statement` binds `name` (an assignment or `for` target anywhere under it), its names found once."""
        bound = self._bound.get(id(statement))
        if bound is None:
            assert self._file is not None
            bound = self._bound[id(statement)] = _bound_names(statement, self._file)
        return name in bound

    def _none_accepted(self, function: cst.FunctionDef) -> set[str]:
        """The names the function itself treats None as a legitimate value of: it tests `name is None` (or `is not
        None`) together with another condition (`prompt is None and prompt_embeds is None`, `prompt is not None and
        isinstance(prompt, str)`), which only makes sense when `name` alone may be None. One pass over the
        function's own `and`/`or` operations."""
        assert self._file is not None
        operations = self._file.own_boolean_operations(function)
        if operations is None:
            operations = walk.own_nodes(function, cst.BooleanOperation)
        found: set[str] = set()
        for operation in operations:
            for side in (operation.left, operation.right):
                if not isinstance(side, cst.BooleanOperation):
                    found.update(_none_tested(self._file.nodes(side, cst.Comparison)))
        return found

    def _if(self, statement: cst.If, live: set[str], reported: set[str], nested: bool) -> None:
        parsed = _isinstance_of(statement.test)
        if parsed is None:
            return
        name, positive = parsed
        if name not in live or name not in self._accepted or name in reported:
            return
        if not positive:
            branch: Sequence[cst.CSTNode] = statement.body.body
        else:
            orelse = statement.orelse
            while isinstance(orelse, cst.If):
                chained = _isinstance_of(orelse.test)
                if chained is None or chained != (name, True):
                    return
                orelse = orelse.orelse
            if not isinstance(orelse, cst.Else):
                return
            branch = orelse.body.body
        if not positive and _rejects(branch):
            if nested:
                return  # under another condition (`if text_images is not None:`) a required prompt may be meant

            reported.add(name)
            self.report(statement.test, self.message_reject.format(name=name), symbol=name, scope=self._scope)
            return
        node = _dereference(branch, name)
        if node is not None:
            reported.add(name)
            self.report(node, self.message_deref.format(name=name), symbol=name, scope=self._scope)


def _rejects_or_returns(statements: Sequence[cst.CSTNode]) -> bool:
    if not statements:
        return False
    last = statements[-1]
    return isinstance(last, cst.SimpleStatementLine) and any(isinstance(s, (cst.Raise, cst.Return)) for s in last.body)


def _bound_names(statement: cst.CSTNode, file: _FileIndex) -> set[str]:
    """The names `statement` binds: assignment and `for` targets anywhere under it."""
    bound: set[str] = set()
    for assign in file.nodes(statement, cst.Assign):
        for t in assign.targets:
            bound.update(target_names(t.target))
    for loop in file.nodes(statement, cst.For):
        bound.update(target_names(loop.target))
    return bound


def _none_tested(comparisons: list[cst.Comparison]) -> set[str]:
    """The names `n` with an `n is None` / `n is not None` among `comparisons` (`_none_comparisons`' test)."""
    found: set[str] = set()
    for comparison in comparisons:
        left = comparison.left
        if (
            isinstance(left, cst.Name)
            and len(comparison.comparisons) == 1
            and isinstance(comparison.comparisons[0].operator, (cst.Is, cst.IsNot))
            and isinstance(comparison.comparisons[0].comparator, cst.Name)
            and comparison.comparisons[0].comparator.value == "None"
        ):
            found.add(left.value)
    return found


def _positions(kinds: list[type], kind: type) -> list[int]:
    """Where `kind` occurs in `kinds`, ascending (`list.index` scans at C speed)."""
    found: list[int] = []
    at = -1
    try:
        while True:
            at = kinds.index(kind, at + 1)
            found.append(at)
    except ValueError:
        return found


class _FileIndex:
    """Positions of a few node types in the prepared file's `walk` order: a subtree's nodes of a type are a range of
    them, found by bisection instead of a walk or an index of the subtree."""

    def __init__(self, order: list[cst.CSTNode] | None) -> None:
        self.order = order
        self._kinds = list(map(type, order)) if order is not None else []
        self._found: dict[type, list[int]] = {}

    def _of(self, kind: type) -> list[int]:
        found = self._found.get(kind)
        if found is None:
            found = self._found[kind] = _positions(self._kinds, kind)
        return found

    def _within(self, kind: type, start: int, end: int) -> list[int]:
        found = self._of(kind)
        return found[bisect_left(found, start) : bisect_left(found, end)]

    def nodes(self, root: cst.CSTNode, kind: type[N]) -> list[N]:
        """`walk.nodes(root, kind)` for a node type without subclasses."""
        bounds = walk.span(root) if self.order is not None else None
        if bounds is None or self.order is None:
            return walk.nodes(root, kind)
        order = self.order
        return [order[i] for i in self._within(kind, *bounds)]  # type: ignore[misc]

    def own_boolean_operations(self, function: cst.FunctionDef) -> list[cst.BooleanOperation] | None:
        """`walk.own_nodes(function, cst.BooleanOperation)`, or None when the function is not in the prepared file."""
        bounds = walk.span(function.body) if self.order is not None else None
        if bounds is None or self.order is None:
            return None
        order = self.order
        start, end = bounds
        operations = self._within(cst.BooleanOperation, start, end)
        if not operations:
            return []
        nested: list[tuple[int, int]] = []  # spans of the nested scopes, each one not inside another
        scopes = sorted(
            i for kind in (cst.FunctionDef, cst.ClassDef, cst.Lambda) for i in self._within(kind, start, end)
        )
        for i in scopes:
            if nested and i < nested[-1][1]:
                continue
            scope_bounds = walk.span(order[i])
            if scope_bounds is None:
                return None
            nested.append(scope_bounds)
        kept = []
        for i in operations:
            k = bisect_left(nested, (i + 1,)) - 1  # the last nested scope starting at or before i
            if k >= 0 and nested[k][0] <= i < nested[k][1]:
                continue
            kept.append(order[i])
        return kept  # type: ignore[return-value]
