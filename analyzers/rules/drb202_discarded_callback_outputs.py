"""DRB202: the dict that `callback_on_step_end(...)` returns is thrown away, so its tensors are never applied."""

from __future__ import annotations

from collections.abc import Sequence

import libcst as cst

from analyzers import walk
from analyzers.core import Definition, Invalid, Rule, Valid, nested_blocks
from analyzers.matchers import names_read


def _is_step_end_callback(call: cst.Call) -> bool:
    """`callback_on_step_end(...)` or a renamed twin (`prior_callback_on_step_end(...)`), called by name."""
    return isinstance(call.func, cst.Name) and call.func.value.endswith("callback_on_step_end")


def _empty_tensor_inputs(cls: cst.ClassDef | None) -> bool:
    """Whether the class declares `_callback_tensor_inputs = []`: the callback can hand nothing back."""
    if cls is None or not isinstance(cls.body, cst.IndentedBlock):
        return False
    for statement in cls.body.body:
        if not isinstance(statement, cst.SimpleStatementLine):
            continue
        for small in statement.body:
            if (
                isinstance(small, cst.Assign)
                and any(
                    isinstance(t.target, cst.Name) and t.target.value == "_callback_tensor_inputs"
                    for t in small.targets
                )
                and isinstance(small.value, (cst.List, cst.Tuple))
                and not small.value.elements
            ):
                return True
    return False


class DiscardedCallbackOutputs(Rule):
    """
    ## What it does
    Checks for a `callback_on_step_end(...)` call whose return value is dropped: the call stands alone
    as a statement, or its result is bound to a name that nothing reads.

    ## Why is this bad?
    The step-end callback protocol returns a dict of the tensors the callback changed (`latents`,
    `prompt_embeds`, …); the pipeline must pop them back into its locals. When the result is discarded,
    a callback that edits the latents or switches the embeddings mid-run (CFG cut-off, latent
    guidance) has no effect at all, while the pipeline advertises `callback_on_step_end` and
    `callback_on_step_end_tensor_inputs` as supported. Meta issue #13656 lists callbacks among the
    public arguments that are accepted but ignored.

    ## Example
    ```python
    if callback_on_step_end is not None:
        callback_kwargs = {k: locals()[k] for k in callback_on_step_end_tensor_inputs}
        callback_on_step_end(self, i, t, callback_kwargs)
    ```

    Use instead:
    ```python
    if callback_on_step_end is not None:
        callback_kwargs = {k: locals()[k] for k in callback_on_step_end_tensor_inputs}
        callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
        latents = callback_outputs.pop("latents", latents)
        prompt_embeds = callback_outputs.pop("prompt_embeds", prompt_embeds)
    ```

    ## Known problems
    Only calls of a name ending in `callback_on_step_end` are looked at. A result that is read but from
    which some of `_callback_tensor_inputs` are never popped is not reported. A class that declares
    `_callback_tensor_inputs = []` may drop the result: there is nothing to apply.

    ## References
    - huggingface/diffusers#13656, pattern 2
    - huggingface/diffusers#13608 (PRX: `callback_on_step_end` return values discarded)
    """

    code = "DRB202"
    pattern = 2
    severity = "error"
    message = (
        "The dict returned by `{callee}(...)` is discarded, so tensors the callback changes are never applied; "
        'bind it and pop them back, as in `latents = callback_outputs.pop("latents", latents)`.'
    )
    REQUIRES_ANY = ("callback_on_step_end(",)
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, callback_on_step_end=None, callback_on_step_end_tensor_inputs=["latents"]):
                    latents = self.prepare_latents()
                    for i, t in enumerate(self.scheduler.timesteps):
                        latents = self.step(latents, t)
                        if callback_on_step_end is not None:
                            callback_kwargs = {k: locals()[k] for k in callback_on_step_end_tensor_inputs}
                            callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                            latents = callback_outputs.pop("latents", latents)
                    return latents
            """
        ),
        Valid(
            # the old-style `callback(i, t, latents)` returns nothing; a documented empty tensor list
            """
            class MyPipeline(DiffusionPipeline):
                _callback_tensor_inputs = []

                def __call__(self, prompt, callback=None, callback_on_step_end=None):
                    for i, t in enumerate(self.scheduler.timesteps):
                        if callback is not None:
                            callback(i, t, None)
                        if callback_on_step_end is not None:
                            callback_on_step_end(self, i, t, {})
            """
        ),
        Valid(
            # the result is read after the enclosing block, or at the top of the next iteration
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, callback_on_step_end=None):
                    outputs = {}
                    for i, t in enumerate(self.scheduler.timesteps):
                        latents = outputs.pop("latents", latents)
                        if callback_on_step_end is not None:
                            outputs = callback_on_step_end(self, i, t, {"latents": latents})
                    if callback_on_step_end is not None:
                        final = callback_on_step_end(self, -1, None, {"latents": latents})
                    latents = final.pop("latents", latents)
                    return latents
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class PRXPipeline(DiffusionPipeline):
                _callback_tensor_inputs = ["latents"]

                def __call__(self, prompt, callback_on_step_end=None, callback_on_step_end_tensor_inputs=["latents"]):
                    for i, t in enumerate(self.scheduler.timesteps):
                        latents = self.scheduler.step(noise_pred, t, latents).prev_sample
                        if callback_on_step_end is not None:
                            callback_kwargs = {}
                            for k in callback_on_step_end_tensor_inputs:
                                callback_kwargs[k] = locals()[k]
                            callback_on_step_end(self, i, t, callback_kwargs)
                    return latents
            """,
            message=(
                "The dict returned by `callback_on_step_end(...)` is discarded, so tensors the callback changes are "
                'never applied; bind it and pop them back, as in `latents = callback_outputs.pop("latents", latents)`.'
            ),
        ),
        Invalid(
            """
            class MyPipeline(DiffusionPipeline):
                def denoise(self, latents, prior_callback_on_step_end=None):
                    for i, t in enumerate(self.scheduler.timesteps):
                        latents = self.step(latents, t)
                        if prior_callback_on_step_end is not None:
                            callback_outputs = prior_callback_on_step_end(self, i, t, {"latents": latents})
                    return latents
            """,
            message=(
                "The dict returned by `prior_callback_on_step_end(...)` is discarded, so tensors the callback "
                "changes are never applied; bind it and pop them back, as in "
                '`latents = callback_outputs.pop("latents", latents)`.'
            ),
        ),
    ]

    def check(self) -> None:
        # statement-level walk only (no expression visit): cheap on the ~200 pipelines that call the callback
        for definition in self.context.definitions:
            if definition.is_class or (definition.parent is not None and not definition.parent.is_class):
                continue  # a nested function is walked with the function around it
            function = cst.ensure_type(definition.node, cst.FunctionDef)
            found: list[tuple[cst.CSTNode, cst.Call, str | None, list[tuple[Sequence[cst.CSTNode], int]]]] = []
            _walk(_block(function.body), [], found)
            if not found or _empty_tensor_inputs(self._owner_class(definition)):
                continue
            for statement, call, target, trail in found:
                if target is not None and (_read_later(target, trail) or _read_anywhere(target, function)):
                    continue
                callee = cst.ensure_type(call.func, cst.Name).value  # a callback called by name
                self.report(statement, self.message.format(callee=callee), symbol=callee, scope=definition.qualname)

    @staticmethod
    def _owner_class(definition: Definition) -> cst.ClassDef | None:
        parent = definition.parent
        while parent is not None and not parent.is_class:
            parent = parent.parent
        return cst.ensure_type(parent.node, cst.ClassDef) if parent is not None else None


