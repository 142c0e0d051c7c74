"""DRB708: a mapping's keys are checked by comparing a list to a list literal, so a valid mapping in another order
is rejected."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid


def _keys_list(expr: cst.BaseExpression) -> str | None:
    """The mapping of `list(mapping.keys())`; None for anything else."""
    if not (isinstance(expr, cst.Call) and isinstance(expr.func, cst.Name) and expr.func.value == "list"):
        return None
    if len(expr.args) != 1:
        return None
    inner = expr.args[0].value
    if (
        isinstance(inner, cst.Call)
        and isinstance(inner.func, cst.Attribute)
        and inner.func.attr.value == "keys"
        and not inner.args
    ):
        return cst.Module([]).code_for_node(inner.func.value)
    return None


def _string_list(expr: cst.BaseExpression) -> bool:
    return (
        isinstance(expr, cst.List)
        and len(expr.elements) >= 2
        and all(isinstance(e.value, cst.SimpleString) for e in expr.elements)
    )


class KeyCheckDependsOnOrder(Rule):
    """
    ## What it does
    Checks for `list(mapping.keys())` (directly, or through a name assigned from it) compared with `==` or
    `!=` to a list literal of two or more strings: `if keys != ["image_proj", "ip_adapter"]: raise ...`.

    ## Why is this bad?
    A list comparison is ordered; a dictionary's keys come in insertion order, which depends on how the
    checkpoint was written. A state dict with the right keys saved in the other order is rejected with an
    error that says the keys are missing, and one with extra keys is rejected too while a set comparison
    would say exactly which key is missing.

    ## Example
    ```python
    keys = list(state_dict.keys())
    if keys != ["image_proj", "ip_adapter"]:
        raise ValueError("Required keys are (`image_proj` and `ip_adapter`) missing from the state dict.")
    ```

    Use instead:
    ```python
    if not {"image_proj", "ip_adapter"} <= state_dict.keys():
        raise ValueError("Required keys are (`image_proj` and `ip_adapter`) missing from the state dict.")
    ```

    ## Known problems
    Only `list(...)` of a mapping's keys, in the same function, is recognised; `sorted(...)` is order-free and
    left alone.

    ## References
    - huggingface/diffusers#13656, pattern 7
    - huggingface/diffusers#10095 (`load_ip_adapter` rejected IP-Adapter state dicts whose keys were in another
      order)
    """

    code = "DRB708"
    pattern = 7
    severity = "warning"
    message = (
        "`{check}` compares the keys of `{mapping}` in order, so a valid mapping whose keys come in another order "
        "(or with extra keys) is rejected; compare sets: `{expected} <= {mapping}.keys()`."
    )
    REQUIRES_ANY = (".keys()",)

    VALID = [
        Valid(
            """
            def load(state_dict):
                keys = sorted(state_dict.keys())
                if keys != ["image_proj", "ip_adapter"]:
                    raise ValueError("missing keys")
                if not {"image_proj", "ip_adapter"} <= state_dict.keys():
                    raise ValueError("missing keys")
                names = list(state_dict.keys())
                if names != ["only"]:
                    raise ValueError("one key expected")
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            def load_ip_adapter(state_dict):
                keys = list(state_dict.keys())
                if keys != ["image_proj", "ip_adapter"]:
                    raise ValueError("Required keys are (`image_proj` and `ip_adapter`) missing from the state dict.")
            """,
            message=(
                '`keys != ["image_proj", "ip_adapter"]` compares the keys of `state_dict` in order, so a valid '
                "mapping whose keys come in another order (or with extra keys) is rejected; compare sets: "
                '`{"image_proj", "ip_adapter"} <= state_dict.keys()`.'
            ),
        ),
        Invalid(
            """
            def check(config):
                assert list(config.keys()) == ["down", "mid", "up"], "bad config"
            """
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            lists: dict[str, str] = {}
            for assign in walk.own_nodes(function, cst.Assign):
                mapping = _keys_list(assign.value)
                if mapping is not None and len(assign.targets) == 1:
                    target = assign.targets[0].target
                    if isinstance(target, cst.Name):
                        lists[target.value] = mapping
            for comparison in walk.own_nodes(function, cst.Comparison):
                if len(comparison.comparisons) != 1:
                    continue
                pair = comparison.comparisons[0]
                if not isinstance(pair.operator, (cst.Equal, cst.NotEqual)):
                    continue
                for side, other in ((comparison.left, pair.comparator), (pair.comparator, comparison.left)):
                    if not _string_list(other):
                        continue
                    mapping = _keys_list(side)
                    if mapping is None and isinstance(side, cst.Name):
                        mapping = lists.get(side.value)
                    if mapping is None:
                        continue
                    code = self.context.module.code_for_node
                    elements = ", ".join(code(e.value) for e in cst.ensure_type(other, cst.List).elements)
                    message = self.message.format(
                        check=" ".join(code(comparison).split()), mapping=mapping, expected="{" + elements + "}"
                    )
                    self.report(comparison, message, symbol=mapping, scope=definition.qualname)
                    break
