"""DRB502: a model or pipeline creates or casts a tensor on its device to float64 unconditionally."""

from __future__ import annotations

import re
from collections.abc import Iterator

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.matchers import keyword, string_value


_FLOAT64 = frozenset({"torch.float64", "torch.double"})
#: torch factories whose `device=` decides where the float64 tensor lives
_FACTORIES = frozenset(
    {
        "arange",
        "linspace",
        "logspace",
        "zeros",
        "ones",
        "empty",
        "full",
        "tensor",
        "as_tensor",
        "rand",
        "randn",
        "randint",
        "eye",
        "zeros_like",
        "ones_like",
        "empty_like",
        "full_like",
        "rand_like",
        "randn_like",
    }
)
#: words whose mention in an `if` test marks a device-dependent choice of dtype (as words of their own:
#: `is_npu`, not the letters of `input`), or a switch that asks for float64 on purpose (`if upcast_to_double:`)
_DEVICE_WORDS = re.compile(r"(?<![a-z])(mps|npu)(?![a-z])|device\.type|is_available")
_SWITCH_WORDS = re.compile(r"double|float64|fp64|upcast|precision")


def _walk_all(root: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """`walk.walk(root)`, with the `*args`/`**kwargs` parameters it leaves out (not in source order)."""
    for node in walk.walk(root):
        yield node
        if isinstance(node, cst.Parameters):
            for star in (node.star_arg, node.star_kwarg):
                if isinstance(star, cst.Param):
                    yield from _walk_all(star)


class _Finder:
    """Unconditional float64 tensors on a device: `.to(x, torch.float64)`, `.double()`, `arange(..., dtype=…, device=…)`.

    A call is looked at unless it sits in a conditional expression, in an `if` on the device (its test
    included), in a `with torch.device("cpu"):` (its items included) or in a comparison.
    """

    def __init__(self, rule: UnconditionalFloat64) -> None:
        self.rule = rule
        self.found: list[tuple[cst.CSTNode, str]] = []

    def run(self, module: cst.Module) -> None:
        candidates = [
            (node, spelled)
            for node in _walk_all(module)
            if isinstance(node, cst.Call)
            for spelled in [self._spelled(node)]
            if spelled
        ]
        if not candidates:
            return
        quiet: set[int] = set()
        for node in _walk_all(module):
            if isinstance(node, (cst.IfExp, cst.Comparison)) or (isinstance(node, cst.With) and self._cpu_with(node)):
                if id(node) not in quiet:
                    quiet.update(id(n) for n in _walk_all(node))
        if all(id(node) in quiet for node, _ in candidates):
            return
        code_for_node = self.rule.context.module.code_for_node
        for node in _walk_all(module):
            if isinstance(node, cst.If) and id(node) not in quiet:
                test = code_for_node(node.test)
                if _DEVICE_WORDS.search(test) or _SWITCH_WORDS.search(test):
                    quiet.update(id(n) for n in _walk_all(node))
        self.found = [(node, spelled) for node, spelled in candidates if id(node) not in quiet]

    @staticmethod
    def _cpu_with(node: cst.With) -> bool:
        """`with torch.device("cpu"):` float64 on the CPU is fine."""
        return any(
            string_value(a.value) == "cpu"
            for item in node.items
            if isinstance(item.item, cst.Call)
            for a in item.item.args
        )

    # -- the tensors -------------------------------------------------------------------------------------

    def _spelled(self, node: cst.Call) -> str | None:
        func = node.func
        if isinstance(func, cst.Attribute) and func.attr.value == "double" and not node.args:
            if self._on_device(func.value):
                return ".double()"
            return None
        if isinstance(func, cst.Attribute) and func.attr.value == "to":
            spelled = self._float64_in(node)
            if spelled and not self._to_cpu(node) and self._on_device(func.value):
                return spelled
            return None
        qualified = self.rule.context.qualified_name(func) or ""
        if qualified.startswith("torch.") and qualified[len("torch.") :] in _FACTORIES:
            dtype = keyword(node, "dtype")
            device = keyword(node, "device")
            spelled = self._float64(dtype.value) if dtype is not None else None
            if spelled and device is not None and string_value(device.value) != "cpu":
                return spelled
        return None

    # -- helpers -------------------------------------------------------------------------------------------

    def _float64(self, node: cst.BaseExpression) -> str | None:
        qualified = self.rule.context.qualified_name(node)
        return dotted_name(node) if qualified in _FLOAT64 else None

    def _float64_in(self, call: cst.Call) -> str | None:
        for arg in call.args:
            if arg.keyword is None or arg.keyword.value == "dtype":
                spelled = self._float64(arg.value)
                if spelled:
                    return spelled
        return None

    @staticmethod
    def _to_cpu(call: cst.Call) -> bool:
        device = keyword(call, "device")
        first = call.args[0].value if call.args and call.args[0].keyword is None else None
        return any(
            node is not None and string_value(node) == "cpu" for node in (device.value if device else None, first)
        )

    def _on_device(self, receiver: cst.BaseExpression) -> bool:
        """Whether the tensor being cast may live on the accelerator (not a fresh CPU tensor, not `.cpu()`)."""
        node = receiver
        while True:
            if isinstance(node, cst.Call):
                func = node.func
                if isinstance(func, cst.Attribute) and func.attr.value in ("cpu", "numpy"):
                    return False
                qualified = self.rule.context.qualified_name(func) or ""
                if qualified.startswith("torch.") and qualified[len("torch.") :] in _FACTORIES | {"from_numpy"}:
                    return keyword(node, "device") is not None  # a factory without `device=` makes a CPU tensor
                if isinstance(func, cst.Attribute):
                    node = func.value  # `x.float().reshape(...)`: look at what it is called on
                    continue
                return True
            if isinstance(node, cst.Subscript):
                node = node.value
                continue
            return True


class UnconditionalFloat64(Rule):
    """
    ## What it does
    Checks for model and pipeline code that creates a float64 tensor on the model's device, or casts
    a device tensor to float64 (`torch.float64`, `torch.double`, `.double()`), without choosing a
    smaller dtype on devices that lack float64.

    ## Why is this bad?
    Apple MPS and Ascend NPU have no float64: the cast raises (`Cannot convert a MPS Tensor to
    float64 dtype`) and the model or pipeline cannot run there. diffusers picks the dtype per device
    with `maybe_adjust_dtype_for_device(torch.float64, device)` or
    `torch.float32 if (is_mps or is_npu) else torch.float64`.

    ## Example
    ```python
    def rope_apply(x, freqs):
        x = torch.view_as_complex(x.to(torch.float64).reshape(*x.shape[:-1], -1, 2))
        ...
    ```

    Use instead:
    ```python
    def rope_apply(x, freqs):
        dtype = maybe_adjust_dtype_for_device(torch.float64, x.device)
        x = torch.view_as_complex(x.to(dtype).reshape(*x.shape[:-1], -1, 2))
        ...
    ```

    ## Known problems
    Float64 on the CPU is fine and not reported: factories without `device=` or with
    `device="cpu"`, casts of such fresh tensors, code under `with torch.device("cpu")`. A CPU float64
    tensor that is later moved with `.to(device)` is missed, and so is a float64 dtype held in a
    variable. Any `if` whose test mentions `mps`, `npu`, `device.type` or `is_available`, and any
    conditional expression, count as a deliberate choice, and so does a switch that asks for float64
    by name (`if upcast_to_double:`, `if self.double_precision:`), even when it is on by default.

    ## References
    - huggingface/diffusers#13656, pattern 5
    - `diffusers.utils.torch_utils.maybe_adjust_dtype_for_device`
    """

    code = "DRB502"
    pattern = 5
    severity = "warning"
    message = (
        "`{spelled}` puts a float64 tensor on the model's device, which MPS and NPU do not support; "
        "use `maybe_adjust_dtype_for_device(torch.float64, device)` instead."
    )
    REQUIRES_ANY = ("float64", "double")
    PATHS = ("/models/", "/pipelines/", "/guiders/")

    VALID = [
        Valid(
            """
            import torch
            from ...utils.torch_utils import maybe_adjust_dtype_for_device

            def get_freqs(pos, dim):
                freqs_dtype = maybe_adjust_dtype_for_device(torch.float64, pos.device)
                is_mps = pos.device.type == "mps"
                dtype = torch.float32 if is_mps else torch.float64
                if pos.device.type == "mps":
                    x = pos.float()
                else:
                    x = pos.to(torch.float64)
                return torch.arange(0, dim, 2, dtype=freqs_dtype, device=pos.device), dtype, x
            """,
            path="diffusers/models/embeddings_example.py",
        ),
        Valid(
            """
            import torch

            def precompute(dim, end, theta):
                freqs = torch.arange(0, dim, 2).to(torch.float64).div(dim)
                steps = torch.arange(end, dtype=torch.float64, device="cpu")
                sigmas = torch.linspace(0.0, 1.0, 10, dtype=torch.float64)
                with torch.device("cpu"):
                    t = torch.arange(end, device=freqs.device, dtype=torch.float64)
                ok = sigmas.dtype in (torch.float32, torch.float64)
                return torch.outer(steps, freqs).float(), t, ok, sigmas.cpu().double()
            """,
            path="diffusers/models/transformers/transformer_example.py",
        ),
        Valid(
            """
            import torch

            def sigmas(x):
                return x.to(torch.float64)
            """,
            path="diffusers/schedulers/scheduling_example.py",
        ),
        Valid(
            """
            def project(a, b, upcast_to_double=True):
                if upcast_to_double:
                    a, b = a.double(), b.double()
                return (a * b).sum()
            """,
            path="diffusers/guiders/guider_example.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            import torch

            def rope_apply(x, grid_sizes, freqs):
                output = []
                for i, (f, h, w) in enumerate(grid_sizes.tolist()):
                    x_i = torch.view_as_complex(x[i, : f * h * w].to(torch.float64).reshape(f * h * w, 1, -1, 2))
                    output.append(x_i)
                return output
            """,
            path="diffusers/models/transformers/transformer_example.py",
            message=(
                "`torch.float64` puts a float64 tensor on the model's device, which MPS and NPU do not support; "
                "use `maybe_adjust_dtype_for_device(torch.float64, device)` instead."
            ),
        ),
        Invalid(
            """
            import torch as th

            class Model:
                def forward(self, hidden_states):
                    logits = self.out(hidden_states)
                    return th.log_softmax(logits.double(), dim=1).float()
            """,
            path="diffusers/models/transformers/transformer_example.py",
            message=(
                "`.double()` puts a float64 tensor on the model's device, which MPS and NPU do not support; "
                "use `maybe_adjust_dtype_for_device(torch.float64, device)` instead."
            ),
        ),
        Invalid(
            """
            import torch

            class MyPipeline(DiffusionPipeline):
                def prepare_latents(self, height, width, device):
                    ids = prepare_pos_ids(height=height, width=width).to(device, dtype=torch.float64)
                    return ids
            """,
            path="diffusers/pipelines/example/pipeline_example.py",
            message=(
                "`torch.float64` puts a float64 tensor on the model's device, which MPS and NPU do not support; "
                "use `maybe_adjust_dtype_for_device(torch.float64, device)` instead."
            ),
        ),
        Invalid(
            """
            import torch

            def get_1d_rope(dim, pos):
                return torch.arange(0, dim, 2, dtype=torch.double, device=pos.device)
            """,
            path="diffusers/models/embeddings_example.py",
            message=(
                "`torch.double` puts a float64 tensor on the model's device, which MPS and NPU do not support; "
                "use `maybe_adjust_dtype_for_device(torch.float64, device)` instead."
            ),
        ),
        # a guider, and an `if` whose test merely contains the letters "npu" (`input`)
        Invalid(
            """
            def orthogonal_update(diff, pred_input, norm_threshold=0.0):
                if pred_input is not None and norm_threshold > 0:
                    diff = diff / diff.norm()
                    v0 = diff.double()
                    return v0 - pred_input
                return diff
            """,
            path="diffusers/guiders/guider_example.py",
            message=(
                "`.double()` puts a float64 tensor on the model's device, which MPS and NPU do not support; "
                "use `maybe_adjust_dtype_for_device(torch.float64, device)` instead."
            ),
        ),
    ]

    def check(self) -> None:
        finder = _Finder(self)
        finder.run(self.context.module)
        if not finder.found:
            return
        # one finding per statement and spelling: `v0, v1 = a.double(), b.double()` is one defect
        line_of: dict[int, int] = {}
        for index, line in enumerate(walk.nodes(self.context.module, cst.SimpleStatementLine)):
            line_of.update((id(n), index) for n in walk.walk(line) if isinstance(n, cst.Call))
        seen: set[tuple[int, str]] = set()
        for node, spelled in finder.found:
            key = (line_of.get(id(node), -1 - len(seen)), spelled)
            if key not in seen:
                seen.add(key)
                self.report(node, self.message.format(spelled=spelled), symbol=spelled)
