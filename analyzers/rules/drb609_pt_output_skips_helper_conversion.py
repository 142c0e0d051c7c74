"""DRB609: `output_type="pt"` returns the raw decoded tensor that every other type sends through a converting helper."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import maps_to_unit_range, parameters, pipeline_methods, self_attribute, string_value


OUTPUT_TYPE = "output_type"


def _only_pt(test: cst.BaseExpression) -> bool:
    """`output_type == "pt"`."""
    if not (isinstance(test, cst.Comparison) and len(test.comparisons) == 1):
        return False
    target = test.comparisons[0]
    return (
        isinstance(test.left, cst.Name)
        and test.left.value == OUTPUT_TYPE
        and isinstance(target.operator, cst.Equal)
        and string_value(target.comparator) == "pt"
    )


def _single_assign(block: cst.BaseSuite) -> cst.Assign | None:
    """The assignment `x = value` that is the whole of `block`."""
    statements = block.body if isinstance(block, cst.IndentedBlock) else ()
    if len(statements) != 1 or not isinstance(statements[0], cst.SimpleStatementLine):
        return None
    small = statements[0].body
    if len(small) != 1 or not isinstance(small[0], cst.Assign) or len(small[0].targets) != 1:
        return None
    if not isinstance(small[0].targets[0].target, cst.Name):
        return None
    return small[0]


class PtOutputSkipsHelperConversion(Rule):
    """
    ## What it does
    Checks pipeline `__call__` methods for an `if output_type == "pt": x = raw` / `else: x = helper(raw, ...)`
    pair where `helper` (a function of the same module, or a method of the same class) maps the decoded
    sample from `[-1, 1]` to `[0, 1]` (`video.mul_(std).add_(mean)`, `x / 2 + 0.5`, `.clamp(0, 1)`,
    `postprocess`), so `"pt"` hands back the decoder's output untouched.

    ## Why is this bad?
    `output_type` chooses a container, not a value range: `"pt"` must return the same `[0, 1]` frames as
    `"np"` and `"pil"`, as a tensor (the shared `VaeImageProcessor.postprocess` contract). When the
    conversion that denormalizes lives in a helper that only the non-"pt" branch calls, `"pt"` silently
    returns `[-1, 1]` values with another layout, and code that switches between output types gets wrong
    colours or shapes. The text-to-video pipelines shipped this until they moved to the image processor.

    ## Example
    ```python
    video_tensor = self.decode_latents(latents)
    if output_type == "pt":
        video = video_tensor
    else:
        video = tensor2vid(video_tensor)  # denormalizes, then converts to NumPy frames
    ```

    Use instead:
    ```python
    video_tensor = self.decode_latents(latents)
    video = self.video_processor.postprocess_video(video_tensor, output_type=output_type)
    ```

    ## Known problems
    Only an `if output_type == "pt":` whose body and `else` are each a single assignment to the same name are
    read, and the helper is looked into one level deep. A "pt" branch that normalizes inline, or an `else`
    that normalizes inline, is left to DRB606.

    ## References
    - huggingface/diffusers#13656, pattern 6
    - huggingface/diffusers#6626 (text-to-video and video-to-video SD: `output_type` moved to the image processor)
    """

    code = "DRB609"
    pattern = 6
    severity = "warning"
    message = (
        '`output_type="pt"` returns `{raw}` as decoded while every other type goes through `{helper}`, which maps '
        'it to `[0, 1]`; give "pt" the same conversion, e.g. `postprocess(..., output_type=output_type)`.'
    )
    REQUIRES_ANY = ('"pt"',)
    PATHS = ("/pipelines/",)

    _HELPER = """
            def tensor2vid(video, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
                mean = torch.tensor(mean, device=video.device).reshape(1, -1, 1, 1, 1)
                std = torch.tensor(std, device=video.device).reshape(1, -1, 1, 1, 1)
                video = video.mul_(std).add_(mean)
                video.clamp_(0, 1)
                return [(frame.cpu().numpy() * 255).astype("uint8") for frame in video.unbind(2)]
    """

    VALID = [
        Valid(
            _HELPER
            + """
            class MyVideoPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="np"):
                    video_tensor = self.decode_latents(self.denoise(prompt))
                    if output_type == "pt":
                        video = (video_tensor / 2 + 0.5).clamp(0, 1)
                    else:
                        video = tensor2vid(video_tensor)
                    return video
            """
        ),
        Valid(
            # the helper does not change the range: a layout change only
            """
            def to_frames(video):
                return [frame.cpu().numpy() for frame in video.unbind(2)]

            class MyVideoPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="np"):
                    video_tensor = self.decode_latents(self.denoise(prompt))
                    if output_type == "pt":
                        video = video_tensor
                    else:
                        video = to_frames(video_tensor)
                    return video
            """
        ),
    ]
    INVALID = [
        Invalid(
            _HELPER
            + """
            class MyVideoPipeline(DiffusionPipeline):
                def __call__(self, prompt, output_type="np"):
                    video_tensor = self.decode_latents(self.denoise(prompt))
                    if output_type == "pt":
                        video = video_tensor
                    else:
                        video = tensor2vid(video_tensor)
                    return video
            """,
            message=(
                '`output_type="pt"` returns `video_tensor` as decoded while every other type goes through '
                '`tensor2vid`, which maps it to `[0, 1]`; give "pt" the same conversion, e.g. '
                "`postprocess(..., output_type=output_type)`."
            ),
        ),
    ]

    def check(self) -> None:
        for cls, method in pipeline_methods(self.context, "__call__"):
            if OUTPUT_TYPE not in {p.name.value for p in parameters(method)}:
                continue
            for branch in walk.own_nodes(method, cst.If):
                if not _only_pt(branch.test) or not isinstance(branch.orelse, cst.Else):
                    continue
                pt, other = _single_assign(branch.body), _single_assign(branch.orelse.body)
                if pt is None or other is None:
                    continue
                name = pt.targets[0].target
                other_name = other.targets[0].target
                if not (
                    isinstance(name, cst.Name) and isinstance(other_name, cst.Name) and other_name.value == name.value
                ):
                    continue
                raw = pt.value
                if not isinstance(raw, cst.Name) or not isinstance(other.value, cst.Call):
                    continue  # "pt" keeps a value as it is: `video = video_tensor`
                helper_call = other.value
                positional = [a for a in helper_call.args if a.keyword is None and not a.star]
                if not positional or not (
                    isinstance(positional[0].value, cst.Name) and positional[0].value.value == raw.value
                ):
                    continue
                if maps_to_unit_range(branch.orelse.body):
                    continue  # inline: DRB606's finding
                helper = self._helper(cls, helper_call)
                if helper is None or not maps_to_unit_range(helper.body):
                    continue
                self.report(
                    branch.test,
                    self.message.format(raw=raw.value, helper=helper.name.value),
                    symbol=OUTPUT_TYPE,
                    scope=f"{cls.qualname}.__call__",
                )

    def _helper(self, cls, call: cst.Call) -> cst.FunctionDef | None:
        """The definition of a module-level function or an own method that `call` calls."""
        func = call.func
        if isinstance(func, cst.Name):
            for statement in self.context.module.body:
                if isinstance(statement, cst.FunctionDef) and statement.name.value == func.value:
                    return statement
            return None
        if self_attribute(func):
            return self.context.methods(cls).get(func.attr.value)
        return None
