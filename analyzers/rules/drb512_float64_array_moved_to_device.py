"""DRB512: a float64 NumPy array (timesteps, sigmas) is moved to the device without a dtype."""

from __future__ import annotations

from collections.abc import Sequence

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import call_name, keyword, names_read


#: NumPy functions whose result is float64 whatever they are given (without `dtype=`)
FLOAT64_MAKERS = frozenset({"np.linspace", "np.logspace", "np.geomspace", "np.interp"})
#: NumPy functions that keep a float64 argument float64
FLOAT64_KEEPERS = frozenset(
    {
        "np.exp", "np.log", "np.sqrt", "np.flip", "np.concatenate", "np.clip", "np.cumprod", "np.maximum",
        "np.minimum", "np.array", "np.asarray", "np.append", "np.round", "np.sort", "np.stack", "np.diff",
        "torch.from_numpy", "torch.cat", "torch.flip",
    }
)  # fmt: skip
#: methods that keep the array's dtype
KEEPING_METHODS = frozenset({"round", "copy", "flip", "repeat_interleave", "clone", "contiguous", "reshape", "view"})
#: helpers of the schedulers that turn float64 sigmas into float64 timesteps
FLOAT64_HELPERS = frozenset({"_sigma_to_t"})
DTYPE_64 = frozenset({"float", "np.float64", "numpy.float64", "np.double"})


def _dtype_of(call: cst.Call) -> cst.BaseExpression | None:
    arg = keyword(call, "dtype")
    return arg.value if arg is not None else None


class _Float64:
    """Which names may hold a float64 array, statement by statement in source order."""

    def __init__(self, module: cst.Module) -> None:
        self.module = module
        self.names: set[str] = set()

    def code(self, node: cst.CSTNode) -> str:
        return self.module.code_for_node(node)

    def is_float64(self, expr: cst.BaseExpression) -> bool:
        """Whether `expr` is (certainly, or through a name that may be) a float64 array or tensor."""
        if isinstance(expr, cst.Name):
            return expr.value in self.names
        if isinstance(expr, cst.Subscript):
            return self.is_float64(expr.value)
        if isinstance(expr, cst.BinaryOperation):
            return self.is_float64(expr.left) or self.is_float64(expr.right)
        if isinstance(expr, cst.UnaryOperation):
            return self.is_float64(expr.expression)
        if not isinstance(expr, cst.Call):
            return False
        name = call_name(expr) or ""
        dtype = _dtype_of(expr)
        if dtype is not None:
            return self.code(dtype) in DTYPE_64
        if name in FLOAT64_MAKERS:
            return True
        if isinstance(expr.func, cst.Attribute) and not name.startswith(("np.", "torch.")):
            method = expr.func.attr.value
            if method == "astype":
                return bool(expr.args) and self.code(expr.args[0].value) in DTYPE_64
            if method in KEEPING_METHODS:
                return self.is_float64(expr.func.value)
            return False
        if name in FLOAT64_KEEPERS:
            if name == "np.array" and self._helper_comprehension(expr):
                return True
            return any(self.is_float64(a.value) or self._float64_list(a.value) for a in expr.args)
        return False

    def _float64_list(self, expr: cst.BaseExpression) -> bool:
        if isinstance(expr, (cst.List, cst.Tuple)):
            return any(isinstance(e, cst.Element) and self.is_float64(e.value) for e in expr.elements)
        return False

    @staticmethod
    def _helper_comprehension(call: cst.Call) -> bool:
        """`np.array([self._sigma_to_t(s, log_sigmas) for s in sigmas])`."""
        if not call.args or not isinstance(call.args[0].value, cst.ListComp):
            return False
        element = call.args[0].value.elt
        return isinstance(element, cst.Call) and (call_name(element) or "").rpartition(".")[2] in FLOAT64_HELPERS


def _moves_without_dtype(call: cst.Call) -> bool:
    """`x.to(device)` / `x.to(device=device)`: a move with no dtype (positional or keyword)."""
    if not isinstance(call.func, cst.Attribute) or call.func.attr.value != "to" or not call.args:
        return False
    if keyword(call, "dtype") is not None:
        return False
    positional = [a for a in call.args if a.keyword is None]
    if len(positional) > 1:
        return False
    if positional:
        return any("device" in n.value for n in walk.nodes(positional[0].value, cst.Name)) or any(
            "device" in a.attr.value for a in walk.nodes(positional[0].value, cst.Attribute)
        )
    return keyword(call, "device") is not None


