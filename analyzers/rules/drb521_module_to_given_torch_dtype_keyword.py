"""DRB521: a module or tensor is moved with `.to(torch_dtype=...)`, a keyword `.to()` does not take."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import keyword


#: the loading keywords of `from_pretrained` that `torch.nn.Module.to` and `torch.Tensor.to` reject
WRONG_KEYWORDS = {"torch_dtype": "dtype", "torch_device": "device"}


def _pipeline(receiver: cst.BaseExpression, scope: str) -> bool:
    """Whether the receiver may be a pipeline, whose `.to()` took `torch_dtype=`/`torch_device=` in older releases:
    a name that says `pipe`, or `self` in a class that says `Pipeline`."""
    if isinstance(receiver, cst.Name):
        if receiver.value == "self":
            return "pipeline" in scope.partition(".")[0].lower()
        return "pipe" in receiver.value.lower()
    if isinstance(receiver, cst.Attribute):
        return "pipe" in receiver.attr.value.lower()
    return False


class ModuleToGivenTorchDtypeKeyword(Rule):
    """
    ## What it does
    Checks for `x.to(torch_dtype=...)` (or `torch_device=`) on a model, a component or a tensor: the
    spelling of `from_pretrained(...)`'s keywords passed to `.to()`, whose keywords are `dtype` and `device`.

    ## Why is this bad?
    `torch.nn.Module.to()` and `torch.Tensor.to()` parse their arguments strictly and raise a `TypeError`
    on an unknown keyword, so the code path that honours the caller's `torch_dtype` crashes instead of
    casting the model; the user who asked for half precision gets an exception. diffusers shipped this in
    `ControlNetModel.from_single_file(..., torch_dtype=...)`, which ended in `controlnet.to(torch_dtype=torch_dtype)`.

    ## Example
    ```python
    controlnet = convert_controlnet_checkpoint(checkpoint, config)
    if torch_dtype is not None:
        controlnet.to(torch_dtype=torch_dtype)
    ```

    Use instead:
    ```python
    if torch_dtype is not None:
        controlnet.to(dtype=torch_dtype)
    ```

    ## Known problems
    The receiver's type is not inferred: a receiver whose name says `pipe` (or `self` in a class whose name says
    `Pipeline`) is left alone, since `DiffusionPipeline.to()` took `torch_dtype=` and `torch_device=` in older
    releases; any other receiver is taken for a module or a tensor.

    ## References
    - huggingface/diffusers#13656, pattern 5
    - huggingface/diffusers#5528 (`from_single_file` of ControlNet: `controlnet.to(torch_dtype=...)`)
    """

    code = "DRB521"
    pattern = 5
    severity = "error"
    message = (
        "`{receiver}.to({wrong}=...)`: `.to()` of a module or tensor takes `{right}=`, not `{wrong}=`, and raises a "
        "`TypeError` on it; pass `{right}={value}`."
    )
    REQUIRES_ANY = (".to(",)

    VALID = [
        Valid(
            # the right keywords; a pipeline's own `.to()` of older releases took the loading spellings
            """
            class FromSingleFileMixin:
                @classmethod
                def from_single_file(cls, path, torch_dtype=None, **kwargs):
                    controlnet = convert_controlnet(path)
                    controlnet.to(dtype=torch_dtype, device="cpu")
                    pipe = cls(controlnet=controlnet)
                    pipe.to(torch_dtype=torch_dtype)
                    return pipe

            class StableDiffusionPipeline(DiffusionPipeline):
                def enable(self, torch_dtype):
                    self.to(torch_dtype=torch_dtype)
                    return helper(torch_dtype=torch_dtype)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class FromOriginalControlnetMixin:
                @classmethod
                def from_single_file(cls, path, **kwargs):
                    torch_dtype = kwargs.pop("torch_dtype", None)
                    controlnet = convert_controlnet(path)
                    if torch_dtype is not None:
                        controlnet.to(torch_dtype=torch_dtype)
                    return controlnet
            """,
            message=(
                "`controlnet.to(torch_dtype=...)`: `.to()` of a module or tensor takes `dtype=`, not `torch_dtype=`, "
                "and raises a `TypeError` on it; pass `dtype=torch_dtype`."
            ),
        ),
        Invalid(
            # a component attribute of the pipeline, moved with the device keyword spelled the loading way
            """
            class StableDiffusionPipeline(DiffusionPipeline):
                def prepare(self, device, dtype):
                    self.vae.to(torch_device=device)
                    return self.vae
            """
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if isinstance(function, cst.FunctionDef):
                self._check_function(definition.qualname, function)

    def _check_function(self, scope: str, function: cst.FunctionDef) -> None:
        module = self.context.module
        for call in walk.own_nodes(function, cst.Call):
            func = call.func
            if not (isinstance(func, cst.Attribute) and func.attr.value == "to"):
                continue
            if _pipeline(func.value, scope):
                continue
            for wrong, right in WRONG_KEYWORDS.items():
                arg = keyword(call, wrong)
                if arg is None:
                    continue
                message = self.message.format(
                    receiver=module.code_for_node(func.value),
                    wrong=wrong,
                    right=right,
                    value=module.code_for_node(arg.value),
                )
                self.report(call, message, symbol=wrong, scope=scope)
