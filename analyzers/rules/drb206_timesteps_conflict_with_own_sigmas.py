"""DRB206: the caller's `timesteps` go to `retrieve_timesteps` together with `sigmas` the pipeline always builds."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid, dotted_name
from analyzers.matchers import calls, names_read, parameters, pipeline_classes


#: what `retrieve_timesteps` raises when it gets both (diffusers' `# Copied from` helper says this)
CONFLICT_GUARD = "timesteps is not None and sigmas is not None"


def _argument(call: cst.Call, keyword: str, position: int) -> cst.BaseExpression | None:
    """The value passed for `keyword`, by keyword or at `position` (0-based) among the positional arguments."""
    positional = [arg for arg in call.args if arg.keyword is None and not arg.star]
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == keyword:
            return arg.value
    return positional[position].value if len(positional) > position else None


def _before(node: cst.CSTNode, at: int) -> bool:
    """Whether `node`'s subtree ends before position `at` of the file's walk (an assignment holding the call does
    not)."""
    found = walk.span(node)
    return found is not None and found[1] <= at


def _assigns(function: cst.FunctionDef, name: str) -> list[cst.CSTNode]:
    """Every statement of `function` that binds `name` (assignment, augmented or annotated, loop target)."""
    found: list[cst.CSTNode] = []
    for assign in walk.nodes(function.body, cst.Assign):
        if any(n.value == name for t in assign.targets for n in walk.nodes(t.target, cst.Name)):
            found.append(assign)
    augmented: list[cst.AugAssign | cst.AnnAssign] = [
        *walk.nodes(function.body, cst.AugAssign),
        *walk.nodes(function.body, cst.AnnAssign),
    ]
    for node in augmented:
        if isinstance(node.target, cst.Name) and node.target.value == name:
            found.append(node)
    for loop in walk.nodes(function.body, cst.For):
        if any(n.value == name for n in walk.nodes(loop.target, cst.Name)):
            found.append(loop)
    return found


def _unconditional(value: cst.BaseExpression, may_read: tuple[str, ...]) -> bool:
    """A value that is never None whatever the caller passed: no `None`, no conditional, and no name read but
    `may_read` among `timesteps` and `sigmas`."""
    if isinstance(value, (cst.IfExp, cst.BooleanOperation)):
        return False
    read = {name.value for name in names_read(value)}
    return not ({"timesteps", "sigmas", "None"} - set(may_read)) & read


def _defaulted(value: cst.BaseExpression, name: str) -> bool:
    """`build if name is None else name`, `name if name is not None else build`, `name or build`: the caller's
    value, else one built here."""
    if isinstance(value, cst.BooleanOperation) and isinstance(value.operator, cst.Or):
        return isinstance(value.left, cst.Name) and value.left.value == name and _unconditional(value.right, ())
    if not (isinstance(value, cst.IfExp) and isinstance(value.test, cst.Comparison)):
        return False
    test = value.test
    if not (
        isinstance(test.left, cst.Name)
        and test.left.value == name
        and len(test.comparisons) == 1
        and isinstance(test.comparisons[0].comparator, cst.Name)
        and test.comparisons[0].comparator.value == "None"
    ):
        return False
    operator = test.comparisons[0].operator
    if not isinstance(operator, (cst.Is, cst.IsNot)):
        return False
    built, kept = (value.body, value.orelse) if isinstance(operator, cst.Is) else (value.orelse, value.body)
    return isinstance(kept, cst.Name) and kept.value == name and _unconditional(built, ())


class TimestepsConflictWithOwnSigmas(Rule):
    """
    ## What it does
    Checks for a pipeline method that takes `timesteps` from its caller and hands them to
    `retrieve_timesteps(...)` together with `sigmas` that the method itself builds on every call
    (`sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)`) or whenever the caller
    gave none (`... if sigmas is None else sigmas`), while the module's `retrieve_timesteps` raises when
    it gets both.

    ## Why is this bad?
    The documented `timesteps=` argument can never be used: every call that passes it fails with
    "Only one of `timesteps` or `sigmas` can be passed", and a call without it never reads it. The
    public argument is accepted and documented, and has no working use (meta issue #13656, pattern 2).

    ## Example
    ```python
    def __call__(self, prompt, num_inference_steps=50, timesteps=None):
        sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        timesteps, num_inference_steps = retrieve_timesteps(
            self.scheduler, num_inference_steps, device, timesteps, sigmas=sigmas
        )
    ```

    Use instead:
    ```python
    def __call__(self, prompt, num_inference_steps=50, timesteps=None):
        sigmas = None if timesteps is not None else np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        timesteps, num_inference_steps = retrieve_timesteps(
            self.scheduler, num_inference_steps, device, timesteps, sigmas=sigmas
        )
    ```

    ## Known problems
    Only a `retrieve_timesteps` whose body raises on both is trusted to conflict: the module's own, or
    one it imports from a module of the scanned tree. Every binding of the `sigmas` before the call must be a statement of the block that
    holds the call (the method's body, or one branch: a branch on the scheduler's configuration is no
    escape), no test around the call may read `timesteps` or `sigmas`, the first binding a value that reads neither `timesteps` nor `sigmas` and holds no `None` (or the
    caller's `sigmas` defaulted that way), later ones derived from it; a build under a condition is taken
    to leave room for the caller's schedule. The `timesteps` must still be the caller's.

    ## References
    - huggingface/diffusers#13656, pattern 2
    - DRC011 (custom schedule takes effect) fails on LTX, LTX2, Mochi, Motif and Bria pipelines of the
      2026-08 tree with "Only one of `timesteps` or `sigmas`"
    """

    code = "DRB206"
    pattern = 2
    severity = "error"
    message = (
        "the caller's `timesteps` go to `retrieve_timesteps` together with the `sigmas` built on every call, and "
        "`retrieve_timesteps` raises when it gets both, so any `timesteps=` fails; build `sigmas` only when "
        "`timesteps` is None."
    )
    REQUIRES_ANY = ("retrieve_timesteps",)
    PATHS = ("/pipelines/",)

    _HELPER = """
        import numpy as np

        def retrieve_timesteps(scheduler, num_inference_steps=None, device=None, timesteps=None, sigmas=None, **kwargs):
            if timesteps is not None and sigmas is not None:
                raise ValueError("Only one of `timesteps` or `sigmas` can be passed.")
            scheduler.set_timesteps(num_inference_steps, device=device, timesteps=timesteps, sigmas=sigmas, **kwargs)
            return scheduler.timesteps, len(scheduler.timesteps)
    """

    VALID = [
        Valid(
            _HELPER
            + """
        class FluxLikePipeline(DiffusionPipeline):
            def __call__(self, prompt, num_inference_steps=28, sigmas=None):
                sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps) if sigmas is None else sigmas
                timesteps, num_inference_steps = retrieve_timesteps(self.scheduler, num_inference_steps, "cuda", sigmas=sigmas)
                return timesteps
        """
        ),
        Valid(
            _HELPER
            + """
        class GuardedPipeline(DiffusionPipeline):
            def __call__(self, prompt, num_inference_steps=28, timesteps=None):
                sigmas = None
                if timesteps is None:
                    sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
                timesteps, num_inference_steps = retrieve_timesteps(
                    self.scheduler, num_inference_steps, "cuda", timesteps, sigmas=sigmas
                )
                return timesteps
        """
        ),
        Valid(
            _HELPER
            + """
        class NoCustomTimestepsPipeline(DiffusionPipeline):
            def __call__(self, prompt, num_inference_steps=28):
                sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
                timesteps, num_inference_steps = retrieve_timesteps(self.scheduler, num_inference_steps, "cuda", sigmas=sigmas)
                return timesteps
        """
        ),
        Valid(
            _HELPER
            + """
        class ScheduleTestedPipeline(DiffusionPipeline):
            def __call__(self, prompt, num_inference_steps=30, timesteps=None):
                if timesteps is None:
                    sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
                    timesteps, num_inference_steps = retrieve_timesteps(
                        self.scheduler, num_inference_steps, "cuda", timesteps, sigmas
                    )
                return timesteps
        """
        ),
        Valid(
            _HELPER
            + """
        class BuiltInABranchPipeline(DiffusionPipeline):
            def __call__(self, prompt, num_inference_steps=30, timesteps=None, use_karras=False):
                if not use_karras:
                    sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
                else:
                    sigmas = karras_sigmas(num_inference_steps)
                timesteps, num_inference_steps = retrieve_timesteps(
                    self.scheduler, num_inference_steps, "cuda", timesteps, sigmas=sigmas
                )
                return timesteps
        """
        ),
        Valid(
            """
            from ..flux.pipeline_flux import retrieve_timesteps

            class ImportedHelperPipeline(DiffusionPipeline):
                def __call__(self, prompt, num_inference_steps=28, timesteps=None):
                    sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
                    timesteps, n = retrieve_timesteps(self.scheduler, num_inference_steps, "cuda", timesteps, sigmas=sigmas)
                    return timesteps
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            from ..flux.pipeline_flux import retrieve_timesteps

            class BorrowedHelperPipeline(DiffusionPipeline):
                def __call__(self, prompt, num_inference_steps=30, timesteps=None):
                    sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
                    timesteps, n = retrieve_timesteps(self.scheduler, num_inference_steps, "cuda", timesteps, sigmas=sigmas)
                    return timesteps
            """,
            files={"diffusers/pipelines/flux/pipeline_flux.py": _HELPER},
        ),
        Invalid(
            _HELPER
            + """
        class ConfigBranchPipeline(DiffusionPipeline):
            def __call__(self, prompt, num_inference_steps=30, timesteps=None):
                if self.scheduler.config.use_dynamic_shifting:
                    sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
                    timesteps, num_inference_steps = retrieve_timesteps(
                        self.scheduler, num_inference_steps, "cuda", timesteps, sigmas
                    )
                else:
                    timesteps, num_inference_steps = retrieve_timesteps(self.scheduler, num_inference_steps, "cuda", timesteps)
                return timesteps
        """
        ),
        Invalid(
            _HELPER
            + """
        class TwoScheduleArgumentsPipeline(DiffusionPipeline):
            def __call__(self, prompt, num_inference_steps=40, timesteps=None, sigmas=None):
                sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps) if sigmas is None else sigmas
                timesteps, num_inference_steps = retrieve_timesteps(
                    self.scheduler, num_inference_steps, "cuda", timesteps=timesteps, sigmas=sigmas
                )
                return timesteps
        """
        ),
        Invalid(
            _HELPER
            + """
        class ConvertedSigmasPipeline(DiffusionPipeline):
            def __call__(self, prompt, num_inference_steps=64, timesteps=None):
                sigmas = make_schedule(num_inference_steps, 0.025)
                sigmas = np.array(sigmas)
                timesteps, num_inference_steps = retrieve_timesteps(self.scheduler, num_inference_steps, "cuda", timesteps, sigmas)
                return timesteps
        """
        ),
        Invalid(
            _HELPER
            + """
        class VideoPipeline(DiffusionPipeline):
            def __call__(self, prompt, num_inference_steps=50, timesteps=None):
                sequence_length = 13 * 16 * 16
                sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
                mu = sequence_length / 4096
                timesteps, num_inference_steps = retrieve_timesteps(
                    self.scheduler,
                    num_inference_steps,
                    "cuda",
                    timesteps,
                    sigmas=sigmas,
                    mu=mu,
                )
                return timesteps
        """,
            message=(
                "the caller's `timesteps` go to `retrieve_timesteps` together with the `sigmas` built on every call, "
                "and `retrieve_timesteps` raises when it gets both, so any `timesteps=` fails; build `sigmas` only "
                "when `timesteps` is None."
            ),
        ),
        Invalid(
            _HELPER
            + """
        class ImagePipeline(DiffusionPipeline):
            def __call__(self, prompt, num_inference_steps=30, timesteps=None, guidance_scale=5.0):
                custom_sigmas = np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1]
                timesteps, num_inference_steps = retrieve_timesteps(
                    self.scheduler, num_inference_steps=num_inference_steps, device="cuda",
                    timesteps=timesteps, sigmas=custom_sigmas
                )
                return timesteps
        """
        ),
    ]

    def check(self) -> None:
        self._conflicts: bool | None = None  # whether the helper raises on both: read once, and only when needed
        for cls in pipeline_classes(self.context):
            for name, method in self.context.methods(cls).items():
                if "timesteps" in {p.name.value for p in parameters(method)}:
                    self._check_method(f"{cls.qualname}.{name}", method)

    @staticmethod
    def _same_block(method: cst.FunctionDef, node: cst.CSTNode, at: int) -> bool:
        """Whether `node` is a statement of the very block that holds the call at `at` (so it ran whenever the call
        runs): the method's body, or the body of one branch or loop in it."""
        blocks = [method.body, *walk.nodes(method.body, cst.IndentedBlock)]
        for block in blocks:
            if not any(
                isinstance(line, cst.SimpleStatementLine) and any(small is node for small in line.body)
                for line in block.body
            ):
                continue
            return any(
                (bounds := walk.span(statement)) is not None and bounds[0] <= at < bounds[1]
                for statement in block.body
            )
        return False

    def _helper_conflicts(self) -> bool:
        """Whether the `retrieve_timesteps` this module calls, its own or one it imports (from a module the project
        view can read), raises on `timesteps` and `sigmas` together (asked once per file, after a call qualifies:
        an imported helper costs reading its module)."""
        if self._conflicts is None:
            self._conflicts = self._read_helper()
        return self._conflicts

    def _read_helper(self) -> bool:
        imported = self.context.imports.get("retrieve_timesteps")
        module = self.context.module if imported is None else self.context.project.module(imported.rpartition(".")[0])
        if module is None:
            return False
        for statement in module.body:
            if isinstance(statement, cst.FunctionDef) and statement.name.value == "retrieve_timesteps":
                return CONFLICT_GUARD in module.code_for_node(statement)
        return False

    def _check_method(self, scope: str, method: cst.FunctionDef) -> None:
        own = {p.name.value for p in parameters(method)}
        for call in calls(method.body):
            if (dotted_name(call.func) or "").rpartition(".")[2] != "retrieve_timesteps":
                continue
            passed = _argument(call, "timesteps", 3)
            sigmas = _argument(call, "sigmas", 4)
            if not (isinstance(passed, cst.Name) and passed.value == "timesteps" and isinstance(sigmas, cst.Name)):
                continue
            found = walk.span(call)
            if found is None:
                continue
            at = found[0]
            bindings = [node for node in _assigns(method, sigmas.value) if _before(node, at)]
            if any(_before(node, at) for node in _assigns(method, "timesteps")):
                continue  # no longer the caller's timesteps
            if not bindings or not all(self._same_block(method, node, at) for node in bindings):
                continue  # built under a condition of its own: maybe only when no timesteps were given
            if any(
                {"timesteps", "sigmas"} & {name.value for name in names_read(branch.test)}
                for branch in walk.nodes(method.body, cst.If)
                if (bounds := walk.span(branch)) is not None and bounds[0] <= at < bounds[1]
            ):
                continue  # the call runs under a test of the schedule arguments
            first, *later = bindings
            if sigmas.value in own:
                # the caller's sigmas, defaulted when absent: `build if sigmas is None else sigmas`
                if not (isinstance(first, cst.Assign) and _defaulted(first.value, sigmas.value)):
                    continue
            elif not isinstance(first, cst.Assign) or not _unconditional(first.value, ()):
                continue
            if not all(isinstance(n, cst.Assign) and _unconditional(n.value, (sigmas.value,)) for n in later):
                continue
            if not self._helper_conflicts():
                return
            self.report(call, self.message, symbol="timesteps", scope=scope)
            return  # the first call already fails: one finding per method
