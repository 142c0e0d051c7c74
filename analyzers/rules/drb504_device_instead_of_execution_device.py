"""DRB504: a pipeline `__call__` (or a method it calls) places tensors with `self.device`."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import FileContext, Invalid, Rule, Valid
from analyzers.fixes import Proposal, Replace
from analyzers.matchers import call_name, calls, pipeline_methods, self_attribute


#: methods of `DiffusionPipeline` that manage placement themselves; `self.device` is right there
_PLACEMENT_METHODS = frozenset(
    {"to", "enable_model_cpu_offload", "enable_sequential_cpu_offload", "maybe_free_model_hooks"}
)


def _called_methods(function: cst.FunctionDef) -> set[str]:
    """Names of `self.<name>(...)` calls inside `function`."""
    found = set()
    for call in calls(function.body):
        name = call_name(call) or ""
        head, _, attr = name.partition(".")
        if head == "self" and attr and "." not in attr:
            found.add(attr)
    return found


def _declares_model_offload(cls: cst.ClassDef) -> bool:
    """Whether the class supports offloading: it sets `model_cpu_offload_seq` (so the inherited
    `enable_model_cpu_offload()` works), or defines `enable_model_cpu_offload`/`enable_sequential_cpu_offload`
    itself, as pipelines did before diffusers 0.19 moved them into `DiffusionPipeline`."""
    for statement in cls.body.body:
        if isinstance(statement, cst.FunctionDef) and statement.name.value in (
            "enable_model_cpu_offload",
            "enable_sequential_cpu_offload",
        ):
            return True
        if isinstance(statement, cst.SimpleStatementLine) and len(statement.body) == 1:
            assign = statement.body[0]
            if (
                isinstance(assign, cst.Assign)
                and len(assign.targets) == 1
                and isinstance(assign.targets[0].target, cst.Name)
                and assign.targets[0].target.value == "model_cpu_offload_seq"
            ):
                return True
    return False


class _DeviceReads(cst.CSTVisitor):
    """`self.device` reads that are not a fallback for a caller-supplied device (`device or self.device`)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[cst.Attribute] = []

    def visit_BooleanOperation(self, node: cst.BooleanOperation) -> bool:
        # `device = device or self.device`: the caller's device wins; the fallback is another matter
        if isinstance(node.operator, cst.Or) and self_attribute(node.right, "device"):
            walk.visit(node.left, self)
            return False
        return True

    def visit_IfExp(self, node: cst.IfExp) -> bool:
        # `self.text_encoder.device if ... else self.device`: a fallback too
        if self_attribute(node.orelse, "device"):
            walk.visit(node.test, self)
            walk.visit(node.body, self)
            return False
        return True

    def visit_If(self, node: cst.If) -> bool:
        # `if device is None: device = self.device` is the same fallback
        test = node.test
        if (
            isinstance(test, cst.Comparison)
            and isinstance(test.left, cst.Name)
            and len(test.comparisons) == 1
            and isinstance(test.comparisons[0].operator, cst.Is)
            and isinstance(test.comparisons[0].comparator, cst.Name)
            and test.comparisons[0].comparator.value == "None"
        ):
            name = test.left.value
            body = node.body.body if isinstance(node.body, cst.IndentedBlock) else ()
            if len(body) == 1 and _assigns_self_device(body[0], name):
                if node.orelse is not None:
                    walk.visit(node.orelse, self)
                return False
        return True

    def visit_Attribute(self, node: cst.Attribute) -> bool:
        if self_attribute(node, "device"):
            self.found.append(node)
            return False
        return True

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        return False  # a nested function runs elsewhere


def _assigns_self_device(statement: cst.CSTNode, name: str) -> bool:
    """`name = self.device`, alone on its line."""
    if not isinstance(statement, cst.SimpleStatementLine) or len(statement.body) != 1:
        return False
    assign = statement.body[0]
    return (
        isinstance(assign, cst.Assign)
        and len(assign.targets) == 1
        and isinstance(assign.targets[0].target, cst.Name)
        and assign.targets[0].target.value == name
        and isinstance(assign.value, cst.Attribute)
        and isinstance(assign.value.value, cst.Name)
        and assign.value.value.value == "self"
        and assign.value.attr.value == "device"
    )


#: the `DiffusionPipeline` the fixed cases inherit from, with the property the fix switches to
_PIPELINE_UTILS = {
    "diffusers/pipelines/pipeline_utils.py": """
class DiffusionPipeline:
    @property
    def _execution_device(self):
        return self.device
"""
}


