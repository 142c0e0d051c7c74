"""DRB401: a local name bound only inside an `if` without `else`, then read unconditionally after it."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import compress
from typing import Any, TypeVar

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import names_read, parameters, target_names


_NESTED = (cst.FunctionDef, cst.ClassDef, cst.Lambda)
N = TypeVar("N", bound=cst.CSTNode)


def _bindings(root: cst.CSTNode) -> set[str]:
    """Every name that statements under `root` bind in the enclosing function (nested scopes' own names excluded,
    the names of nested defs and classes included). Comprehension targets are left out: they do not leak."""
    groups = walk.index(root)
    nested: set[int] = set()
    for scope_kind in _NESTED:
        for scope in groups.get(scope_kind, ()):
            if id(scope) not in nested:
                nested.update(id(n) for n in walk.walk(scope) if n is not scope)
    names: set[str] = set()

    def own(kind: type[N]) -> list[N]:
        return [n for n in walk.nodes(root, kind) if id(n) not in nested]

    for assign in own(cst.Assign):
        for target in assign.targets:
            names.update(target_names(target.target))
    for annotated in own(cst.AnnAssign):
        names.update(target_names(annotated.target))
    for augmented in own(cst.AugAssign):
        names.update(target_names(augmented.target))
    for loop in own(cst.For):
        names.update(target_names(loop.target))
    for item in own(cst.WithItem):
        if item.asname is not None:
            names.update(target_names(item.asname.name))
    for handler in own(cst.ExceptHandler):
        if handler.name is not None and isinstance(handler.name.name, cst.Name):
            names.add(handler.name.name.value)
    for walrus in own(cst.NamedExpr):
        names.update(target_names(walrus.target))
    imports: list[cst.Import | cst.ImportFrom] = [*own(cst.Import), *own(cst.ImportFrom)]
    for statement in imports:
        if isinstance(statement.names, cst.ImportStar):
            names.add("*")
            continue
        for alias in statement.names:
            if alias.asname is not None:
                names.update(target_names(alias.asname.name))
            else:
                names.add((alias.evaluated_name or "").split(".")[0])
    declarations: list[cst.Global | cst.Nonlocal] = [*own(cst.Global), *own(cst.Nonlocal)]
    for declaration in declarations:
        names.update(n.name.value for n in declaration.names)
    for delete in own(cst.Del):
        names.update(target_names(delete.target))
    definitions: list[cst.FunctionDef | cst.ClassDef] = [*own(cst.FunctionDef), *own(cst.ClassDef)]
    for definition in definitions:
        names.add(definition.name.value)
    return names


def _ends_function_path(body: cst.BaseSuite) -> bool:
    """Whether the block's last statement leaves it (`return`, `raise`, `continue`, `break`)."""
    statements = body.body
    if not statements:
        return False
    last = statements[-1]
    if isinstance(last, cst.SimpleStatementLine):
        return any(isinstance(s, (cst.Return, cst.Raise, cst.Continue, cst.Break)) for s in last.body)
    return isinstance(last, (cst.Return, cst.Raise, cst.Continue, cst.Break))


def _unconditional_reads(statement: cst.CSTNode) -> list[cst.Name]:
    """Names that running `statement` surely reads: a simple statement's names, a compound statement's header,
    a `with`/`try` body. Reads inside lambdas, nested defs, `a if c else b` branches and the right side of
    `and`/`or` are conditional and left out."""
    if isinstance(statement, cst.SimpleStatementLine):
        roots: list[cst.CSTNode] = [statement]
    elif isinstance(statement, cst.If):
        roots = [statement.test]
    elif isinstance(statement, cst.For):
        roots = [statement.iter]
    elif isinstance(statement, cst.While):
        roots = [statement.test]
    elif isinstance(statement, cst.With):
        roots = [item.item for item in statement.items]
        found: list[cst.Name] = []
        for root in roots:
            found.extend(_plain_reads(root))
        # `with open(p) as f:` binds `f` before the body reads it, and so does each statement for the next ones
        bound = {n for item in statement.items if item.asname is not None for n in target_names(item.asname.name)}
        for inner in statement.body.body:
            found.extend(n for n in _unconditional_reads(inner) if n.value not in bound)
            bound |= _bindings(inner)
            if _leaves(inner):
                break
        return found
    else:
        return []
    found = []
    for root in roots:
        found.extend(_plain_reads(root))
    return found


