"""DRB908: code that detects which offload hooks a component carries removes its hooks whatever they are."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import call_name, string_value


REMOVE = "remove_hook_from_module"
HOOK_ATTR = "_hf_hook"


def _reads_hook(node: cst.CSTNode) -> bool:
    """Whether `node` inspects an accelerate hook: `component._hf_hook`, `getattr(component, "_hf_hook")`."""
    if any(a.attr.value == HOOK_ATTR for a in walk.nodes(node, cst.Attribute)):
        return True
    return any(string_value(s) == HOOK_ATTR for s in walk.nodes(node, cst.SimpleString))


def _is_hook_check(value: cst.BaseExpression) -> bool:
    """`isinstance(<hook>, CpuOffload)`, or an `and`/`or` of checks of which one is: a test of the kind of hook."""
    for call in walk.nodes(value, cst.Call):
        if call_name(call) == "isinstance" and call.args and _reads_hook(call.args[0].value):
            return True
    return False


class ForeignHooksRemoved(Rule):
    """
    ## What it does
    Checks functions that work out which offload mode a component is in from the kind of its accelerate
    hook (`is_model_cpu_offload = isinstance(component._hf_hook, CpuOffload)`) and then call
    `remove_hook_from_module(component)` outside any `if` that tests those flags.

    ## Why is this bad?
    The flags exist so that the offloading can be put back afterwards (`enable_model_cpu_offload()` or
    `enable_sequential_cpu_offload()` after LoRA or textual-inversion weights are loaded). Every other hook
    is removed too and never restored: a `device_map` dispatch, a user's own hook, another library's. After
    `load_lora_weights()` the component silently loses its device placement or behaviour.

    ## Example
    ```python
    for _, component in pipeline.components.items():
        if isinstance(component, nn.Module) and hasattr(component, "_hf_hook"):
            is_model_cpu_offload = isinstance(component._hf_hook, CpuOffload)
            is_sequential_cpu_offload = isinstance(component._hf_hook, AlignDevicesHook)
            remove_hook_from_module(component, recurse=is_sequential_cpu_offload)
    ```

    Use instead:
    ```python
            if is_model_cpu_offload or is_sequential_cpu_offload:
                remove_hook_from_module(component, recurse=is_sequential_cpu_offload)
    ```

    ## Known problems
    Only flags assigned from an `isinstance` check of a `_hf_hook` in the same function count, and a removal
    counts as guarded when any enclosing `if` (or `a if c else b`) reads one of them. A function that removes
    hooks without computing such flags (on purpose, to reset everything) is not checked.

    ## References
    - huggingface/diffusers#13656, pattern 9
    - huggingface/diffusers#11768 (`load_lora_weights` removed non-offload hooks, fixed in 0.34.0)
    """

    code = "DRB908"
    pattern = 9
    severity = "warning"
    message = (
        "`{call}` removes whatever hook the component carries, but only the offload modes detected in "
        "`{flags}` are restored afterwards, so any other hook (a `device_map` dispatch, a user hook) is lost; "
        "remove it only under `if {condition}:`."
    )
    REQUIRES_ANY = (REMOVE,)

    VALID = [
        Valid(
            """
            def _func_optionally_disable_offloading(_pipeline):
                is_model_cpu_offload = False
                is_sequential_cpu_offload = False
                for _, component in _pipeline.components.items():
                    if isinstance(component, nn.Module) and hasattr(component, "_hf_hook"):
                        is_model_cpu_offload = isinstance(component._hf_hook, CpuOffload)
                        is_sequential_cpu_offload = isinstance(component._hf_hook, AlignDevicesHook)
                        if is_sequential_cpu_offload or is_model_cpu_offload:
                            remove_hook_from_module(component, recurse=is_sequential_cpu_offload)
                return is_model_cpu_offload, is_sequential_cpu_offload
            """,
            path="diffusers/loaders/lora_base.py",
        ),
        # resetting every hook on purpose: no offload mode is detected
        Valid(
            """
            class Manager:
                def enable_auto_cpu_offload(self, device):
                    for name, component in self.components.items():
                        if isinstance(component, torch.nn.Module) and hasattr(component, "_hf_hook"):
                            remove_hook_from_module(component, recurse=True)
            """,
            path="diffusers/modular_pipelines/components_manager.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            def _func_optionally_disable_offloading(_pipeline):
                is_model_cpu_offload = False
                is_sequential_cpu_offload = False
                for _, component in _pipeline.components.items():
                    if isinstance(component, nn.Module) and hasattr(component, "_hf_hook"):
                        if not is_model_cpu_offload:
                            is_model_cpu_offload = isinstance(component._hf_hook, CpuOffload)
                        if not is_sequential_cpu_offload:
                            is_sequential_cpu_offload = (
                                isinstance(component._hf_hook, AlignDevicesHook)
                                or hasattr(component._hf_hook, "hooks")
                                and isinstance(component._hf_hook.hooks[0], AlignDevicesHook)
                            )
                        remove_hook_from_module(component, recurse=is_sequential_cpu_offload)
                return is_model_cpu_offload, is_sequential_cpu_offload
            """,
            message=(
                "`remove_hook_from_module(component, recurse=is_sequential_cpu_offload)` removes whatever hook the "
                "component carries, but only the offload modes detected in `is_model_cpu_offload`, "
                "`is_sequential_cpu_offload` are restored afterwards, so any other hook (a `device_map` dispatch, a "
                "user hook) is lost; remove it only under `if is_model_cpu_offload or is_sequential_cpu_offload:`."
            ),
            path="diffusers/loaders/lora_base.py",
        ),
        # the older spelling: `getattr(component, "_hf_hook")`, a method of a loader mixin
        Invalid(
            """
            class TextualInversionLoaderMixin:
                def load_textual_inversion(self, pretrained_model_name_or_path):
                    is_model_cpu_offload = False
                    for _, component in self.components.items():
                        if isinstance(component, nn.Module):
                            if hasattr(component, "_hf_hook"):
                                is_model_cpu_offload = isinstance(getattr(component, "_hf_hook"), CpuOffload)
                                accelerate.hooks.remove_hook_from_module(component)
                    if is_model_cpu_offload:
                        self.enable_model_cpu_offload()
            """,
            path="diffusers/loaders/textual_inversion.py",
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            removals = [
                call
                for call in walk.own_nodes(function, cst.Call)
                if (call_name(call) or "").rpartition(".")[2] == REMOVE
            ]
            if not removals:
                continue
            flags: list[str] = []
            for assign in walk.own_nodes(function, cst.Assign):
                if not _is_hook_check(assign.value):
                    continue
                for target in assign.targets:
                    if isinstance(target.target, cst.Name) and target.target.value not in flags:
                        flags.append(target.target.value)
            if not flags:
                continue
            guarded = _tested_around(function)
            for call in removals:
                if guarded.get(id(call), set()) & set(flags):
                    continue
                message = self.message.format(
                    call=" ".join(self.context.module.code_for_node(call).split()),
                    flags="`, `".join(flags),
                    condition=" or ".join(flags),
                )
                self.report(call, message, symbol=REMOVE, scope=definition.qualname)


def _tested_around(function: cst.FunctionDef) -> dict[int, set[str]]:
    """For each node under an `if` (either branch) or a conditional expression of `function`: the names its
    tests read."""
    around: dict[int, set[str]] = {}
    guards: list[tuple[cst.BaseExpression, list[cst.CSTNode]]] = []
    for statement in walk.own_nodes(function, cst.If):
        guards.append((statement.test, [statement.body, statement.orelse] if statement.orelse else [statement.body]))
    for expression in walk.own_nodes(function, cst.IfExp):
        guards.append((expression.test, [expression.body, expression.orelse]))
    for test, branches in guards:
        names = {n.value for n in walk.nodes(test, cst.Name)}
        for branch in branches:
            for node in walk.walk(branch):
                around.setdefault(id(node), set()).update(names)
    return around
