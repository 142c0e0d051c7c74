"""DRB607: the `return_dict=False` tuple holds fewer values than the output object the other path returns."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid


def _not_return_dict(test: cst.BaseExpression) -> bool:
    """`not return_dict`."""
    return (
        isinstance(test, cst.UnaryOperation)
        and isinstance(test.operator, cst.Not)
        and isinstance(test.expression, cst.Name)
        and test.expression.value == "return_dict"
    )


def _returned(body: cst.BaseSuite) -> cst.BaseExpression | None:
    """The value of the `return` that ends a one-statement `if` body."""
    statements = body.body if isinstance(body, cst.IndentedBlock) else ()
    if len(statements) != 1 or not isinstance(statements[0], cst.SimpleStatementLine):
        return None
    small = statements[0].body
    if len(small) != 1 or not isinstance(small[0], cst.Return):
        return None
    return small[0].value


def _output_call(value: cst.BaseExpression | None) -> tuple[str, list[str], set[str]] | None:
    """`(class, fields, fields given None)` of `SomethingOutput(a=..., b=...)` built only from keyword arguments."""
    if not isinstance(value, cst.Call) or not value.args or any(a.keyword is None for a in value.args):
        return None
    func = value.func
    name = func.value if isinstance(func, cst.Name) else func.attr.value if isinstance(func, cst.Attribute) else ""
    if not name.endswith("Output"):
        return None
    fields = [a.keyword.value for a in value.args if a.keyword is not None]
    empty = {
        a.keyword.value
        for a in value.args
        if a.keyword is not None and isinstance(a.value, cst.Name) and a.value.value == "None"
    }
    return name, fields, empty


class TupleReturnDropsOutputFields(Rule):
    """
    ## What it does
    Checks functions with a `return_dict` parameter whose `if not return_dict:` branch returns a tuple (or a
    bare value) with fewer values than the fields the same function fills in its output object
    (`return DDIMSchedulerOutput(prev_sample=..., pred_original_sample=...)`).

    ## Why is this bad?
    `return_dict=False` promises the output object's fields as a tuple, in order. A caller who asks for a
    tuple (compiled graphs, `torch.jit`, pipelines that unpack `step(..., return_dict=False)`) silently loses
    the fields the tuple leaves out, or unpacks a bare tensor along its first axis.

    ## Example
    ```python
    if not return_dict:
        return (prev_sample,)

    return DDIMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)
    ```

    Use instead:
    ```python
    if not return_dict:
        return (prev_sample, pred_original_sample)

    return DDIMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)
    ```

    ## Known problems
    Only an `if not return_dict:` whose body is one `return`, and an output class built from keyword
    arguments in the same function, are compared; a field the function always sets to `None` is not counted.
    A field left out on purpose for backward compatibility is reported too.

    ## References
    - huggingface/diffusers#13656, pattern 6
    - huggingface/diffusers#9649 (DDIM, DDPM and Euler `step` dropped `pred_original_sample` from the tuple)
    """

    code = "DRB607"
    pattern = 6
    severity = "warning"
    message = (
        "`return_dict=False` returns {count} value{plural} (`{returned}`) but `{output}` carries {fields}, so "
        "`{missing}` {verb} lost; return the values of `{expected}`, in that order."
    )
    REQUIRES_ANY = ("not return_dict",)

    VALID = [
        Valid(
            """
            class MyScheduler(SchedulerMixin):
                def step(self, model_output, timestep, sample, return_dict=True):
                    prev_sample, pred_original_sample = self._step(model_output, timestep, sample)
                    if not return_dict:
                        return (prev_sample, pred_original_sample)
                    return MySchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)
            """
        ),
        # a field the function always leaves None: the tuple loses nothing
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, prompt, return_dict=True):
                    images = self.generate(prompt)
                    if not return_dict:
                        return (images,)
                    return MyPipelineOutput(images=images, nsfw_content_detected=None)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class DDIMScheduler(SchedulerMixin):
                def step(self, model_output, timestep, sample, return_dict=True):
                    prev_sample, pred_original_sample = self._step(model_output, timestep, sample)
                    if not return_dict:
                        return (prev_sample,)

                    return DDIMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)
            """,
            message=(
                "`return_dict=False` returns 1 value (`(prev_sample,)`) but `DDIMSchedulerOutput` carries 2, so "
                "`pred_original_sample` is lost; return the values of `prev_sample, pred_original_sample`, in that "
                "order."
            ),
        ),
        Invalid(
            """
            class MyModel(ModelMixin):
                def forward(self, x, return_dict=True):
                    sample, hidden = self.body(x)
                    if not return_dict:
                        return sample
                    return MyModelOutput(sample=sample, hidden_states=hidden)
            """
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            if "return_dict" not in {p.name.value for p in (*function.params.params, *function.params.kwonly_params)}:
                continue
            outputs = [
                found for ret in walk.own_nodes(function, cst.Return) if (found := _output_call(ret.value)) is not None
            ]
            if len(outputs) != 1:
                continue  # no output object, or several: which one the tuple mirrors is not clear
            output, fields, empty = outputs[0]
            for branch in walk.own_nodes(function, cst.If):
                if not _not_return_dict(branch.test):
                    continue
                value = _returned(branch.body)
                if value is None:
                    continue
                if isinstance(value, cst.Tuple):
                    if any(isinstance(e, cst.StarredElement) for e in value.elements):
                        continue
                    count = len(value.elements)
                elif isinstance(value, cst.Name):
                    count = 1
                else:
                    continue
                if count >= len(fields):
                    continue
                missing = [f for f in fields[count:] if f not in empty]  # a field always None loses nothing
                if not missing:
                    continue
                code = self.context.module.code_for_node(value)
                self.report(
                    branch,
                    self.message.format(
                        count=count,
                        plural="" if count == 1 else "s",
                        returned=code,
                        output=output,
                        fields=len(fields),
                        missing="`, `".join(missing),
                        verb="is" if len(missing) == 1 else "are",
                        expected=", ".join(fields),
                    ),
                    symbol=output,
                    scope=definition.qualname,
                )