def _plain_reads(root: cst.CSTNode) -> list[cst.Name]:
    groups = walk.index(root)
    conditional: set[int] = set()
    for kind in _NESTED:
        for scope in groups.get(kind, ()):
            conditional.update(id(n) for n in walk.walk(scope))
    for ifexp in walk.nodes(root, cst.IfExp):
        for branch in (ifexp.body, ifexp.orelse):
            conditional.update(id(n) for n in walk.walk(branch))
    for boolop in walk.nodes(root, cst.BooleanOperation):
        conditional.update(id(n) for n in walk.walk(boolop.right))
    # comprehension variables shadow the function's names inside the comprehension
    shadowed: set[str] = set()
    for comp in walk.nodes(root, cst.CompFor):
        shadowed.update(target_names(comp.target))
    # assignment targets are writes, not reads
    targets: set[int] = set()
    for assign in walk.nodes(root, cst.Assign):
        for target in assign.targets:
            if isinstance(target.target, (cst.Name, cst.Tuple, cst.List)):
                targets.update(id(n) for n in walk.walk(target.target))
    for ann in walk.nodes(root, cst.AnnAssign):
        targets.update(id(n) for n in walk.walk(ann.target))
    return [
        n for n in names_read(root) if id(n) not in conditional and id(n) not in targets and n.value not in shadowed
    ]


def _leaves(statement: cst.CSTNode) -> bool:
    if isinstance(statement, cst.SimpleStatementLine):
        return any(isinstance(s, (cst.Return, cst.Raise, cst.Continue, cst.Break)) for s in statement.body)
    return False


