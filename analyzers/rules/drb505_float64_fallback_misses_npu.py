"""DRB505: a device check falls back from float64 on MPS only, while NPU lacks float64 as well."""

from __future__ import annotations

import re
from typing import TypeVar

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid


_FLOAT64 = frozenset({"torch.float64", "torch.double"})
_FLOAT32 = frozenset({"torch.float32", "torch.float"})
#: words in a device test that mean it already covers more than MPS, or asks something else than the device
#: (`npu` as a word of its own: `is_npu`, `"npu"`, not the letters of `input`)
_COVERED = re.compile(r"(?<![a-z])npu(?![a-z])|is_available|backends|maybe_adjust_dtype_for_device")
_MPS = re.compile(r"(?<![a-z])mps(?![a-z])")
N = TypeVar("N", bound=cst.CSTNode)
#: the node types that `check` asks each scope for
_OWN_KINDS = (cst.IfExp, cst.If, cst.Assign)


def _own_nodes(module: cst.Module) -> dict[int, dict[type, list[cst.CSTNode]]]:
    """`walk.own_nodes(scope, kind)` for the module and every function at once, by `id(scope)` and kind, in one
    walk of the file (in walk order): a node belongs to the body of its nearest function (to the module outside
    any), to no scope inside a class body, a lambda or a function's signature or decorators."""
    found: dict[int, dict[type, list[cst.CSTNode]]] = {}
    stack: list[tuple[cst.CSTNode, cst.CSTNode | None]] = [(module, module)]
    children = walk._children
    while stack:
        node, owner = stack.pop()
        kind = type(node)
        if owner is not None and kind in _OWN_KINDS:
            found.setdefault(id(owner), {}).setdefault(kind, []).append(node)
        if kind is cst.FunctionDef:
            body = node.body  # type: ignore[attr-defined]
            stack.extend((child, node if child is body else None) for child in reversed(children(node)))
        elif kind is cst.ClassDef or kind is cst.Lambda:
            stack.extend((child, None) for child in reversed(children(node)))
        else:
            stack.extend((child, owner) for child in reversed(children(node)))
    return found


