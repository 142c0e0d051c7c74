"""DRB412: an optional argument is computed only under a flag, then dereferenced whether or not the flag is set."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import cast

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import conjuncts, parameters, target_names


def _code(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)


def _flags(test: cst.BaseExpression) -> set[str]:
    """The plain flags (`do_classifier_free_guidance`, `self.do_classifier_free_guidance`) a test requires."""
    return {_code(c) for c in conjuncts(test) if isinstance(c, (cst.Name, cst.Attribute))}


def _chain(statement: cst.If) -> tuple[list[tuple[cst.BaseExpression, cst.BaseSuite]], bool]:
    """The branches of an if/elif chain, and whether it ends with an `else`."""
    branches: list[tuple[cst.BaseExpression, cst.BaseSuite]] = []
    current: cst.If | None = statement
    while current is not None:
        branches.append((current.test, current.body))
        orelse = current.orelse
        if isinstance(orelse, cst.Else):
            return branches, True
        current = orelse
    return branches, False


class _Names:
    """Where the `Name` nodes of the function being checked lie in the prepared file's walk order (`walk.span`), by
    spelling, worked out on the first question about a spelling: whether a node of the function mentions a name
    is then a bisection, not a walk of its subtree."""

    def __init__(self, body: cst.CSTNode, start: int, end: int) -> None:
        self.start, self.end = start, end
        self.all = cast("list[cst.Name]", walk.index(body).get(cst.Name, []))
        self.at: dict[str, list[int]] = {}

    def mentions(self, node: cst.CSTNode, name: str) -> bool | None:
        """Whether a `Name` spelled `name` lies under `node`; None when `node` is not in the function."""
        bounds = walk.span(node)
        if bounds is None or bounds[0] < self.start or bounds[1] > self.end:
            return None
        found = self.at.get(name)
        if found is None:  # the index lists nodes in walk order: the positions come sorted
            found = self.at[name] = [cast("tuple[int, int]", walk.span(n))[0] for n in self.all if n.value == name]
        index = bisect_left(found, bounds[0])
        return index < len(found) and found[index] < bounds[1]


#: the `_Names` of the function being checked, when its file was prepared (`walk.prepare`)
_NAMES: list[_Names | None] = [None]


def _binds(node: cst.CSTNode, name: str) -> bool:
    names = _NAMES[0]
    if names is not None and names.mentions(node, name) is False:
        return False  # a binding of `name` has a `Name` spelled `name` in its target
    for assign in walk.nodes(node, cst.Assign):
        if any(name in target_names(t.target) for t in assign.targets):
            return True
    if any(name in target_names(a.target) for a in walk.nodes(node, cst.AnnAssign)):
        return True
    if any(name in target_names(a.target) for a in walk.nodes(node, cst.AugAssign)):
        return True
    return any(name in target_names(w.target) for w in walk.nodes(node, cst.NamedExpr))


def _mentions(node: cst.CSTNode, name: str) -> bool:
    names = _NAMES[0]
    if names is not None:
        found = names.mentions(node, name)
        if found is not None:
            return found
    return any(n.value == name for n in walk.nodes(node, cst.Name))


def _plain_dereference(statement: cst.SimpleStatementLine, name: str) -> cst.Attribute | None:
    """`name.attr` that running the statement surely evaluates (not in a conditional expression, the right side
    of `and`/`or`, a lambda or a comprehension)."""
    skipped: set[int] = set()
    for kind in (cst.IfExp, cst.BooleanOperation, cst.Lambda, cst.ListComp, cst.GeneratorExp, cst.DictComp):
        for node in walk.nodes(statement, kind):
            skipped.update(id(n) for n in walk.walk(node))
    for attribute in walk.nodes(statement, cst.Attribute):
        if isinstance(attribute.value, cst.Name) and attribute.value.value == name and id(attribute) not in skipped:
            return attribute
    return None


def _self_component(test: cst.BaseExpression) -> str | None:
    """`X` of a test that the pipeline lacks component `X`: `self.X is None`, `getattr(self, "X", None) is None`,
    either after `hasattr(self, "X") and`."""
    parts = [c for c in conjuncts(test) if not (isinstance(c, cst.Call) and _code(c.func) == "hasattr")]
    if len(parts) != 1:
        return None
    test = parts[0]
    if not (isinstance(test, cst.Comparison) and len(test.comparisons) == 1):
        return None
    target = test.comparisons[0]
    if not (isinstance(target.operator, cst.Is) and _code(target.comparator) == "None"):
        return None
    left = test.left
    if isinstance(left, cst.Attribute) and _code(left.value) == "self":
        return left.attr.value
    if isinstance(left, cst.Call) and _code(left.func) == "getattr" and len(left.args) >= 2:
        if _code(left.args[0].value) == "self" and isinstance(left.args[1].value, cst.SimpleString):
            return left.args[1].value.evaluated_value if isinstance(left.args[1].value.evaluated_value, str) else None
    return None


def _registers(node: cst.CSTNode, component: str) -> bool:
    """Whether `node` sets `self.<component>` (`self.register_modules(<component>=...)` or an assignment)."""
    for call in walk.nodes(node, cst.Call):
        if isinstance(call.func, cst.Attribute) and call.func.attr.value == "register_modules":
            if any(a.keyword is not None and a.keyword.value == component for a in call.args):
                return True
    for assign in walk.nodes(node, cst.Assign):
        for target in assign.targets:
            if _code(target.target) == f"self.{component}":
                return True
    return False


def _leaves(body: cst.BaseSuite) -> bool:
    return any(isinstance(n, (cst.Raise, cst.Return, cst.Continue, cst.Break)) for n in walk.walk(body))


def _argument_test(test: cst.BaseExpression, optional: set[str]) -> str | None:
    """The optional argument `P` of a test `P is not None` (or plain `P`)."""
    if isinstance(test, cst.Name) and test.value in optional:
        return test.value
    if isinstance(test, cst.Comparison) and len(test.comparisons) == 1:
        target = test.comparisons[0]
        if (
            isinstance(test.left, cst.Name)
            and test.left.value in optional
            and isinstance(target.operator, cst.IsNot)
            and _code(target.comparator) == "None"
        ):
            return test.left.value
    return None


def _component_dereference(statement: cst.CSTNode, component: str) -> cst.Attribute | None:
    """`self.<component>.attr` that running the statement evaluates unless a test about the component guards
    it: followed into `if` bodies whose test does not mention the component, and into loops and `with`."""
    if isinstance(statement, cst.SimpleStatementLine):
        skipped: set[int] = set()
        for kind in (cst.IfExp, cst.BooleanOperation, cst.Lambda, cst.ListComp, cst.GeneratorExp, cst.DictComp):
            for node in walk.nodes(statement, kind):
                skipped.update(id(n) for n in walk.walk(node))
        for attribute in walk.nodes(statement, cst.Attribute):
            inner = attribute.value
            if (
                isinstance(inner, cst.Attribute)
                and inner.attr.value == component
                and _code(inner.value) == "self"
                and id(attribute) not in skipped
            ):
                return attribute
        return None
    if isinstance(statement, cst.If):
        if component in _code(statement.test):
            return None
        body: list[cst.CSTNode] = list(statement.body.body)
    elif isinstance(statement, (cst.For, cst.With)):
        body = list(statement.body.body)
    else:
        return None
    for inner_statement in body:
        if component in _code(inner_statement) and not isinstance(inner_statement, cst.SimpleStatementLine):
            found = _component_dereference(inner_statement, component)
            if found is not None:
                return found
            continue
        found = _component_dereference(inner_statement, component)
        if found is not None:
            return found
        if _registers(inner_statement, component):
            return None
    return None


def _self_component_tested(statement: cst.CSTNode, component: str) -> bool:
    """Whether a statement tests the component (`if self.X is not None:`), guarding what follows."""
    return any(component in _code(i.test) for i in walk.nodes(statement, cst.If))


class OptionalArgumentComputedOnlyUnderFlag(Rule):
    """
    ## What it does
    Checks functions whose optional argument (`negative_pooled_prompt_embeds=None`) is computed only in
    branches that all require the same flag (`if do_classifier_free_guidance and ...:`), with no `else`, and
    is then dereferenced (`negative_pooled_prompt_embeds.repeat(...)`) by a statement that runs whether or not
    the flag is set.

    ## Why is this bad?
    When the flag is off and the caller did not pass the argument, it is still `None` where it is used: running
    the pipeline without classifier-free guidance (`guidance_scale <= 1`) fails with `AttributeError:
    'NoneType' object has no attribute 'repeat'`. The argument is optional only while the flag is on.

    It also checks a component loaded only when an optional argument is given (`if self.image_encoder is None:`
    / `if image_encoder_folder is not None: self.register_modules(image_encoder=...)` / `else:` a warning),
    then dereferenced (`self.image_encoder.config.image_size`) whether or not it was loaded.

    ## Example
    ```python
    def encode_prompt(self, prompt, do_classifier_free_guidance, negative_pooled_prompt_embeds=None):
        if do_classifier_free_guidance and negative_prompt_embeds is None:
            negative_pooled_prompt_embeds = self.encode_negative(prompt)
        negative_pooled_prompt_embeds = negative_pooled_prompt_embeds.repeat(1, num_images_per_prompt)
    ```

    Use instead:
    ```python
        if do_classifier_free_guidance:
            negative_pooled_prompt_embeds = negative_pooled_prompt_embeds.repeat(1, num_images_per_prompt)
    ```

    ## Known problems
    Only statements of the function's own body are followed; a use after a test that mentions the argument
    again is taken to be guarded.

    ## References
    - huggingface/diffusers#13656, pattern 4
    - huggingface/diffusers#4193 (SDXL repeated `negative_pooled_prompt_embeds` without classifier-free guidance)
    - huggingface/diffusers#9194 (`load_ip_adapter(image_encoder_folder=None)` read `self.image_encoder.config`)
    """

    code = "DRB412"
    pattern = 4
    severity = "error"
    message = (
        "`{name}` defaults to `None` and is computed only when `{flag}` is true, but it is dereferenced here "
        "whether or not `{flag}` is; without `{flag}` this fails on `None`. Guard the use with `if {flag}:`."
    )
    message_component = (
        "`self.{component}` is loaded only when the optional `{name}` is not `None`, but it is dereferenced here "
        "whether or not it was loaded; with `{name}=None` this fails on `None`. Guard the use with "
        "`if self.{component} is not None:`."
    )
    REQUIRES_ANY = ("=None", "= None", "register_modules")

    VALID = [
        # the use is guarded by the same flag
        Valid(
            """
            def encode(prompt, do_cfg, negative_embeds=None, n=1):
                if do_cfg and negative_embeds is None:
                    negative_embeds = make(prompt)
                if do_cfg:
                    negative_embeds = negative_embeds.repeat(1, n)
                return negative_embeds
            """
        ),
        # the usual `if x is None:` default
        Valid(
            """
            def encode(prompt, negative_embeds=None, n=1):
                if negative_embeds is None:
                    negative_embeds = make(prompt)
                return negative_embeds.repeat(1, n)
            """
        ),
        # an `else` binds it on every other path
        Valid(
            """
            def encode(prompt, do_cfg, negative_embeds=None, n=1):
                if do_cfg:
                    negative_embeds = make(prompt)
                else:
                    negative_embeds = zeros()
                return negative_embeds.repeat(1, n)
            """
        ),
        # the use is guarded; the other branch raises
        Valid(
            """
            class Loader:
                def load(self, path, encoder_folder=None, tokenizer_folder=None):
                    if self.image_encoder is None:
                        if encoder_folder is not None:
                            self.register_modules(image_encoder=load(encoder_folder))
                    if self.feature_extractor is None:
                        size = self.image_encoder.config.image_size if self.image_encoder is not None else 224
                        self.register_modules(feature_extractor=make(size))
                    if self.tokenizer is None:
                        if tokenizer_folder is not None:
                            self.register_modules(tokenizer=load(tokenizer_folder))
                        else:
                            raise ValueError("no tokenizer")
                    return self.tokenizer.vocab
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class Pipeline:
                def encode(self, prompt, do_cfg=True, negative_embeds=None, negative_pooled=None, n=1):
                    if do_cfg and negative_embeds is None and self.zero:
                        negative_pooled = zeros()
                    elif do_cfg and negative_embeds is None:
                        negative_pooled = self.encoder(prompt)[0]
                    negative_pooled = negative_pooled.repeat(1, n).view(-1, 1)
                    return negative_pooled
            """,
            message=(
                "`negative_pooled` defaults to `None` and is computed only when `do_cfg` is true, but it is "
                "dereferenced here whether or not `do_cfg` is; without `do_cfg` this fails on `None`. Guard the "
                "use with `if do_cfg:`."
            ),
        ),
        Invalid(
            """
            class Loader:
                def load(self, path, encoder_folder="image_encoder"):
                    for name in path:
                        if hasattr(self, "image_encoder") and getattr(self, "image_encoder", None) is None:
                            if encoder_folder is not None:
                                self.register_modules(image_encoder=load(name, encoder_folder))
                            else:
                                logger.warning("no image encoder")
                        if getattr(self, "feature_extractor", None) is None:
                            size = self.image_encoder.config.image_size
                            self.register_modules(feature_extractor=make(size))
            """,
            message=(
                "`self.image_encoder` is loaded only when the optional `encoder_folder` is not `None`, but it is "
                "dereferenced here whether or not it was loaded; with `encoder_folder=None` this fails on `None`. "
                "Guard the use with `if self.image_encoder is not None:`."
            ),
        ),
    ]

    def check(self) -> None:
        _NAMES[0] = None
        for function in walk.nodes(self.context.module, cst.FunctionDef):
            optional = [
                p.name.value
                for p in parameters(function)
                if isinstance(p.default, cst.Name) and p.default.value == "None"
            ]
            if not isinstance(function.body, cst.IndentedBlock):
                continue
            bounds = walk.span(function.body)
            _NAMES[0] = _Names(function.body, *bounds) if bounds is not None and optional else None
            for name in optional:
                self._follow(function.body.body, name)
            _NAMES[0] = None
            if not any(
                i.orelse is None and _self_component(i.test) is not None for i in walk.own_nodes(function, cst.If)
            ):
                continue  # `_components` looks only at such an `if`, and each one in its blocks is the function's own
            compounds: list[cst.For | cst.While | cst.With | cst.If | cst.Else] = [
                *walk.own_nodes(function, cst.For),
                *walk.own_nodes(function, cst.While),
                *walk.own_nodes(function, cst.With),
                *walk.own_nodes(function, cst.If),
                *walk.own_nodes(function, cst.Else),
            ]
            blocks: list[Sequence[cst.BaseStatement]] = [function.body.body] + [
                b.body.body for b in compounds if isinstance(b.body, cst.IndentedBlock)
            ]
            with_default = {p.name.value for p in parameters(function) if p.default is not None}
            for block in blocks:
                self._components(block, with_default)

    def _components(self, statements: Sequence[cst.CSTNode], optional: set[str]) -> None:
        for index, statement in enumerate(statements):
            if not isinstance(statement, cst.If) or statement.orelse is not None:
                continue
            component = _self_component(statement.test)
            if component is None:
                continue
            inner = [s for s in statement.body.body if not isinstance(s, cst.SimpleStatementLine)]
            if len(inner) != 1 or not isinstance(inner[0], cst.If):
                continue
            loading = inner[0]
            name = _argument_test(loading.test, optional)
            if name is None or not _registers(loading.body, component):
                continue
            other = loading.orelse
            if isinstance(other, cst.If) or (
                isinstance(other, cst.Else) and (_registers(other.body, component) or _leaves(other.body))
            ):
                continue
            for later in statements[index + 1 :]:
                found = _component_dereference(later, component)
                if found is not None:
                    message = self.message_component.format(component=component, name=name)
                    self.report(found, message, symbol=component)
                    break
                if _registers(later, component) or _self_component_tested(later, component):
                    break

    def _follow(self, statements: Sequence[cst.BaseStatement], name: str) -> None:
        flag: str | None = None
        for statement in statements:
            if flag is None:
                if isinstance(statement, cst.If):
                    branches, has_else = _chain(statement)
                    if any(_mentions(test, name) for test, _ in branches):
                        return
                    binding = [test for test, body in branches if _binds(body, name)]
                    if not binding:
                        continue
                    if has_else:
                        return
                    common = set.intersection(*(_flags(test) for test in binding))
                    if len(common) != 1:
                        return
                    flag = common.pop()
                    continue
                if _binds(statement, name) or not isinstance(statement, cst.SimpleStatementLine):
                    if _mentions(statement, name):
                        return
                    continue
                if _mentions(statement, name):
                    return
                continue
            # after the flag-only computation
            if not isinstance(statement, cst.SimpleStatementLine):
                if _mentions(statement, name):
                    return
                continue
            attribute = _plain_dereference(statement, name)
            if attribute is not None:
                message = self.message.format(name=name, flag=flag)
                self.report(attribute, message, symbol=name)
                return
            if _mentions(statement, name):
                return
