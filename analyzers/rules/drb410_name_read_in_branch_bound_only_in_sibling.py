"""DRB410: a branch of an `if`/`elif` chain reads a name that only a sibling branch of the chain binds."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import cast

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import conjuncts, names_read, parameters, target_names


_NESTED = (cst.FunctionDef, cst.ClassDef, cst.Lambda)
_NESTED_TYPES = frozenset(_NESTED)
#: the node types `_binders` looks at (none has a subclass in libcst)
_BINDER_KINDS = (
    cst.Assign,
    cst.AnnAssign,
    cst.AugAssign,
    cst.NamedExpr,
    cst.For,
    cst.WithItem,
    cst.AsName,
    cst.Import,
    cst.ImportFrom,
    cst.Global,
    cst.Nonlocal,
    cst.Del,
)
#: the node types `_walked_bindings` takes names from (exact types: each is a concrete libcst class)
_BINDER_TYPES = frozenset({*_BINDER_KINDS, cst.FunctionDef, cst.ClassDef})


def _bindings(root: cst.CSTNode) -> set[str]:
    """Names the statements under `root` bind in the enclosing function (nested scopes' own names left out, the
    names of nested defs and classes kept). Comprehension targets do not leak and are left out. A statement's
    names are its own plus those of the statements in its blocks, each worked out once per file (`_BINDINGS`)."""
    cached = _BINDINGS.get(id(root))
    if cached is not None and cached[0] is root:
        return cached[1]
    names: set[str] = set()
    kind = _SHAPES.get(type(root))
    if kind is None:
        kind = _shape(type(root))
    if kind == _DEF:
        pass  # everything under a def is its own scope; its name is counted by the block holding it
    elif kind == _LINE and _WHERE[0] is not None and _WHERE[0].holds(root):
        # a line's small statements bind what a walk of the whole line finds: no def, class or block is in it
        names = _WHERE[0].bindings(root, *cast("tuple[int, int]", walk.span(root)))
    elif kind == _BLOCK or kind == _LINE:
        for statement in root.body:  # type: ignore[attr-defined]
            names |= _statement_bindings(statement)
    elif kind == _COMPOUND:
        names = _compound(cast("cst.BaseCompoundStatement", root))
    else:  # a small statement, an expression
        names = _walked_bindings(root)
    if len(_BINDINGS) > _BINDINGS_KEPT:
        _BINDINGS.clear()
    _BINDINGS[id(root)] = (root, names)
    return names


_DEF, _LINE, _BLOCK, _COMPOUND, _OTHER = range(5)
#: node type -> which of `_bindings`' cases it takes (`_shape`), so that each node costs one lookup, not a chain of
#: `isinstance` calls against libcst's abstract classes
_SHAPES: dict[type, int] = {}


def _shape(kind: type) -> int:
    if issubclass(kind, (cst.FunctionDef, cst.ClassDef)):
        shape = _DEF
    elif issubclass(kind, (cst.SimpleStatementLine, cst.SimpleStatementSuite)):
        shape = _LINE
    elif issubclass(kind, cst.IndentedBlock):
        shape = _BLOCK
    elif issubclass(kind, cst.BaseCompoundStatement):
        shape = _COMPOUND
    else:
        shape = _OTHER
    _SHAPES[kind] = shape
    return shape


def _statement_bindings(statement: cst.CSTNode) -> set[str]:
    """What one statement of a block binds: a nested def or class binds its name only."""
    if isinstance(statement, (cst.FunctionDef, cst.ClassDef)):
        return {statement.name.value}
    return _bindings(statement)


def _compound(statement: cst.BaseCompoundStatement) -> set[str]:
    names: set[str] = set()
    headers: list[cst.CSTNode] = []
    if isinstance(statement, cst.For):
        names.update(target_names(statement.target))
        headers.append(statement.iter)
    elif isinstance(statement, (cst.If, cst.While)):
        headers.append(statement.test)
    elif isinstance(statement, cst.With):
        for item in statement.items:
            headers.append(item.item)
            if item.asname is not None:
                names.update(target_names(item.asname.name))
    elif isinstance(statement, cst.Match):
        headers.append(statement.subject)
    for header in headers:
        names |= _walked_bindings(header)
    blocks: list[cst.CSTNode] = []
    if isinstance(statement, cst.Match):
        blocks.extend(case.body for case in statement.cases)
    else:
        blocks.append(statement.body)
    for handler in getattr(statement, "handlers", ()):
        if handler.name is not None:
            names.update(target_names(handler.name.name))
        if handler.type is not None:
            names |= _walked_bindings(handler.type)
        blocks.append(handler.body)
    orelse = getattr(statement, "orelse", None)
    if isinstance(orelse, cst.If):
        names |= _bindings(orelse)
    elif orelse is not None:
        blocks.append(orelse.body)
    final = getattr(statement, "finalbody", None)
    if final is not None:
        blocks.append(final.body)
    for block in blocks:
        names |= _bindings(block)
    return names


def _walked_bindings(root: cst.CSTNode) -> set[str]:
    """`_bindings` by walking every node under `root` (a small statement, an expression)."""
    where = _WHERE[0]
    bounds = walk.span(root) if where is not None else None
    if where is not None and bounds is not None and where.start <= bounds[0] and bounds[1] <= where.end:
        return where.bindings(root, bounds[0], bounds[1])
    under = list(walk.walk(root))
    if not any(type(n) in _BINDER_TYPES for n in under):
        return set()
    nested: set[int] = set()
    for scope in under:
        if type(scope) in _NESTED_TYPES and id(scope) not in nested:
            nested.update(id(n) for n in walk.walk(scope) if n is not scope)
    names: set[str] = set()
    for node in under:
        if type(node) not in _BINDER_TYPES or id(node) in nested:
            continue
        if isinstance(node, cst.Assign):
            for target in node.targets:
                names.update(target_names(target.target))
        elif isinstance(node, (cst.AnnAssign, cst.AugAssign, cst.NamedExpr)):
            names.update(target_names(node.target))
        elif isinstance(node, cst.For):
            names.update(target_names(node.target))
        elif isinstance(node, cst.WithItem) and node.asname is not None:
            names.update(target_names(node.asname.name))
        elif isinstance(node, cst.AsName):
            names.update(target_names(node.name))  # `except E as e`, `import a as b`
        elif isinstance(node, (cst.Import, cst.ImportFrom)) and not isinstance(node.names, cst.ImportStar):
            names.update((a.evaluated_name or "").split(".")[0] for a in node.names if a.asname is None)
        elif isinstance(node, (cst.Global, cst.Nonlocal)):
            names.update(n.name.value for n in node.names)
        elif isinstance(node, cst.Del):
            names.update(target_names(node.target))
        elif isinstance(node, (cst.FunctionDef, cst.ClassDef)) and node is not root:
            names.add(node.name.value)
    return names


def _binder_names(node: cst.CSTNode, root: cst.CSTNode, names: set[str]) -> None:
    """Add the names one binding node (of a type in `_BINDER_TYPES`) binds, as `_walked_bindings` takes them."""
    kind = type(node)
    if kind is cst.Assign:
        for target in node.targets:  # type: ignore[attr-defined]
            names.update(target_names(target.target))
    elif kind is cst.AnnAssign or kind is cst.AugAssign or kind is cst.NamedExpr or kind is cst.For:
        names.update(target_names(node.target))  # type: ignore[attr-defined]
    elif kind is cst.WithItem:
        if node.asname is not None:  # type: ignore[attr-defined]
            names.update(target_names(node.asname.name))  # type: ignore[attr-defined]
    elif kind is cst.AsName:
        names.update(target_names(node.name))  # type: ignore[attr-defined]
    elif kind is cst.Import or kind is cst.ImportFrom:
        if not isinstance(node.names, cst.ImportStar):  # type: ignore[attr-defined]
            names.update((a.evaluated_name or "").split(".")[0] for a in node.names if a.asname is None)  # type: ignore[attr-defined]
    elif kind is cst.Global or kind is cst.Nonlocal:
        names.update(n.name.value for n in node.names)  # type: ignore[attr-defined]
    elif kind is cst.Del:
        names.update(target_names(node.target))  # type: ignore[attr-defined]
    elif (kind is cst.FunctionDef or kind is cst.ClassDef) and node is not root:
        names.add(node.name.value)  # type: ignore[attr-defined]


class _Where:
    """Where the binding nodes, nested scopes and names of the function being checked lie in the prepared file's
    walk order (`walk.span`): `_walked_bindings` and `_read_of` of a node in the function look up its slice by
    bisection instead of walking it. Built from the function body's cached index (`walk.index`), whose groups
    are in walk order."""

    def __init__(self, body: cst.CSTNode, start: int, end: int) -> None:
        self.start, self.end = start, end
        groups = walk.index(body)
        binders: list[tuple[int, cst.CSTNode]] = []
        for kind in _BINDER_TYPES:
            for node in groups.get(kind, ()):
                binders.append((_start(node), node))
        binders.sort(key=lambda pair: pair[0])
        self.binder_at = [at for at, _node in binders]
        self.binders = [node for _at, node in binders]
        scopes = sorted(
            (cast("tuple[int, int]", walk.span(node)) for kind in _NESTED for node in groups.get(kind, ())),
        )
        self.scope_at = [at for at, _end in scopes]
        self.scopes = scopes
        self.all_names = cast("list[cst.Name]", groups.get(cst.Name, []))
        self.names: dict[str, list[int]] = {}

    def bindings(self, root: cst.CSTNode, start: int, end: int) -> set[str]:
        """`_walked_bindings(root)`, `root` spanning [start, end) in the function."""
        at = self.binder_at
        low = bisect_left(at, start)
        high = bisect_left(at, end, low)
        names: set[str] = set()
        if low == high:
            return names
        scopes = self.scopes[bisect_left(self.scope_at, start) : bisect_left(self.scope_at, end)]
        for position, node in zip(at[low:high], self.binders[low:high], strict=True):
            if scopes and any(first < position < last for first, last in scopes):
                continue  # inside a nested def, class or lambda under `root`
            _binder_names(node, root, names)
        return names

    def holds(self, node: cst.CSTNode) -> bool:
        """Whether `node` is a node of the function, in the prepared file."""
        bounds = walk.span(node)
        return bounds is not None and self.start <= bounds[0] and bounds[1] <= self.end

    def mentions(self, name: str, start: int, end: int) -> bool:
        """Whether a `Name` node spelled `name` lies in [start, end)."""
        found = self.names.get(name)
        if found is None:  # worked out on the first question about `name`, in walk order
            found = self.names[name] = [_start(n) for n in self.all_names if n.value == name]
        if not found:
            return False
        index = bisect_left(found, start)
        return index < len(found) and found[index] < end


def _start(node: cst.CSTNode) -> int:
    return cast("tuple[int, int]", walk.span(node))[0]


#: the `_Where` of the function being checked, when the file was prepared (`walk.prepare`)
_WHERE: list[_Where | None] = [None]


#: `_bindings` by node id (with the node, so a reused id is never mistaken), for the file being checked, bounded
_BINDINGS: dict[int, tuple[cst.CSTNode, set[str]]] = {}
_BINDINGS_KEPT = 20_000


def _reads(root: cst.CSTNode) -> list[cst.Name]:
    """Names read under `root`, outside nested defs and lambdas (which run later, if at all), assignment targets
    left out. Comprehension variables shadow the function's names and are left out too."""
    skip: set[int] = set()
    for kind in _NESTED:
        for scope in walk.nodes(root, kind):
            skip.update(id(n) for n in walk.walk(scope))
    for assign in walk.nodes(root, cst.Assign):
        for target in assign.targets:
            skip.update(id(n) for n in walk.walk(target.target) if isinstance(target.target, (cst.Name, cst.Tuple)))
    for annotated in walk.nodes(root, cst.AnnAssign):
        skip.update(id(n) for n in walk.walk(annotated.target))
    shadowed = {name for comp in walk.nodes(root, cst.CompFor) for name in target_names(comp.target)}
    return [n for n in names_read(root) if id(n) not in skip and n.value not in shadowed]