def _block(suite: cst.BaseSuite) -> Sequence[cst.CSTNode]:
    return suite.body if isinstance(suite, (cst.IndentedBlock, cst.SimpleStatementSuite)) else ()


def _walk(
    body: Sequence[cst.CSTNode],
    trail: list[tuple[Sequence[cst.CSTNode], int]],
    found: list[tuple[cst.CSTNode, cst.Call, str | None, list[tuple[Sequence[cst.CSTNode], int]]]],
) -> None:
    for index, statement in enumerate(body):
        here = [*trail, (body, index)]
        if isinstance(statement, cst.SimpleStatementLine):
            for small in statement.body:
                if (
                    isinstance(small, cst.Expr)
                    and isinstance(small.value, cst.Call)
                    and _is_step_end_callback(small.value)
                ):
                    found.append((small, small.value, None, here))
                elif (
                    isinstance(small, cst.Assign)
                    and isinstance(small.value, cst.Call)
                    and _is_step_end_callback(small.value)
                    and len(small.targets) == 1
                    and isinstance(small.targets[0].target, cst.Name)
                ):
                    found.append((small, small.value, small.targets[0].target.value, here))
        elif isinstance(statement, cst.BaseCompoundStatement):
            for block in nested_blocks(statement):
                _walk(block, here, found)


def _read_later(name: str, trail: list[tuple[Sequence[cst.CSTNode], int]]) -> bool:
    """Whether a statement after the binding, in its block or an enclosing one, reads `name` (the usual case)."""
    for body, index in reversed(trail):
        for statement in body[index + 1 :]:
            if _reads_value(statement, name):
                return True
    return False


def _reads_value(statement: cst.CSTNode, name: str) -> bool:
    """Whether `statement` reads `name`, not counting plain `name = ...` rebindings."""
    targets = {
        id(t.target)
        for t in walk.nodes(statement, cst.AssignTarget)
        if isinstance(t.target, cst.Name) and t.target.value == name
    }
    return any(n.value == name and id(n) not in targets for n in names_read(statement))


def _read_anywhere(name: str, function: cst.FunctionDef) -> bool:
    """Whether `name` is read anywhere in `function` (a read earlier in a loop body, for instance)."""
    return _reads_value(function.body, name)
