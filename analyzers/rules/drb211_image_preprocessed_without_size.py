"""DRB211: `__call__` takes `height` and `width` but preprocesses its input image without them."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import names_read, parameters, pipeline_methods


#: the pipeline's main inputs whose size the output follows
INPUTS = frozenset({"image", "video", "init_image"})
PROCESSORS = ("image_processor", "video_processor")


class ImagePreprocessedWithoutSize(Rule):
    """
    ## What it does
    Checks pipeline `__call__` methods that take `height` and `width` and preprocess their input image or
    video (`self.image_processor.preprocess(image)`, `self.video_processor.preprocess_video(video)`) without
    handing them on, while another call of the method (preparing the latents or a control image) is given
    `height` or `width`.

    ## Why is this bad?
    The input is encoded at its own size while the latents, the control image or the micro-conditioning
    are sized by `height` and `width`: a caller who asks for another size gets a shape mismatch, or the
    arguments are silently overridden by the image's size. The sibling call that does pass them shows the
    size was meant to apply.

    ## Example
    ```python
    control_image = self.prepare_control_image(image=control_image, width=width, height=height, ...)
    image = self.image_processor.preprocess(image).to(dtype=torch.float32)
    ```

    Use instead:
    ```python
    image = self.image_processor.preprocess(image, height=height, width=width).to(dtype=torch.float32)
    ```

    ## Known problems
    Only the inputs named `image`, `video` or `init_image` are checked, and only when some other call of
    `__call__` is given `height` or `width`; a pipeline that documents "height and width default to the
    image's" and never reads them elsewhere is left alone.

    ## References
    - huggingface/diffusers#13656, pattern 2
    - huggingface/diffusers#5665 (ControlNet img2img), huggingface/diffusers#6581 (SDXL InstructPix2Pix)
    """

    code = "DRB211"
    pattern = 2
    severity = "warning"
    message = (
        "`{call}` ignores the `height` and `width` that `__call__` takes (and hands to `{sibling}`), so the image "
        "keeps its own size; pass `height=height, width=width`."
    )
    REQUIRES_ANY = ("preprocess",)
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            class Img2ImgPipeline(DiffusionPipeline):
                def __call__(self, prompt, image, control_image, height=None, width=None):
                    control_image = self.prepare_control_image(control_image, height=height, width=width)
                    image = self.image_processor.preprocess(image, height=height, width=width)
                    return self.run(image, control_image)
            """
        ),
        # the size is taken from the image when not given, and nothing else uses it
        Valid(
            """
            class EditPipeline(DiffusionPipeline):
                def __call__(self, prompt, image, height=None, width=None):
                    self.check_inputs(prompt, height, width)
                    image = self.image_processor.preprocess(image)
                    return self.run(image)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class ControlNetImg2ImgPipeline(DiffusionPipeline):
                def __call__(self, prompt, image, control_image, height=None, width=None):
                    image = self.image_processor.preprocess(image).to(dtype=torch.float32)
                    control_image = self.prepare_control_image(image=control_image, width=width, height=height)
                    return self.run(image, control_image)
            """,
            message=(
                "`self.image_processor.preprocess(image)` ignores the `height` and `width` that `__call__` takes "
                "(and hands to `self.prepare_control_image`), so the image keeps its own size; pass "
                "`height=height, width=width`."
            ),
        ),
    ]

    def check(self) -> None:
        for cls, method in pipeline_methods(self.context, "__call__"):
            params = {p.name.value for p in parameters(method)}
            if not {"height", "width"} <= params:
                continue
            calls = walk.own_nodes(method, cst.Call)
            sized: list[str] = []
            for call in calls:
                if isinstance(call.func, cst.Attribute) and call.func.attr.value.startswith("preprocess"):
                    continue
                given = {n.value for a in call.args for n in names_read(a.value)}
                name = self._name(call)
                if given & {"height", "width"} and name is not None and not name.endswith("check_inputs"):
                    sized.append(name)  # validation is not a use: the size must shape something
            if not sized:
                continue
            for call in calls:
                func = call.func
                if not (isinstance(func, cst.Attribute) and func.attr.value.startswith("preprocess")):
                    continue
                owner = func.value
                if not (isinstance(owner, cst.Attribute) and owner.attr.value in PROCESSORS):
                    continue
                positional = [a for a in call.args if a.keyword is None]
                keywords = {a.keyword.value for a in call.args if a.keyword is not None}
                if len(positional) != 1 or keywords & {"height", "width"} or any(a.star for a in call.args):
                    continue
                first = positional[0].value
                if not (isinstance(first, cst.Name) and first.value in INPUTS and first.value in params):
                    continue
                code = " ".join(self.context.module.code_for_node(call).split())
                message = self.message.format(call=code, sibling=sized[0])
                self.report(call, message, symbol="height", scope=f"{cls.qualname}.__call__")  # the ignored argument

    def _name(self, call: cst.Call) -> str | None:
        """`self.prepare_latents` of a call of the pipeline's own method or component, else None."""
        func = call.func
        if isinstance(func, cst.Attribute) and isinstance(func.value, (cst.Name, cst.Attribute)):
            code = self.context.module.code_for_node(func)
            return code if code.startswith("self.") else None
        return None
