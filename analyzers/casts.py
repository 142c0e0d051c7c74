"""How a pipeline moves and casts a tensor its caller gave: the questions DRB501 and DRB511 share.

A caller's `latents` must reach the denoiser on the execution device and in its dtype. These helpers find the
assignments to such a tensor, the `if latents is None:` branches that make a fresh one, the casts on the way to the
denoiser, and the places where the caller's dtype is handed on to other tensors before the cast.
"""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.matchers import METADATA_ATTRIBUTES, calls, keyword
from analyzers.syntax import dotted_name


def is_dtype_expr(node: cst.BaseExpression) -> bool:
    """`dtype`, `transformer_dtype`, `self.transformer.dtype`, `prompt_embeds.dtype`, `torch.float16`."""
    name = dotted_name(node) or ""
    last = name.rpartition(".")[2]
    return last.endswith("dtype") or name.startswith("torch.") and last.startswith(("float", "bfloat", "half"))


def casts_dtype(call: cst.Call) -> bool:
    """Whether a `.to(...)` call changes the dtype: `.to(dtype)`, `.to(device, dtype)`, `.to(dtype=...)`."""
    if keyword(call, "dtype") is not None:
        return True
    return any(arg.keyword is None and is_dtype_expr(arg.value) for arg in call.args)


def casts_name(function: cst.FunctionDef, names: set[str], until: cst.CSTNode | None = None) -> bool:
    """Whether `function` casts any of `names` (or a tensor built from one) to a dtype somewhere; with `until`,
    only a cast that comes before the end of that node (the first denoiser call) counts: one at the end of the
    loop body, after `scheduler.step`, leaves the first step uncast. A tensor that only reads one's metadata is
    not built from it (`t.expand(latents.shape[0]).to(latents.dtype)` casts the timestep, not the latents)."""
    return first_cast(function, names, until) is not None


def first_cast(function: cst.FunctionDef, names: set[str], until: cst.CSTNode | None = None) -> cst.Call | None:
    """The first cast `casts_name` counts, or None."""
    bounds = walk.span(until) if until is not None else None
    limit = bounds[1] if bounds is not None else None
    for call in calls(function.body):
        func = call.func
        if not isinstance(func, cst.Attribute):
            continue
        if func.attr.value == "to" and casts_dtype(call) or func.attr.value in ("type", "type_as", "half", "bfloat16"):
            read = {n.value for n in tensor_values_read(func.value)}
            if read & names or any("latent" in n for n in read if "latents" in names):
                at = walk.span(call)
                if limit is None or at is None or at[0] < limit:
                    return call
    return None


def tensor_values_read(root: cst.CSTNode) -> list[cst.Name]:
    """The names under `root` whose values it reads: `x` in `x * 2` or `x[0]`, not in `x.shape[0]` or `x.size(0)`."""
    metadata = {
        id(attribute.value)
        for attribute in walk.nodes(root, cst.Attribute)
        if attribute.attr.value in METADATA_ATTRIBUTES and isinstance(attribute.value, cst.Name)
    }
    return [name for name in all_names(root) if id(name) not in metadata]


def dtype_read_before(function: cst.FunctionDef, tensor: str, node: cst.CSTNode) -> cst.Attribute | None:
    """A `<tensor>.dtype` that `function` hands to a call before `node` (`.to(dtype=latents.dtype)`,
    `torch.zeros(..., dtype=latents.dtype)`): there the caller's dtype is passed on to other tensors before the
    tensor itself is cast. Kept in a variable or compared, it is not counted, and neither is a timestep that
    takes it (`t.expand(latents.shape[0]).to(latents.dtype)`): diffusers' sinusoidal timestep embeddings compute
    in float32 whatever the dtype they get."""
    at = order(node)
    for call in calls(function.body):
        if not 0 <= order(call) < at:
            continue
        func = call.func
        is_to = isinstance(func, cst.Attribute) and func.attr.value == "to"
        if is_timestep(func.value if isinstance(func, cst.Attribute) and is_to else call):
            continue
        for arg in call.args:
            value = arg.value
            if (
                (arg.keyword is not None and arg.keyword.value == "dtype" or arg.keyword is None and is_to)
                and isinstance(value, cst.Attribute)
                and value.attr.value == "dtype"
                and isinstance(value.value, cst.Name)
                and value.value.value == tensor
            ):
                return value
    return None


def is_timestep(root: cst.CSTNode) -> bool:
    """Whether `root` reads the loop's timestep: `t`, or a name that mentions `timestep`."""
    return any(n.value == "t" or "timestep" in n.value for n in tensor_values_read(root))


def all_names(root: cst.CSTNode) -> list[cst.Name]:
    """Every `Name` under `root`, attributes included (and the `*args`/`**kwargs` parameters `walk` leaves out)."""
    found = walk.nodes(root, cst.Name)  # a new list
    for params in walk.nodes(root, cst.Parameters):
        for star in (params.star_arg, params.star_kwarg):
            if isinstance(star, cst.Param):
                found.extend(all_names(star))
    return found


def assignments(function: cst.FunctionDef, name: str) -> list[cst.Assign]:
    """Assignments to `name` in source order (not inside nested functions)."""
    body = function.body
    assigns = walk.nodes(body, cst.Assign)
    nested = walk.nodes(body, cst.FunctionDef)
    if nested:
        inner = {id(n) for f in nested for n in walk.nodes(f, cst.Assign)}
        assigns = [a for a in assigns if id(a) not in inner]
    return [a for a in assigns if any(n.value == name for t in a.targets for n in all_names(t.target))]


def order(node: cst.CSTNode) -> int:
    """Where `node` starts in the file's walk (source order for statements)."""
    found = walk.span(node)
    return found[0] if found is not None else -1


def requires_none(test: cst.BaseExpression, tensor: str) -> bool:
    """`<tensor> is None`, or an `and` of tests one of which is."""
    if isinstance(test, cst.BooleanOperation) and isinstance(test.operator, cst.And):
        return requires_none(test.left, tensor) or requires_none(test.right, tensor)
    return (
        isinstance(test, cst.Comparison)
        and isinstance(test.left, cst.Name)
        and test.left.value == tensor
        and len(test.comparisons) == 1
        and isinstance(test.comparisons[0].operator, cst.Is)
        and isinstance(test.comparisons[0].comparator, cst.Name)
        and test.comparisons[0].comparator.value == "None"
    )


def none_branch(function: cst.FunctionDef, node: cst.CSTNode, tensor: str) -> cst.If | None:
    """The `if` of `function` whose test requires `<tensor> is None` (`requires_none`) and whose body holds `node`:
    there the tensor is None, never the caller's."""
    for if_node in walk.nodes(function.body, cst.If):
        if requires_none(if_node.test, tensor) and any(n is node for n in walk.walk(if_node.body)):
            return if_node
    return None