class NameBoundOnlyInConditional(Rule):
    """
    ## What it does
    Checks for a local name that a function binds only inside an `if` without `else` (and nowhere else: not
    a parameter, no earlier default) and then reads unconditionally after that `if`, in the same block. An
    `if`/`elif` chain without `else` counts too when one of its tests asks whether an argument `is None` (the
    arguments decide the branch, as with `latents` given or not) and those arguments were not validated by
    `self.check_inputs(...)` first. A later `x = f(x)` or `x += …` does not bind `x`: it reads it first.

    ## Why is this bad?
    When the condition is false the name is never bound, and the first unconditional read raises
    `UnboundLocalError`/`NameError`. In pipelines the condition is usually an optional feature such as
    classifier-free guidance, so a documented setting (`guidance_scale=0.0`) crashes before generation.

    ## Example
    ```python
    if self.do_classifier_free_guidance:
        negative_condition_siglip_embeds = [[se.clone() for se in b] for b in condition_siglip_embeds]
    negative_condition_siglip_embeds = [None if s == [] else s + [None] for s in negative_condition_siglip_embeds]
    ```

    Use instead:
    ```python
    if self.do_classifier_free_guidance:
        negative_condition_siglip_embeds = [[se.clone() for se in b] for b in condition_siglip_embeds]
        negative_condition_siglip_embeds = [None if s == [] else s + [None] for s in negative_condition_siglip_embeds]
    ```

    ## Known problems
    Only the narrow shape is seen: the binding `if` has no `else` (an `elif` chain only when an argument's
    `is None` test decides it), is not inside a loop, and the read is in the same block after it (a simple statement, a compound statement's header, or a `with` body). A
    condition that earlier code makes always true (a validated argument) is not understood; name such a case
    with `# drbot: ignore[DRB401] reason`. Parameters that default to `None` and are dereferenced are not
    checked.

    ## References
    - huggingface/diffusers#13656, pattern 4
    - huggingface/diffusers#13583 (z_image review: `negative_condition_siglip_embeds` with `guidance_scale=0.0`)
    - huggingface/diffusers#13527 (the fix, in v0.39.0)
    - huggingface/diffusers#5648 (SDXL inpaint: `image_latents` bound in an `if`/`elif` without `else`, unbound
      with user `latents` at strength 1), huggingface/diffusers#13981 (Bria FIBO: `prompt_layers` unbound with
      precomputed `prompt_embeds`)
    """

    code = "DRB401"
    pattern = 4
    severity = "warning"
    message = (
        "`{name}` is bound only when `{cond}` is true but read unconditionally afterwards; bind a default "
        "before the `if` or move the read under the same condition."
    )
    REQUIRES_ANY = ("if ",)

    VALID = [
        Valid(
            """
            def f(x, cfg):
                if cfg:
                    neg = x.clone()
                else:
                    neg = None
                return neg
            """
        ),
        Valid(
            """
            def f(x, cfg):
                neg = None
                if cfg:
                    neg = x.clone()
                return neg
            """
        ),
        Valid(
            """
            def f(x, cfg):
                if cfg:
                    neg = x.clone()
                if cfg:
                    x = torch.cat([neg, x])
                y = x if not cfg else neg
                return x
            """
        ),
        Valid(
            """
            def f(xs):
                for i, x in enumerate(xs):
                    if i == 0:
                        first = x
                    use(first)
            """
        ),
        Valid(
            """
            def report(items):
                if items:
                    with open("a", "w") as f:
                        f.write("x")
                with open("b", "w") as f:
                    f.write("y")
            """
        ),
        Valid(
            """
            def f(x, cfg):
                if not cfg:
                    raise ValueError("cfg is required")
                if cfg:
                    neg = x
                return [neg for neg in x]
            """
        ),
        # every path through the `if`/`elif` chain binds the name or leaves
        Valid(
            """
            def prepare(image, latents, mode):
                if mode == "latents":
                    image_latents = image
                elif mode == "encode":
                    image_latents = encode(image)
                else:
                    raise ValueError(mode)
                return image_latents.repeat(2, 1, 1, 1)
            """
        ),
    ]
    INVALID = [
        # an update of the name in another branch (`x = f(x)`) cannot bind it
        Invalid(
            """
            class FiboPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, prompt_embeds=None, guidance_scale=5.0):
                    if prompt_embeds is None:
                        prompt_embeds, prompt_layers = self.get_prompt_embeds(prompt)
                    if guidance_scale > 1:
                        prompt_layers = [self.pad(layer) for layer in prompt_layers]
                    return prompt_embeds, prompt_layers
            """,
            message=(
                "`prompt_layers` is bound only when `prompt_embeds is None` is true but read unconditionally "
                "afterwards; bind a default before the `if` or move the read under the same condition."
            ),
        ),
        # `prompt_embeds.shape` in the `else` of an earlier `if` does not make `prompt_embeds` non-None on every path
        Invalid(
            """
            class FiboPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt=None, prompt_embeds=None):
                    if prompt is not None:
                        batch_size = len(prompt)
                    else:
                        batch_size = prompt_embeds.shape[0]
                    if prompt_embeds is None:
                        prompt_embeds, prompt_layers = self.get_prompt_embeds(prompt)
                    return prompt_embeds, prompt_layers, batch_size
            """
        ),
        # an `if`/`elif` chain with no `else`
        Invalid(
            """
            class InpaintPipeline(DiffusionPipeline):
                def prepare_latents(self, image, latents=None, is_strength_max=True):
                    if image.shape[1] == 4:
                        image_latents = image
                    elif latents is None and not is_strength_max:
                        image_latents = self._encode_vae_image(image)
                    image_latents = image_latents.repeat(2, 1, 1, 1)
                    return image_latents
            """,
            message=(
                "`image_latents` is bound only when `image.shape[1] == 4 or latents is None and not "
                "is_strength_max` is true but read unconditionally afterwards; bind a default before the `if` or "
                "move the read under the same condition."
            ),
        ),
        Invalid(
            """
            class ZImageOmniPipeline(DiffusionPipeline):
                def __call__(self, images):
                    embeds = self.prepare(images)
                    if self.do_classifier_free_guidance:
                        negative_embeds = [[e.clone() for e in b] for b in embeds]
                    negative_embeds = [None if s == [] else s + [None] for s in negative_embeds]
                    return negative_embeds
            """,
            message=(
                "`negative_embeds` is bound only when `self.do_classifier_free_guidance` is true but read "
                "unconditionally afterwards; bind a default before the `if` or move the read under the same "
                "condition."
            ),
        ),
        Invalid(
            """
            def decode(latents, output_type="pil"):
                if output_type != 'latent':
                    with torch.no_grad():
                        image = vae.decode(latents)
                with timer():
                    return image
            """,
            message=(
                "`image` is bound only when `output_type != 'latent'` is true but read unconditionally "
                "afterwards; bind a default before the `if` or move the read under the same condition."
            ),
        ),
    ]

    def check(self) -> None:
        self._order = walk.order_of(self.context.module)  # the prepared file's nodes, in `walk` order (or None)
        self._updates: dict[int, list[str]] = {}  # `_self_updates` by id of the assignment
        # binding events of the function bodies seen so far: (start, end, positions, names, deltas), each binding
        # (or self-update, -1) at its node's position in `self._order`, positions ascending
        self._regions: list[tuple[int, int, list[int], list[str], list[int]]] = []
        for definition in self.context.definitions:
            function = definition.node
            # a function without an `if` of its own has nothing `_block` could report: no need to ask which ones
            if not isinstance(function, cst.FunctionDef):
                continue
            positional = [p.name.value for p in function.params.params]
            if definition.name == "__call__" and positional[1:2] == ["attn"]:
                continue  # attention processors: the Attention protocol's defaults, set per layer by loaders
            self._function = function
            self._scope = definition.qualname
            self._others: dict[int, dict[str, int]] = {}  # `_binding_counts` by id of the root
            self._bases: dict[int, set[str]] = {}  # `_dereferenced` by id of the statement
            self._reads: dict[int, list[cst.Name]] = {}  # `_unconditional_reads` by id of the statement
            self._variables: set[str] | None = None  # the function's parameters and local names
            self._block(function.body.body, in_loop=False)

    def _block(self, statements: Sequence[cst.CSTNode], in_loop: bool) -> None:
        seen: set[str] = set()  # what statements[:done] surely dereference, grown only when an `if` asks
        done = 0
        for i, statement in enumerate(statements):
            if isinstance(statement, cst.If):
                if _chain_without_else(statement) and not in_loop:
                    for earlier in statements[done:i]:
                        seen |= self._dereferenced(earlier)
                    done = i
                    if not self._test_already_dereferenced(statement, seen) and (
                        statement.orelse is None or self._optional_chain(statement, statements[:i])
                    ):
                        self._check_if(statement, statements[i + 1 :])
                self._block(statement.body.body, in_loop)
                orelse = statement.orelse
                while isinstance(orelse, cst.If):
                    self._block(orelse.body.body, in_loop)
                    orelse = orelse.orelse
                if isinstance(orelse, cst.Else):
                    self._block(orelse.body.body, in_loop)
            elif isinstance(statement, (cst.For, cst.While)):
                self._block(statement.body.body, True)
                if statement.orelse is not None:
                    self._block(statement.orelse.body.body, True)
            elif isinstance(statement, cst.With):
                self._block(statement.body.body, in_loop)
            elif isinstance(statement, (cst.Try, cst.TryStar)):
                self._block(statement.body.body, in_loop)
                for handler in statement.handlers:
                    self._block(handler.body.body, in_loop)
                for extra in (statement.orelse, statement.finalbody):
                    if extra is not None:
                        self._block(extra.body.body, in_loop)

    def _optional_chain(self, statement: cst.If, before: Sequence[cst.CSTNode]) -> bool:
        """Whether an `if`/`elif` chain without `else` is decided by optional arguments: some test asks whether a
        parameter `is None`, and not every parameter the chain tests went through `self.check_inputs(...)` before
        it. Other chains (`if mode == "a": … elif mode == "b": …`) dispatch on a value that configuration or
        validation pins down, and stay out of reach."""
        names = {p.name.value for p in parameters(self._function)} - {"self"}
        tests = [link.test for link in _chain(statement)]
        optional = False
        for test in tests:
            for comparison in walk.nodes(test, cst.Comparison):
                left = comparison.left
                for target in comparison.comparisons:
                    if (
                        isinstance(target.operator, (cst.Is, cst.IsNot))
                        and isinstance(target.comparator, cst.Name)
                        and target.comparator.value == "None"
                        and isinstance(left, cst.Name)
                        and left.value in names
                    ):
                        optional = True
        if not optional:
            return False
        tested = {n.value for test in tests for n in names_read(test)} & names
        validated: set[str] = set()
        for earlier in before:
            for call in walk.nodes(earlier, cst.Call):
                func = call.func
                if isinstance(func, cst.Attribute) and func.attr.value == "check_inputs":
                    validated |= {n.value for n in names_read(call)}
        return not tested <= validated

    def _test_already_dereferenced(self, statement: cst.If, dereferenced: set[str]) -> bool:
        """Whether every variable the `if` tests was already used as `x.attr` or `x[...]` before it (`dereferenced`:
        what the statements before it in the block surely dereference).

        Then a `None` (or otherwise unexpected) value has already failed earlier (`image.size` before
        `if image is not None and ...:`), and the branch is taken on every path that gets this far.
        """
        read = {n.value for n in names_read(statement.test)} - {"self"}
        if read.isdisjoint(dereferenced):
            return False  # `tested` below is part of `read`: empty, or not all dereferenced
        if self._variables is None:
            params = self._function.params
            variables = {p.name.value for p in (*params.posonly_params, *params.params, *params.kwonly_params)}
            self._variables = variables | set(self._binding_counts(self._function.body))
        tested = read & self._variables
        return bool(tested) and tested <= dereferenced

    def _dereferenced(self, statement: cst.CSTNode) -> set[str]:
        """Names used as `x.attr` or `x[...]` in `statement` (computed once per statement: every later `if` of the
        block asks about the statements before it)."""
        cached = self._bases.get(id(statement))
        if cached is None:
            cached = self._bases[id(statement)] = self._surely_dereferenced(statement)
        return cached

    def _surely_dereferenced(self, statement: cst.CSTNode) -> set[str]:
        """`_dereferenced` on every path through `statement`: an `if`'s test, and a name its branches all use
        (`batch_size = prompt_embeds.shape[0]` in an `else` says nothing about the other branch)."""
        if isinstance(statement, cst.If):
            found = _dereferenced_in(statement.test, self._order)
            if statement.orelse is None:
                return found
            body = self._block_dereferenced(statement.body.body)
            orelse = statement.orelse
            other = (
                self._surely_dereferenced(orelse)
                if isinstance(orelse, cst.If)
                else self._block_dereferenced(orelse.body.body)
            )
            return found | (body & other)
        if isinstance(statement, (cst.For, cst.While, cst.Try, cst.TryStar, cst.With)):
            header = {cst.For: "iter", cst.While: "test"}.get(type(statement))
            return _dereferenced_in(getattr(statement, header), self._order) if header else set()
        return _dereferenced_in(statement, self._order)

    def _block_dereferenced(self, statements: Sequence[cst.CSTNode]) -> set[str]:
        found: set[str] = set()
        for statement in statements:
            found |= self._dereferenced(statement)
        return found

    def _check_if(self, statement: cst.If, after: Sequence[cst.CSTNode]) -> None:
        branches = [link.body for link in _chain(statement)]
        if not all(isinstance(b, cst.IndentedBlock) for b in branches):
            return
        open_branches = [b for b in branches if not _ends_function_path(b)]
        if not open_branches:
            return
        local: dict[str, int] = {}
        for branch in open_branches:
            for name, count in self._binding_counts(branch).items():
                local[name] = local.get(name, 0) + count
        # a branch that leaves the function (`raise`) binds nothing the reads after the chain could see
        closed = sum((Counter(self._binding_counts(b)) for b in branches if _ends_function_path(b)), Counter())
        params = self._function.params
        candidates = set(local) - {
            p.name.value for p in (*params.posonly_params, *params.params, *params.kwonly_params)
        }
        candidates -= {p.name.value for p in (params.star_arg, params.star_kwarg) if isinstance(p, cst.Param)}
        candidates.discard("*")
        if not candidates:
            return
        total = self._binding_counts(self._function.body)
        reported: set[str] = set()
        # bindings from the read onward (the read's own statement included: `x = f(x)` reads first) come after the
        # read; any other binding outside the `if` may come before it, and then we stay silent. `rest` holds the
        # candidates' bindings in after[k:], kept by subtracting each statement once it is passed
        rest: dict[str, int] = dict.fromkeys(candidates, 0)
        for following in after:
            for name, count in self._binding_counts(following).items():
                if name in rest:
                    rest[name] += count
        for later in after:
            reads = self._reads.get(id(later))
            if reads is None:
                reads = self._reads[id(later)] = _unconditional_reads(later)
            for read in reads:
                value = read.value
                if value not in candidates or value in reported:
                    continue
                if total.get(value, 0) > local[value] + closed.get(value, 0) + rest.get(value, 0):
                    continue
                reported.add(value)
                cond = " or ".join(
                    " ".join(self.context.module.code_for_node(test).split())
                    for test in (link.test for link in _chain(statement))
                )
                self.report(read, self.message.format(name=value, cond=cond), symbol=value, scope=self._scope)
            if _leaves(later):
                break
            for name, count in self._binding_counts(later).items():
                if name in rest:
                    rest[name] -= count

    def _binding_counts(self, root: cst.CSTNode) -> dict[str, int]:
        cached = self._others.get(id(root))
        if cached is not None:
            return cached
        counts = self._counts_from_events(root)
        if counts is None:
            counts = self._binding_counts_walking(root)
        self._others[id(root)] = counts
        return counts

    def _counts_from_events(self, root: cst.CSTNode) -> dict[str, int] | None:
        """`_binding_counts(root)` summed from the binding events of the function's body that lie in `root`'s slice
        of the prepared file (None when `root` is not in it)."""
        bounds = walk.span(root)
        if bounds is None or self._order is None:
            return None
        start, end = bounds
        region = self._region(start, end)
        if region is None:
            return None
        positions, names, deltas = region[2], region[3], region[4]
        low = bisect_left(positions, start)
        high = bisect_left(positions, end, low)
        counts: dict[str, int] = {}
        for i in range(low, high):
            name = names[i]
            counts[name] = counts.get(name, 0) + deltas[i]
        # each node's bindings and self-updates lie at its own position: a subtree's sums are never negative
        return {name: count for name, count in counts.items() if count}

    def _region(self, start: int, end: int) -> tuple[int, int, list[int], list[str], list[int]] | None:
        for region in self._regions:
            if region[0] <= start and end <= region[1]:
                return region
        bounds = walk.span(self._function.body)
        if bounds is None or not (bounds[0] <= start and end <= bounds[1]):
            return None
        region = (*bounds, *self._events(*bounds))
        self._regions.append(region)
        return region

    def _events(self, start: int, end: int) -> tuple[list[int], list[str], list[int]]:
        """The binding events of the prepared file's nodes in [start, end): what `_binding_counts_walking` counts, each
        node's names at its position (+1 a binding, -1 a self-update; an `x += …` binds and updates `x`: nothing)."""
        assert self._order is not None
        order = self._order
        positions: list[int] = []
        names: list[str] = []
        deltas: list[int] = []
        plain = _EVENT_BINDINGS
        # only the binding kinds' positions, picked out at C speed
        for pos in compress(range(start, end), map(_EVENT_KINDS.__contains__, map(type, order[start:end]))):
            node = order[pos]
            kind = type(node)
            if kind is cst.Assign:
                bound = _bindings_of(node)
                for name in bound:
                    positions.append(pos)
                    names.append(name)
                    deltas.append(1)
                if bound:
                    updates = self._updates.get(id(node))
                    if updates is None:
                        updates = self._updates[id(node)] = _self_updates_in(node, bound, order)  # type: ignore[arg-type]
                    for name in updates:
                        positions.append(pos)
                        names.append(name)
                        deltas.append(-1)
                continue
            binder = plain.get(kind)
            if binder is None:
                continue
            for name in binder(node):
                positions.append(pos)
                names.append(name)
                deltas.append(1)
        return positions, names, deltas

    def _binding_counts_walking(self, root: cst.CSTNode) -> dict[str, int]:
        counts: dict[str, int] = {}
        groups = walk.index(root)  # by exact type: every binding kind below is a concrete libcst class
        for kind in _BINDERS:
            for node in groups.get(kind, ()):
                for name in _bindings_of(node):
                    counts[name] = counts.get(name, 0) + 1
        # `x = f(x)` and `x += 1` read the name first: they cannot bind one that is unbound, so they do not count
        for kind in (cst.Assign, cst.AugAssign):
            for node in groups.get(kind, ()):
                if not isinstance(node, (cst.Assign, cst.AugAssign)):
                    continue
                updates = self._updates.get(id(node))
                if updates is None:
                    updates = self._updates[id(node)] = _self_updates(node)
                for name in updates:
                    counts[name] -= 1
                    if not counts[name]:
                        del counts[name]
        for small in _SMALL_BINDERS:
            for node in groups.get(small, ()):
                for name in _small_bindings(node):
                    counts[name] = counts.get(name, 0) + 1
        for node in groups.get(cst.ExceptHandler, ()):
            if isinstance(node, cst.ExceptHandler) and node.name is not None:
                for name in target_names(node.name.name):
                    counts[name] = counts.get(name, 0) + 1
        for scope in (cst.FunctionDef, cst.ClassDef):
            for node in groups.get(scope, ()):
                if isinstance(node, (cst.FunctionDef, cst.ClassDef)) and node is not self._function:
                    counts[node.name.value] = counts.get(node.name.value, 0) + 1
        return counts