def _has_execution_device(context: FileContext, cls: cst.ClassDef) -> bool:
    """Whether `cls` or a base class the project view finds defines `_execution_device` (DiffusionPipeline does)."""
    for node in (cls, *(found for _, found in context.ancestors(cls))):
        body = node.body.body if isinstance(node.body, cst.IndentedBlock) else ()
        if any(isinstance(s, cst.FunctionDef) and s.name.value == "_execution_device" for s in body):
            return True
    return False


def _fix(method: cst.FunctionDef, found: list[cst.Attribute]) -> Proposal | None:
    """`self.device` -> `self._execution_device` at every read the rule found, unless one of them is assigned to."""
    assigned = {id(target.target) for target in walk.nodes(method.body, cst.AssignTarget)}
    if any(id(node) in assigned for node in found):
        return None
    return Proposal(
        "read `self._execution_device` instead of `self.device`",
        tuple(Replace(node, node.with_changes(attr=cst.Name("_execution_device"))) for node in found),
    )


class DeviceInsteadOfExecutionDevice(Rule):
    """
    ## What it does
    Checks for pipeline `__call__` methods, and the pipeline methods that `__call__` calls, that read
    `self.device` to place or create tensors instead of `self._execution_device`.

    ## Why is this bad?
    With `enable_model_cpu_offload()`, `enable_sequential_cpu_offload()` or a `device_map`, the
    pipeline's modules sit on the CPU (or the meta device) between calls, so `self.device` is the
    CPU while the models run on the accelerator. Noise sampled or inputs moved with `self.device`
    then land on the wrong device and the denoising loop fails with a device mismatch, or runs on
    the CPU. `self._execution_device` is the device the offload hooks will run the models on.

    ## Example
    ```python
    class MyPipeline(DiffusionPipeline):
        model_cpu_offload_seq = "unet"

        def __call__(self, batch_size=1, generator=None):
            image = randn_tensor(shape, generator=generator, device=self.device, dtype=self.unet.dtype)
            ...
    ```

    Use instead:
    ```python
    class MyPipeline(DiffusionPipeline):
        model_cpu_offload_seq = "unet"

        def __call__(self, batch_size=1, generator=None):
            device = self._execution_device
            image = randn_tensor(shape, generator=generator, device=device, dtype=self.unet.dtype)
            ...
    ```

    ## Known problems
    Only pipelines that declare `model_cpu_offload_seq` in their class body, or define
    `enable_model_cpu_offload`/`enable_sequential_cpu_offload` themselves (the spelling of releases before
    0.19), are checked; others cannot use `enable_model_cpu_offload()` at all, though sequential offload
    and `device_map` still apply to them. Only methods of the same class that `__call__` calls directly or through other such methods are
    looked at; helpers inherited from a mixin or a parent class are not. A fallback for a caller's
    device (`device = device or self.device`, `if device is None: device = self.device`) is not
    reported. One finding per method, at its first `self.device`.

    ## References
    - huggingface/diffusers#13656, pattern 5
    - huggingface/diffusers#13649 (DDPMPipeline used `self.device`; fixed by huggingface/diffusers#13671)
    """

    code = "DRB504"
    pattern = 5
    severity = "warning"
    message = (
        "`self.device` in `{method}` is the CPU under model CPU offload or a `device_map`; use "
        "`self._execution_device` instead."
    )
    REQUIRES_ANY = ("self.device",)
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                model_cpu_offload_seq = "text_encoder->unet"

                def __call__(self, batch_size=1, generator=None):
                    device = self._execution_device
                    return randn_tensor((batch_size, 3), generator=generator, device=device)
            """
        ),
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                model_cpu_offload_seq = "text_encoder->unet"

                def encode(self, prompt, device=None):
                    device = device or self.device
                    return self.text_encoder(prompt.to(device))

                def offload_info(self):
                    return self.device

                def __call__(self, prompt):
                    device = self._execution_device
                    return self.encode(prompt, device=device)
            """
        ),
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                model_cpu_offload_seq = "text_encoder->unet"

                def encode(self, prompt, device=None):
                    if device is None:
                        device = self.device
                    return self.text_encoder(prompt.to(device))

                def __call__(self, prompt):
                    return self.encode(prompt, device=self._execution_device)
            """
        ),
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                model_cpu_offload_seq = "language_model->unet"

                def __call__(self, prompt):
                    device = self.language_model.device if self.language_model is not None else self.device
                    return self.language_model(prompt.to(device))
            """
        ),
        Valid(
            """
            class LegacyPipeline(DiffusionPipeline):
                def __call__(self, batch_size=1):
                    return randn_tensor((batch_size, 3), device=self.device)
            """
        ),
        Valid(
            """
            class NotAPipeline:
                def __call__(self, x):
                    return x.to(self.device)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            from ..pipeline_utils import DiffusionPipeline


            class DDPMPipeline(DiffusionPipeline):
                model_cpu_offload_seq = "unet"

                def __call__(self, batch_size=1, generator=None):
                    if self.device.type == "mps":
                        image = randn_tensor(shape, generator=generator)
                        image = image.to(self.device)
                    else:
                        image = randn_tensor(shape, generator=generator, device=self.device)
                    return image
            """,
            files=_PIPELINE_UTILS,
            fixed="""
            from ..pipeline_utils import DiffusionPipeline


            class DDPMPipeline(DiffusionPipeline):
                model_cpu_offload_seq = "unet"

                def __call__(self, batch_size=1, generator=None):
                    if self._execution_device.type == "mps":
                        image = randn_tensor(shape, generator=generator)
                        image = image.to(self._execution_device)
                    else:
                        image = randn_tensor(shape, generator=generator, device=self._execution_device)
                    return image
            """,
            message=(
                "`self.device` in `__call__` is the CPU under model CPU offload or a `device_map`; use "
                "`self._execution_device` instead."
            ),
        ),
        Invalid(
            """
            class OlderPipeline(DiffusionPipeline):
                def enable_sequential_cpu_offload(self, gpu_id=0):
                    for model in [self.unet, self.text_encoder]:
                        cpu_offload(model, torch.device(f"cuda:{gpu_id}"))

                def __call__(self, prompt, generator=None):
                    noise = randn_tensor((1, 4, 64, 64), generator=generator, device=self.device)
                    return self.unet(noise, prompt)
            """,
            message=(
                "`self.device` in `__call__` is the CPU under model CPU offload or a `device_map`; use "
                "`self._execution_device` instead."
            ),
        ),
        Invalid(
            """
            from ..pipeline_utils import DiffusionPipeline


            class MyPipeline(DiffusionPipeline):
                model_cpu_offload_seq = "text_encoder->unet"

                def _encode(self, prompt):
                    ids = self.tokenizer(prompt).input_ids
                    return self.text_encoder(ids.to(self.device))

                def encode_prompt(self, prompt):
                    return self._encode(prompt)

                def __call__(self, prompt):
                    return self.encode_prompt(prompt)
            """,
            files=_PIPELINE_UTILS,
            fixed="""
            from ..pipeline_utils import DiffusionPipeline


            class MyPipeline(DiffusionPipeline):
                model_cpu_offload_seq = "text_encoder->unet"

                def _encode(self, prompt):
                    ids = self.tokenizer(prompt).input_ids
                    return self.text_encoder(ids.to(self._execution_device))

                def encode_prompt(self, prompt):
                    return self._encode(prompt)

                def __call__(self, prompt):
                    return self.encode_prompt(prompt)
            """,
            message=(
                "`self.device` in `_encode` is the CPU under model CPU offload or a `device_map`; use "
                "`self._execution_device` instead."
            ),
        ),
    ]

    def check(self) -> None:
        for cls, call in pipeline_methods(self.context, "__call__"):
            if not _declares_model_offload(cst.ensure_type(cls.node, cst.ClassDef)):
                continue  # without `model_cpu_offload_seq`, model offload is unsupported anyway
            methods = self.context.methods(cls)
            reached = {"__call__": call}
            frontier = [call]
            while frontier:
                for name in _called_methods(frontier.pop()):
                    method = methods.get(name)
                    if method is not None and name not in reached and name not in _PLACEMENT_METHODS:
                        reached[name] = method
                        frontier.append(method)
            fixable: bool | None = None  # asked once there is something to fix: it reads the base classes' modules
            for name, method in reached.items():
                if not any(self_attribute(node, "device") for node in walk.nodes(method.body, cst.Attribute)):
                    continue  # no `self.device` at all: the exact (slower) walk below has nothing to find
                visitor = _DeviceReads()
                walk.visit(method.body, visitor)
                if visitor.found:
                    if fixable is None:
                        fixable = _has_execution_device(self.context, cst.ensure_type(cls.node, cst.ClassDef))
                    self.report(
                        visitor.found[0],
                        self.message.format(method=name),
                        symbol="self.device",
                        scope=f"{cls.qualname}.{name}",
                        fix=_fix(method, visitor.found) if fixable else None,
                    )
