"""DRB517: one branch of an `if` puts a tensor on the device (or in a dtype), the other leaves it where it was made."""

from __future__ import annotations

from collections.abc import Sequence

import libcst as cst

from analyzers import walk
from analyzers.casts import casts_dtype, is_dtype_expr
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.matchers import keyword


#: torch factories that make a tensor on the CPU in float32 unless told otherwise
FACTORIES = frozenset(
    {"torch.tensor", "torch.ones", "torch.zeros", "torch.full", "torch.arange", "torch.linspace", "torch.empty"}
)
FLOAT32 = frozenset({"torch.float32", "torch.float"})


def _code(node: cst.CSTNode) -> str:
    return " ".join(cst.Module([]).code_for_node(node).split())


def _mentions_device(node: cst.BaseExpression) -> bool:
    return "device" in _code(node)


def _moves_device(call: cst.Call) -> bool:
    """`.to(device)`, `.to(device=...)`, `.to(latents.device, dtype)`, `.cuda()`; a factory with `device=`."""
    if keyword(call, "device") is not None:
        return True
    if isinstance(call.func, cst.Attribute) and call.func.attr.value == "to":
        return any(a.keyword is None and _mentions_device(a.value) for a in call.args)
    return isinstance(call.func, cst.Attribute) and call.func.attr.value == "cuda"


def _casts(call: cst.Call) -> cst.BaseExpression | None:
    """The dtype a call gives its result: `dtype=x.dtype`, `.to(x.dtype)`, `.to(device, dtype)`."""
    arg = keyword(call, "dtype")
    if arg is not None:
        return arg.value
    if isinstance(call.func, cst.Attribute) and call.func.attr.value == "to" and casts_dtype(call):
        return next((a.value for a in call.args if a.keyword is None and is_dtype_expr(a.value)), None)
    return None


def _outer_calls(value: cst.BaseExpression) -> list[cst.Call]:
    """The calls of a method chain, outermost first: `torch.linalg.solve(R, b).to(device).to(dtype)`."""
    chain: list[cst.Call] = []
    while isinstance(value, cst.Call):
        chain.append(value)
        value = value.func.value if isinstance(value.func, cst.Attribute) else value.func
    return chain


def _placed_on_device(value: cst.BaseExpression) -> bool:
    return any(_moves_device(call) for call in _outer_calls(value))


def _dynamic_dtype(value: cst.BaseExpression) -> cst.BaseExpression | None:
    """A dtype other than float32 that the value is made or cast in (`x.dtype`, `dtype`, `self.unet.dtype`)."""
    for call in _outer_calls(value):
        dtype = _casts(call)
        if dtype is not None:
            return None if dotted_name(dtype) in FLOAT32 else dtype
    return None


def _left_on_cpu(value: cst.BaseExpression) -> bool:
    """A scheduler's tensor read as it is (`self.scheduler.sigmas`, kept on the CPU), or a factory without
    `device=`."""
    if isinstance(value, cst.Attribute):
        name = dotted_name(value) or ""
        # schedulers move their sigmas back to the CPU (`self.sigmas.to("cpu")`); their timesteps follow `device`
        return name.startswith("self.scheduler.") and name.count(".") == 2 and "sigmas" in value.attr.value
    return isinstance(value, cst.Call) and dotted_name(value.func) in FACTORIES and keyword(value, "device") is None


def _default_dtype(value: cst.BaseExpression) -> bool:
    """`torch.linalg.solve(R, b)` or a factory without `dtype=`: float32, made from float32 operands."""
    if not isinstance(value, cst.Call):
        return False
    name = dotted_name(value.func) or ""
    return name.startswith("torch.linalg.") or name in FACTORIES and keyword(value, "dtype") is None


def _root(node: cst.BaseExpression) -> str | None:
    """The name a method chain starts from: `latents_mean` in `latents_mean.view(1, -1).to(device)`."""
    while isinstance(node, (cst.Call, cst.Attribute, cst.Subscript)):
        node = node.func if isinstance(node, cst.Call) else node.value
    return node.value if isinstance(node, cst.Name) else None


