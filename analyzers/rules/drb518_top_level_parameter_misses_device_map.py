"""DRB518: a model's own parameter meets a submodule's output in `forward` with no device move (device_map)."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.matchers import names_read, self_attribute, target_names
from analyzers.models import is_model


PARAMETER_MAKERS = frozenset({"nn.Parameter", "torch.nn.Parameter", "Parameter"})
ARITHMETIC = (cst.Add, cst.Subtract, cst.Multiply, cst.Divide)
#: tensor methods that keep the tensor where it is
KEEPING = frozenset(
    {"unsqueeze", "repeat", "expand", "expand_as", "view", "reshape", "flatten", "unflatten", "permute", "squeeze"}
)
JOINS = frozenset({"torch.cat", "torch.stack", "torch.concat"})


def _code(node: cst.CSTNode) -> str:
    return " ".join(cst.Module([]).code_for_node(node).split())


def _class_parameters(cls: cst.ClassDef) -> set[str]:
    """`self.<name> = nn.Parameter(...)` anywhere in the class."""
    found: set[str] = set()
    for assign in walk.nodes(cls, cst.Assign):
        if isinstance(assign.value, cst.Call) and dotted_name(assign.value.func) in PARAMETER_MAKERS:
            for target in assign.targets:
                if self_attribute(target.target):
                    found.add(target.target.attr.value)
    return found


def _declares_no_split(cls: cst.ClassDef) -> bool:
    """`_no_split_modules = [...]` in the class body: the model supports `device_map`."""
    for statement in cls.body.body:
        if isinstance(statement, cst.SimpleStatementLine):
            for small in statement.body:
                if (
                    isinstance(small, (cst.Assign, cst.AnnAssign))
                    and "_no_split_modules"
                    in _code(small.targets[0].target if isinstance(small, cst.Assign) else small.target)
                    and small.value is not None
                    and not (isinstance(small.value, cst.Name) and small.value.value == "None")
                ):
                    return True
    return False


def _bare_parameter(node: cst.BaseExpression, parameters: set[str]) -> str | None:
    """The parameter `node` reads as it is: `self.table`, `self.table[None]`, `self.table.unsqueeze(0).repeat(b, 1)`;
    None when a call on the way may move it (`.to(...)`) or the node is something else."""
    while True:
        if isinstance(node, cst.Subscript):
            node = node.value
        elif isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value in KEEPING:
            node = node.func.value
        else:
            break
    if self_attribute(node) and node.attr.value in parameters:
        return node.attr.value
    return None


def _moves(node: cst.BaseExpression) -> bool:
    """Whether `node` has a `.to(...)` (or `.cuda()`/`.type_as(...)`) in it."""
    return any(
        isinstance(call.func, cst.Attribute) and call.func.attr.value in ("to", "cuda", "type_as")
        for call in walk.nodes(node, cst.Call)
    )


class TopLevelParameterMissesDeviceMap(Rule):
    """
    ## What it does
    Checks the `forward` of model classes that support `device_map` (they declare `_no_split_modules`) for a
    parameter of the model itself (`self.register_tokens = nn.Parameter(...)`, `self.scale_shift_table`) that is
    added to, multiplied with or concatenated to the output of one of its submodules as it is, with no `.to(...)`
    on either side.

    ## Why is this bad?
    With `device_map="auto"` (or `"balanced"`) accelerate places the model's own parameters and each submodule on a
    device of its choosing, and moves inputs only at the submodules' boundaries: the top-level `forward` runs no
    hook between them. When the embedder whose output meets the parameter lands on another GPU,
    `torch.cat([self.register_tokens.repeat(b, 1, 1), encoder_hidden_states])` fails with "Expected all tensors
    to be on the same device". The single-GPU tests never see it.

    ## Example
    ```python
    encoder_hidden_states = self.context_embedder(encoder_hidden_states)
    encoder_hidden_states = torch.cat(
        [self.register_tokens.repeat(encoder_hidden_states.size(0), 1, 1), encoder_hidden_states], dim=1
    )
    ```

    Use instead:
    ```python
    register_tokens = self.register_tokens.to(encoder_hidden_states.device)
    encoder_hidden_states = torch.cat(
        [register_tokens.repeat(encoder_hidden_states.size(0), 1, 1), encoder_hidden_states], dim=1
    )
    ```

    ## Known problems
    Only the model class's own `forward`, its own `nn.Parameter` attributes and tensors assigned from a call of one
    of its submodules (or from such tensors) are followed. Blocks (`nn.Module`s that are not models) are left
    alone: accelerate's hook on each block moves its inputs to the block's device.

    ## References
    - huggingface/diffusers#13656, pattern 5
    - huggingface/diffusers#14273 (AuraFlow's `register_tokens` under `device_map="auto"`),
      huggingface/diffusers#12347 (Wan's and LTX's `scale_shift_table`)
    """

    code = "DRB518"
    pattern = 5
    severity = "warning"
    message = (
        "`self.{parameter}` is a parameter of the model itself and meets `{tensor}`, the output of a submodule, "
        "without a device move, which fails when `device_map` puts them on different GPUs; move it first "
        "(`self.{parameter}.to({tensor}.device)`)."
    )
    REQUIRES_ANY = ("Parameter(",)
    PATHS = ("/models/",)

    VALID = [
        Valid(
            """
            import torch
            from torch import nn

            class TinyModel(ModelMixin, ConfigMixin):
                _no_split_modules = ["Block"]

                def __init__(self):
                    self.embed = nn.Linear(4, 4)
                    self.tokens = nn.Parameter(torch.randn(1, 8, 4))
                    self.table = nn.Parameter(torch.randn(2, 4))

                def forward(self, hidden_states, temb):
                    hidden_states = self.embed(hidden_states)
                    tokens = self.tokens.to(hidden_states.device)
                    hidden_states = torch.cat([tokens.repeat(2, 1, 1), hidden_states], dim=1)
                    temb = self.embed(temb)
                    shift = self.table[None].to(temb.device) + temb
                    scale = self.table + temb.to(self.table.device)
                    return hidden_states * scale + shift


            class TinyUnsplittable(ModelMixin, ConfigMixin):
                _no_split_modules = None

                def __init__(self):
                    self.embed = nn.Linear(4, 4)
                    self.tokens = nn.Parameter(torch.randn(1, 8, 4))

                def forward(self, hidden_states):
                    hidden_states = self.embed(hidden_states)
                    return hidden_states + self.tokens
            """,
            path="diffusers/models/transformers/tiny_model.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            import torch
            from torch import nn

            class TinyModel(ModelMixin, ConfigMixin):
                _no_split_modules = ["Block"]

                def __init__(self):
                    self.context_embedder = nn.Linear(4, 4)
                    self.register_tokens = nn.Parameter(torch.randn(1, 8, 4))

                def forward(self, hidden_states, encoder_hidden_states):
                    encoder_hidden_states = self.context_embedder(encoder_hidden_states)
                    encoder_hidden_states = torch.cat(
                        [self.register_tokens.repeat(encoder_hidden_states.size(0), 1, 1), encoder_hidden_states],
                        dim=1,
                    )
                    return hidden_states, encoder_hidden_states
            """,
            path="diffusers/models/transformers/tiny_model.py",
            message=(
                "`self.register_tokens` is a parameter of the model itself and meets `encoder_hidden_states`, the "
                "output of a submodule, without a device move, which fails when `device_map` puts them on different "
                "GPUs; move it first (`self.register_tokens.to(encoder_hidden_states.device)`)."
            ),
        ),
        Invalid(
            """
            import torch
            from torch import nn

            class TinyModel(ModelMixin, ConfigMixin):
                _no_split_modules = ["Block"]

                def __init__(self):
                    self.time_embed = nn.Linear(4, 4)
                    self.scale_shift_table = nn.Parameter(torch.randn(2, 4))

                def forward(self, hidden_states, timestep):
                    temb = self.time_embed(timestep)
                    emb = temb.unsqueeze(1)
                    shift, scale = (self.scale_shift_table[None] + emb).chunk(2, dim=1)
                    return hidden_states * (1 + scale) + shift
            """,
            path="diffusers/models/transformers/tiny_model.py",
        ),
    ]

    def check(self) -> None:
        for cls in self.context.classes:
            node = cls.node
            if cls.parent is not None or not isinstance(node, cst.ClassDef) or not _declares_no_split(node):
                continue
            parameters = _class_parameters(node)
            forward = self.context.methods(cls).get("forward")
            if not parameters or forward is None or not is_model(self.context, node):
                continue
            outputs = self._submodule_outputs(forward, parameters)
            if not outputs:
                continue
            reported: set[str] = set()
            for operation in walk.own_nodes(forward, cst.BinaryOperation):
                if isinstance(operation.operator, ARITHMETIC):
                    for side, other in ((operation.left, operation.right), (operation.right, operation.left)):
                        self._meet(operation, [side], [other], parameters, outputs, reported, cls.qualname)
            for call in walk.own_nodes(forward, cst.Call):
                if (
                    dotted_name(call.func) in JOINS
                    and call.args
                    and isinstance(call.args[0].value, (cst.List, cst.Tuple))
                ):
                    elements = [e.value for e in call.args[0].value.elements]
                    self._meet(call, elements, elements, parameters, outputs, reported, cls.qualname)

    def _meet(
        self,
        node: cst.CSTNode,
        sides: list[cst.BaseExpression],
        others: list[cst.BaseExpression],
        parameters: set[str],
        outputs: set[str],
        reported: set[str],
        owner: str,
    ) -> None:
        for side in sides:
            parameter = _bare_parameter(side, parameters)
            if parameter is None or parameter in reported:
                continue
            for other in others:
                if other is side or _moves(other) or _bare_parameter(other, parameters):
                    continue
                tensor = next((n.value for n in names_read(other) if n.value in outputs), None)
                if tensor is None:
                    continue
                reported.add(parameter)
                message = self.message.format(parameter=parameter, tensor=tensor)
                self.report(node, message, symbol=parameter, scope=f"{owner}.forward")
                return

    @staticmethod
    def _submodule_outputs(forward: cst.FunctionDef, parameters: set[str]) -> set[str]:
        """Names assigned (in `forward`) from a call of a submodule, `self.<module>(...)`, or from such names."""
        assigns = [
            (names, a.value)
            for a in walk.own_nodes(forward, cst.Assign)
            if (names := [n for t in a.targets for n in target_names(t.target)])
        ]
        outputs: set[str] = set()
        for names, value in assigns:
            if any(
                self_attribute(call.func) and call.func.attr.value not in parameters
                for call in walk.nodes(value, cst.Call)
            ):
                outputs.update(names)
        changed = True
        while changed:
            changed = False
            for names, value in assigns:
                if not set(names) <= outputs and any(n.value in outputs for n in names_read(value)):
                    outputs.update(names)
                    changed = True
        return outputs
