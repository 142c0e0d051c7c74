"""DRB701: `check_inputs` checks `height`/`width` against the VAE factor only, while the transformer needs more."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Project, Rule, Valid, nested_blocks
from analyzers.matchers import annotation_classes, call_name, parameters, pipeline_methods, self_attribute


#: the sizes whose divisibility `check_inputs` validates
SIZE_NAMES = ("height", "width")
#: names of calls that snap a size to a grid (resolution binning, standard shapes, dimension helpers)
SNAPPING_CALLS = (
    "classify_height_width_bin",
    "map_to_standard_shapes",
    "calculate_dimensions",
    "calculate_shift_dimensions",
)


def _is_zero(node: cst.BaseExpression) -> bool:
    return isinstance(node, cst.Integer) and node.evaluated_value == 0


def _weak_divisor(node: cst.BaseExpression) -> str | None:
    """`8` or `self.vae_scale_factor[_spatial]`: a divisor that only covers the VAE, as source text; else None."""
    if isinstance(node, cst.Integer) and not node.lpar:
        value = node.evaluated_value
        return node.value if isinstance(value, int) and 1 < value <= 8 else None
    if isinstance(node, cst.Attribute) and self_attribute(node) and not node.lpar:
        attr = node.attr.value
        if "vae" in attr and "scale" in attr and "temporal" not in attr:
            return f"self.{attr}"
    return None


def _size_modulo(comparison: cst.Comparison) -> tuple[str, cst.BaseExpression] | None:
    """`height % D != 0` -> ("height", D)."""
    if len(comparison.comparisons) != 1:
        return None
    target = comparison.comparisons[0]
    if not isinstance(target.operator, cst.NotEqual) or not _is_zero(target.comparator):
        return None
    left = comparison.left
    if not (isinstance(left, cst.BinaryOperation) and isinstance(left.operator, cst.Modulo)):
        return None
    if not (isinstance(left.left, cst.Name) and left.left.value in SIZE_NAMES):
        return None
    return left.left.value, left.right


def _truth_operands(test: cst.BaseExpression) -> list[cst.BaseExpression]:
    """The operands whose truth the test takes: the test itself, or each side of its `or`/`and` chain."""
    if isinstance(test, cst.BooleanOperation):
        return _truth_operands(test.left) + _truth_operands(test.right)
    return [test]


def _bare_size_modulo(operand: cst.BaseExpression) -> tuple[str, cst.BaseExpression] | None:
    """`height % D` used for its truth (`if height % 8 or width % 8:`) -> ("height", D)."""
    if not (isinstance(operand, cst.BinaryOperation) and isinstance(operand.operator, cst.Modulo)):
        return None
    if not (isinstance(operand.left, cst.Name) and operand.left.value in SIZE_NAMES):
        return None
    return operand.left.value, operand.right


def _assigned_names(target: cst.BaseExpression) -> set[str]:
    if isinstance(target, cst.Name):
        return {target.value}
    if isinstance(target, (cst.Tuple, cst.List)):
        return {n for element in target.elements for n in _assigned_names(element.value)}
    return set()


def _expression_text(node: cst.BaseExpression) -> str:
    text = "".join(cst.Module([]).code_for_node(node).split())
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    return text


def _same_expression(a: cst.BaseExpression, b: cst.BaseExpression) -> bool:
    """Whether two expressions are the same code, parentheses and spacing aside."""
    return _expression_text(a) == _expression_text(b)


def _snaps(value: cst.BaseExpression) -> bool:
    """Whether an expression rounds a size onto a grid: `(h // k) * k`, `h - h % k`, a binning helper."""
    for op in walk.nodes(value, cst.BinaryOperation):
        # `(h // k) * k` puts h back on its grid; `2 * (h // k)` computes a latent size (Flux's packed latents)
        # and says nothing about the pixel size the caller gets
        if isinstance(op.operator, cst.Multiply) and any(
            isinstance(side, cst.BinaryOperation)
            and isinstance(side.operator, cst.FloorDivide)
            and _same_expression(side.right, other)
            for side, other in ((op.left, op.right), (op.right, op.left))
        ):
            return True
        if (
            isinstance(op.operator, cst.Subtract)
            and isinstance(op.right, cst.BinaryOperation)
            and isinstance(op.right.operator, cst.Modulo)
        ):
            return True
    for call in walk.nodes(value, cst.Call):
        name = call_name(call) or ""
        if name.rpartition(".")[2] in SNAPPING_CALLS:
            return True
    return False


def _comparisons(test: cst.BaseExpression) -> list[cst.Comparison]:
    """The comparisons under `test`, in source order."""
    groups = walk.index(test)
    if cst.IfExp in groups or cst.Lambda in groups:
        # `walk` takes an `a if b else c` test first, lambda parameters out of order: keep source order
        import libcst.matchers as m  # rare path; the module costs 0.3 s to import

        return [n for n in m.findall(test, m.Comparison()) if isinstance(n, cst.Comparison)]
    return walk.nodes(test, cst.Comparison)


def _patch_size_default(classdef: cst.ClassDef) -> int | None:
    for statement in classdef.body.body:
        if isinstance(statement, cst.FunctionDef) and statement.name.value == "__init__":
            for param in parameters(statement):
                if param.name.value == "patch_size" and param.default is not None:
                    return _spatial_patch(param.default)
    return None


def _locate_patch(project: Project, dotted: str, name: str, hops: int = 4) -> tuple[str, str, int | None] | None:
    """`Project.locate_class(dotted, name)` as (module, class name, default `patch_size`), memoised per project.

    Many pipelines annotate `transformer` with the same model class; remembering every hop of the lookup
    (not the parsed modules, which the project's bounded cache drops) parses each transformer module once.
    """
    memo = project.__dict__.setdefault("_drb701_located", {})
    key = (dotted, name, hops)
    if key in memo:
        return memo[key]
    result = None
    if hops > 0:
        head, _, rest = name.partition(".")
        local = None if rest else project.find_class(dotted, name)
        if local is not None:
            result = (dotted, local.name.value, _patch_size_default(local))
        else:
            qualified = project.imports(dotted).get(head)
            if qualified is not None:
                qualified = f"{qualified}.{rest}" if rest else qualified
                next_dotted, _, next_name = qualified.rpartition(".")
                if next_dotted:
                    result = _locate_patch(project, next_dotted, next_name, hops - 1)
    memo[key] = result
    return result


def _spatial_patch(default: cst.BaseExpression) -> int | None:
    """The spatial patch size of a `patch_size` default: `2`, or the last entry of `(1, 2, 2)`."""
    if isinstance(default, cst.Integer):
        value = default.evaluated_value
        return value if isinstance(value, int) else None
    if isinstance(default, cst.Tuple) and default.elements:
        last = default.elements[-1].value
        if isinstance(last, cst.Integer) and isinstance(last.evaluated_value, int):
            return last.evaluated_value
    return None


def _statements(block: Sequence[cst.CSTNode]) -> Iterator[cst.CSTNode]:
    """Every statement under `block`, nested defs and classes included, parents first, in source order.

    Statements only sit in statement lists, so this finds every `if` or assignment without walking
    expressions.
    """
    for statement in block:
        yield statement
        if isinstance(statement, cst.BaseCompoundStatement):
            for inner in nested_blocks(statement):
                yield from _statements(inner)


def _snaps_outside_switches(block: Sequence[cst.CSTNode], arguments: set[str]) -> bool:
    """Whether `block` assigns `height`/`width` a value snapped onto a grid, outside `if <argument>:` blocks.

    Nested functions do not count, and the body of `if <argument>:` runs only when the caller asks for it
    (its `else`/`elif` counts).
    """
    for statement in block:
        if isinstance(statement, (cst.SimpleStatementLine, cst.BaseSmallStatement)):
            # a block of `if x: a = 1` (a `SimpleStatementSuite`) lists small statements directly
            smalls = statement.body if isinstance(statement, cst.SimpleStatementLine) else [statement]
            for small in smalls:
                if isinstance(small, cst.Assign):
                    targets = set().union(*(_assigned_names(t.target) for t in small.targets))
                    if _snapping(targets, small.value):
                        return True
                elif isinstance(small, (cst.AugAssign, cst.AnnAssign)):
                    if _snapping(_assigned_names(small.target), small.value):
                        return True
        elif isinstance(statement, cst.FunctionDef):
            continue
        elif isinstance(statement, cst.If) and isinstance(statement.test, cst.Name):
            if statement.test.value in arguments:
                inner = [] if statement.orelse is None else [statement.orelse]
                if inner and _snaps_outside_switches(inner, arguments):
                    return True
            elif any(_snaps_outside_switches(inner, arguments) for inner in nested_blocks(statement)):
                return True
        elif isinstance(statement, (cst.BaseCompoundStatement, cst.Else)):
            if any(_snaps_outside_switches(inner, arguments) for inner in nested_blocks(statement)):
                return True
    return False


def _snapping(targets: set[str], value: cst.BaseExpression | None) -> bool:
    return bool(targets & set(SIZE_NAMES)) and value is not None and _snaps(value)


class SizeCheckIgnoresPatchSize(Rule):
    """
    ## What it does
    Checks for pipelines whose `check_inputs` requires `height`/`width` to be divisible only by the VAE
    scale factor (`8`, `self.vae_scale_factor`, `self.vae_scale_factor_spatial`) while the transformer
    patchifies the latents with `patch_size > 1`, or the pipeline packs latents into 2x2 patches
    (Flux-style `_pack_latents`), so that sizes must be divisible by `vae_scale_factor * patch_size`.

    ## Why is this bad?
    A size such as 24x24 passes validation, becomes a 3x3 latent and then fails late inside the
    transformer's patch embedding or the unpatchify/reshape, with a tensor-shape error that does not
    mention `height` or `width` (or is silently cropped). The check was copied from a UNet pipeline
    instead of being derived from the transformer's patch size.

    ## Example
    ```python
    class CogVideoXPipeline(DiffusionPipeline):
        def __init__(self, vae, transformer: CogVideoXTransformer3DModel, scheduler): ...

        def check_inputs(self, prompt, height, width):
            if height % 8 != 0 or width % 8 != 0:
                raise ValueError("`height` and `width` have to be divisible by 8")
    ```

    Use instead:
    ```python
    class CogVideoXPipeline(DiffusionPipeline):
        def check_inputs(self, prompt, height, width):
            multiple = self.vae_scale_factor_spatial * self.transformer.config.patch_size
            if height % multiple != 0 or width % multiple != 0:
                raise ValueError(f"`height` and `width` have to be divisible by {multiple}")
    ```

    ## Known problems
    The patch size is read from the default of `patch_size` in the `__init__` of the class that the
    pipeline's `__init__` annotates `transformer` with; a checkpoint that configures another patch size
    is not seen (Latte's `patch_size` defaults to `None`). The rule stays silent when a method of the
    pipeline snaps `height`/`width` onto a grid itself (`(h // 16) * 16`, resolution binning), unless
    that happens only under `if <argument>:` such as `if use_resolution_binning:`.

    ## References
    - huggingface/diffusers#13656, pattern 7
    - huggingface/diffusers#13622 (CogVideoX pipelines check `% 8` while the transformer uses `patch_size=2`)
    """

    code = "DRB701"
    pattern = 7
    severity = "warning"
    message_patch = (
        "`check_inputs` only requires `{sizes}` to be divisible by `{divisor}`, but `{model}` patchifies "
        "latents with `patch_size={p}`; require divisibility by the VAE scale factor times "
        "`self.transformer.config.patch_size`."
    )
    message_packing = (
        "`check_inputs` only requires `{sizes}` to be divisible by `{divisor}`, but `_pack_latents` packs "
        "latents into 2x2 patches; require divisibility by `self.vae_scale_factor * 2`."
    )
    REQUIRES_ANY = ("def check_inputs",)
    PATHS = ("/pipelines/",)

    _TRANSFORMER = {
        "diffusers/models/transformers/transformer_foo.py": """
            class FooTransformer3DModel(ModelMixin, ConfigMixin):
                @register_to_config
                def __init__(self, num_layers: int = 2, patch_size: int = 2, in_channels: int = 16):
                    super().__init__()
            """,
        "diffusers/models/transformers/transformer_unet_like.py": """
            class UnitPatchTransformer(ModelMixin, ConfigMixin):
                @register_to_config
                def __init__(self, patch_size: int = 1):
                    super().__init__()
            """,
        "diffusers/models/__init__.py": """
            from .transformers.transformer_foo import FooTransformer3DModel
            from .transformers.transformer_unet_like import UnitPatchTransformer
            """,
    }

    VALID = [
        # the check already includes the patch size
        Valid(
            """
            from ...models import FooTransformer3DModel

            class FooPipeline(DiffusionPipeline):
                def __init__(self, vae, transformer: FooTransformer3DModel, scheduler):
                    super().__init__()

                def check_inputs(self, prompt, height, width):
                    if height % (self.vae_scale_factor * 2) != 0 or width % (self.vae_scale_factor * 2) != 0:
                        raise ValueError("bad size")
            """,
            files=_TRANSFORMER,
        ),
        # patch_size defaults to 1: the VAE factor is all that is needed
        Valid(
            """
            from ...models import UnitPatchTransformer

            class FooPipeline(DiffusionPipeline):
                def __init__(self, vae, transformer: UnitPatchTransformer, scheduler):
                    super().__init__()

                def check_inputs(self, prompt, height, width):
                    if height % 8 != 0 or width % 8 != 0:
                        raise ValueError("bad size")
            """,
            files=_TRANSFORMER,
        ),
        # one of the transformers the pipeline accepts has no patchify step: stay silent
        Valid(
            """
            from typing import Optional, Union
            from ...models import FooTransformer3DModel, UnitPatchTransformer

            class FooPipeline(DiffusionPipeline):
                def __init__(self, vae, transformer: Optional[Union[FooTransformer3DModel, UnitPatchTransformer]]):
                    super().__init__()

                def check_inputs(self, prompt, height, width):
                    if height % 8 != 0 or width % 8 != 0:
                        raise ValueError("bad size")
            """,
            files=_TRANSFORMER,
        ),
        # the pipeline snaps the sizes onto the patch grid before they are used
        Valid(
            """
            from ...models import FooTransformer3DModel

            class FooPipeline(DiffusionPipeline):
                def __init__(self, vae, transformer: FooTransformer3DModel, scheduler):
                    super().__init__()

                def check_inputs(self, prompt, height, width):
                    if height % 8 != 0 or width % 8 != 0:
                        raise ValueError("bad size")

                def __call__(self, prompt, height=None, width=None):
                    height = int((height // 16) * 16)
                    width = int((width // 16) * 16)
                    self.check_inputs(prompt, height, width)
            """,
            files=_TRANSFORMER,
        ),
        # a warning is not a validation: sizes are resized elsewhere
        Valid(
            """
            class FooPipeline(DiffusionPipeline):
                def check_inputs(self, prompt, height, width):
                    if height % self.vae_scale_factor != 0 or width % self.vae_scale_factor != 0:
                        logger.warning("sizes will be resized")

                @staticmethod
                def _pack_latents(latents, batch_size, num_channels_latents, height, width):
                    return latents.view(batch_size, num_channels_latents, height // 2, 2, width // 2, 2)
            """
        ),
        # LTX-style packing with a patch size of 1 is no 2x2 packing; a UNet pipeline has no transformer
        Valid(
            """
            class FooPipeline(DiffusionPipeline):
                def __init__(self, vae, unet: UNet2DConditionModel, scheduler):
                    super().__init__()

                def check_inputs(self, prompt, height, width):
                    if height % 8 != 0 or width % 8 != 0:
                        raise ValueError("bad size")

                @staticmethod
                def _pack_latents(latents, patch_size: int = 1, patch_size_t: int = 1):
                    return latents.reshape(-1, patch_size, patch_size_t)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            from ...models import FooTransformer3DModel

            class FooPipeline(DiffusionPipeline):
                def __init__(self, vae, transformer: FooTransformer3DModel, scheduler):
                    super().__init__()

                def check_inputs(self, prompt, height, width):
                    # the truthiness spelling of `height % 8 != 0`
                    if height % 8 or width % 8:
                        raise ValueError("bad size")

                def __call__(self, prompt, height=None, width=None):
                    height = height or self.transformer.config.sample_height * self.vae_scale_factor_spatial
                    self.check_inputs(prompt, height, width)
            """,
            files=_TRANSFORMER,
            message=(
                "`check_inputs` only requires `height`/`width` to be divisible by `8`, but "
                "`FooTransformer3DModel` patchifies latents with `patch_size=2`; require divisibility by the "
                "VAE scale factor times `self.transformer.config.patch_size`."
            ),
        ),
        Invalid(
            """
            class FooPipeline(DiffusionPipeline):
                def check_inputs(self, prompt, height, width):
                    if height % self.vae_scale_factor != 0 or width % self.vae_scale_factor != 0:
                        raise ValueError("bad size")

                @staticmethod
                def _pack_latents(latents, batch_size, num_channels_latents, height, width):
                    return latents.view(batch_size, num_channels_latents, height // 2, 2, width // 2, 2)

                def prepare_latents(self, batch_size, height, width):
                    # a latent size, not a pixel size put back on a grid
                    height = 2 * (int(height) // self.vae_scale_factor)
                    width = 2 * (int(width) // self.vae_scale_factor)
                    return self._pack_latents(torch.randn(batch_size, 16, height, width), batch_size, 16, height, width)
            """,
            message=(
                "`check_inputs` only requires `height`/`width` to be divisible by `self.vae_scale_factor`, "
                "but `_pack_latents` packs latents into 2x2 patches; require divisibility by "
                "`self.vae_scale_factor * 2`."
            ),
        ),
        # resolution binning that the caller can switch off does not protect the transformer
        Invalid(
            """
            from ...models import FooTransformer3DModel

            class FooPipeline(DiffusionPipeline):
                def __init__(self, vae, transformer: FooTransformer3DModel, scheduler):
                    super().__init__()

                def check_inputs(self, prompt, height, width):
                    if height % 8 != 0:
                        raise ValueError("bad height")

                def __call__(self, prompt, height=None, width=None, use_resolution_binning=True):
                    if use_resolution_binning:
                        height, width = self.image_processor.classify_height_width_bin(height, width, ratios=BINS)
                    self.check_inputs(prompt, height, width)
            """,
            files=_TRANSFORMER,
            message=(
                "`check_inputs` only requires `height` to be divisible by `8`, but `FooTransformer3DModel` "
                "patchifies latents with `patch_size=2`; require divisibility by the VAE scale factor times "
                "`self.transformer.config.patch_size`."
            ),
        ),
    ]

    def check(self) -> None:
        for cls, method in pipeline_methods(self.context, "check_inputs"):
            weak = self._weak_check(method)
            if weak is None:
                continue
            node, sizes, divisor = weak
            methods = self.context.methods(cls)
            if self._snaps_sizes(methods):
                continue
            scope = f"{cls.qualname}.check_inputs"
            symbol = "/".join(sizes)
            patch = self._transformer_patch(methods.get("__init__"))
            if patch is not None:
                model, p = patch
                message = self.message_patch.format(sizes="`/`".join(sizes), divisor=divisor, model=model, p=p)
                self.report(node, message, symbol=symbol, scope=scope)
            elif self._packs_2x2(methods.get("_pack_latents")):
                message = self.message_packing.format(sizes="`/`".join(sizes), divisor=divisor)
                self.report(node, message, symbol=symbol, scope=scope)

    @staticmethod
    def _weak_check(method: cst.FunctionDef) -> tuple[cst.If, list[str], str] | None:
        """The first `if height % 8 != 0 ...: raise` of `check_inputs`, unless another check is stronger."""
        found: tuple[cst.If, list[str], str] | None = None
        for statement in _statements(method.body.body):
            if not isinstance(statement, cst.If):
                continue
            sizes: list[str] = []
            divisor: str | None = None
            strong = False
            checks = [_size_modulo(comparison) for comparison in _comparisons(statement.test)]
            checks += [_bare_size_modulo(operand) for operand in _truth_operands(statement.test)]
            for parsed in checks:
                if parsed is None:
                    continue
                name, right = parsed
                text = _weak_divisor(right)
                if text is None:
                    strong = True
                    continue
                divisor = divisor or text
                if name not in sizes:
                    sizes.append(name)
            if strong:
                return None  # some size check already goes beyond the VAE factor
            # `divisor` is set with the first size
            if sizes and divisor is not None and found is None and walk.nodes(statement.body, cst.Raise):
                found = (statement, sizes, divisor)
        return found

    @staticmethod
    def _snaps_sizes(methods: dict[str, cst.FunctionDef]) -> bool:
        """Whether a method other than `check_inputs` rounds `height`/`width` onto a grid itself.

        Rounding under `if <argument>:` (`if use_resolution_binning:`) does not count: the caller can
        switch it off, and then only `check_inputs` stands between the size and the transformer.
        """
        for name, function in methods.items():
            if name == "check_inputs":
                continue
            body = function.body.body if isinstance(function.body, cst.BaseSuite) else ()
            if _snaps_outside_switches(body, {p.name.value for p in parameters(function)}):
                return True
        return False

    def _transformer_patch(self, init: cst.FunctionDef | None) -> tuple[str, int] | None:
        """(model class name, p) when every class `transformer` is annotated with patchifies with p > 1."""
        if init is None:
            return None
        annotation = None
        for param in parameters(init):
            if param.name.value == "transformer" and param.annotation is not None:
                annotation = param.annotation.annotation
        if annotation is None:
            return None
        names = annotation_classes(annotation)
        if not names:
            return None
        classes = []
        for name in dict.fromkeys(names):
            located = _locate_patch(self.context.project, self.context.module_name, name)
            if located is None or not located[0].startswith("diffusers.models"):
                return None  # an annotation we cannot follow: stay silent
            classes.append(located)
        patches = []
        for _module, class_name, p in classes:
            if p is None or p <= 1:
                return None
            patches.append((class_name, p))
        if not patches:
            return None
        return min(patches, key=lambda item: item[1])

    @staticmethod
    def _packs_2x2(function: cst.FunctionDef | None) -> bool:
        """Whether `_pack_latents` folds latents into 2x2 patches (`height // 2, 2, width // 2, 2`)."""
        if function is None:
            return False
        return any(
            isinstance(op.operator, cst.FloorDivide) and isinstance(op.right, cst.Integer) and op.right.value == "2"
            for op in walk.nodes(function.body, cst.BinaryOperation)
        )