_BINDERS = (cst.Assign, cst.AnnAssign, cst.AugAssign, cst.For, cst.WithItem, cst.NamedExpr)


def _dereferenced_in(node: cst.CSTNode, order: list[cst.CSTNode] | None = None) -> set[str]:
    """Names used as `x.attr` or `x[...]` anywhere under `node` (`order`: the prepared file's nodes, if any)."""
    bounds = walk.span(node) if order is not None else None
    if bounds is not None and order is not None:  # `Attribute` and `Subscript` have no subclasses
        start, end = bounds
        found: set[str] = set()
        for pos in compress(range(start, end), map(_DEREFERENCE_KINDS.__contains__, map(type, order[start:end]))):
            base = order[pos].value  # type: ignore[attr-defined]
            if type(base) is cst.Name:
                found.add(base.value)
        return found
    bases = [a.value for a in walk.nodes(node, cst.Attribute)] + [s.value for s in walk.nodes(node, cst.Subscript)]
    return {base.value for base in bases if isinstance(base, cst.Name)}


def _self_updates(node: cst.Assign | cst.AugAssign) -> list[str]:
    """The names `node` rebinds from their own value (`x = f(x)`, `x += 1`): reading comes first."""
    if isinstance(node, cst.AugAssign):
        return target_names(node.target)
    bound = _bindings_of(node)
    if not {n.value for n in walk.nodes(node.value, cst.Name)} & set(bound):
        return []  # no `Name` of the value spells a bound name: no need for the exact (slower) reading
    read = {n.value for n in names_read(node.value)}
    return [name for name in bound if name in read]


