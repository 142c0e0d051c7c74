"""DRB510: a buffer built in float32 is added to the activations as it is, promoting them to float32."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.matchers import string_value


ARITHMETIC = (cst.Add, cst.Subtract, cst.Multiply)


def _float32(value: cst.BaseExpression) -> bool:
    """Whether `value` is built in float32: `x.float()`, `...(dtype=torch.float32)`, `x.to(torch.float32)`."""
    for call in walk.nodes(value, cst.Call):
        if isinstance(call.func, cst.Attribute) and call.func.attr.value == "float" and not call.args:
            return True
        if any(dotted_name(arg.value) in ("torch.float32", "torch.float") for arg in call.args):
            return True
    return False


def _float32_buffers(cls: cst.ClassDef) -> set[str]:
    """Names of the buffers `cls` registers with a float32 value."""
    found: set[str] = set()
    for call in walk.nodes(cls, cst.Call):
        if dotted_name(call.func) != "self.register_buffer" or len(call.args) < 2:
            continue
        name = string_value(call.args[0].value)
        if name and _float32(call.args[1].value):
            found.add(name)
    return found


class Float32BufferPromotesActivations(Rule):
    """
    ## What it does
    Checks model classes that register a buffer built in float32 (`temp_pos_embed.float()`,
    `torch.tensor(..., dtype=torch.float32)`) and then add it to the activations as it is:
    `hidden_states = hidden_states + self.temp_pos_embed`.

    ## Why is this bad?
    A non-persistent buffer is not in the checkpoint, so loading the model in half precision can leave it
    in float32. Adding it to `float16`/`bfloat16` hidden states promotes them to float32, and the next layer,
    whose weights are half precision, fails with "expected mat1 and mat2 to have the same dtype" (or runs in
    the wrong precision).

    ## Example
    ```python
    self.register_buffer("temp_pos_embed", temp_pos_embed.float().unsqueeze(0), persistent=False)
    ...
    hidden_states = hidden_states + self.temp_pos_embed
    ```

    Use instead:
    ```python
    hidden_states = hidden_states + self.temp_pos_embed.to(hidden_states.dtype)
    ```

    ## Known problems
    Only the assignment `x = x + self.<buffer>` (or `-`, `*`, either order) in a method of the class that
    registers the buffer is matched; a buffer read through another name, or an expression cast as a
    whole afterwards (`(x + self.pos_embed).to(x.dtype)`), is left alone.

    ## References
    - huggingface/diffusers#13656, pattern 5
    - huggingface/diffusers#11139 (Latte added its float32 `temp_pos_embed` to half-precision hidden states)
    """

    code = "DRB510"
    pattern = 5
    severity = "warning"
    message = (
        "`self.{buffer}` is registered in float32 and added to `{tensor}` as it is, which promotes half-precision "
        "activations to float32; cast it with `self.{buffer}.to({tensor}.dtype)`."
    )
    REQUIRES_ANY = ("register_buffer",)
    PATHS = ("/models/",)

    VALID = [
        Valid(
            """
            import torch

            class VideoModel(ModelMixin):
                def __init__(self, table):
                    self.register_buffer("frame_embed", table.float(), persistent=False)
                    self.register_buffer("scale", torch.ones(1))

                def forward(self, hidden_states):
                    hidden_states = hidden_states + self.frame_embed.to(hidden_states.dtype)
                    hidden_states = hidden_states * self.scale
                    return (hidden_states + self.frame_embed).to(hidden_states.dtype)
            """,
            path="diffusers/models/transformers/video_model.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            import torch

            class VideoModel(ModelMixin):
                def __init__(self, table):
                    self.register_buffer("frame_embed", torch.tensor(table, dtype=torch.float32), persistent=False)

                def forward(self, hidden_states):
                    hidden_states = self.frame_embed + hidden_states
                    return hidden_states
            """,
            path="diffusers/models/transformers/video_model.py",
            message=(
                "`self.frame_embed` is registered in float32 and added to `hidden_states` as it is, which promotes "
                "half-precision activations to float32; cast it with `self.frame_embed.to(hidden_states.dtype)`."
            ),
        ),
    ]

    def check(self) -> None:
        for cls in walk.nodes(self.context.module, cst.ClassDef):
            buffers = _float32_buffers(cls)
            if not buffers:
                continue
            for assign in walk.nodes(cls, cst.Assign):
                value = assign.value
                if (
                    len(assign.targets) != 1
                    or not isinstance(assign.targets[0].target, cst.Name)
                    or not isinstance(value, cst.BinaryOperation)
                    or not isinstance(value.operator, ARITHMETIC)
                ):
                    continue
                tensor = assign.targets[0].target.value
                sides = [value.left, value.right]
                names = [s.value for s in sides if isinstance(s, cst.Name)]
                buffer = next(
                    (name.split(".", 1)[1] for s in sides if (name := dotted_name(s) or "").startswith("self.")), None
                )
                if names == [tensor] and buffer in buffers:
                    self.report(assign, self.message.format(buffer=buffer, tensor=tensor), symbol=buffer)
