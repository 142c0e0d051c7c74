"""DRB310: a masking branch runs only when a value is None, yet uses that value: it never runs (or crashes)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import conjuncts, none_comparison


MASK = "mask"


def _uses(node: cst.CSTNode, names: set[str]) -> Iterator[tuple[str, str, cst.CSTNode]]:
    """("use", name, node) for each `x.attr`, `x[...]` or `len(x)` of a name in `names` under `node`."""
    for sub in walk.walk(node):
        if isinstance(sub, (cst.Attribute, cst.Subscript)) and isinstance(sub.value, cst.Name):
            if sub.value.value in names:
                yield "use", sub.value.value, sub
        elif isinstance(sub, cst.Call) and isinstance(sub.func, cst.Name) and sub.func.value == "len":
            if sub.args and isinstance(sub.args[0].value, cst.Name) and sub.args[0].value.value in names:
                yield "use", sub.args[0].value.value, sub


def _stores(node: cst.CSTNode, names: set[str]) -> Iterator[tuple[str, str, cst.CSTNode]]:
    """("store", name, node) for each binding of a name in `names` under `node` (assignment, `for`, `with`)."""
    targets: list[cst.BaseExpression] = []
    for sub in walk.walk(node):
        if isinstance(sub, cst.Assign):
            targets += [t.target for t in sub.targets]
        elif isinstance(sub, (cst.AugAssign, cst.AnnAssign, cst.For)):
            targets.append(sub.target)
        elif isinstance(sub, cst.NamedExpr):
            targets.append(sub.target)
        elif isinstance(sub, cst.AsName):
            targets.append(sub.name)
    for target in targets:
        for name in walk.nodes(target, cst.Name):
            if name.value in names:
                yield "store", name.value, name


def _events(statements: Sequence[cst.CSTNode], names: set[str]) -> Iterator[tuple[str, str, cst.CSTNode]]:
    """Uses and bindings of `names` in the order they run: within a simple statement, uses come first
    (`x = x[0]` reads `x` before it binds it); nested functions and classes are skipped."""
    for statement in statements:
        if isinstance(statement, (cst.FunctionDef, cst.ClassDef)):
            continue
        if isinstance(statement, cst.SimpleStatementLine):
            yield from _uses(statement, names)
            yield from _stores(statement, names)
            continue
        if isinstance(statement, (cst.If, cst.While)):
            yield from _uses(statement.test, names)
        elif isinstance(statement, cst.For):
            yield from _uses(statement.iter, names)
            yield from _stores(statement.target, names)
        elif isinstance(statement, cst.With):
            for item in statement.items:
                yield from _uses(item.item, names)
                if item.asname is not None:
                    yield from _stores(item.asname, names)
        else:
            # try/match and anything else: look at every binding first, so that nothing is reported on them
            yield from _stores(statement, names)
            continue
        body = statement.body
        yield from _events(body.body if isinstance(body, cst.IndentedBlock) else (body,), names)
        orelse = getattr(statement, "orelse", None)
        while orelse is not None:
            if isinstance(orelse, cst.If):
                yield from _uses(orelse.test, names)
                inner = orelse.body
                yield from _events(inner.body if isinstance(inner, cst.IndentedBlock) else (inner,), names)
                orelse = orelse.orelse
            else:
                inner = orelse.body
                yield from _events(inner.body if isinstance(inner, cst.IndentedBlock) else (inner,), names)
                orelse = None


def _mentions_mask(node: cst.CSTNode) -> bool:
    return any(MASK in n.value.lower() for n in walk.nodes(node, cst.Name))


class MaskingBranchRequiresNone(Rule):
    """
    ## What it does
    Checks for an `if` whose test requires a name to be None (`if mask_feature and prompt_embeds is None:`)
    while its body, which applies or builds a mask, uses that name as a value before binding it
    (`prompt_embeds.unsqueeze(1)`, `prompt_embeds[:, :n]`, `len(prompt_embeds)`).

    ## Why is this bad?
    The branch can only run when the name is None, and then it fails on its first use; in practice the name
    has always been filled in by then, so the test is never true and the masking it guards silently never
    happens. PixArt-Alpha's `encode_prompt` tested `prompt_embeds is None` after computing `prompt_embeds`,
    so `mask_feature=True` (the default) never masked the text embeddings. The intent is usually a flag
    recorded before the value was filled in (`embeds_initially_provided = prompt_embeds is not None`).

    ## Example
    ```python
    if prompt_embeds is None:
        prompt_embeds = self.text_encoder(text_input_ids, attention_mask=attention_mask)[0]
    ...
    if mask_feature and prompt_embeds is None:
        prompt_embeds, keep = self.mask_text_embeddings(prompt_embeds, attention_mask)
    ```

    Use instead:
    ```python
    embeds_initially_provided = prompt_embeds is not None
    ...
    if mask_feature and not embeds_initially_provided:
        prompt_embeds, keep = self.mask_text_embeddings(prompt_embeds, attention_mask)
    ```

    ## Known problems
    Only branches that mention a mask (a name with `mask` in it, in the test or body) are looked at, and only
    uses as `x.attr`, `x[...]` and `len(x)` count. A use inside a nested branch of the body is reported even
    if that branch could bind the name first on another path.

    ## References
    - huggingface/diffusers#13656, pattern 3
    - huggingface/diffusers#5695 (PixArt-Alpha: `mask_feature` never applied)
    """

    code = "DRB310"
    pattern = 3
    severity = "error"
    message = (
        "this branch runs only when `{name}` is None, yet uses `{name}` as a value, so {what} never takes "
        "effect; test a flag recorded before `{name}` was filled in."
    )
    REQUIRES_ANY = ("is None",)

    VALID = [
        Valid(
            # the body binds the name before using it
            """
            class MyPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, prompt_embeds=None, mask_feature=True):
                    if mask_feature and prompt_embeds is None:
                        prompt_embeds, attention_mask = self._encode(prompt)
                        prompt_embeds = prompt_embeds * attention_mask[..., None]
                    return prompt_embeds
            """
        ),
        Valid(
            # a flag recorded before the embeddings were computed
            """
            class MyPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, prompt_embeds=None, mask_feature=True):
                    provided = prompt_embeds is not None
                    if prompt_embeds is None:
                        prompt_embeds, attention_mask = self._encode(prompt)
                    if mask_feature and not provided:
                        prompt_embeds = self.mask_text_embeddings(prompt_embeds, attention_mask)
                    return prompt_embeds
            """
        ),
        Valid(
            # the name is only mentioned, never used as a value; and a branch without masks
            """
            def f(x=None, mask=None, y=None):
                if mask is None:
                    mask = x
                    print(mask.shape)
                if y is None:
                    return y.shape
                return mask
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class MyPipeline(DiffusionPipeline):
                def encode_prompt(self, prompt, prompt_embeds=None, negative_prompt_embeds=None, mask_feature=True):
                    if prompt_embeds is None:
                        prompt_embeds, attention_mask = self._encode(prompt)
                    prompt_embeds = prompt_embeds.to(self.dtype)
                    if mask_feature and prompt_embeds is None and negative_prompt_embeds is None:
                        prompt_embeds = prompt_embeds.unsqueeze(1)
                        masked, keep = self.mask_text_embeddings(prompt_embeds, attention_mask)
                        return masked.squeeze(1), None
                    return prompt_embeds, negative_prompt_embeds
            """,
            message=(
                "this branch runs only when `prompt_embeds` is None, yet uses `prompt_embeds` as a value, so "
                "`mask_feature` never takes effect; test a flag recorded before `prompt_embeds` was filled in."
            ),
        ),
        Invalid(
            # no flag: the branch itself is what never runs; the use sits in a nested block
            """
            def apply(hidden_states, attention_mask=None):
                if attention_mask is None:
                    for i in range(3):
                        hidden_states = hidden_states * attention_mask[i]
                return hidden_states
            """,
            message=(
                "this branch runs only when `attention_mask` is None, yet uses `attention_mask` as a value, so "
                "the branch never takes effect; test a flag recorded before `attention_mask` was filled in."
            ),
        ),
    ]

    def check(self) -> None:
        for branch in walk.nodes(self.context.module, cst.If):
            self._check_if(branch)

    def _check_if(self, branch: cst.If) -> None:
        parts = conjuncts(branch.test)
        tested = {found[0] for part in parts if (found := none_comparison(part)) is not None and found[1]}
        if not tested or not (_mentions_mask(branch.test) or _mentions_mask(branch.body)):
            return
        decided: set[str] = set()
        body = branch.body.body if isinstance(branch.body, cst.IndentedBlock) else (branch.body,)
        for kind, name, _node in _events(body, tested):
            if name in decided:
                continue
            decided.add(name)
            if kind != "use":
                continue
            flags = [c.value for c in parts if isinstance(c, cst.Name)]
            what = f"`{flags[0]}`" if flags else "the branch"
            self.report(branch.test, self.message.format(name=name, what=what), symbol=flags[0] if flags else name)
            return