def _self_updates_in(node: cst.Assign, bound: list[str], order: list[cst.CSTNode]) -> list[str]:
    """`_self_updates(node)` for an assignment of the prepared file that binds `bound`, its value's names read from
    its slice of `order`."""
    bounds = walk.span(node.value)
    if bounds is None:
        return _self_updates(node)
    value = order[bounds[0] : bounds[1]]
    spelled = {n.value for n in compress(value, map(_NAME_KINDS.__contains__, map(type, value)))}  # type: ignore[attr-defined]
    if spelled.isdisjoint(bound):
        return []
    read = {n.value for n in names_read(node.value)}
    return [name for name in bound if name in read]


def _handler_bindings(node: cst.ExceptHandler) -> list[str]:
    return target_names(node.name.name) if node.name is not None else []


def _definition_binding(node: cst.FunctionDef | cst.ClassDef) -> list[str]:
    return [node.name.value]


def _chain(statement: cst.If) -> list[cst.If]:
    """The `if` and each `elif` of the chain `statement` starts."""
    out: list[cst.If] = []
    node: cst.If | cst.Else | None = statement
    while isinstance(node, cst.If):
        out.append(node)
        node = node.orelse
    return out


def _chain_without_else(statement: cst.If) -> bool:
    """`if …:` or `if …: … elif …: …` with no final `else`."""
    return _chain(statement)[-1].orelse is None


