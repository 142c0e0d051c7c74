"""DRB910: an `enable_*offload*` method installs accelerate hooks without removing the ones already attached."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import call_name


#: accelerate functions that attach an offload hook to a module
INSTALLERS = frozenset({"cpu_offload_with_hook", "cpu_offload", "add_hook_to_module"})
#: calls that take the hooks already attached off first
REMOVERS = frozenset({"remove_all_hooks", "remove_hook_from_module", "disable_auto_cpu_offload"})


def _last(call: cst.Call) -> str:
    return (call_name(call) or "").rpartition(".")[2]


def _hook_record(function: cst.FunctionDef) -> str | None:
    """The first `self.<attr>` with `hook` in its name that the method assigns or appends to: `_all_hooks`,
    `final_offload_hook`, the pipeline's record of the hooks it installs."""
    for assign in walk.own_nodes(function, cst.Assign):
        for target in assign.targets:
            node = target.target
            if (
                isinstance(node, cst.Attribute)
                and isinstance(node.value, cst.Name)
                and node.value.value == "self"
                and "hook" in node.attr.value
            ):
                return node.attr.value
    return None


class OffloadEnabledOverStaleHooks(Rule):
    """
    ## What it does
    Checks for `enable_*offload*` methods (`enable_model_cpu_offload`, `enable_sequential_cpu_offload`, a
    pipeline's own override of them) that attach accelerate hooks with `cpu_offload_with_hook`, `cpu_offload`
    or `add_hook_to_module` but never remove the hooks the components already carry
    (`self.remove_all_hooks()`, `remove_hook_from_module(...)`).

    ## Why is this bad?
    accelerate appends a new hook to the ones already on a module. Calling the method a second time, or
    after `enable_sequential_cpu_offload()` to switch modes, leaves the old hooks in place: the sequential
    `AlignDevicesHook`s keep moving weights in and out under the new `CpuOffload` hook, two `CpuOffload`
    hooks fight over the module, and resetting the list of hooks (`self._all_hooks = []`) only forgets
    them. The pipeline then runs slowly, on the wrong device, or fails with a device mismatch.

    ## Example
    ```python
    def enable_model_cpu_offload(self, gpu_id=0):
        device = torch.device(f"cuda:{gpu_id}")
        self._all_hooks = []
        hook = None
        for model in [self.text_encoder, self.unet, self.vae]:
            _, hook = cpu_offload_with_hook(model, device, prev_module_hook=hook)
            self._all_hooks.append(hook)
    ```

    Use instead:
    ```python
    def enable_model_cpu_offload(self, gpu_id=0):
        self.remove_all_hooks()
        device = torch.device(f"cuda:{gpu_id}")
        hook = None
        for model in [self.text_encoder, self.unet, self.vae]:
            _, hook = cpu_offload_with_hook(model, device, prev_module_hook=hook)
            self._all_hooks.append(hook)
    ```

    ## Known problems
    Any call named `remove_all_hooks`, `remove_hook_from_module` or `disable_auto_cpu_offload` anywhere in the
    method counts as the removal, whatever it removes. A method that delegates to another that removes hooks
    (`super().enable_model_cpu_offload()`) installs nothing itself and is not checked.

    ## References
    - huggingface/diffusers#13656, pattern 9
    - huggingface/diffusers#7448 (`DiffusionPipeline.remove_all_hooks()`, called before either offload mode is
      enabled, fixed in 0.28.0)
    """

    code = "DRB910"
    pattern = 9
    severity = "warning"
    message = (
        "`{method}` attaches accelerate hooks with `{installer}` without removing the hooks already on the "
        "components, so calling it again or after another offload mode stacks hooks; call "
        "`self.remove_all_hooks()` first."
    )
    REQUIRES_ANY = ("cpu_offload", "add_hook_to_module")

    VALID = [
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def enable_model_cpu_offload(self, gpu_id=0):
                    self.remove_all_hooks()
                    hook = None
                    for model in [self.text_encoder, self.unet, self.vae]:
                        _, hook = cpu_offload_with_hook(model, f"cuda:{gpu_id}", prev_module_hook=hook)
                        self._all_hooks.append(hook)
            """
        ),
        # the hooks are removed one by one
        Valid(
            """
            class Manager:
                def enable_auto_cpu_offload(self, device):
                    for name, component in self.components.items():
                        if hasattr(component, "_hf_hook"):
                            remove_hook_from_module(component, recurse=True)
                    for name, component in self.components.items():
                        add_hook_to_module(component, CustomOffloadHook(device))
            """,
            path="diffusers/modular_pipelines/components_manager.py",
        ),
        # an override that only warns and delegates
        Valid(
            """
            class MyPipeline(DiffusionPipeline):
                def enable_sequential_cpu_offload(self, *args, **kwargs):
                    logger.warning("image_encoder may fail")
                    super().enable_sequential_cpu_offload(*args, **kwargs)
            """
        ),
        # not an offload switch
        Valid(
            """
            def _replace_with_quantized(model, device):
                for name, module in model.named_children():
                    add_hook_to_module(module, AlignDevicesHook(device))
            """,
            path="diffusers/quantizers/example/utils.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            class DiffusionPipeline:
                def enable_model_cpu_offload(self, gpu_id=None, device="cuda"):
                    device = torch.device(device)
                    if self.device.type != "cpu":
                        self.to("cpu")
                    self._all_hooks = []
                    hook = None
                    for name in self.model_cpu_offload_seq.split("->"):
                        model = self.components.get(name)
                        _, hook = cpu_offload_with_hook(model, device, prev_module_hook=hook)
                        self._all_hooks.append(hook)
            """,
            message=(
                "`enable_model_cpu_offload` attaches accelerate hooks with `cpu_offload_with_hook` without removing "
                "the hooks already on the components, so calling it again or after another offload mode stacks "
                "hooks; call `self.remove_all_hooks()` first."
            ),
            path="diffusers/pipelines/pipeline_utils.py",
        ),
        Invalid(
            """
            class AudioPipeline(DiffusionPipeline):
                def enable_sequential_cpu_offload(self, gpu_id=0):
                    from accelerate import cpu_offload

                    for model in [self.unet, self.text_encoder, self.vocoder]:
                        cpu_offload(model, torch.device(f"cuda:{gpu_id}"))
            """
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            name = function.name.value
            if not (name.startswith("enable_") and "offload" in name):
                continue
            called = walk.own_nodes(function, cst.Call)
            installs = [call for call in called if _last(call) in INSTALLERS]
            if not installs or any(_last(call) in REMOVERS for call in called):
                continue
            installer = _last(installs[0])
            self.report(
                installs[0],
                self.message.format(method=name, installer=installer),
                symbol=_hook_record(function) or installer,
                scope=definition.qualname,
            )
