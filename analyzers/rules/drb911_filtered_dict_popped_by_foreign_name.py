"""DRB911: `d.pop(name)` without a default, for names taken from another sequence, on a filtered dict."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import names_read, parameters, target_names


#: methods whose result is still "the same sequence" for the symbol: `seq.split("->")`, `d.keys()`
_VIEW_METHODS = frozenset({"split", "keys", "values", "items", "copy", "strip"})


def _filtered_dicts(function: cst.FunctionDef) -> set[str]:
    """Names bound to a dict comprehension with an `if` filter, `{k: v for k, v in d.items() if test(v)}`, and to
    nothing else in the function (not a parameter either)."""
    found: set[str] = set()
    bound: dict[str, int] = {p.name.value: 1 for p in parameters(function)}
    for assign in walk.own_nodes(function, cst.Assign):
        for target in assign.targets:
            for name in target_names(target.target):
                bound[name] = bound.get(name, 0) + 1
    for assign in walk.own_nodes(function, cst.Assign):
        value = assign.value
        if not isinstance(value, cst.DictComp):
            continue
        comp: cst.CompFor | None = value.for_in
        filtered = False
        while comp is not None:
            filtered = filtered or bool(comp.ifs)
            comp = comp.inner_for_in
        if filtered:
            for target in assign.targets:
                if isinstance(target.target, cst.Name) and bound.get(target.target.value) == 1:
                    found.add(target.target.value)
    return found


def _derived(function: cst.FunctionDef, mapping: str) -> set[str]:
    """`mapping` and the names assigned from an expression that reads it (`keys = list(mapping)`), transitively."""
    derived = {mapping}
    assigns = walk.own_nodes(function, cst.Assign)
    changed = True
    while changed:
        changed = False
        for assign in assigns:
            if not any(n.value in derived for n in names_read(assign.value)):
                continue
            for target in assign.targets:
                for name in target_names(target.target):
                    if name not in derived:
                        derived.add(name)
                        changed = True
    return derived


def _sequence_symbol(node: cst.BaseExpression) -> str | None:
    """What the loop iterates, named: `self.model_cpu_offload_seq.split("->")` -> `model_cpu_offload_seq`."""
    while True:
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute):
            func: cst.Attribute = node.func
            if func.attr.value in _VIEW_METHODS:
                node = func.value
                continue
            return func.attr.value
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Name):
            if node.func.value in ("reversed", "list", "tuple", "sorted") and node.args:
                node = node.args[0].value
                continue
            return None
        if isinstance(node, cst.Attribute):
            return node.attr.value
        if isinstance(node, cst.Name):
            return node.value
        return None


def _membership_tested(body: cst.CSTNode, mapping: str) -> bool:
    """Whether the loop body tests `... in <mapping>` / `... not in <mapping>` anywhere."""
    for comparison in walk.nodes(body, cst.Comparison):
        for target in comparison.comparisons:
            if isinstance(target.operator, (cst.In, cst.NotIn)) and any(
                n.value == mapping for n in walk.nodes(target.comparator, cst.Name)
            ):
                return True
    return False


class FilteredDictPoppedByForeignName(Rule):
    """
    ## What it does
    Checks for `mapping.pop(name)` with no default inside `for name in <sequence>:`, where `mapping` was built by a
    filtering dict comprehension (`{k: v for k, v in self.components.items() if isinstance(v, nn.Module)}`) and the
    loop iterates something else than `mapping` (`self.model_cpu_offload_seq.split("->")`), with no `name in mapping`
    test in the loop.

    ## Why is this bad?
    The comprehension drops entries (optional components set to `None`, non-module components), while the
    sequence still names them. The first such name raises `KeyError` and the whole call fails: in
    `enable_model_cpu_offload()` every pipeline whose offload sequence names an optional component that was not
    loaded could not be offloaded at all.

    ## Example
    ```python
    modules = {k: v for k, v in self.components.items() if isinstance(v, torch.nn.Module)}
    for name in self.model_cpu_offload_seq.split("->"):
        model = modules.pop(name)
        _, hook = cpu_offload_with_hook(model, device, prev_module_hook=hook)
    ```

    Use instead:
    ```python
    for name in self.model_cpu_offload_seq.split("->"):
        model = modules.pop(name, None)
        if not isinstance(model, torch.nn.Module):
            continue
        _, hook = cpu_offload_with_hook(model, device, prev_module_hook=hook)
    ```

    ## Known problems
    Only dicts built by a comprehension with an `if` in the same function, and bound nowhere else in it, are
    followed, and only `pop` with the
    loop variable itself as its one argument; `mapping[name]` is not checked. A loop that iterates the mapping's
    own keys (directly or through names assigned from it), or tests membership anywhere in its body, and a `pop` inside a `try` block are left alone.

    ## References
    - huggingface/diffusers#13656, pattern 9
    - huggingface/diffusers#5030 (`enable_model_cpu_offload` raised `KeyError` for components missing from the
      filtered dict, fixed in 0.21.1)
    """

    code = "DRB911"
    pattern = 9
    severity = "error"
    message = (
        "`{mapping}` was filtered by its comprehension but `{mapping}.pop({name})` takes every name of "
        "`{sequence}`; a name it dropped raises `KeyError`: use `{mapping}.pop({name}, None)` and skip `None`."
    )
    REQUIRES_ANY = (".pop(",)

    VALID = [
        Valid(
            """
            def enable_model_cpu_offload(self, device):
                modules = {k: v for k, v in self.components.items() if isinstance(v, torch.nn.Module)}
                for name in self.model_cpu_offload_seq.split("->"):
                    model = modules.pop(name, None)
                    if model is None:
                        continue
                    cpu_offload_with_hook(model, device)
            """
        ),
        # the loop iterates the filtered dict itself
        Valid(
            """
            def move(self, device):
                modules = {k: v for k, v in self.components.items() if v is not None}
                for name in list(modules.keys()):
                    modules.pop(name).to(device)
            """
        ),
        # the names come from the filtered dict, through another name
        Valid(
            """
            def split_alphas(state_dict):
                kept = {k: v for k, v in state_dict.items() if v is not None}
                keys = list(kept.keys())
                alphas = {}
                for key in keys:
                    if "alpha" in key:
                        alphas[key] = kept.pop(key)
                return kept, alphas
            """
        ),
        # membership tested first
        Valid(
            """
            def move(self, names, device):
                modules = {k: v for k, v in self.components.items() if v is not None}
                for name in names:
                    if name not in modules:
                        continue
                    modules.pop(name).to(device)
            """
        ),
        # a missing name is handled
        Valid(
            """
            def move(self, names, device):
                modules = {k: v for k, v in self.components.items() if v is not None}
                for name in names:
                    try:
                        modules.pop(name).to(device)
                    except KeyError:
                        pass
            """
        ),
        # an unfiltered dict keeps every key
        Valid(
            """
            def move(self, device):
                modules = {k: v for k, v in self.components.items()}
                for name in self.model_cpu_offload_seq.split("->"):
                    modules.pop(name).to(device)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class DiffusionPipeline:
                def enable_model_cpu_offload(self, device):
                    modules = {k: v for k, v in self.components.items() if isinstance(v, torch.nn.Module)}
                    hook = None
                    for name in self.model_cpu_offload_seq.split("->"):
                        model = modules.pop(name)
                        _, hook = cpu_offload_with_hook(model, device, prev_module_hook=hook)
            """,
            message=(
                "`modules` was filtered by its comprehension but `modules.pop(name)` takes every name of "
                "`model_cpu_offload_seq`; a name it dropped raises `KeyError`: use `modules.pop(name, None)` and "
                "skip `None`."
            ),
        ),
        Invalid(
            """
            def split_weights(state_dict, prefixes):
                kept = {k: v for k, v in state_dict.items() if not k.startswith("ema.")}
                out = []
                for prefix in prefixes:
                    out.append(kept.pop(prefix))
                return out
            """,
            path="diffusers/loaders/example.py",
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            mappings = _filtered_dicts(function)
            if not mappings:
                continue
            guarded = {id(n) for t in walk.own_nodes(function, cst.Try) for n in walk.walk(t.body)}
            for loop in walk.own_nodes(function, cst.For):
                if not isinstance(loop.target, cst.Name):
                    continue
                name = loop.target.value
                iterated = {n.value for n in names_read(loop.iter)}
                sequence = _sequence_symbol(loop.iter)
                if sequence is None:
                    continue
                for call in walk.nodes(loop.body, cst.Call):
                    func = call.func
                    if not (
                        isinstance(func, cst.Attribute)
                        and func.attr.value == "pop"
                        and isinstance(func.value, cst.Name)
                        and func.value.value in mappings
                        and len(call.args) == 1
                        and call.args[0].keyword is None
                        and isinstance(call.args[0].value, cst.Name)
                        and call.args[0].value.value == name
                    ):
                        continue
                    mapping = func.value.value
                    if (
                        iterated & _derived(function, mapping)
                        or id(call) in guarded
                        or _membership_tested(loop.body, mapping)
                    ):
                        continue
                    self.report(
                        call,
                        self.message.format(mapping=mapping, name=name, sequence=sequence),
                        symbol=sequence,
                        scope=definition.qualname,
                    )