_SMALL_BINDERS = (cst.Import, cst.ImportFrom, cst.Global, cst.Nonlocal, cst.Del)


def _bindings_of(node: cst.CSTNode) -> list[str]:
    if isinstance(node, cst.Assign):
        return [n for t in node.targets for n in target_names(t.target)]
    if isinstance(node, (cst.AnnAssign, cst.AugAssign)):
        return target_names(node.target)
    if isinstance(node, cst.For):
        return target_names(node.target)
    if isinstance(node, cst.WithItem):
        return target_names(node.asname.name) if node.asname is not None else []
    if isinstance(node, cst.NamedExpr):
        return target_names(node.target)
    return []


def _small_bindings(node: cst.CSTNode) -> list[str]:
    if isinstance(node, (cst.Global, cst.Nonlocal)):
        return [n.name.value for n in node.names]
    if isinstance(node, cst.Del):
        return target_names(node.target)
    if isinstance(node, (cst.Import, cst.ImportFrom)):
        if isinstance(node.names, cst.ImportStar):
            return ["*"]
        out = []
        for alias in node.names:
            if alias.asname is not None:
                out.extend(target_names(alias.asname.name))
            else:
                out.append((alias.evaluated_name or "").split(".")[0])
        return out
    return []


#: node type -> the names a node of it binds, for every binding kind `_binding_counts_walking` counts but `Assign`
#: (self-updates) and `AugAssign` (each of its bindings is a self-update)
_EVENT_BINDINGS: dict[type, Callable[[Any], list[str]]] = {
    cst.AnnAssign: _bindings_of,
    cst.For: _bindings_of,
    cst.WithItem: _bindings_of,
    cst.NamedExpr: _bindings_of,
    cst.Import: _small_bindings,
    cst.ImportFrom: _small_bindings,
    cst.Global: _small_bindings,
    cst.Nonlocal: _small_bindings,
    cst.Del: _small_bindings,
    cst.ExceptHandler: _handler_bindings,
    cst.FunctionDef: _definition_binding,
    cst.ClassDef: _definition_binding,
}
_EVENT_KINDS = frozenset({cst.Assign, *_EVENT_BINDINGS})
_DEREFERENCE_KINDS = frozenset({cst.Attribute, cst.Subscript})
_NAME_KINDS = frozenset({cst.Name})
