"""DRB608: per-item outputs converted with `output_type` are returned as a plain list, never stacked into an array."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import names_read, parameters


OUTPUT_TYPE = "output_type"


def _reads_output_type(node: cst.CSTNode) -> bool:
    return any(name.value == OUTPUT_TYPE for name in names_read(node))


def _converts(node: cst.CSTNode) -> bool:
    """Whether `node` holds a call that is handed `output_type` (`processor.postprocess(frames, output_type)`)."""
    return any(any(_reads_output_type(arg.value) for arg in call.args) for call in walk.nodes(node, cst.Call))


class BatchedOutputLeftAsList(Rule):
    """
    ## What it does
    Checks functions that take an `output_type` parameter and convert a batch one item at a time, handing
    `output_type` to each conversion (`processor.postprocess(video[i], output_type)`), for a result that is
    returned as the plain Python list of the per-item outputs (`outputs.append(...)`, then `return
    outputs`, or a returned list comprehension) while the function never tests `output_type`.

    ## Why is this bad?
    `output_type="np"` promises one `np.ndarray` and `"pt"` one `torch.Tensor`, batch first, as every other
    pipeline returns them. A list of per-video arrays breaks `frames.shape`, slicing along the batch and
    `export_to_video(frames[0])`-style code written against the documented type; only `"pil"` (a list of
    lists of images) is meant to stay a list. diffusers shipped this in `tensor2vid` of Stable Video
    Diffusion and AnimateDiff, fixed by `np.stack`/`torch.stack` per `output_type`.

    ## Example
    ```python
    def tensor2vid(video, processor, output_type="np"):
        outputs = []
        for i in range(video.shape[0]):
            outputs.append(processor.postprocess(video[i].permute(1, 0, 2, 3), output_type))
        return outputs
    ```

    Use instead:
    ```python
    def tensor2vid(video, processor, output_type="np"):
        outputs = []
        for i in range(video.shape[0]):
            outputs.append(processor.postprocess(video[i].permute(1, 0, 2, 3), output_type))
        if output_type == "np":
            outputs = np.stack(outputs)
        elif output_type == "pt":
            outputs = torch.stack(outputs)
        return outputs
    ```

    ## Known problems
    Only a list built with `.append(...)` in a `for` loop, or a list comprehension, of values converted by a
    call that is handed `output_type`, and returned as is, is recognised. Any comparison of `output_type` in
    the function is taken as handling the types, even one that does not stack.

    ## References
    - huggingface/diffusers#13656, pattern 6
    - huggingface/diffusers#6507 (Stable Video Diffusion: `output_type="np"` returned a list)
    """

    code = "DRB608"
    pattern = 6
    severity = "warning"
    message = (
        "`{name}` collects the per-item outputs of `output_type` conversions and is returned as a list, so "
        '`output_type="np"`/`"pt"` give a list instead of one array or tensor; stack it (`np.stack`, '
        "`torch.stack`) according to `output_type`."
    )
    REQUIRES_ANY = (OUTPUT_TYPE,)
    PATHS = ("/pipelines/", "processor")

    VALID = [
        Valid(
            """
            def tensor2vid(video, processor, output_type="np"):
                outputs = []
                for i in range(video.shape[0]):
                    outputs.append(processor.postprocess(video[i].permute(1, 0, 2, 3), output_type))
                if output_type == "np":
                    outputs = np.stack(outputs)
                elif output_type == "pt":
                    outputs = torch.stack(outputs)
                return outputs
            """
        ),
        Valid(
            # the list is stacked before it is returned
            """
            def decode_batch(self, latents, output_type="np"):
                frames = [self.image_processor.postprocess(self.vae.decode(x), output_type) for x in latents]
                return torch.stack(frames)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            def tensor2vid(video, processor, output_type="np"):
                batch_size = video.shape[0]
                outputs = []
                for batch_idx in range(batch_size):
                    batch_vid = video[batch_idx].permute(1, 0, 2, 3)
                    batch_output = processor.postprocess(batch_vid, output_type)
                    outputs.append(batch_output)
                return outputs
            """,
            message=(
                "`outputs` collects the per-item outputs of `output_type` conversions and is returned as a list, so "
                '`output_type="np"`/`"pt"` give a list instead of one array or tensor; stack it (`np.stack`, '
                "`torch.stack`) according to `output_type`."
            ),
        ),
        Invalid(
            """
            class MyVideoPipeline(DiffusionPipeline):
                def decode_videos(self, latents, output_type="np"):
                    return [self.video_processor.postprocess(self.vae.decode(x), output_type=output_type) for x in latents]
            """
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            if OUTPUT_TYPE not in {p.name.value for p in parameters(function)}:
                continue
            if any(_reads_output_type(c) for c in walk.own_nodes(function, cst.Comparison)):
                continue  # the function looks at the type: it may stack per type
            for ret in walk.own_nodes(function, cst.Return):
                value = ret.value
                if isinstance(value, cst.ListComp) and _converts(value.elt):
                    self.report(ret, self.message.format(name="[...]"), symbol=OUTPUT_TYPE, scope=definition.qualname)
                elif isinstance(value, cst.Name) and self._appended_list(function, value.value):
                    self.report(
                        ret, self.message.format(name=value.value), symbol=OUTPUT_TYPE, scope=definition.qualname
                    )

    @staticmethod
    def _appended_list(function: cst.FunctionDef, name: str) -> bool:
        """Whether `name` is bound only to `[]` and grown in a `for` loop by `.append(x)` of converted values."""
        bound = [
            a
            for a in walk.own_nodes(function, cst.Assign)
            if any(isinstance(t.target, cst.Name) and t.target.value == name for t in a.targets)
        ]
        if len(bound) != 1 or not (isinstance(bound[0].value, cst.List) and not bound[0].value.elements):
            return False
        appended = False
        for loop in walk.own_nodes(function, cst.For):
            for call in walk.nodes(loop.body, cst.Call):
                func = call.func
                if not (
                    isinstance(func, cst.Attribute)
                    and func.attr.value == "append"
                    and isinstance(func.value, cst.Name)
                    and func.value.value == name
                    and len(call.args) == 1
                ):
                    continue
                item = call.args[0].value
                if _converts(item):
                    appended = True
                elif isinstance(item, cst.Name):
                    appended |= any(
                        _converts(a.value)
                        for a in walk.nodes(loop.body, cst.Assign)
                        if any(isinstance(t.target, cst.Name) and t.target.value == item.value for t in a.targets)
                    )
        return appended