class BranchLeavesTensorUnplaced(Rule):
    """
    ## What it does
    Checks `if`/`else` chains whose branches all assign one tensor, where one branch puts it on the device
    (`sigmas = sigmas.to(device)`) or in a tensor's dtype (`torch.tensor([0.5], dtype=x.dtype, device=device)`) and
    another leaves it where it was made: a scheduler's tensor read as it is (`sigmas = self.scheduler.sigmas`), a
    factory without `device=`/`dtype=`, or a `torch.linalg` solve of float32 operands; and nothing after the `if`
    moves or casts it.

    ## Why is this bad?
    The author knew the tensor had to be placed, and placed it on one path only. Schedulers keep their sigmas on
    the CPU, so the default path of a sampler mixes CPU sigmas with CUDA latents ("Expected all tensors to be on
    the same device"); a float32 solution multiplied into float16 model outputs (`torch.einsum`) fails with a dtype
    mismatch on the configuration that takes that branch (UniPC with `solver_order=3` in float16).

    ## Example
    ```python
    if use_karras_sigmas:
        sigmas = get_sigmas_karras(n=num_inference_steps, sigma_min=sigma_min, sigma_max=sigma_max)
        sigmas = sigmas.to(device)
    else:
        sigmas = self.scheduler.sigmas
    ```

    Use instead:
    ```python
    if use_karras_sigmas:
        sigmas = get_sigmas_karras(n=num_inference_steps, sigma_min=sigma_min, sigma_max=sigma_max)
    else:
        sigmas = self.scheduler.sigmas
    sigmas = sigmas.to(device)
    ```

    ## Known problems
    Only the last assignment of each branch (statements directly in it) is compared, and only the unplaced sources
    listed above are trusted to be off the device or in float32; any later `.to(...)` of the name that moves it
    (or casts it) is taken as the fix.

    ## References
    - huggingface/diffusers#13656, pattern 5
    - huggingface/diffusers#9189 (the k-diffusion pipeline moved only Karras sigmas to the device),
      huggingface/diffusers#7532 (UniPC's order-3 corrector kept `torch.linalg.solve` in float32)
    """

    code = "DRB517"
    pattern = 5
    severity = "warning"
    message = (
        "`{name}` is {placed} on one branch (`{placed_value}`) but `{value}` on this one leaves it {where}, and "
        "nothing after the `if` {moves} it; {remedy}."
    )
    REQUIRES_ANY = ("torch.", "self.scheduler.")

    VALID = [
        Valid(
            """
            import torch

            class MyPipeline(DiffusionPipeline):
                def __call__(self, use_karras_sigmas, device, num_inference_steps):
                    if use_karras_sigmas:
                        sigmas = get_sigmas_karras(num_inference_steps)
                    else:
                        sigmas = self.scheduler.sigmas
                    sigmas = sigmas.to(device)
                    if use_karras_sigmas:
                        timesteps = self.scheduler.timesteps.to(device)
                    else:
                        timesteps = self.scheduler.timesteps
                    timesteps = timesteps.to(device=device, dtype=torch.float32)
                    if use_karras_sigmas:
                        alphas = torch.ones(3, device=device)
                    else:
                        alphas = latents.new_ones(3)
                    return sigmas, timesteps, alphas
            """,
        ),
        Valid(
            """
            import torch

            class MyScheduler(SchedulerMixin):
                def update(self, order, R, b, x, device):
                    if order == 1:
                        rhos = torch.tensor([0.5], dtype=x.dtype, device=device)
                    else:
                        rhos = torch.linalg.solve(R, b).to(device).to(x.dtype)
                    if order == 1:
                        gains = torch.tensor([0.5], dtype=torch.float32, device=device)
                    else:
                        gains = torch.linalg.solve(R, b)
                    return rhos, gains
            """,
            path="diffusers/schedulers/scheduling_example.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            class MyPipeline(DiffusionPipeline):
                def __call__(self, use_karras_sigmas, device, num_inference_steps, dtype):
                    if use_karras_sigmas:
                        sigmas = get_sigmas_karras(num_inference_steps)
                        sigmas = sigmas.to(device)
                    else:
                        sigmas = self.scheduler.sigmas
                    sigmas = sigmas.to(dtype)
                    return sigmas
            """,
            message=(
                "`sigmas` is moved to the device on one branch (`sigmas.to(device)`) but `self.scheduler.sigmas` on "
                "this one leaves it where it was made, and nothing after the `if` moves it; move it after the `if` "
                "(`sigmas = sigmas.to(device)`)."
            ),
        ),
        Invalid(
            """
            import torch

            class MyScheduler(SchedulerMixin):
                def update(self, order, R, b, x, device):
                    if order == 1:
                        rhos = torch.tensor([0.5], dtype=x.dtype, device=device)
                    else:
                        rhos = torch.linalg.solve(R, b)
                    return torch.einsum("k,bkc->bc", rhos, x)
            """,
            path="diffusers/schedulers/scheduling_example.py",
            message=(
                "`rhos` is made in `x.dtype` on one branch (`torch.tensor([0.5], dtype=x.dtype, device=device)`) but "
                "`torch.linalg.solve(R, b)` on this one leaves it in float32, and nothing after the `if` casts it; "
                "cast it on this branch too (`.to(x.dtype)`)."
            ),
        ),
    ]

    def check(self) -> None:
        #: `elif` links already compared as part of the chain that starts at their first `if`
        self._elifs: set[int] = set()
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            for statement in walk.own_nodes(function, cst.If):
                if id(statement) in self._elifs:
                    continue
                branches = self._branches(statement)
                if branches is None:
                    continue
                self._compare(function, statement, branches, definition.qualname)

    def _branches(self, statement: cst.If) -> list[dict[str, cst.Assign]] | None:
        """The last assignment to each name directly in each branch, when the chain ends in `else:`."""
        branches: list[dict[str, cst.Assign]] = []
        branch: cst.If | cst.Else | None = statement
        while isinstance(branch, cst.If):
            branches.append(self._last_assignments(branch.body.body))
            if isinstance(branch.orelse, cst.If):
                self._elifs.add(id(branch.orelse))
            branch = branch.orelse
        if branch is None:
            return None
        branches.append(self._last_assignments(branch.body.body))
        return branches

    @staticmethod
    def _last_assignments(statements: Sequence[cst.CSTNode]) -> dict[str, cst.Assign]:
        found: dict[str, cst.Assign] = {}
        for statement in statements:
            if not isinstance(statement, cst.SimpleStatementLine):
                for name in [n for n in found if n in {t.value for t in walk.nodes(statement, cst.Name)}]:
                    del found[name]  # reassigned (or used) in a nested block: not followed
                continue
            for small in statement.body:
                if isinstance(small, cst.Assign) and len(small.targets) == 1:
                    target = small.targets[0].target
                    if isinstance(target, cst.Name):
                        found[target.value] = small
        return found

    def _compare(
        self, function: cst.FunctionDef, statement: cst.If, branches: list[dict[str, cst.Assign]], scope: str
    ) -> None:
        names = set(branches[0]).intersection(*branches[1:])
        for name in sorted(names):
            values = [branch[name].value for branch in branches]
            moved = next((v for v in values if _placed_on_device(v)), None)
            if moved is not None and not self._handled_after(function, statement, name, device=True):
                for branch in branches:
                    value = branch[name].value
                    if _left_on_cpu(value):
                        message = self.message.format(
                            name=name,
                            placed="moved to the device",
                            placed_value=_code(moved),
                            value=_code(value),
                            where="where it was made",
                            moves="moves",
                            remedy=f"move it after the `if` (`{name} = {name}.to(device)`)",
                        )
                        self.report(branch[name], message, symbol=name, scope=scope)
                        return
            typed = next(((v, d) for v in values if (d := _dynamic_dtype(v)) is not None), None)
            if typed is not None and not self._handled_after(function, statement, name, device=False):
                dtype = _code(typed[1])
                for branch in branches:
                    value = branch[name].value
                    if _default_dtype(value):
                        message = self.message.format(
                            name=name,
                            placed=f"made in `{dtype}`",
                            placed_value=_code(typed[0]),
                            value=_code(value),
                            where="in float32",
                            moves="casts",
                            remedy=f"cast it on this branch too (`.to({dtype})`)",
                        )
                        self.report(branch[name], message, symbol=name, scope=scope)
                        return

    @staticmethod
    def _handled_after(function: cst.FunctionDef, statement: cst.If, name: str, *, device: bool) -> bool:
        """Whether a call after the `if` moves (or casts) `name`: `name.to(device)`, `name.to(dtype)`."""
        end = walk.span(statement)
        for call in walk.own_nodes(function, cst.Call):
            at = walk.span(call)
            if end is not None and at is not None and at[0] < end[1]:
                continue
            func = call.func
            if not isinstance(func, cst.Attribute) or _root(func.value) != name:
                continue
            if device and _moves_device(call) or not device and _casts(call) is not None:
                return True
            if func.attr.value in ("type", "type_as", "half", "bfloat16") and not device:
                return True
        return False
