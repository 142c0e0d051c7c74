"""DRB516: a tensor cast to a model's dtype is rebuilt by `torch.where(c, 1.0, 0.0)` (or a factory) in float32."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.casts import casts_dtype, is_dtype_expr
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.matchers import keyword


#: torch factories whose result is in the default dtype (float32) unless given `dtype=`
FACTORIES = frozenset(
    {"torch.tensor", "torch.ones", "torch.zeros", "torch.full", "torch.rand", "torch.randn", "torch.empty"}
)
FLOAT32 = frozenset({"torch.float32", "torch.float"})


def _code(node: cst.CSTNode) -> str:
    return " ".join(cst.Module([]).code_for_node(node).split())


def _number(node: cst.BaseExpression) -> bool:
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
        node = node.expression
    return isinstance(node, (cst.Float, cst.Integer))


def _default_dtype(value: cst.BaseExpression) -> bool:
    """`torch.where(mask > 0.5, 1.0, 0.0)` (two Python numbers), `torch.ones(shape)`: float32 whatever came before."""
    if not isinstance(value, cst.Call):
        return False
    name = dotted_name(value.func)
    if name == "torch.where":
        args = [a.value for a in value.args if a.keyword is None]
        return (
            len(args) == 3
            and _number(args[1])
            and _number(args[2])
            and any(
                isinstance(a, cst.Float) or isinstance(a, cst.UnaryOperation) and isinstance(a.expression, cst.Float)
                for a in args[1:]
            )
        )
    return name in FACTORIES and keyword(value, "dtype") is None


def _cast_to(value: cst.BaseExpression, name: str) -> cst.BaseExpression | None:
    """The dtype of `name.to(dtype=vae_dtype)` / `name.to(device, dtype)` when it is not float32, else None."""
    if not (isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute) and value.func.attr.value == "to"):
        return None
    if not (isinstance(value.func.value, cst.Name) and value.func.value.value == name) or not casts_dtype(value):
        return None
    arg = keyword(value, "dtype")
    dtype = arg.value if arg is not None else next(a.value for a in value.args if is_dtype_expr(a.value))
    return None if dotted_name(dtype) in FLOAT32 else dtype


def _name(assign: cst.Assign) -> str:
    """The name a one-target `name = ...` assignment binds (`check` keeps only those)."""
    return cst.ensure_type(assign.targets[0].target, cst.Name).value


class DtypeCastUndoneByDefaultDtypeTensor(Rule):
    """
    ## What it does
    Checks for a tensor that is cast to a model's dtype (`mask = mask.to(dtype=vae_dtype)`) and then rebuilt by an
    expression whose dtype is PyTorch's default, float32: `mask = torch.where(mask > 0.5, 1.0, 0.0)` (two Python
    floats) or a factory without `dtype=` (`torch.ones(...)`), and used afterwards without a new cast.

    ## Why is this bad?
    The cast is lost: `torch.where` with two Python scalars returns float32 whatever its condition was computed
    from. Combined with half-precision tensors (`video * mask`) it promotes them to float32, and the half-precision
    model that receives the result fails with "Input type (float) and bias type (c10::BFloat16) should be the same".

    ## Example
    ```python
    mask = mask.to(dtype=vae_dtype)
    mask = torch.where(mask > 0.5, 1.0, 0.0)
    reactive = video * mask
    ```

    Use instead:
    ```python
    mask = torch.where(mask > 0.5, 1.0, 0.0).to(dtype=vae_dtype)
    ```

    ## Known problems
    Only a rebuild assigned to the name that was cast, later in the same function and read afterwards, is
    matched; a cast applied again before the next read (`mask = mask.to(vae_dtype)`) is taken as the fix.

    ## References
    - huggingface/diffusers#13656, pattern 5
    - huggingface/diffusers#12143 (Wan VACE binarised its mask into float32 after casting it to the VAE dtype)
    """

    code = "DRB516"
    pattern = 5
    severity = "warning"
    message = (
        "`{name}` is cast to `{dtype}` and then rebuilt by `{value}`, which is float32 whatever the cast was, so it "
        "promotes the half-precision tensors it meets; cast the new value (`.to(dtype={dtype})`)."
    )
    REQUIRES_ANY = ("torch.",)

    VALID = [
        Valid(
            """
            import torch

            def prepare(video, mask, vae_dtype):
                mask = mask.to(dtype=vae_dtype)
                mask = torch.where(mask > 0.5, 1.0, 0.0).to(dtype=vae_dtype)
                return video * mask

            def recast(video, mask, vae_dtype):
                mask = mask.to(dtype=vae_dtype)
                mask = torch.where(mask > 0.5, 1.0, 0.0)
                mask = mask.to(vae_dtype)
                return video * mask

            def upcast(mask):
                mask = mask.to(dtype=torch.float32)
                mask = torch.where(mask > 0.5, 1.0, 0.0)
                return mask * 2

            def keep(mask, other, dtype):
                mask = mask.to(dtype=dtype)
                mask = torch.where(mask > 0.5, mask, other)
                return mask * 2
            """,
        ),
    ]
    INVALID = [
        Invalid(
            """
            import torch

            def prepare(video, mask, vae_dtype):
                video = video.to(dtype=vae_dtype)
                if mask is not None:
                    mask = mask.to(dtype=vae_dtype)
                    mask = torch.where(mask > 0.5, 1.0, 0.0)
                    inactive = video * (1 - mask)
                    return inactive
            """,
            message=(
                "`mask` is cast to `vae_dtype` and then rebuilt by `torch.where(mask > 0.5, 1.0, 0.0)`, which is "
                "float32 whatever the cast was, so it promotes the half-precision tensors it meets; cast the new value "
                "(`.to(dtype=vae_dtype)`)."
            ),
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            assigns = [
                a
                for a in walk.own_nodes(function, cst.Assign)
                if len(a.targets) == 1 and isinstance(a.targets[0].target, cst.Name)
            ]
            casts: dict[str, cst.BaseExpression] = {}
            for index, assign in enumerate(assigns):
                name = _name(assign)
                dtype = _cast_to(assign.value, name)
                if dtype is not None:
                    casts[name] = dtype
                    continue
                if name not in casts or not _default_dtype(assign.value):
                    casts.pop(name, None)
                    continue
                if self._read_before_recast(function, assign, name, assigns[index + 1 :]):
                    message = self.message.format(name=name, dtype=_code(casts[name]), value=_code(assign.value))
                    self.report(assign, message, symbol=name, scope=definition.qualname)
                casts.pop(name, None)

    @staticmethod
    def _read_before_recast(function: cst.FunctionDef, assign: cst.Assign, name: str, later: list[cst.Assign]) -> bool:
        """Whether `name` is read after `assign` before it is assigned again."""
        end = walk.span(assign)
        if end is None:
            return False
        stop = next(
            (span[0] for a in later if _name(a) == name and (span := walk.span(a)) is not None),
            None,
        )
        attributes = {id(a.attr) for a in walk.own_nodes(function, cst.Attribute)}
        for read in walk.own_nodes(function, cst.Name):
            if read.value != name or id(read) in attributes:
                continue
            at = walk.span(read)
            if at is None or at[0] < end[1] or (stop is not None and at[0] >= stop):
                continue
            return True
        return False