class Float64FallbackMissesNpu(Rule):
    """
    ## What it does
    Checks for code that picks float32 instead of float64 when a tensor's device is Apple MPS, but
    keeps float64 on every other device: `torch.float32 if x.device.type == "mps" else torch.float64`,
    or the same choice through an `is_mps` variable.

    ## Why is this bad?
    Ascend NPU has no float64 either: the fallback was written for one accelerator and the float64
    tensor still reaches the NPU, where the pipeline or model fails. diffusers fixed this family of
    checks more than once by adding `is_npu` next to `is_mps`, and now has one helper that knows
    every such device, `maybe_adjust_dtype_for_device(torch.float64, device)`.

    ## Example
    ```python
    is_mps = sample.device.type == "mps"
    dtype = torch.float32 if is_mps else torch.float64
    timesteps = torch.tensor([timesteps], dtype=dtype, device=sample.device)
    ```

    Use instead:
    ```python
    dtype = maybe_adjust_dtype_for_device(torch.float64, sample.device)
    timesteps = torch.tensor([timesteps], dtype=dtype, device=sample.device)
    ```

    ## Known problems
    Only conditional expressions and `if` statements whose test looks at a device (`.device.type`,
    `str(device)`, or a variable assigned from such a comparison) are checked. A test that mentions `npu`,
    asks `torch.backends.mps.is_available()` (a question about the machine, not about the tensor's
    device) or calls `maybe_adjust_dtype_for_device` counts as complete.

    ## References
    - huggingface/diffusers#13656, pattern 5
    - huggingface/diffusers#10123 and #10429 (the MPS-only fallbacks of the UNets, ControlNets, PixArt, DiT,
      Latte, Lumina and `FluxPosEmbed` gained `is_npu`)
    """

    code = "DRB505"
    pattern = 5
    severity = "warning"
    message = (
        "`{test}` falls back from float64 on MPS only, but NPU has no float64 either; use "
        "`maybe_adjust_dtype_for_device(torch.float64, device)` (or also test for `npu`) instead."
    )
    REQUIRES_ANY = ("mps",)
    PATHS = ("/models/", "/pipelines/")

    VALID = [
        Valid(
            """
            import torch

            def get_timestep(sample, timesteps):
                is_mps = sample.device.type == "mps"
                is_npu = sample.device.type == "npu"
                dtype = torch.float32 if (is_mps or is_npu) else torch.float64
                return torch.tensor([timesteps], dtype=dtype, device=sample.device)
            """,
            path="diffusers/models/unets/unet_example.py",
        ),
        Valid(
            """
            import torch

            class Rope:
                def __init__(self, dim):
                    freqs_dtype = torch.float32 if torch.backends.mps.is_available() else torch.float64
                    self.freqs = torch.arange(dim, dtype=freqs_dtype)

                def forward(self, ids):
                    dtype = maybe_adjust_dtype_for_device(torch.float64, ids.device)
                    index_dtype = torch.int32 if ids.device.type == "mps" else torch.int64
                    return ids.to(dtype), index_dtype
            """,
            path="diffusers/models/embeddings_example.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            import torch

            class PosEmbed(torch.nn.Module):
                def forward(self, ids_input):
                    is_mps = ids_input.device.type == "mps"
                    freqs_dtype = torch.float32 if is_mps else torch.float64
                    return torch.arange(0, 16, 2, dtype=freqs_dtype, device=ids_input.device)
            """,
            path="diffusers/models/embeddings_example.py",
            message=(
                "`is_mps` falls back from float64 on MPS only, but NPU has no float64 either; use "
                "`maybe_adjust_dtype_for_device(torch.float64, device)` (or also test for `npu`) instead."
            ),
        ),
        Invalid(
            """
            import torch as th

            def sincos(embed_dim, pos):
                if pos.device.type == "mps":
                    dtype = th.float32
                else:
                    dtype = th.double
                return th.arange(embed_dim // 2, device=pos.device, dtype=dtype)
            """,
            path="diffusers/models/embeddings_example.py",
            message=(
                '`pos.device.type == "mps"` falls back from float64 on MPS only, but NPU has no float64 either; '
                "use `maybe_adjust_dtype_for_device(torch.float64, device)` (or also test for `npu`) instead."
            ),
        ),
    ]

    def check(self) -> None:
        source = self.context.source
        if "float64" not in source and "double" not in source:
            return
        if "mps" not in source:
            return  # the code of any test is part of the source: no test asks about MPS
        scopes: list[cst.FunctionDef | cst.Module] = [self.context.module]
        scopes += walk.nodes(self.context.module, cst.FunctionDef)
        self._own = _own_nodes(self.context.module)
        for scope in scopes:
            mps_names: list[set[str]] = []  # `_mps_names(scope)`, once a test needs it
            for node in self._own_of(scope, cst.IfExp):
                sides = {self._kind(node.body), self._kind(node.orelse)}
                if sides == {"f32", "f64"} and self._mps_only(node.test, scope, mps_names):
                    self._report(node, node.test, scope)
            for if_node in self._own_of(scope, cst.If):
                if if_node.orelse is None or not self._mps_only(if_node.test, scope, mps_names):
                    continue
                inner = {self._kind(n) for n in walk.nodes(if_node.body, cst.Attribute)}
                other = {self._kind(n) for n in walk.nodes(if_node.orelse, cst.Attribute)}
                if "f32" in inner and "f64" in other:
                    self._report(if_node, if_node.test, scope)

    def _own_of(self, scope: cst.FunctionDef | cst.Module, kind: type[N]) -> list[N]:
        """`walk.own_nodes(scope, kind)`, from the one walk of `_own_nodes`."""
        return list(self._own.get(id(scope), {}).get(kind, ()))  # type: ignore[arg-type]

    def _report(self, node: cst.CSTNode, test: cst.BaseExpression, scope: cst.FunctionDef | cst.Module) -> None:
        text = self.context.module.code_for_node(test).strip()
        symbol = self._target(node, scope) or "torch.float64"
        self.report(node, self.message.format(test=text), symbol=symbol)

    def _kind(self, node: cst.BaseExpression) -> str | None:
        qualified = self.context.qualified_name(node)
        if qualified in _FLOAT64:
            return "f64"
        if qualified in _FLOAT32:
            return "f32"
        return None

    def _mps_only(
        self, test: cst.BaseExpression, scope: cst.FunctionDef | cst.Module, mps_names: list[set[str]]
    ) -> bool:
        """Whether `test` asks "is this device MPS?" and nothing about NPU or the machine (`mps_names` caches
        `_mps_names(scope)`)."""
        text = self.context.module.code_for_node(test)
        if _COVERED.search(text):
            return False
        if _MPS.search(text) and "device" in text:
            return True
        if not mps_names:
            mps_names.append(self._mps_names(scope))
        return bool({n.value for n in walk.nodes(test, cst.Name)} & mps_names[0])

    def _mps_names(self, scope: cst.FunctionDef | cst.Module) -> set[str]:
        """Variables of `scope` assigned a device-is-MPS test (`is_mps = x.device.type == "mps"`)."""
        found: set[str] = set()
        for assign in self._own_of(scope, cst.Assign):
            if len(assign.targets) != 1 or not isinstance(assign.targets[0].target, cst.Name):
                continue
            text = self.context.module.code_for_node(assign.value)
            if _MPS.search(text) and "device" in text and not _COVERED.search(text):
                found.add(assign.targets[0].target.value)
        return found

    @staticmethod
    def _target(node: cst.CSTNode, scope: cst.FunctionDef | cst.Module) -> str | None:
        """The variable a conditional expression is assigned to (`freqs_dtype = ... if ... else ...`)."""
        for assign in walk.own_nodes(scope, cst.Assign):
            if assign.value is node and len(assign.targets) == 1 and isinstance(assign.targets[0].target, cst.Name):
                return assign.targets[0].target.value
        for if_node in [node] if isinstance(node, cst.If) else []:
            for assign in walk.nodes(if_node.body, cst.Assign):
                if len(assign.targets) == 1 and isinstance(assign.targets[0].target, cst.Name):
                    return assign.targets[0].target.value
        return None
