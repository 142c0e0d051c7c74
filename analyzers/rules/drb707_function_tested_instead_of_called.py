"""DRB707: a function is tested for truth instead of called, so the check always passes."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid


def _truth_tests(function: cst.FunctionDef) -> list[cst.BaseExpression]:
    """The expressions of `function` whose truth decides something: `if`/`elif`/`while`/`assert` tests and the test
    of `a if test else b`, each split at `and`/`or`/`not`, and the left operand of any other `and`/`or` (its right
    operand is a value: `callback or self._default`)."""
    roots: list[cst.BaseExpression] = []
    roots += [n.test for n in walk.own_nodes(function, cst.If)]
    roots += [n.test for n in walk.own_nodes(function, cst.While)]
    roots += [n.test for n in walk.own_nodes(function, cst.IfExp)]
    roots += [n.test for n in walk.own_nodes(function, cst.Assert)]
    roots += [n.left for n in walk.own_nodes(function, cst.BooleanOperation)]
    tests: list[cst.BaseExpression] = []
    while roots:
        expr = roots.pop()
        if isinstance(expr, cst.BooleanOperation):
            roots += [expr.left, expr.right]
        elif isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, cst.Not):
            roots.append(expr.expression)
        else:
            tests.append(expr)
    return tests


class FunctionTestedInsteadOfCalled(Rule):
    """
    ## What it does
    Checks for a function defined in the same scope (a nested `def`, a function of the module, or a plain
    method of the class used as `self.name`) whose name is used as a condition without being called:
    `x if denoising_value_valid else None`, `if self.is_valid:`, `ok and check`.

    ## Why is this bad?
    A function object is always true. The check it was meant to run never runs, so the branch is taken
    for every input: a validation that should reject a value accepts it, or an option the check should
    switch off is always on.

    ## Example
    ```python
    def denoising_value_valid(dnv):
        return isinstance(dnv, float) and 0 < dnv < 1


    denoising_start = self.denoising_start if denoising_value_valid else None
    ```

    Use instead:
    ```python
    denoising_start = self.denoising_start if denoising_value_valid(self.denoising_start) else None
    ```

    ## Known problems
    Only names bound by a `def` of the enclosing function, of the module, or methods of the enclosing class
    (not properties, nor names rebound elsewhere) are followed; a function passed in as an argument is not.

    ## References
    - huggingface/diffusers#13656, pattern 7
    - huggingface/diffusers#6912 (SDXL inpaint pipelines tested `denoising_value_valid` without calling it)
    """

    code = "DRB707"
    pattern = 7
    severity = "error"
    message = (
        "`{name}` is a function, tested here without being called, so it is always true and the check never runs; "
        "call it: `{name}(...)`."
    )
    REQUIRES_ANY = ("def ",)

    VALID = [
        Valid(
            """
            class InpaintPipeline(DiffusionPipeline):
                @property
                def do_cfg(self):
                    return self._guidance_scale > 1

                def is_ready(self):
                    return self.unet is not None

                def __call__(self, image, denoising_start=None, callback=None):
                    def denoising_value_valid(dnv):
                        return isinstance(dnv, float) and 0 < dnv < 1

                    start = denoising_start if denoising_value_valid(denoising_start) else None
                    if self.do_cfg and self.is_ready() and callback:
                        image = torch.cat([image] * 2)
                    return start, image
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class InpaintPipeline(DiffusionPipeline):
                def __call__(self, image, denoising_start=None):
                    def denoising_value_valid(dnv):
                        return isinstance(dnv, float) and 0 < dnv < 1

                    start = denoising_start if denoising_value_valid else None
                    return self.get_timesteps(start)
            """,
            message=(
                "`denoising_value_valid` is a function, tested here without being called, so it is always true and "
                "the check never runs; call it: `denoising_value_valid(...)`."
            ),
        ),
        Invalid(
            """
            class Loader:
                def has_weights(self):
                    return bool(self.state_dict)

                def load(self):
                    if not self.has_weights:
                        raise ValueError("no weights")
            """
        ),
    ]

    def check(self) -> None:
        module = self.context.module
        module_functions = {s.name.value for s in module.body if isinstance(s, cst.FunctionDef)}
        methods_of: dict[int, set[str]] = {}
        module_rebound: set[str] | None = None
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            candidates: list[tuple[cst.BaseExpression, str]] = []
            for test in _truth_tests(function):
                if isinstance(test, cst.Name):
                    candidates.append((test, test.value))
                elif (
                    isinstance(test, cst.Attribute) and isinstance(test.value, cst.Name) and test.value.value == "self"
                ):
                    candidates.append((test, f"self.{test.attr.value}"))
            if not candidates:
                continue
            nested = {d.name.value for d in walk.nodes(function.body, cst.FunctionDef)}
            parent = definition.parent
            methods: set[str] = set()
            if parent is not None and isinstance(parent.node, cst.ClassDef):
                methods = methods_of.get(id(parent.node), set())
                if id(parent.node) not in methods_of:
                    methods = methods_of[id(parent.node)] = {
                        s.name.value
                        for s in parent.node.body.body
                        if isinstance(s, cst.FunctionDef) and not s.decorators
                    }
            params = {p.name.value for p in walk.nodes(function.params, cst.Param)}
            for test, name in candidates:
                if name.startswith("self."):
                    if name[5:] not in methods:
                        continue
                elif name in params or name not in nested | module_functions:
                    continue
                elif name in nested and name in self._rebound(function):
                    continue
                elif name not in nested:
                    if module_rebound is None:
                        module_rebound = self._rebound(module)
                    if name in module_rebound:
                        continue
                self.report(test, self.message.format(name=name), symbol=name, scope=definition.qualname)

    @staticmethod
    def _rebound(root: cst.CSTNode) -> set[str]:
        """Names assigned (not `def`-bound) anywhere under `root`: those may hold something else than the function."""
        names: set[str] = set()
        for assign in walk.nodes(root, cst.Assign):
            for target in assign.targets:
                names |= {n.value for n in walk.nodes(target.target, cst.Name)}
        return names