def _first_unbound_read(statements: Sequence[cst.CSTNode], name: str) -> cst.Name | None:
    """The first read of `name` in `statements` that no earlier statement of the block may have bound; None once
    a statement may bind it. A loop or `try` that binds the name is passed over, its reads not judged."""
    for statement in statements:
        if isinstance(statement, cst.If):
            found = _read_of(statement.test, name)
            if found is not None:
                return found
            orelse: cst.CSTNode | None = statement.orelse
            branches: list[Sequence[cst.CSTNode]] = [statement.body.body]
            while orelse is not None:
                if isinstance(orelse, cst.If):
                    found = _read_of(orelse.test, name)
                    if found is not None:
                        return found
                    branches.append(orelse.body.body)
                    orelse = orelse.orelse
                else:
                    branches.append(orelse.body.body)  # type: ignore[attr-defined]
                    orelse = None
            for branch in branches:
                found = _first_unbound_read(branch, name)
                if found is not None:
                    return found
        elif isinstance(statement, cst.With):
            for item in statement.items:
                found = _read_of(item.item, name)
                if found is not None:
                    return found
                if item.asname is not None and name in target_names(item.asname.name):
                    return None  # `with open(p) as f:` binds `f` before the body reads it
            found = _first_unbound_read(statement.body.body, name)
            if found is not None:
                return found
        elif name not in _bindings(statement) or isinstance(statement, cst.SimpleStatementLine):
            # a simple statement reads before it binds (`x = f(x)`); a loop or `try` that binds is not judged
            found = _read_of(statement, name)
            if found is not None:
                return found
        if name in _bindings(statement):
            return None
    return None


