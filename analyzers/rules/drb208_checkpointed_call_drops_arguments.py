"""DRB208: the gradient-checkpointed call of a block passes fewer values than the plain call of the same block."""

from __future__ import annotations

import builtins

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import call_name, if_chains, is_checkpoint_call, target_names
from analyzers.syntax import dotted_name


#: what `torch.utils.checkpoint.checkpoint` is called under, resolved through the module's imports
#: names that are constants, not values of the caller
_CONSTANT_NAMES = frozenset({"None", "True", "False", "self", "Ellipsis", "NotImplemented"})
_BUILTINS = frozenset(dir(builtins))


def _code(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)


def _is_constant(node: cst.BaseExpression) -> bool:
    """Literals and containers of literals: `None`, `False`, `1.0`, `"gelu"`, `(1, 2)`, `-1`."""
    if isinstance(node, cst.Name):
        return node.value in _CONSTANT_NAMES
    if isinstance(node, (cst.Integer, cst.Float, cst.Imaginary, cst.SimpleString, cst.ConcatenatedString)):
        return True
    if isinstance(node, cst.UnaryOperation):
        return _is_constant(node.expression)
    if isinstance(node, (cst.Tuple, cst.List, cst.Set)):
        return all(not isinstance(e, cst.StarredElement) and _is_constant(e.value) for e in node.elements)
    return False


def _chains(node: cst.CSTNode) -> tuple[set[str], set[str]]:
    """The dotted names an expression reads: (every one, prefixes included; only the outermost ones).

    `attention_mask.bool()` reads `attention_mask.bool` and `attention_mask`; keyword names (`scale=`) and
    attribute names on their own are not reads."""
    inner: set[int] = set()
    found: list[tuple[cst.CSTNode, str]] = []
    for sub in walk.walk(node):
        if isinstance(sub, cst.Arg) and sub.keyword is not None:
            inner.add(id(sub.keyword))
        elif isinstance(sub, cst.Attribute):
            inner.add(id(sub.attr))
        if isinstance(sub, (cst.Name, cst.Attribute)):
            name = dotted_name(sub)
            if name is not None:
                found.append((sub, name))
    every = {name for sub, name in found if id(sub) not in inner}
    nested = {id(sub.value) for sub, _ in found if isinstance(sub, cst.Attribute)}
    outer = {name for sub, name in found if id(sub) not in inner and id(sub) not in nested}
    return every, outer


class _Checkpointed:
    """One checkpointed call of a module: the call, the module expression, the dotted names its arguments read."""

    def __init__(self, call: cst.Call, module: cst.BaseExpression, reads: set[str]) -> None:
        self.call = call
        self.module = module
        self.reads = reads


