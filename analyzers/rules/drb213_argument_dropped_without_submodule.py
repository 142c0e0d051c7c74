"""DRB213: a model's optional `forward` argument is read only when an optional submodule exists, and dropped otherwise."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.matchers import names_read, parameters


#: base classes of the models a user calls directly
MODEL_BASES = frozenset({"ModelMixin"})


def _submodule_present(test: cst.BaseExpression) -> str | None:
    """`self.x is not None` (alone or as a conjunct of an `and`): the dotted `self.x`; None for any other test."""
    if isinstance(test, cst.BooleanOperation) and isinstance(test.operator, cst.And):
        return _submodule_present(test.left) or _submodule_present(test.right)
    if isinstance(test, cst.Comparison) and len(test.comparisons) == 1:
        target = test.comparisons[0]
        owner = dotted_name(test.left) or ""
        if (
            owner.startswith("self.")
            and owner.count(".") == 1
            and isinstance(target.operator, cst.IsNot)
            and isinstance(target.comparator, cst.Name)
            and target.comparator.value == "None"
        ):
            return owner
    return None


def _insists_on(branch: cst.If, name: str) -> bool:
    """Whether the body of `branch` raises when `name` is None: `if name is None: raise ValueError(...)`."""
    for inner in walk.nodes(branch.body, cst.If):
        test = inner.test
        if not (isinstance(test, cst.Comparison) and len(test.comparisons) == 1):
            continue
        target = test.comparisons[0]
        if (
            isinstance(test.left, cst.Name)
            and test.left.value == name
            and isinstance(target.operator, cst.Is)
            and isinstance(target.comparator, cst.Name)
            and target.comparator.value == "None"
            and walk.nodes(inner.body, cst.Raise)
        ):
            return True
    return False


class ArgumentDroppedWithoutSubmodule(Rule):
    """
    ## What it does
    Checks the `forward` of `ModelMixin` classes for an optional argument (default `None`, such as
    `class_labels`) that is read only inside `if self.<module> is not None:` for an optional submodule
    (`self.class_embedding`), where that branch raises when the argument is missing (`if class_labels is
    None: raise ValueError(...)`) but nothing raises when the argument is given and the submodule is absent.

    ## Why is this bad?
    When the model was built without the submodule (no `num_class_embeds` in its config), the argument is
    accepted and thrown away: a caller who passes class labels to an unconditional UNet gets unconditional
    output and no error, and cannot tell that the conditioning never happened. diffusers fixed this in
    `UNet2DModel`, which now raises "class_embedding needs to be initialized in order to use class
    conditioning".

    ## Example
    ```python
    def forward(self, sample, timestep, class_labels=None):
        emb = self.time_embedding(self.time_proj(timestep))
        if self.class_embedding is not None:
            emb = emb + self.class_embedding(class_labels)
        return self.body(sample, emb)
    ```

    Use instead:
    ```python
    def forward(self, sample, timestep, class_labels=None):
        emb = self.time_embedding(self.time_proj(timestep))
        if self.class_embedding is not None:
            emb = emb + self.class_embedding(class_labels)
        elif class_labels is not None:
            raise ValueError("class_embedding needs to be initialized in order to use class conditioning")
        return self.body(sample, emb)
    ```

    ## Known problems
    Only `forward` methods of `ModelMixin` classes under `models/`, and only a `self.<name> is not None` test
    (alone or in an `and`) are recognised; an argument read under a config flag (`if self.config.use_x:`) is
    not followed. The branch must insist on the argument (raise when it is None): an optional
    micro-conditioning that a model variant simply does not use (`ofs` of CogVideoX 1.0) is left alone, as
    are building blocks (`nn.Module`s) that skip inputs for the layers they were built without.

    ## References
    - huggingface/diffusers#13656, pattern 2
    - huggingface/diffusers#5401 (`UNet2DModel.forward` silently ignored `class_labels`)
    """

    code = "DRB213"
    pattern = 2
    severity = "warning"
    message = (
        "`{name}` is read only when `{module}` is not None, so a model built without it silently ignores the "
        "`{name}` it is given; raise a `ValueError` when `{name}` is passed and `{module}` is None."
    )
    REQUIRES_ANY = ("is not None",)
    PATHS = ("/models/",)

    VALID = [
        Valid(
            """
            class MyUNet(ModelMixin):
                def forward(self, sample, timestep, class_labels=None, attention_mask=None):
                    emb = self.time_embedding(self.time_proj(timestep))
                    if self.class_embedding is not None:
                        if class_labels is None:
                            raise ValueError("class_labels should be provided when doing class conditioning")
                        emb = emb + self.class_embedding(class_labels)
                    elif self.class_embedding is None and class_labels is not None:
                        raise ValueError("class_embedding needs to be initialized in order to use class conditioning")
                    return self.body(sample, emb, attention_mask=attention_mask)
            """,
            path="diffusers/models/unets/unet_2d.py",
        ),
        Valid(
            # an optional micro-conditioning that a model variant does not use: nothing insists on it
            """
            class MyVideoTransformer(ModelMixin):
                def forward(self, hidden_states, timestep, ofs=None):
                    emb = self.time_embedding(timestep)
                    if self.ofs_embedding is not None:
                        emb = emb + self.ofs_embedding(ofs)
                    return self.body(hidden_states, emb)
            """,
            path="diffusers/models/transformers/my_transformer.py",
        ),
        Valid(
            # a building block, not a model a user calls
            """
            class MyBlock(nn.Module):
                def forward(self, hidden_states, encoder_hidden_states=None):
                    if self.attn2 is not None:
                        if encoder_hidden_states is None:
                            raise ValueError("cross-attention needs `encoder_hidden_states`")
                        hidden_states = hidden_states + self.attn2(hidden_states, encoder_hidden_states)
                    return hidden_states
            """,
            path="diffusers/models/attention.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            class MyUNet(ModelMixin):
                def forward(self, sample, timestep, class_labels=None, return_dict=True):
                    emb = self.time_embedding(self.time_proj(timestep))
                    if self.class_embedding is not None:
                        if class_labels is None:
                            raise ValueError("class_labels should be provided when doing class conditioning")
                        emb = emb + self.class_embedding(class_labels)
                    return self.body(sample, emb)
            """,
            path="diffusers/models/unets/unet_2d.py",
            message=(
                "`class_labels` is read only when `self.class_embedding` is not None, so a model built without it "
                "silently ignores the `class_labels` it is given; raise a `ValueError` when `class_labels` is passed "
                "and `self.class_embedding` is None."
            ),
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef) or function.name.value != "forward":
                continue
            if not definition.qualname.endswith(".forward") or definition.qualname.count(".") != 1:
                continue  # a method of a top-level class only
            optional = [
                p.name.value
                for p in parameters(function)
                if isinstance(p.default, cst.Name) and p.default.value == "None"
            ]
            if not optional:
                continue
            if not self._is_model(definition.qualname.split(".")[0]):
                continue
            gates: list[tuple[cst.If, str, set[int], set[int]]] = []
            for branch in walk.own_nodes(function, cst.If):
                module = _submodule_present(branch.test)
                if module is None:
                    continue
                body = {id(n) for n in walk.walk(branch.body)}
                rest = {id(n) for n in walk.walk(branch.orelse)} if branch.orelse is not None else set()
                gates.append((branch, module, body, rest))
            if not gates:
                continue
            reads: dict[str, list[cst.Name]] = {}
            for name in names_read(function.body):
                reads.setdefault(name.value, []).append(name)
            for param in optional:
                found = reads.get(param)
                if not found:
                    continue  # never read: another rule's finding
                for branch, module, body, _ in gates:
                    if all(id(n) in body for n in found) and _insists_on(branch, param):
                        self.report(
                            branch,
                            self.message.format(name=param, module=module),
                            symbol=param,
                            scope=definition.qualname,
                        )
                        break

    def _is_model(self, class_name: str) -> bool:
        """Whether the top-level class `class_name` is a `ModelMixin` (a user-facing model, not a building block)."""
        for cls in self.context.classes:
            if cls.qualname == class_name and isinstance(cls.node, cst.ClassDef):
                return self.context.inherits_from(cls.node, MODEL_BASES)
        return False