def _read_of(node: cst.CSTNode, name: str) -> cst.Name | None:
    where = _WHERE[0]
    if where is not None:
        bounds = walk.span(node)
        if (
            bounds is not None
            and where.start <= bounds[0]
            and bounds[1] <= where.end
            and not where.mentions(name, bounds[0], bounds[1])
        ):
            return None  # no `Name` spelled `name` under `node`
    return next((n for n in _reads(node) if n.value == name), None)


def _code(node: cst.CSTNode) -> str:
    return " ".join(cst.Module([]).code_for_node(node).split())


def _conjuncts(test: cst.BaseExpression) -> set[str]:
    """The texts of the `and`-joined parts of a test (`a and b.c`: `a`, `b.c`)."""
    return {_code(part) for part in conjuncts(test)}


def _subjects(test: cst.CSTNode) -> set[str]:
    """The variables a test looks at: bare names and whole attribute chains (`self.do_pag`), `self` left out.
    Worked out once per node of the file (`_SUBJECTS`); not to be changed by the caller."""
    cached = _SUBJECTS.get(id(test))
    if cached is not None and cached[0] is test:
        return cached[1]
    inner = {id(n) for a in walk.nodes(test, cst.Attribute) for n in walk.walk(a) if n is not a}
    found = {_code(a) for a in walk.nodes(test, cst.Attribute) if id(a) not in inner}
    found |= {n.value for n in walk.nodes(test, cst.Name) if id(n) not in inner and n.value != "self"}
    if len(_SUBJECTS) > _BINDINGS_KEPT:
        _SUBJECTS.clear()
    _SUBJECTS[id(test)] = (test, found)
    return found