class CheckpointedCallDropsArguments(Rule):
    """
    ## What it does
    Checks `if`/`else` statements (and `elif` chains, and `a if c else b`) of which one branch runs a module
    through gradient checkpointing (`self._gradient_checkpointing_func(block, ...)`,
    `torch.utils.checkpoint.checkpoint(block, ...)`, `checkpoint(create_custom_forward(block), ...)`) and
    another calls the same module directly (`block(...)`), and reports the values that the direct call passes
    and the checkpointed call does not pass at all.

    ## Why is this bad?
    Gradient checkpointing is on while training (full fine-tuning, LoRA, DreamBooth), and only then. A value
    that only the direct call passes (`joint_attention_kwargs` with the LoRA `scale` or IP-adapter inputs, an
    `attention_mask`, `temb`) is silently dropped for exactly those runs: the block falls back to its default
    and the model trains on something other than what it runs at inference, with no error.

    ## Example
    ```python
    for block in self.transformer_blocks:
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            encoder_hidden_states, hidden_states = self._gradient_checkpointing_func(
                block, hidden_states, encoder_hidden_states, temb, image_rotary_emb
            )
        else:
            encoder_hidden_states, hidden_states = block(
                hidden_states=hidden_states,
                encoder_hidden_states=encoder_hidden_states,
                temb=temb,
                image_rotary_emb=image_rotary_emb,
                joint_attention_kwargs=joint_attention_kwargs,
            )
    ```

    Use instead:
    ```python
    encoder_hidden_states, hidden_states = self._gradient_checkpointing_func(
        block, hidden_states, encoder_hidden_states, temb, image_rotary_emb, joint_attention_kwargs
    )
    ```

    ## Known problems
    Values are compared by the names they read, not by parameter: a value counts as passed when the
    checkpointed call reads any of its names anywhere in its arguments (`attention_mask.bool()` passes
    `attention_mask`), and the position it lands in is not checked. Constants (`None`, `return_dict=False`)
    and names of imported modules or builtins are ignored. A checkpointed call that passes `*args` or
    `**kwargs` that the function does not build from a dict literal (`**ckpt_kwargs`) is skipped, and so are
    unpacked arguments of the direct call. Only the branches of one `if`/`elif`/`else` chain or one
    `a if c else b` are compared, and only where the module is checkpointed once in its branch and called
    directly once in the others: a module called at several places (one call per block type) is skipped, as
    is one called through a wrapper other than `create_custom_forward(module)` (a lambda, `functools.partial`).

    ## References
    - huggingface/diffusers#13656, pattern 2
    - huggingface/diffusers#11814 (Flux: `joint_attention_kwargs` dropped under gradient checkpointing, fixed
      in 0.35.0)
    """

    code = "DRB208"
    pattern = 2
    severity = "error"
    message = (
        "`{value}` reaches `{module}` when gradient checkpointing is off but not through `{func}(...)`, so "
        "training with checkpointing ignores it; pass it in the checkpointed call too."
    )
    REQUIRES_ANY = ("_gradient_checkpointing_func", "checkpoint(")

    VALID = [
        # both branches pass the same values, positionally and by keyword
        Valid(
            """
            class MyTransformer(ModelMixin):
                def forward(self, hidden_states, encoder_hidden_states, temb, attention_kwargs=None):
                    for block in self.transformer_blocks:
                        if torch.is_grad_enabled() and self.gradient_checkpointing:
                            hidden_states = self._gradient_checkpointing_func(
                                block, hidden_states, encoder_hidden_states, temb, attention_kwargs
                            )
                        else:
                            hidden_states = block(
                                hidden_states,
                                encoder_hidden_states=encoder_hidden_states,
                                temb=temb,
                                attention_kwargs=attention_kwargs,
                            )
                    return hidden_states
            """,
            path="diffusers/models/transformers/transformer_example.py",
        ),
        # only constants are left out of the checkpointed call
        Valid(
            """
            class MyTransformer(ModelMixin):
                def forward(self, hidden_states, temb):
                    for block in self.blocks:
                        if not (torch.is_grad_enabled() and self.gradient_checkpointing):
                            hidden_states = block(hidden_states, temb, None, return_dict=False, scale=1.0)
                        else:
                            hidden_states = self._gradient_checkpointing_func(block, hidden_states, temb)
                    return hidden_states
            """,
            path="diffusers/models/transformers/transformer_example.py",
        ),
        # the two branches call different modules
        Valid(
            """
            class MyTransformer(ModelMixin):
                def forward(self, hidden_states, attention_mask):
                    if torch.is_grad_enabled() and self.gradient_checkpointing:
                        hidden_states = self._gradient_checkpointing_func(self.block_a, hidden_states)
                    else:
                        hidden_states = self.block_b(hidden_states, attention_mask=attention_mask)
                    return hidden_states
            """,
            path="diffusers/models/transformers/transformer_example.py",
        ),
        # the checkpointed call passes `**kwargs` built elsewhere: cannot tell
        Valid(
            """
            class MyBlock(nn.Module):
                def forward(self, hidden_states, temb, **kwargs):
                    if self.gradient_checkpointing:
                        hidden_states = torch.utils.checkpoint.checkpoint(self.resnet, hidden_states, **kwargs)
                    else:
                        hidden_states = self.resnet(hidden_states, temb)
                    return hidden_states
            """,
            path="diffusers/models/unets/unet_example.py",
        ),
        # one call per block type on each side: no one pair to compare
        Valid(
            """
            class MyUNet(ModelMixin):
                def _down_encode(self, x, clip):
                    if torch.is_grad_enabled() and self.gradient_checkpointing:
                        for block in self.down_blocks:
                            if isinstance(block, AttnBlock):
                                x = self._gradient_checkpointing_func(block, x, clip)
                            else:
                                x = self._gradient_checkpointing_func(block)
                    else:
                        for block in self.down_blocks:
                            if isinstance(block, AttnBlock):
                                x = block(x, clip)
                            else:
                                x = block(x)
                    return x
            """,
            path="diffusers/models/unets/unet_example.py",
        ),
        # the custom forward passes the value on from its closure
        Valid(
            """
            class MyDownBlock(nn.Module):
                def forward(self, hidden_states, temb=None, scale=1.0):
                    for resnet in self.resnets:
                        if self.training and self.gradient_checkpointing:

                            def create_custom_forward(module):
                                def custom_forward(*inputs):
                                    return module(*inputs, scale=scale)

                                return custom_forward

                            hidden_states = torch.utils.checkpoint.checkpoint(
                                create_custom_forward(resnet), hidden_states, temb, use_reentrant=False
                            )
                        else:
                            hidden_states = resnet(hidden_states, temb, scale=scale)
                    return hidden_states
            """,
            path="diffusers/models/unets/unet_example.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            class MyTransformer(ModelMixin):
                def forward(self, hidden_states, encoder_hidden_states, temb, image_rotary_emb, joint_attention_kwargs=None):
                    for index_block, block in enumerate(self.transformer_blocks):
                        if torch.is_grad_enabled() and self.gradient_checkpointing:
                            encoder_hidden_states, hidden_states = self._gradient_checkpointing_func(
                                block, hidden_states, encoder_hidden_states, temb, image_rotary_emb,
                            )
                        else:
                            encoder_hidden_states, hidden_states = block(
                                hidden_states=hidden_states,
                                encoder_hidden_states=encoder_hidden_states,
                                temb=temb,
                                image_rotary_emb=image_rotary_emb,
                                joint_attention_kwargs=joint_attention_kwargs,
                            )
                    return hidden_states
            """,
            message=(
                "`joint_attention_kwargs` reaches `block` when gradient checkpointing is off but not through "
                "`self._gradient_checkpointing_func(...)`, so training with checkpointing ignores it; pass it in the "
                "checkpointed call too."
            ),
            path="diffusers/models/transformers/transformer_example.py",
        ),
        # the older spelling: `create_custom_forward` and `**ckpt_kwargs`
        Invalid(
            """
            import torch

            class MyDownBlock(nn.Module):
                def forward(self, hidden_states, temb=None, scale=1.0):
                    lora_scale = scale
                    for resnet in self.resnets:
                        if self.training and self.gradient_checkpointing:

                            def create_custom_forward(module):
                                def custom_forward(*inputs):
                                    return module(*inputs)

                                return custom_forward

                            ckpt_kwargs: Dict[str, Any] = {"use_reentrant": False} if is_torch_version(">=", "1.11.0") else {}
                            hidden_states = torch.utils.checkpoint.checkpoint(
                                create_custom_forward(resnet), hidden_states, temb, **ckpt_kwargs
                            )
                        else:
                            hidden_states = resnet(hidden_states, temb, scale=lora_scale)
                    return hidden_states
            """,
            message=(
                "`lora_scale` reaches `resnet` when gradient checkpointing is off but not through "
                "`torch.utils.checkpoint.checkpoint(...)`, so training with checkpointing ignores it; pass it in the "
                "checkpointed call too."
            ),
            path="diffusers/models/unets/unet_example.py",
        ),
        # a conditional expression, the layer checkpointed through `__call__`
        Invalid(
            """
            class MyTransformer(ModelMixin):
                def forward(self, x, x_mask, x_freqs, adaln_input):
                    for layer in self.layers:
                        x = (
                            self._gradient_checkpointing_func(layer.__call__, x, x_freqs, adaln_input)
                            if torch.is_grad_enabled() and self.gradient_checkpointing
                            else layer(x, x_mask, x_freqs, adaln_input)
                        )
                    return x
            """,
            message=(
                "`x_mask` reaches `layer` when gradient checkpointing is off but not through "
                "`self._gradient_checkpointing_func(...)`, so training with checkpointing ignores it; pass it in the "
                "checkpointed call too."
            ),
            path="diffusers/models/transformers/transformer_example.py",
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            if definition.is_class or not isinstance(definition.node, cst.FunctionDef):
                continue
            function = definition.node
            reported: set[str] = set()
            for branches in _alternatives(function):
                for i, branch in enumerate(branches):
                    others = [c for j, other in enumerate(branches) if j != i for c in _calls(other)]
                    for checkpointed in self._checkpointed_calls(function, branch):
                        for value in self._dropped(checkpointed, others):
                            if value in reported:
                                continue
                            reported.add(value)
                            message = self.message.format(
                                value=value, module=_code(checkpointed.module), func=call_name(checkpointed.call)
                            )
                            self.report(checkpointed.call, message, symbol=value, scope=definition.qualname)

    def _checkpointed_calls(self, function: cst.FunctionDef, branch: cst.CSTNode) -> list[_Checkpointed]:
        """The checkpointed calls of `branch` whose module and arguments can be read, one per module: a module
        checkpointed at several places of the branch (one per block type, say) has no one partner to compare."""
        found: list[_Checkpointed | None] = []
        modules: list[str] = []
        for call in _calls(branch):
            if not is_checkpoint_call(self.context, call) or not call.args:
                continue
            first = call.args[0]
            if first.keyword is not None or first.star:
                continue
            module, passed, wrapper = first.value, list(call.args[1:]), None
            if isinstance(module, cst.Call):
                # `create_custom_forward(module)`, `create_custom_forward(module, return_dict=False)`
                wrapper = call_name(module)
                inner = module.args[0] if module.args else None
                if wrapper is None or not wrapper.endswith("custom_forward") or inner is None:
                    continue
                if inner.keyword is not None or inner.star:
                    continue
                passed.extend(module.args[1:])
                module = inner.value
            if isinstance(module, cst.Attribute) and module.attr.value in ("__call__", "forward"):
                module = module.value  # `block.__call__`: the same arguments reach `block`
            if not isinstance(module, (cst.Name, cst.Attribute, cst.Subscript)):
                continue
            modules.append(_code(module))
            reads = self._reads(function, passed)
            if reads is not None and wrapper is not None:
                reads |= self._wrapper_reads(function, wrapper)
            found.append(None if reads is None else _Checkpointed(call, module, reads))
        return [c for c in found if c is not None and modules.count(_code(c.module)) == 1]

    @staticmethod
    def _reads(function: cst.FunctionDef, args: list[cst.Arg]) -> set[str] | None:
        """The dotted names the checkpointed call's arguments read; None when they unpack what cannot be read."""
        reads: set[str] = set()
        for arg in args:
            if arg.star == "**" and isinstance(arg.value, cst.Name):
                values = _dict_literal_values(function, arg.value.value)
                if values is None:
                    return None
                for value in values:
                    reads |= _chains(value)[0]
                continue
            if arg.star:
                return None
            reads |= _chains(arg.value)[0]
        return reads

    @staticmethod
    def _wrapper_reads(function: cst.FunctionDef, name: str) -> set[str]:
        """Names that a `create_custom_forward` defined in `function` reads: its closure may pass values on."""
        reads: set[str] = set()
        for nested in walk.nodes(function.body, cst.FunctionDef):
            if nested.name.value == name:
                reads |= _chains(nested.body)[0]
        return reads

    def _dropped(self, checkpointed: _Checkpointed, others: list[cst.Call]) -> list[str]:
        """Values that the one direct call of the module among `others` (the calls of the other branches) passes
        and the checkpointed call does not."""
        module = _code(checkpointed.module)
        direct = [c for c in others if _code(c.func) == module]
        if len(direct) != 1:
            return []  # none, or several under further conditions: which one pairs with the checkpointed call?
        values = [
            _code(a.value)
            for a in direct[0].args
            if not a.star and not _is_constant(a.value) and self._is_dropped(a.value, checkpointed.reads)
        ]
        return list(dict.fromkeys(values))

    def _is_dropped(self, value: cst.BaseExpression, reads: set[str]) -> bool:
        _, outer = _chains(value)
        relevant = [name for name in outer if self._is_variable(name)]
        if not relevant:
            return False
        for name in relevant:
            parts = name.split(".")
            prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)} - {"self"}
            if prefixes & reads:
                return False
        return True

    def _is_variable(self, name: str) -> bool:
        """Whether a dotted name is the caller's value: not a constant, an imported module or a builtin."""
        head = name.partition(".")[0]
        if name in _CONSTANT_NAMES:
            return False
        if head != "self" and (head in self.context.imports or head in _BUILTINS):
            return False
        return True


