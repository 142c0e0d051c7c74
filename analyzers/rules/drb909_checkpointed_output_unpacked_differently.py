"""DRB909: the gradient-checkpointed call of a block is assigned to other targets than the plain call of it."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import call_name, if_chains, is_checkpoint_call


#: what `torch.utils.checkpoint.checkpoint` is called under, resolved through the module's imports


def _code(node: cst.CSTNode) -> str:
    return " ".join(cst.Module([]).code_for_node(node).split())


def _targets(assign: cst.Assign) -> str:
    """The targets of an assignment, brackets and spacing normalised: `(a, b)` and `a, b` read alike."""
    return " = ".join(_target(t.target) for t in assign.targets)


def _target(node: cst.BaseExpression) -> str:
    if isinstance(node, (cst.Tuple, cst.List)):
        return ", ".join(
            _target(e.value) if not isinstance(e, cst.StarredElement) else _code(e) for e in node.elements
        )
    return _code(node)


class CheckpointedOutputUnpackedDifferently(Rule):
    """
    ## What it does
    Checks `if`/`else` statements (and `elif` chains) of which one branch runs a module through gradient
    checkpointing (`self._gradient_checkpointing_func(block, ...)`, `torch.utils.checkpoint.checkpoint(block,
    ...)`, `checkpoint(create_custom_forward(block), ...)`) and another calls the same module directly, each
    assigning the result, and reports the checkpointed assignment when its targets differ from the direct
    one's (`hidden_states = checkpoint(block, ...)` against `encoder_hidden_states, hidden_states = block(...)`).

    ## Why is this bad?
    Checkpointing returns exactly what the module returns. When the two branches unpack it differently, one
    of them is wrong, and it is the checkpointed one that no inference test runs: with
    `enable_gradient_checkpointing()` (training) `hidden_states` receives the whole tuple and the next block
    fails, or a second output (`encoder_hidden_states`) is never updated and training diverges from
    inference without an error.

    ## Example
    ```python
    if torch.is_grad_enabled() and self.gradient_checkpointing:
        hidden_states = self._gradient_checkpointing_func(block, hidden_states, encoder_hidden_states, temb)
    else:
        encoder_hidden_states, hidden_states = block(hidden_states, encoder_hidden_states, temb)
    ```

    Use instead:
    ```python
    if torch.is_grad_enabled() and self.gradient_checkpointing:
        encoder_hidden_states, hidden_states = self._gradient_checkpointing_func(
            block, hidden_states, encoder_hidden_states, temb
        )
    ```

    ## Known problems
    Only assignments whose whole value is the call are compared (`block(...)[0]` is not), and only where the
    module is checkpointed once in its branch and called directly once in the others: a module called at
    several places (one call per block type or per condition) has no one partner and is skipped.

    ## References
    - huggingface/diffusers#13656, pattern 9
    - huggingface/diffusers#9498 (`SD3ControlNetModel` assigned the checkpointed block's tuple to
      `hidden_states`, fixed in 0.31.0)
    """

    code = "DRB909"
    pattern = 9
    severity = "error"
    message = (
        "`{checkpointed}` takes the checkpointed output of `{module}`, but the plain call assigns "
        "`{direct}`, so the two paths disagree on what `{module}` returns and training with gradient "
        "checkpointing gets the wrong values; unpack both the same way."
    )
    REQUIRES_ANY = ("_gradient_checkpointing_func", "checkpoint(")

    VALID = [
        # both branches unpack the same targets (brackets differ)
        Valid(
            """
            class MyControlNet(ModelMixin):
                def forward(self, hidden_states, encoder_hidden_states, temb):
                    for block in self.transformer_blocks:
                        if torch.is_grad_enabled() and self.gradient_checkpointing:
                            (encoder_hidden_states, hidden_states) = self._gradient_checkpointing_func(
                                block, hidden_states, encoder_hidden_states, temb
                            )
                        else:
                            encoder_hidden_states, hidden_states = block(hidden_states, encoder_hidden_states, temb)
                    return hidden_states
            """,
            path="diffusers/models/controlnets/controlnet_example.py",
        ),
        # one call per condition on each side: no one partner to compare
        Valid(
            """
            class MyControlNet(ModelMixin):
                def forward(self, hidden_states, encoder_hidden_states, temb):
                    for block in self.transformer_blocks:
                        if torch.is_grad_enabled() and self.gradient_checkpointing:
                            if self.context_embedder is not None:
                                encoder_hidden_states, hidden_states = self._gradient_checkpointing_func(
                                    block, hidden_states, encoder_hidden_states, temb
                                )
                            else:
                                hidden_states = self._gradient_checkpointing_func(block, hidden_states, temb)
                        else:
                            if self.context_embedder is not None:
                                encoder_hidden_states, hidden_states = block(hidden_states, encoder_hidden_states, temb)
                            else:
                                hidden_states = block(hidden_states, temb)
                    return hidden_states
            """,
            path="diffusers/models/controlnets/controlnet_example.py",
        ),
        # the direct call's output is indexed: not the same shape of value
        Valid(
            """
            class MyBlock(nn.Module):
                def forward(self, hidden_states, temb):
                    for resnet in self.resnets:
                        if self.training and self.gradient_checkpointing:
                            hidden_states = torch.utils.checkpoint.checkpoint(resnet, hidden_states, temb)[0]
                        else:
                            hidden_states = resnet(hidden_states, temb)
                    return hidden_states
            """,
            path="diffusers/models/unets/unet_example.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            import torch

            class MyControlNet(ModelMixin):
                def forward(self, hidden_states, encoder_hidden_states, temb):
                    for block in self.transformer_blocks:
                        if self.training and self.gradient_checkpointing:

                            def create_custom_forward(module):
                                def custom_forward(*inputs):
                                    return module(*inputs)

                                return custom_forward

                            hidden_states = torch.utils.checkpoint.checkpoint(
                                create_custom_forward(block), hidden_states, encoder_hidden_states, temb
                            )
                        else:
                            encoder_hidden_states, hidden_states = block(
                                hidden_states=hidden_states, encoder_hidden_states=encoder_hidden_states, temb=temb
                            )
                    return hidden_states
            """,
            message=(
                "`hidden_states` takes the checkpointed output of `block`, but the plain call assigns "
                "`encoder_hidden_states, hidden_states`, so the two paths disagree on what `block` returns and "
                "training with gradient checkpointing gets the wrong values; unpack both the same way."
            ),
            path="diffusers/models/controlnets/controlnet_example.py",
        ),
        # the checkpointed branch second, through `_gradient_checkpointing_func`
        Invalid(
            """
            class MyTransformer(ModelMixin):
                def forward(self, x, context, temb):
                    for layer in self.layers:
                        if not (torch.is_grad_enabled() and self.gradient_checkpointing):
                            x = layer(x, context, temb)
                        else:
                            x, context = self._gradient_checkpointing_func(layer, x, context, temb)
                    return x
            """,
            path="diffusers/models/transformers/transformer_example.py",
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            if definition.is_class or not isinstance(definition.node, cst.FunctionDef):
                continue
            function = definition.node
            for branches in if_chains(function):
                for i, branch in enumerate(branches):
                    others = [c for j, other in enumerate(branches) if j != i for c in walk.own_nodes(other, cst.Call)]
                    checkpointed = self._checkpointed(branch)
                    for module, assign in checkpointed.items():
                        direct = [call for call in others if _code(call.func) == module]
                        if len(direct) != 1:
                            continue
                        partner = _assignment_of(branches, direct[0])
                        if partner is None or _targets(partner) == _targets(assign):
                            continue
                        message = self.message.format(
                            checkpointed=_targets(assign), module=module, direct=_targets(partner)
                        )
                        self.report(assign, message, symbol="gradient_checkpointing", scope=definition.qualname)

    def _checkpointed(self, branch: cst.BaseSuite) -> dict[str, cst.Assign]:
        """The modules checkpointed exactly once in `branch`, each with the assignment that takes its output (only
        those whose checkpointed call is the whole assigned value)."""
        counts: dict[str, int] = {}
        assigned: dict[str, cst.Assign] = {}
        for call in walk.own_nodes(branch, cst.Call):
            if not is_checkpoint_call(self.context, call) or not call.args:
                continue
            first = call.args[0]
            if first.keyword is not None or first.star:
                continue
            module = first.value
            if isinstance(module, cst.Call):  # `create_custom_forward(block)`
                wrapper = call_name(module) or ""
                if not wrapper.endswith("custom_forward") or not module.args or module.args[0].keyword is not None:
                    continue
                module = module.args[0].value
            if isinstance(module, cst.Attribute) and module.attr.value in ("__call__", "forward"):
                module = module.value
            if not isinstance(module, (cst.Name, cst.Attribute, cst.Subscript)):
                continue
            key = _code(module)
            counts[key] = counts.get(key, 0) + 1
            for assign in walk.own_nodes(branch, cst.Assign):
                if assign.value is call:
                    assigned[key] = assign
        return {key: assign for key, assign in assigned.items() if counts[key] == 1}


def _assignment_of(branches: list[cst.BaseSuite], call: cst.Call) -> cst.Assign | None:
    for branch in branches:
        for assign in walk.own_nodes(branch, cst.Assign):
            if assign.value is call:
                return assign
    return None