#: `_subjects` by node id (with the node), for the file being checked, bounded
_SUBJECTS: dict[int, tuple[cst.CSTNode, set[str]]] = {}


def _block_subjects(statements: Sequence[cst.CSTNode]) -> set[str]:
    """`_subjects` of a block of these statements: an attribute chain lies within one statement, so the block's
    subjects are its statements' together."""
    return set().union(*(_subjects(statement) for statement in statements))


def _tests(statement: cst.If) -> list[tuple[cst.BaseExpression, Sequence[cst.CSTNode]]]:
    """The (test, statements) of each `if`/`elif` branch of a chain, the `else` left out."""
    branches: list[tuple[cst.BaseExpression, Sequence[cst.CSTNode]]] = []
    current: cst.BaseSuite | cst.If | cst.Else | None = statement
    while isinstance(current, cst.If):
        branches.append((current.test, current.body.body))
        current = current.orelse
    return branches


def _binders(root: cst.CSTNode, name: str) -> list[cst.CSTNode]:
    """The statements and expressions under `root` that bind `name` (grouped by type, not in walk order)."""
    found: list[cst.CSTNode] = []
    for node in (n for kind in _BINDER_KINDS for n in walk.nodes(root, kind)):
        if isinstance(node, cst.Assign):
            if any(name in target_names(t.target) for t in node.targets):
                found.append(node)
        elif isinstance(node, (cst.AnnAssign, cst.AugAssign, cst.NamedExpr, cst.For)):
            if name in target_names(node.target):
                found.append(node)
        elif isinstance(node, cst.WithItem) and node.asname is not None:
            if name in target_names(node.asname.name):
                found.append(node)
        elif isinstance(node, cst.AsName) and name in target_names(node.name):
            found.append(node)
        elif isinstance(node, (cst.Import, cst.ImportFrom, cst.Global, cst.Nonlocal, cst.Del)):
            if name in _bindings(node):
                found.append(node)
    return found


