"""DRB312: a context-parallel plan shards the text sequence but leaves the text padding mask whole."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.matchers import names_read, parameters, string_value


PLAN = "_cp_plan"
TEXT_STATES = "encoder_hidden_states"
SPLIT_INPUT = "ContextParallelInput"


def _plan(cls: cst.ClassDef) -> cst.Dict | None:
    """The dict literal bound to `_cp_plan` in the class body."""
    for statement in cls.body.body if isinstance(cls.body, cst.IndentedBlock) else ():
        if not isinstance(statement, cst.SimpleStatementLine):
            continue
        for small in statement.body:
            if isinstance(small, cst.Assign) and any(
                isinstance(t.target, cst.Name) and t.target.value == PLAN for t in small.targets
            ):
                value: cst.BaseExpression | None = small.value
            elif (
                isinstance(small, cst.AnnAssign) and isinstance(small.target, cst.Name) and small.target.value == PLAN
            ):
                value = small.value
            else:
                continue
            return value if isinstance(value, cst.Dict) else None
    return None


def _split_streams(plan: cst.Dict) -> set[str]:
    """The prefixes of the text streams the plan splits: `""` for `"encoder_hidden_states": ContextParallelInput(...)`,
    `"audio_"` for `"audio_encoder_hidden_states": ...`."""
    found: set[str] = set()
    for element in walk.nodes(plan, cst.DictElement):
        key = string_value(element.key) or ""
        if key.endswith(TEXT_STATES) and isinstance(element.value, cst.Call):
            if (dotted_name(element.value.func) or "").rpartition(".")[2] == SPLIT_INPUT:
                found.add(key.removesuffix(TEXT_STATES))
    return found


def _planned(plan: cst.Dict) -> set[str]:
    return {value for node in walk.nodes(plan, cst.SimpleString) if (value := string_value(node)) is not None}


def _text_mask(name: str, streams: set[str]) -> bool:
    """Whether `name` is the padding mask of a split text stream: `encoder_attention_mask`,
    `encoder_hidden_states_mask` (stream `""`), `audio_encoder_attention_mask` (stream `"audio_"`)."""
    prefix, found, rest = name.partition("encoder_")
    return bool(found) and rest.endswith("mask") and prefix in streams


class ContextParallelPlanLeavesTextMaskWhole(Rule):
    """
    ## What it does
    Checks model classes whose context-parallel plan (`_cp_plan`) splits `encoder_hidden_states` along the
    sequence, while their `forward` takes and uses a text padding mask (`encoder_hidden_states_mask`,
    `encoder_attention_mask`, ...) that no entry of the plan names.

    ## Why is this bad?
    Under context parallelism each rank holds a shard of the text tokens, but the mask still describes the
    whole text sequence. A joint mask built from it (`torch.cat([text_mask, image_ones], dim=1)`) then has
    the wrong length for the local keys, or, once the keys are gathered (`[txt_r0, img_r0, txt_r1, ...]`),
    masks the wrong positions: padding is attended to and real tokens are dropped, only when the model runs
    sharded. QwenImage's transformer split the text states but not `encoder_hidden_states_mask` until the
    mask was added to its plan and built per rank.

    ## Example
    ```python
    class MyTransformer(ModelMixin):
        _cp_plan = {
            "transformer_blocks.0": {
                "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False),
                "encoder_hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False),
            },
        }

        def forward(self, hidden_states, encoder_hidden_states, encoder_hidden_states_mask=None): ...
    ```

    Use instead:
    ```python
            "transformer_blocks.*": {
                "encoder_hidden_states_mask": ContextParallelInput(split_dim=1, expected_dims=2, split_output=False),
            },
    ```

    ## Known problems
    Only a plan written as a dict literal in the class body is read, and only `forward` parameters named
    `<stream>encoder_...mask` count as the mask of a split `<stream>encoder_hidden_states`
    (`audio_encoder_attention_mask` goes with `audio_encoder_hidden_states`). A mask that the
    model turns into something shard-independent before use (per-sample lengths) is reported as well.

    ## References
    - huggingface/diffusers#13656, pattern 3
    - huggingface/diffusers#13756 (QwenImage: global text mask against the sharded sequence)
    """

    code = "DRB312"
    pattern = 3
    severity = "warning"
    message = (
        "`_cp_plan` splits `encoder_hidden_states` along the sequence but not `{mask}`, so under context "
        "parallelism the mask no longer lines up with the text tokens each rank attends to; add `{mask}` to "
        "the plan (`ContextParallelInput(split_dim=1, expected_dims=2, split_output=False)`) or build the "
        "mask per rank."
    )
    REQUIRES_ANY = (PLAN,)
    PATHS = ("/models/",)

    _PLAN_HEAD = """
            class MyTransformer(ModelMixin):
                _cp_plan = {
                    "transformer_blocks.0": {
                        "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False),
                        "encoder_hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False),
                    },
    """

    VALID = [
        Valid(
            _PLAN_HEAD
            + """
                    "transformer_blocks.*": {
                        "encoder_hidden_states_mask": ContextParallelInput(split_dim=1, expected_dims=2, split_output=False),
                    },
                }

                def forward(self, hidden_states, encoder_hidden_states, encoder_hidden_states_mask=None):
                    return self.blocks(hidden_states, encoder_hidden_states, encoder_hidden_states_mask)
            """,
            path="diffusers/models/transformers/transformer_example.py",
        ),
        Valid(
            # the text states are not split: every rank sees the whole text and its whole mask
            """
            class MyTransformer(ModelMixin):
                _cp_plan = {
                    "blocks.0": {"hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False)},
                }

                def forward(self, hidden_states, encoder_hidden_states, encoder_attention_mask=None):
                    return self.blocks(hidden_states, encoder_hidden_states, encoder_attention_mask)
            """,
            path="diffusers/models/transformers/transformer_example.py",
        ),
    ]
    INVALID = [
        Invalid(
            _PLAN_HEAD
            + """
                }

                def forward(self, hidden_states, encoder_hidden_states, encoder_hidden_states_mask=None):
                    image_mask = torch.ones(hidden_states.shape[:2], dtype=torch.bool)
                    mask = torch.cat([encoder_hidden_states_mask, image_mask], dim=1)
                    return self.blocks(hidden_states, encoder_hidden_states, attention_mask=mask)
            """,
            path="diffusers/models/transformers/transformer_example.py",
            message=(
                "`_cp_plan` splits `encoder_hidden_states` along the sequence but not `encoder_hidden_states_mask`, "
                "so under context parallelism the mask no longer lines up with the text tokens each rank attends "
                "to; add `encoder_hidden_states_mask` to the plan (`ContextParallelInput(split_dim=1, "
                "expected_dims=2, split_output=False)`) or build the mask per rank."
            ),
        ),
    ]

    def check(self) -> None:
        for cls in self.context.classes:
            node = cls.node
            if not isinstance(node, cst.ClassDef):
                continue
            plan = _plan(node)
            streams = _split_streams(plan) if plan is not None else set()
            if plan is None or not streams:
                continue
            forward = self.context.methods(cls).get("forward")
            if forward is None:
                continue
            planned = _planned(plan)
            read = {n.value for n in names_read(forward.body)}
            for param in parameters(forward):
                name = param.name.value
                if _text_mask(name, streams) and name not in planned and name in read:
                    message = self.message.format(mask=name)
                    self.report(param, message, symbol=name, scope=f"{cls.qualname}.forward")
