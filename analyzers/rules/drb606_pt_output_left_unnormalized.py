"""DRB606: the `output_type="pt"` path skips the `[-1, 1]` to `[0, 1]` step that the "np" and "pil" paths take."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import calls, maps_to_unit_range, pipeline_methods, string_value


def _types(test: cst.BaseExpression) -> tuple[set[str], bool] | None:
    """(the output types, whether the test is true for exactly them) of `output_type == "x"`,
    `output_type in [...]`; `not in` gives the types with False. None for any other test."""
    if not isinstance(test, cst.Comparison) or len(test.comparisons) != 1:
        return None
    if not (isinstance(test.left, cst.Name) and test.left.value == "output_type"):
        return None
    target = test.comparisons[0]
    operator, right = target.operator, target.comparator
    if isinstance(operator, cst.Equal):
        value = string_value(right)
        return ({value}, True) if value is not None else None
    if isinstance(operator, (cst.In, cst.NotIn)) and isinstance(right, (cst.List, cst.Tuple, cst.Set)):
        values = {string_value(e.value) for e in right.elements}
        if None in values:
            return None
        return {v for v in values if v is not None}, isinstance(operator, cst.In)
    return None


class PtOutputLeftUnnormalized(Rule):
    """
    ## What it does
    Checks pipeline `__call__` methods that accept `output_type="pt"` (a literal `"pt"` in a test of
    `output_type`) and branch on `output_type`, where the branch that "np" or "pil" take maps the
    decoded image from `[-1, 1]` to `[0, 1]` (`image * 0.5 + 0.5`, `image.clamp(0, 1)`, the image
    processor's `postprocess`) and the path that "pt" takes does not: an `if output_type in ["np", "pil"]:`
    without `else`, an `elif output_type == "pt":`, or "pt" grouped with "latent".

    ## Why is this bad?
    Across diffusers, `output_type="pt"` returns the same image as "np", as a tensor in `[0, 1]`
    (`VaeImageProcessor.postprocess`). Here it returns the decoder's raw `[-1, 1]` values instead, so
    code that switches between output types gets images that differ by a scale and an offset, and a
    `torchvision` save of the "pt" output is washed out or clipped.

    ## Example
    ```python
    if output_type not in ["pt", "np", "pil"]:
        raise ValueError(f"Only the output types `pt`, `pil` and `np` are supported not output_type={output_type}")
    if output_type in ["np", "pil"]:
        image = image * 0.5 + 0.5
        image = image.clamp(0, 1)
        image = image.cpu().permute(0, 2, 3, 1).float().numpy()
    ```

    Use instead:
    ```python
    image = image * 0.5 + 0.5
    image = image.clamp(0, 1)
    if output_type in ["np", "pil"]:
        image = image.cpu().permute(0, 2, 3, 1).float().numpy()
    ```

    ## Known problems
    Only an `if`/`elif` chain that tests `output_type` against string literals is read; the path "pt"
    takes is its branch, or nothing when no branch covers it. A chain whose "np" or "pil" branch does
    not normalize either is left alone.

    ## References
    - huggingface/diffusers#13656, pattern 6
    - DRC018 (output types agree) fails on the Kandinsky, Kandinsky 2.2, Kandinsky 3, DeepFloyd IF and
      PRX pixel pipelines of the 2026-08 tree: the "pt" output is the "np" one before `/ 2 + 0.5`
    """

    code = "DRB606"
    pattern = 6
    severity = "warning"
    message = (
        '`output_type="pt"` returns the decoded image in [-1, 1], while "np" and "pil" get it mapped to '
        "[0, 1] (`{normalizing}`); normalize before branching on `output_type`, as `VaeImageProcessor."
        "postprocess` does."
    )
    REQUIRES_ALL = ('"pt"', "output_type")
    PATHS = ("/pipelines/",)

    VALID = [
        # every type normalized before the branch
        Valid(
            """
            class ImagePipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="pil"):
                    image = self.decode(prompt)
                    image = (image / 2 + 0.5).clamp(0, 1)
                    if output_type in ["np", "pil"]:
                        image = image.cpu().permute(0, 2, 3, 1).float().numpy()
                    return image
            """
        ),
        # the processor normalizes every type, "pt" included
        Valid(
            """
            class ProcessedPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="pil"):
                    latents = self.generate(prompt)
                    if output_type == "latent":
                        image = latents
                    else:
                        image = self.image_processor.postprocess(self.vae.decode(latents), output_type=output_type)
                    return image
            """
        ),
        # "pt" has a branch of its own that normalizes; the `elif` for "np" and "pil" is read with its chain
        Valid(
            """
            class TensorFirstPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="pil"):
                    image = self.decode(prompt)
                    if output_type == "pt":
                        image = (image / 2 + 0.5).clamp(0, 1)
                    elif output_type in ["np", "pil"]:
                        image = (image / 2 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).numpy()
                    return image
            """
        ),
        # "pt" is not an accepted type
        Valid(
            """
            class NumpyPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="np"):
                    image = self.decode(prompt)
                    if output_type in ["np", "pil"]:
                        image = image * 0.5 + 0.5
                    return image
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class MoVQPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="pil"):
                    if output_type not in ["pt", "np", "pil"]:
                        raise ValueError(output_type)
                    image = self.movq.decode(self.generate(prompt))["sample"]
                    if output_type in ["np", "pil"]:
                        image = image * 0.5 + 0.5
                        image = image.clamp(0, 1)
                        image = image.cpu().permute(0, 2, 3, 1).float().numpy()
                    if output_type == "pil":
                        image = self.numpy_to_pil(image)
                    return image
            """,
            message=(
                '`output_type="pt"` returns the decoded image in [-1, 1], while "np" and "pil" get it mapped to '
                "[0, 1] (`image * 0.5 + 0.5`); normalize before branching on `output_type`, as `VaeImageProcessor."
                "postprocess` does."
            ),
        ),
        # an `elif` chain, and "pt" grouped with "latent"
        Invalid(
            """
            class PixelPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="pil"):
                    image = self.generate(prompt)
                    if output_type == "pil":
                        image = (image / 2 + 0.5).clamp(0, 1)
                        image = self.numpy_to_pil(image.cpu().permute(0, 2, 3, 1).numpy())
                    elif output_type in ("pt", "latent"):
                        image = image
                    else:
                        image = (image / 2 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).numpy()
                    return image
            """
        ),
    ]

    def check(self) -> None:
        for cls, call in pipeline_methods(self.context, "__call__"):
            tests = [_types(c) for c in walk.nodes(call.body, cst.Comparison)]
            if not any(found is not None and "pt" in found[0] for found in tests):
                continue  # "pt" is no type this call names
            ifs = walk.nodes(call.body, cst.If)
            elifs = {id(i.orelse) for i in ifs if isinstance(i.orelse, cst.If)}
            for if_node in ifs:
                if id(if_node) in elifs:
                    continue  # read with the head of its chain
                finding = self._chain(if_node)
                if finding is not None:
                    node, normalizing = finding
                    self.report(
                        node,
                        self.message.format(normalizing=normalizing),
                        symbol="output_type",
                        scope=f"{cls.qualname}.__call__",
                    )
                    return

    @staticmethod
    def _chain(first: cst.If) -> tuple[cst.CSTNode, str] | None:
        """(where, the normalizing code) when the chain starting at `first` normalizes "np" or "pil" but not
        "pt"; None otherwise."""
        branches: list[tuple[set[str] | None, cst.BaseSuite]] = []  # None: every type not named before
        named: set[str] = set()
        node: cst.If | cst.Else | None = first
        while isinstance(node, cst.If):
            found = _types(node.test)
            if found is None or not found[1]:
                return None  # a test this rule does not read
            branches.append((found[0], node.body))
            named |= found[0]
            node = node.orelse
        if isinstance(node, cst.Else):
            branches.append((None, node.body))
        pt_block = next(
            (b for types, b in branches if (types is None and "pt" not in named) or (types and "pt" in types)), None
        )
        normalizing = None
        for types, block in branches:
            covers = types is None and not ({"np", "pil"} <= named) or (types is not None and types & {"np", "pil"})
            if covers and maps_to_unit_range(block) and (pt_block is None or block is not pt_block):
                normalizing = block
                break
        if normalizing is None or (pt_block is not None and maps_to_unit_range(pt_block)):
            return None
        code = _normalizing_code(normalizing)
        return first.test, code


def _normalizing_code(block: cst.BaseSuite) -> str:
    """The first normalizing expression of `block`, as code (for the message)."""
    module = cst.Module(body=[])
    for operation in walk.nodes(block, cst.BinaryOperation):
        if isinstance(operation.operator, cst.Add) and isinstance(operation.right, cst.Float):
            return module.code_for_node(operation)
    for call in calls(block):
        return module.code_for_node(call.func)
    return "[0, 1]"