def _chain(statement: cst.If) -> list[tuple[cst.BaseExpression | None, Sequence[cst.CSTNode]]]:
    """The (test, statements) of each branch of an `if`/`elif`/`else` chain; the `if`'s own test is not given (it
    runs before any branch)."""
    branches: list[tuple[cst.BaseExpression | None, Sequence[cst.CSTNode]]] = [(None, statement.body.body)]
    orelse = statement.orelse
    while orelse is not None:
        if isinstance(orelse, cst.If):
            branches.append((orelse.test, orelse.body.body))
            orelse = orelse.orelse
        else:
            branches.append((None, orelse.body.body))
            orelse = None
    return branches


class NameReadInBranchBoundOnlyInSibling(Rule):
    """
    ## What it does
    Checks `if`/`elif`/`else` chains for a branch that reads a local name which only another branch of the same
    chain binds: the function binds it nowhere before the chain, and the reading branch does not bind it before
    the read.

    ## Why is this bad?
    Only one branch of a chain runs, so the branch that reads the name always finds it unbound and raises
    `UnboundLocalError`. Such branches are usually the less travelled setting of an optional parameter
    (`local_files_only=True`, no image encoder, a precomputed embedding), which crashes as soon as a user
    passes it. diffusers shipped this in the sharded-checkpoint loader, whose `elif local_files_only:` branch
    joined a `cached_folder` that only the download branch had set.

    It also checks a name that only an `elif` branch binds, read after the chain under a test that repeats the
    `elif`'s condition but not the negation of the branches before it (`if pag: ... elif cfg: text = ...`, then
    `if cfg and rescale: use(text)`): with both `pag` and `cfg` on, the name is unbound there. The flags are
    taken to be independent only where a branch before the `elif` looks at the `elif`'s flag itself
    (`apply_pag(pred, cfg)`); a chain of exclusive modes is left alone.

    ## Example
    ```python
    if not local_files_only:
        cached_folder = snapshot_download(repo_id, allow_patterns=shards)
    elif local_files_only:
        check_shards_exist(cache_dir, shards)
        cached_folder = os.path.join(cached_folder, subfolder)
    return cached_folder
    ```

    Use instead:
    ```python
    elif local_files_only:
        check_shards_exist(cache_dir, shards)
        cached_folder = os.path.join(cache_dir, subfolder)
    ```

    ## Known problems
    Chains inside a loop are not checked (an earlier iteration may have bound the name), and any binding before
    the chain, in any branch of an earlier statement, counts as a default. Inside the reading branch, a loop or
    `try` that binds the name is taken to bind it before its reads.

    ## References
    - huggingface/diffusers#13656, pattern 4
    - huggingface/diffusers#9376 (`_get_checkpoint_shard_files`: `cached_folder` unbound with `local_files_only=True`)
    """

    code = "DRB410"
    pattern = 4
    severity = "error"
    message = (
        "`{name}` is read in this branch but bound only in another branch of the same `if`/`elif` chain, so "
        "it is unbound here and raises `UnboundLocalError`; bind it in this branch (or before the chain)."
    )
    message_later = (
        "`{name}` is bound only in the `elif {elif_test}:` branch, but it is read here under a test that does not "
        "exclude the branch before it (`{first_test}`), so with both on it is unbound and raises "
        "`UnboundLocalError`; bind it in every branch that leads here."
    )
    REQUIRES_ANY = ("elif", "else")

    VALID = [
        Valid(
            # bound before the chain; bound in the branch before its read; a chain in a loop; a nested def
            """
            def load(repo_id, cache_dir=None, local_files_only=False, subfolder=None):
                folder = cache_dir
                if not local_files_only:
                    folder = download(repo_id)
                    path = folder
                else:
                    path = os.path.join(cache_dir, subfolder)
                    path = os.path.join(path, "x")
                    folder = os.path.join(folder, subfolder)
                for shard in shards:
                    if shard.first:
                        last = shard
                    else:
                        shard.link(last)
                return folder, path
            """
        ),
        Valid(
            # `*args`/`**kwargs` are parameters; a `with ... as f` binds `f` for its body
            """
            def pre_forward(self, module, *args, **kwargs):
                if self.skip:
                    kwargs = {}
                elif self.move:
                    moved = send_to_device(kwargs)
                if path is None:
                    text = None
                else:
                    with open(path) as f:
                        text = f.read()
                return text
            """
        ),
        Valid(
            # tests of one variable exclude each other; a later test that looks at the earlier branch's flag
            """
            def encode(outputs, pag, cfg):
                if len(outputs) == 2:
                    a, b = outputs
                elif len(outputs) == 3:
                    a, b, extra = outputs
                if len(outputs) == 3:
                    a = a + extra
                if pag:
                    pred = 1
                elif cfg:
                    text = 2
                if cfg and not pag:
                    pred = text
                return a, pred
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            def get_shards(repo_id, shards, cache_dir=None, local_files_only=False, subfolder=None):
                if not local_files_only:
                    folder = snapshot_download(repo_id, allow_patterns=shards)
                elif local_files_only:
                    check_shards_exist(cache_dir, shards)
                    if subfolder is not None:
                        folder = os.path.join(folder, subfolder)
                return folder
            """
        ),
        Invalid(
            # an `else` reading what the `if` computed, in a method
            """
            class IPAdapterMixin:
                def load(self, encoder_folder=None):
                    if encoder_folder is not None:
                        encoder = CLIPVisionModel.from_pretrained(encoder_folder)
                        size = encoder.config.image_size
                    else:
                        processor = CLIPImageProcessor(size=size)
                    return processor
            """
        ),
        Invalid(
            # read after the chain, under the `elif`'s own condition; the chain runs in a loop
            """
            class Pipeline:
                def __call__(self, latents, steps):
                    for t in steps:
                        pred = self.unet(latents, t)
                        if self.do_pag:
                            pred = self.apply_pag(pred, self.do_cfg)
                        elif self.do_cfg:
                            uncond, text = pred.chunk(2)
                            pred = uncond + self.scale * (text - uncond)
                        if self.do_cfg and self.rescale > 0:
                            pred = rescale(pred, text)
                        latents = self.step(pred, t, latents)
                    return latents
            """,
            message=(
                "`text` is bound only in the `elif self.do_cfg:` branch, but it is read here under a test that "
                "does not exclude the branch before it (`self.do_pag`), so with both on it is unbound and raises "
                "`UnboundLocalError`; bind it in every branch that leads here."
            ),
        ),
    ]

    def check(self) -> None:
        _BINDINGS.clear()  # another file's nodes: let them go
        _SUBJECTS.clear()
        _WHERE[0] = None
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef) or not walk.own_nodes(function, cst.If):
                continue
            self._scope = definition.qualname
            bounds = walk.span(function.body)
            _WHERE[0] = _Where(function.body, *bounds) if bounds is not None else None
            bound = {p.name.value for p in parameters(function)}
            for star in (function.params.star_arg, function.params.star_kwarg):
                if isinstance(star, cst.Param):
                    bound.add(star.name.value)  # `*args`, `**kwargs`
            self._block(function.body.body, bound)
            self._later_blocks(function, function.body.body, None)
        _WHERE[0] = None

    def _later_blocks(
        self, function: cst.FunctionDef, statements: Sequence[cst.CSTNode], loop: cst.CSTNode | None
    ) -> None:
        """Look for `elif`-only names read after their chain, in every block of the function."""
        for index, statement in enumerate(statements):
            if isinstance(statement, cst.If):
                self._check_later(function, statement, statements[index + 1 :], loop)
                current: cst.CSTNode | None = statement
                while isinstance(current, (cst.If, cst.Else)):
                    self._later_blocks(function, current.body.body, loop)
                    current = current.orelse if isinstance(current, cst.If) else None
            elif isinstance(statement, (cst.For, cst.While)):
                self._later_blocks(function, statement.body.body, statement)
            elif isinstance(statement, (cst.With, cst.Try)):
                self._later_blocks(function, statement.body.body, loop)

    def _check_later(
        self, function: cst.FunctionDef, statement: cst.If, after: Sequence[cst.CSTNode], loop: cst.CSTNode | None
    ) -> None:
        branches = _tests(statement)
        if len(branches) < 2:
            return
        if loop is not None:
            # in a loop, an earlier iteration may have taken the `elif` unless the tests cannot change in it
            changing = _bindings(loop)
            tested = {n.value for test, _ in branches for n in walk.nodes(test, cst.Name)}
            if tested & changing:
                return
        parameters_ = {p.name.value for p in parameters(function)}
        for k, (test, body) in enumerate(branches[1:], start=1):
            if any(_subjects(t) & _subjects(test) for t, _ in branches[:k]):
                continue  # tests of one variable (`len(x) == 2`, `len(x) == 3`) may exclude each other
            if not any(_subjects(test) & _block_subjects(b) for _, b in branches[:k]):
                continue  # only an earlier branch that handles the `elif`'s flag too shows both can be on
            block = cst.IndentedBlock(body=cast("list[cst.BaseStatement]", list(body)))
            inside = {id(n) for n in walk.walk(block)}
            for name in sorted(_bindings(block) - parameters_):
                binders = _binders(function.body, name)
                if not binders or any(id(b) not in inside for b in binders):
                    continue  # bound elsewhere too
                required = _conjuncts(test)
                earlier = [t for t, _ in branches[:k]]
                # what the branches before the `elif` test, and the `elif` itself does not
                excluded = set().union(*(_subjects(t) for t in earlier)) - _subjects(test)
                for later in after:
                    if not isinstance(later, cst.If):
                        if _read_of(later, name) is not None:
                            break
                        continue
                    if not required <= _conjuncts(later.test) or _subjects(later.test) & excluded:
                        if _read_of(later, name) is not None:
                            break
                        continue
                    found = _first_unbound_read(later.body.body, name)
                    if found is not None:
                        message = self.message_later.format(
                            name=name, elif_test=_code(test), first_test=_code(earlier[0])
                        )
                        self.report(found, message, symbol=name, scope=self._scope)
                    break

    def _block(self, statements: Sequence[cst.CSTNode], bound: set[str]) -> set[str]:
        """Check the chains of a block, given the names bound before it; the names bound once it has run."""
        bound = set(bound)
        for statement in statements:
            if isinstance(statement, cst.If):
                if statement.orelse is not None:
                    self._check_chain(statement, bound)
                for _test, branch in _chain(statement):
                    self._block(branch, bound)
            elif isinstance(statement, cst.With):
                self._block(statement.body.body, bound)
            elif isinstance(statement, cst.Try):
                self._block(statement.body.body, bound)
            # loops are not entered: an earlier iteration may bind what a branch reads
            bound |= _bindings(statement)
        return bound

    def _check_chain(self, statement: cst.If, bound: set[str]) -> None:
        branches = _chain(statement)
        binds = [set().union(*(_bindings(statement) for statement in body)) for _test, body in branches]
        for i, (test, body) in enumerate(branches):
            candidates = set().union(*(b for j, b in enumerate(binds) if j != i)) - bound
            for name in sorted(candidates):
                found = _read_of(test, name) if test is not None else None
                if found is None:
                    found = _first_unbound_read(body, name)
                if found is not None:
                    self.report(found, self.message.format(name=name), symbol=name, scope=self._scope)
