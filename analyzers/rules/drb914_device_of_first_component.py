"""DRB914: a pipeline's device is the device of whichever component comes first."""

from __future__ import annotations

from typing import cast

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid


def _first_device_return(loop: cst.For) -> cst.Return | None:
    """`for module in modules: return module.device`: the unconditional return of the loop variable's device."""
    if not isinstance(loop.target, cst.Name) or not isinstance(loop.body, cst.IndentedBlock) or not loop.body.body:
        return None
    first = loop.body.body[0]
    if not isinstance(first, cst.SimpleStatementLine) or not isinstance(first.body[0], cst.Return):
        return None
    value = first.body[0].value
    if (
        isinstance(value, cst.Attribute)
        and value.attr.value == "device"
        and isinstance(value.value, cst.Name)
        and value.value.value == loop.target.value
    ):
        return first.body[0]
    return None


def _returns_device(node: cst.CSTNode) -> bool:
    """Whether `node` returns some `.device`."""
    return any(
        isinstance(r.value, cst.Attribute) and r.value.attr.value == "device" for r in walk.nodes(node, cst.Return)
    )


class DeviceOfFirstComponent(Rule):
    """
    ## What it does
    Checks for a `device` property (or helper) that loops over the components of a pipeline and returns the
    device of the first one (`for module in modules: return module.device`), with no earlier pass that prefers a
    component on an accelerator.

    ## Why is this bad?
    Components may sit on different devices: text encoders left on the CPU while the denoiser runs on the GPU
    (manual placement, `device_map`, a components manager). The pipeline then reports `cpu`, and everything that
    reads `pipe.device` or `_execution_device` (prompt embeddings, latents, generators, timesteps) is placed on
    the CPU, so the denoiser gets tensors on the wrong device, or the whole run silently falls back to the CPU.

    ## Example
    ```python
    @property
    def device(self):
        modules = [m for m in self.components.values() if isinstance(m, torch.nn.Module)]
        for module in modules:
            return module.device
        return torch.device("cpu")
    ```

    Use instead:
    ```python
    for module in modules:
        if module.device.type not in ("cpu", "meta"):
            return module.device
    for module in modules:
        return module.device
    ```

    ## Known problems
    Only the spelling with the return as the first statement of the loop is matched.

    ## References
    - huggingface/diffusers#13656, pattern 9
    - huggingface/diffusers#14383 (DiffusionPipeline.device reported the CPU for a split pipeline)
    """

    code = "DRB914"
    pattern = 9
    severity = "warning"
    message = (
        "`{function}` returns the device of whichever component comes first (`for {var} in ...: return "
        "{var}.device`), so a pipeline with components on several devices (text encoders on CPU, denoiser on an "
        "accelerator) reports the wrong one; prefer a component that is not on `cpu`/`meta` first."
    )
    REQUIRES_ANY = (".device",)
    PATHS = ("/pipelines/", "/modular_pipelines/")

    VALID = [
        Valid(
            """
            class Pipeline(DiffusionPipeline):
                @property
                def device(self):
                    modules = [m for m in self.components.values() if isinstance(m, torch.nn.Module)]
                    for module in modules:
                        if module.device.type not in ("cpu", "meta"):
                            return module.device
                    for module in modules:
                        return module.device
                    return torch.device("cpu")

                @property
                def dtype(self):
                    for module in self.components.values():
                        return module.dtype
            """,
            path="diffusers/pipelines/pipeline_utils.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            class Pipeline(DiffusionPipeline):
                @property
                def device(self) -> torch.device:
                    module_names, _ = self._get_signature_keys(self)
                    modules = [getattr(self, n, None) for n in module_names]
                    modules = [m for m in modules if isinstance(m, torch.nn.Module)]
                    for module in modules:
                        return module.device
                    return torch.device("cpu")
            """,
            message=(
                "`device` returns the device of whichever component comes first (`for module in ...: return "
                "module.device`), so a pipeline with components on several devices (text encoders on CPU, denoiser "
                "on an accelerator) reports the wrong one; prefer a component that is not on `cpu`/`meta` first."
            ),
            path="diffusers/pipelines/pipeline_utils.py",
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef) or "device" not in function.name.value:
                continue
            loops = walk.own_nodes(function, cst.For)
            for index, loop in enumerate(loops):
                found = _first_device_return(loop)
                if found is None:
                    continue
                # an earlier loop that returns a device (under a condition) is the preference pass of the fix
                if any(_returns_device(earlier) for earlier in loops[:index]):
                    break
                message = self.message.format(function=function.name.value, var=cast("cst.Name", loop.target).value)
                self.report(found, message, symbol="device", scope=definition.qualname)
                break