class Float64ArrayMovedToDevice(Rule):
    """
    ## What it does
    Checks schedulers and pipelines for a NumPy array that is float64 on some path (made by `np.linspace`,
    `np.interp`, `np.array([self._sigma_to_t(...) ...])`, `.astype(float)`, or computed from such an array)
    and then moved to the device with `torch.from_numpy(x).to(device)` or `x.to(device=device)` without a
    dtype, outside any `if` that tests for MPS.

    ## Why is this bad?
    `torch.from_numpy` keeps float64, and MPS has no float64: `set_timesteps(device="mps")` raises
    `TypeError: Cannot convert a MPS Tensor to float64 dtype` for the configuration that takes that path
    (Karras, exponential or beta sigmas, a `linspace` spacing). On other devices the timesteps are float64
    where the models expect float32.

    ## Example
    ```python
    if self.config.use_karras_sigmas:
        timesteps = np.array([self._sigma_to_t(sigma, log_sigmas) for sigma in sigmas])
    timesteps = torch.from_numpy(timesteps)
    self.timesteps = timesteps.to(device=device)
    ```

    Use instead:
    ```python
    self.timesteps = timesteps.to(device=device, dtype=torch.float32)
    ```

    ## Known problems
    The dtype is followed through names, NumPy calls and a few methods of one function, in source order;
    arrays made by other helpers, or from tensors (`np.array(tensor)` keeps the tensor's dtype), are not
    known to be float64 and stay silent. A move under an `if` that mentions MPS is taken as handled.

    ## References
    - huggingface/diffusers#13656, pattern 5
    - huggingface/diffusers#10549 (Heun and LMS moved float64 Karras timesteps to MPS), huggingface/diffusers#6365
      (KDPM2 Ancestral)
    """

    code = "DRB512"
    pattern = 5
    severity = "warning"
    message = (
        "`{name}` is a float64 array on some path (`{source}`) and is moved to the device without a dtype "
        "(`{move}`), which fails on MPS (no float64); move it with `dtype=torch.float32`."
    )
    REQUIRES_ANY = ("np.",)
    PATHS = ("/schedulers/", "/pipelines/")

    VALID = [
        Valid(
            """
            class MyScheduler(SchedulerMixin):
                def set_timesteps(self, num_inference_steps, device=None):
                    timesteps = np.linspace(0, 999, num_inference_steps)[::-1].copy()
                    self.timesteps = torch.from_numpy(timesteps).to(device=device, dtype=torch.float32)
                    steps = np.linspace(0, 999, num_inference_steps).round().astype(np.int64)
                    self.steps = torch.from_numpy(steps).to(device)
                    sigmas = np.array(((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5)
                    self.sigmas = torch.from_numpy(sigmas).to(device=device)
                    ratios = np.linspace(0, 1, num_inference_steps).astype(np.float32)
                    self.ratios = torch.from_numpy(ratios).to(device)
            """,
            path="diffusers/schedulers/scheduling_example.py",
        ),
        # the MPS path casts; other devices keep float64 on purpose
        Valid(
            """
            class MyScheduler(SchedulerMixin):
                def set_timesteps(self, num_inference_steps, device=None):
                    timesteps = np.linspace(0, 999, num_inference_steps)
                    if str(device).startswith("mps"):
                        timesteps = torch.from_numpy(timesteps).to(device, dtype=torch.float32)
                    else:
                        timesteps = torch.from_numpy(timesteps).to(device)
                    self.timesteps = timesteps
            """,
            path="diffusers/schedulers/scheduling_example.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            class HeunScheduler(SchedulerMixin):
                def set_timesteps(self, num_inference_steps, device=None):
                    timesteps = np.linspace(0, 999, num_inference_steps, dtype=np.float32)[::-1].copy()
                    sigmas = np.array(((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5)
                    log_sigmas = np.log(sigmas)
                    if self.config.use_karras_sigmas:
                        sigmas = self._convert_to_karras(in_sigmas=sigmas, num_inference_steps=num_inference_steps)
                        timesteps = np.array([self._sigma_to_t(sigma, log_sigmas) for sigma in sigmas])
                    timesteps = torch.from_numpy(timesteps)
                    timesteps = torch.cat([timesteps[:1], timesteps[1:].repeat_interleave(2)])
                    self.timesteps = timesteps.to(device=device)
            """,
            message=(
                "`timesteps` is a float64 array on some path (`np.array([self._sigma_to_t(sigma, log_sigmas) for "
                "sigma in sigmas])`) and is moved to the device without a dtype (`timesteps.to(device=device)`), "
                "which fails on MPS (no float64); move it with `dtype=torch.float32`."
            ),
            path="diffusers/schedulers/scheduling_example.py",
        ),
        Invalid(
            """
            class StagedScheduler(SchedulerMixin):
                def set_timesteps(self, num_inference_steps, device=None):
                    timesteps = np.linspace(1000, 0, num_inference_steps + 1)[:-1]
                    self.timesteps = torch.from_numpy(timesteps).to(device)
            """,
            path="diffusers/schedulers/scheduling_example.py",
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            # cheap gates first: the function uses NumPy and moves something to a device without a dtype
            if not any(_moves_without_dtype(call) for call in walk.own_nodes(function, cst.Call)):
                continue
            if any(
                isinstance(a.value, cst.Name) and a.value.value in ("np", "numpy")
                for a in walk.own_nodes(function, cst.Attribute)
            ):
                self._check(function, definition.qualname)

    def _check(self, function: cst.FunctionDef, scope: str) -> None:
        self._state = _Float64(self.context.module)
        self._sources: dict[str, cst.CSTNode] = {}
        self._scope = scope
        self._reported: set[str] = set()
        self._block(function.body.body, set(), in_mps=False)

    def _block(self, statements: Sequence[cst.CSTNode], names: set[str], in_mps: bool) -> set[str]:
        """The names that may hold float64 after `statements`, given `names` before them (an `if` joins its
        branches; a loop or `try` body may run or not)."""
        for statement in statements:
            if isinstance(statement, cst.SimpleStatementLine):
                names = self._simple(statement, names, in_mps)
            elif isinstance(statement, cst.If):
                names = self._if(statement, names, in_mps)
            elif isinstance(statement, (cst.For, cst.While)):
                names = names | self._block(statement.body.body, set(names), in_mps)
            elif isinstance(statement, (cst.With, cst.Try)):
                after = self._block(statement.body.body, set(names), in_mps)
                names = after | names if isinstance(statement, cst.Try) else after
        return names

    def _if(self, statement: cst.If, names: set[str], in_mps: bool) -> set[str]:
        mps = in_mps or "mps" in self.context.module.code_for_node(statement.test)
        out = self._block(statement.body.body, set(names), mps)
        orelse = statement.orelse
        if isinstance(orelse, cst.If):
            return out | self._if(orelse, names, mps)
        if isinstance(orelse, cst.Else):
            return out | self._block(orelse.body.body, set(names), mps)
        return out | names

    def _simple(self, statement: cst.SimpleStatementLine, names: set[str], in_mps: bool) -> set[str]:
        state = self._state
        state.names = names
        if not in_mps:
            for call in walk.nodes(statement, cst.Call):
                if not _moves_without_dtype(call):
                    continue
                moved = call.func.value if isinstance(call.func, cst.Attribute) else None
                if moved is None or not state.is_float64(moved):
                    continue
                found = [n.value for n in names_read(moved) if n.value in names]
                if not found or found[0] in self._reported or found[0] not in self._sources:
                    continue
                name = found[0]
                self._reported.add(name)
                source = " ".join(self.context.module.code_for_node(self._sources[name]).split())
                move = " ".join(self.context.module.code_for_node(call).split())
                message = self.message.format(name=name, source=source, move=move)
                self.report(call, message, symbol=name, scope=self._scope)
        names = set(names)
        for small in statement.body:
            if not isinstance(small, cst.Assign) or len(small.targets) != 1:
                continue
            if not isinstance(small.targets[0].target, cst.Name):
                continue
            target = small.targets[0].target.value
            state.names = names
            if state.is_float64(small.value):
                if target not in names or target not in self._sources:
                    self._sources[target] = self._origin(small.value, state, self._sources)
                names.add(target)
            else:
                names.discard(target)
        return names

    @staticmethod
    def _origin(value: cst.BaseExpression, state: _Float64, sources: dict[str, cst.CSTNode]) -> cst.CSTNode:
        """What made the array float64: the expression itself, or the source of the name it was computed from."""
        if _Float64(state.module).is_float64(value):
            return value
        for name in names_read(value):
            if name.value in state.names and name.value in sources:
                return sources[name.value]
        return value
