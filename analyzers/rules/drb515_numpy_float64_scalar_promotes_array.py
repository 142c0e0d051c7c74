"""DRB515: an array made in a chosen dtype is multiplied by `np.float64(...)`, which promotes it to float64."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.casts import is_dtype_expr
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.matchers import keyword


FLOAT64_SCALARS = frozenset({"np.float64", "numpy.float64", "np.double", "numpy.double"})
FLOAT64_DTYPES = frozenset({"np.float64", "numpy.float64", "np.double", "numpy.double", "float"})
ARITHMETIC = (cst.Multiply, cst.Divide, cst.Add, cst.Subtract)
AUGMENTED = (cst.MultiplyAssign, cst.DivideAssign, cst.AddAssign, cst.SubtractAssign)


def _code(node: cst.CSTNode) -> str:
    return " ".join(cst.Module([]).code_for_node(node).split())


def _float64_scalar(node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.Call) and dotted_name(node.func) in FLOAT64_SCALARS


def _made_in_dtype(value: cst.BaseExpression) -> str | None:
    """The dtype `value` is made in when it says one other than float64: `.astype(latents_dtype)`, `dtype=...`."""
    for call in walk.nodes(value, cst.Call):
        dtype: cst.BaseExpression | None
        if isinstance(call.func, cst.Attribute) and call.func.attr.value == "astype" and call.args:
            dtype = call.args[0].value
        elif (arg := keyword(call, "dtype")) is not None:
            dtype = arg.value
        else:
            # `self.prepare_latents(batch_size, channels, height, width, latents_dtype, ...)`
            dtype = next((a.value for a in call.args if a.keyword is None and is_dtype_expr(a.value)), None)
            if dtype is None:
                continue
        if dotted_name(dtype) not in FLOAT64_DTYPES:
            return _code(dtype)
    return None


class NumpyFloat64ScalarPromotesArray(Rule):
    """
    ## What it does
    Checks for an array made in a chosen dtype (`generator.randn(*shape).astype(latents_dtype)`, or by a helper
    handed that dtype: `self.prepare_latents(..., latents_dtype, ...)`) that is then
    multiplied, divided, added to or subtracted from a `np.float64(...)` scalar: `latents * np.float64(sigma)`.

    ## Why is this bad?
    Under NumPy 2 (NEP 50) a NumPy float64 scalar is not "weak" as a Python float is: `float16_array *
    np.float64(x)` is a float64 array. The latents leave in float64, and an ONNX Runtime session whose UNet takes
    `tensor(float16)` rejects them ("Unexpected input data type"); a Python float or the scheduler's value as it is
    keeps the array's dtype.

    ## Example
    ```python
    latents = generator.randn(*latents_shape).astype(latents_dtype)
    latents = latents * np.float64(self.scheduler.init_noise_sigma)
    ```

    Use instead:
    ```python
    latents = latents * float(self.scheduler.init_noise_sigma)
    ```

    ## Known problems
    Only a name assigned in the same function from an expression that names its dtype (`.astype(...)`,
    `dtype=...`, a `*dtype` argument; not float64) is followed; an array that came in as an argument is left alone.

    ## References
    - huggingface/diffusers#13656, pattern 5
    - huggingface/diffusers#11054 (the ONNX Stable Diffusion pipelines scaled float16 latents by
      `np.float64(init_noise_sigma)`)
    """

    code = "DRB515"
    pattern = 5
    severity = "warning"
    message = (
        "`{name}` is made in `{dtype}` and combined with `{scalar}`, a NumPy float64 scalar, which promotes it to "
        "float64 under NumPy 2; use a Python float (`float(...)`) or cast the result back to `{dtype}`."
    )
    REQUIRES_ANY = ("float64(", "double(")

    VALID = [
        Valid(
            """
            import numpy as np

            def prepare(generator, shape, latents_dtype, sigma):
                latents = generator.randn(*shape).astype(latents_dtype)
                latents = latents * float(sigma)
                timesteps = np.arange(10).astype(np.float64)
                timesteps = timesteps * np.float64(sigma)
                scale = np.float64(sigma) * 2
                return latents, timesteps, scale

            def scale(latents, sigma):
                return latents * np.float64(sigma)
            """,
        ),
    ]
    INVALID = [
        Invalid(
            """
            import numpy as np

            def prepare(generator, shape, latents_dtype, sigma, latents=None):
                if latents is None:
                    latents = generator.randn(*shape).astype(latents_dtype)
                latents = latents * np.float64(sigma)
                return latents
            """,
            message=(
                "`latents` is made in `latents_dtype` and combined with `np.float64(sigma)`, a NumPy float64 scalar, "
                "which promotes it to float64 under NumPy 2; use a Python float (`float(...)`) or cast the result "
                "back to `latents_dtype`."
            ),
        ),
        Invalid(
            """
            import numpy as np

            class OnnxPipeline(DiffusionPipeline):
                def __call__(self, prompt_embeds, generator):
                    latents_dtype = prompt_embeds.dtype
                    latents = self.prepare_latents(1, 4, 64, 64, latents_dtype, generator)
                    latents = latents * np.float64(self.scheduler.init_noise_sigma)
                    return latents
            """,
        ),
        Invalid(
            """
            import numpy as np

            def prepare(shape, dtype, sigma):
                noise = np.random.standard_normal(shape).astype(dtype)
                noise *= np.float64(sigma)
                return noise
            """,
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            scalars = [c for c in walk.own_nodes(function, cst.Call) if _float64_scalar(c)]
            if not scalars:
                continue
            dtypes: dict[str, str] = {}
            for assign in walk.own_nodes(function, cst.Assign):
                if len(assign.targets) == 1 and isinstance(assign.targets[0].target, cst.Name):
                    dtype = _made_in_dtype(assign.value)
                    if dtype is not None:
                        dtypes.setdefault(assign.targets[0].target.value, dtype)
            if not dtypes:
                continue
            for operation in walk.own_nodes(function, cst.BinaryOperation):
                if isinstance(operation.operator, ARITHMETIC):
                    self._pair(operation, operation.left, operation.right, dtypes, definition.qualname)
                    self._pair(operation, operation.right, operation.left, dtypes, definition.qualname)
            for augmented in walk.own_nodes(function, cst.AugAssign):
                if isinstance(augmented.operator, AUGMENTED):
                    self._pair(augmented, augmented.target, augmented.value, dtypes, definition.qualname)

    def _pair(
        self,
        node: cst.CSTNode,
        array: cst.BaseExpression,
        scalar: cst.BaseExpression,
        dtypes: dict[str, str],
        scope: str,
    ) -> None:
        if isinstance(array, cst.Name) and array.value in dtypes and _float64_scalar(scalar):
            message = self.message.format(name=array.value, dtype=dtypes[array.value], scalar=_code(scalar))
            self.report(node, message, symbol=array.value, scope=scope)
