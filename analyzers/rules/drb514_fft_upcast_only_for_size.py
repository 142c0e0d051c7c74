"""DRB514: a tensor is upcast to float32 before an FFT only under a size test, never for its dtype."""

from __future__ import annotations

from collections.abc import Sequence

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name


#: `torch.fft` transforms that reject bfloat16 and compute float16 in the experimental ComplexHalf
FFT_FUNCTIONS = frozenset({"fft", "fft2", "fftn", "rfft", "rfft2", "rfftn", "hfft", "ihfft"})
FLOAT32 = frozenset({"torch.float32", "torch.float"})


def _code(node: cst.CSTNode) -> str:
    return " ".join(cst.Module([]).code_for_node(node).split())


def _upcast_of(value: cst.BaseExpression, name: str) -> bool:
    """`name.to(dtype=torch.float32)`, `name.to(torch.float32)`, `name.to(device, torch.float32)`, `name.float()`."""
    if not isinstance(value, cst.Call) or not isinstance(value.func, cst.Attribute):
        return False
    receiver = value.func.value
    while isinstance(receiver, cst.Call) and isinstance(receiver.func, cst.Attribute):
        receiver = receiver.func.value  # `x.contiguous().float()`
    if not (isinstance(receiver, cst.Name) and receiver.value == name):
        return False
    method = value.func.attr.value
    if method == "float" and not value.args:
        return True
    return method == "to" and any(dotted_name(arg.value) in FLOAT32 for arg in value.args)


def _tests_dtype(test: cst.BaseExpression) -> bool:
    """Whether a branch test looks at the dtype (`x.dtype == torch.bfloat16`, `x.is_floating_point()`): its author
    weighed which dtypes to upcast, which a size test (`(W & (W - 1)) != 0`) does not."""
    text = _code(test)
    return any(word in text for word in ("dtype", "float", "half", "finfo"))