def _alternatives(function: cst.FunctionDef) -> list[list[cst.CSTNode]]:
    """The mutually exclusive branches of each `if`/`elif`/`else` chain (statement lists) and each `a if c else b`
    (expressions) of `function`."""
    found: list[list[cst.CSTNode]] = [list(branches) for branches in if_chains(function)]
    found.extend([e.body, e.orelse] for e in walk.own_nodes(function, cst.IfExp))
    return found


def _calls(branch: cst.CSTNode) -> list[cst.Call]:
    """The calls of a branch, not those of a function or lambda defined in it."""
    if isinstance(branch, cst.BaseSuite):
        return walk.own_nodes(branch, cst.Call)
    nested = {id(n) for lam in walk.nodes(branch, cst.Lambda) for n in walk.walk(lam)}
    return [c for c in walk.nodes(branch, cst.Call) if id(c) not in nested]


def _dict_literal_values(function: cst.FunctionDef, name: str) -> list[cst.BaseExpression] | None:
    """The values of the dict literals `name` is bound to in `function` (`{"use_reentrant": False} if … else {}`),
    and of `name[key] = value`; None when it is bound otherwise, updated, or not bound here."""
    values: list[cst.BaseExpression] = []
    bound = False
    for node in walk.own_nodes(function, cst.Assign) + walk.own_nodes(function, cst.AnnAssign):
        targets = [t.target for t in node.targets] if isinstance(node, cst.Assign) else [node.target]
        for target in targets:
            if isinstance(target, cst.Subscript) and isinstance(target.value, cst.Name) and target.value.value == name:
                if node.value is None:
                    return None
                values.append(node.value)
            elif name in target_names(target):
                literal = _dict_literals(node.value)
                if literal is None or len(targets) != 1 or not isinstance(target, cst.Name):
                    return None
                values.extend(literal)
                bound = True
    for attribute in walk.own_nodes(function, cst.Attribute):
        if isinstance(attribute.value, cst.Name) and attribute.value.value == name:
            return None  # `ckpt_kwargs.update(...)`
    return values if bound else None


def _dict_literals(node: cst.BaseExpression | None) -> list[cst.BaseExpression] | None:
    if isinstance(node, cst.IfExp):
        body, orelse = _dict_literals(node.body), _dict_literals(node.orelse)
        return None if body is None or orelse is None else body + orelse
    if isinstance(node, cst.Dict):
        values = []
        for element in node.elements:
            if not isinstance(element, cst.DictElement):
                return None
            values.append(element.value)
        return values
    return None