class FftUpcastOnlyForSize(Rule):
    """
    ## What it does
    Checks functions that pass a tensor to a `torch.fft` transform (`fftn`, `fft2`, `rfft`, ...) and upcast it to
    float32 first only inside `if` branches that never look at its dtype: a size test such as
    `if (W & (W - 1)) != 0 or (H & (H - 1)) != 0:` ("non-power-of-2 sizes must be float32").

    ## Why is this bad?
    The FFTs of PyTorch have no bfloat16 kernel, and compute float16 in the experimental ComplexHalf (`complex32`),
    which warns and is numerically unstable (and has no CPU kernel). When the size test is false, a half-precision
    tensor reaches the transform as it is: FreeU with a bfloat16 UNet at 1024x1024 crashes, while the odd sizes the
    author tried work.

    ## Example
    ```python
    if (W & (W - 1)) != 0 or (H & (H - 1)) != 0:
        x = x.to(dtype=torch.float32)
    x_freq = fftn(x, dim=(-2, -1))
    ```

    Use instead:
    ```python
    if (W & (W - 1)) != 0 or (H & (H - 1)) != 0:
        x = x.to(dtype=torch.float32)
    elif x.dtype != torch.float32:
        x = x.to(dtype=torch.float32)
    x_freq = fftn(x, dim=(-2, -1))
    ```

    ## Known problems
    Only an upcast assigned back to the name the transform reads (`x = x.float()`) counts. A function that never
    upcasts is left alone (its callers may hand it float32 tensors), and so is one whose branches test the dtype,
    even when they forget one half-precision dtype (`elif x.dtype == torch.bfloat16:` lets float16 into
    ComplexHalf, which works on CUDA with a warning).

    ## References
    - huggingface/diffusers#13656, pattern 5
    - huggingface/diffusers#10125 (FreeU's `fourier_filter` passed bfloat16 to `fftn` at power-of-two sizes),
      huggingface/diffusers#13503 (and float16, into ComplexHalf)
    """

    code = "DRB514"
    pattern = 5
    severity = "warning"
    message = (
        "`{name}` is upcast to float32 before `{fft}` only when `{tests}`, a test that never looks at its dtype, so "
        "bfloat16/float16 inputs reach the FFT otherwise (no bfloat16 kernel; float16 runs in experimental "
        "ComplexHalf); also upcast every non-float32 dtype (`elif {name}.dtype != torch.float32:`)."
    )
    REQUIRES_ANY = ("fft",)

    VALID = [
        Valid(
            """
            import torch
            from torch.fft import fftn

            def low_pass(x, threshold):
                B, C, H, W = x.shape
                if H % 2 != 0:
                    x = x.to(dtype=torch.float32)
                elif x.dtype != torch.float32:
                    x = x.to(dtype=torch.float32)
                return fftn(x, dim=(-2, -1))

            def band_pass(x):
                if x.dtype in (torch.float16, torch.bfloat16):
                    x = x.float()
                return torch.fft.fft2(x)

            def high_pass(x):
                x = x.float()
                return torch.fft.rfft(x)

            def spectrum(x):
                return torch.fft.fftn(x)

            def guarded(x):
                if x.shape[-1] % 2:
                    x = x.float()
                else:
                    x = x.to(torch.float32)
                return torch.fft.fftn(x)
            """,
            path="diffusers/utils/torch_utils.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            import torch
            from torch.fft import fftn

            def low_pass(x_in, threshold):
                x = x_in
                B, C, H, W = x.shape
                if H % 2 != 0 or W % 2 != 0:
                    x = x.to(dtype=torch.float32)
                x_freq = fftn(x, dim=(-2, -1))
                return x_freq.real.to(x_in.dtype)
            """,
            path="diffusers/utils/torch_utils.py",
            message=(
                "`x` is upcast to float32 before `fftn` only when `H % 2 != 0 or W % 2 != 0`, a test that never looks "
                "at its dtype, so bfloat16/float16 inputs reach the FFT otherwise (no bfloat16 kernel; float16 runs "
                "in experimental ComplexHalf); also upcast every non-float32 dtype "
                "(`elif x.dtype != torch.float32:`)."
            ),
        ),
        Invalid(
            """
            import torch

            def mix(latents):
                if not is_power_of_two(latents.shape[-1]):
                    latents = latents.contiguous().float()
                return torch.fft.fft2(latents)
            """,
            path="diffusers/pipelines/free_noise_utils.py",
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            transforms = [call for call in walk.own_nodes(function, cst.Call) if self._fft(call)]
            if not transforms:
                continue
            upcasts: dict[str, list[tuple[int, list[cst.BaseExpression] | None]]] = {}
            self._collect(function.body.body, [], upcasts)
            for call in transforms:
                arg = call.args[0].value if call.args and call.args[0].keyword is None else None
                if not isinstance(arg, cst.Name) or arg.value not in upcasts:
                    continue
                at = walk.span(call)
                before = [tests for start, tests in upcasts[arg.value] if at is None or start < at[0]]
                if not before or any(tests is None for tests in before):
                    continue  # an unconditional upcast, or one in an `else:`
                conditions = [test for tests in before if tests is not None for test in tests]
                if any(_tests_dtype(test) for test in conditions):
                    continue
                fft = dotted_name(call.func) or ""
                tests = "` or `".join(dict.fromkeys(_code(test) for test in conditions))
                message = self.message.format(name=arg.value, fft=fft.rpartition(".")[2], tests=tests)
                self.report(call, message, symbol=arg.value, scope=definition.qualname)

    def _fft(self, call: cst.Call) -> bool:
        name = dotted_name(call.func) or ""
        head, _, last = name.rpartition(".")
        if last not in FFT_FUNCTIONS:
            return False
        if head in ("torch.fft", "fft"):
            return head == "torch.fft" or self.context.imports.get("fft", "") == "torch.fft"
        return not head and self.context.imports.get(last, "") == f"torch.fft.{last}"

    def _collect(
        self,
        statements: Sequence[cst.CSTNode],
        tests: list[cst.BaseExpression] | None,
        found: dict[str, list[tuple[int, list[cst.BaseExpression] | None]]],
    ) -> None:
        """Record each `x = x.float()` with the tests of the branches around it (None: it runs whatever they
        say, at the top level or in an `else:`)."""
        for statement in statements:
            if isinstance(statement, cst.SimpleStatementLine):
                for small in statement.body:
                    if isinstance(small, cst.Assign) and len(small.targets) == 1:
                        target = small.targets[0].target
                        if isinstance(target, cst.Name) and _upcast_of(small.value, target.value):
                            at = walk.span(small)
                            found.setdefault(target.value, []).append((at[0] if at else 0, tests or None))
            elif isinstance(statement, cst.If):
                branch: cst.If | cst.Else | None = statement
                while isinstance(branch, cst.If):
                    self._collect(branch.body.body, [*(tests or []), branch.test], found)
                    branch = branch.orelse
                if isinstance(branch, cst.Else):
                    self._collect(branch.body.body, tests, found)
            elif isinstance(statement, (cst.For, cst.While, cst.With, cst.Try)):
                self._collect(statement.body.body, tests, found)
