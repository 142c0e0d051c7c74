"""DRB207: a `__call__` argument is set (to a constant, or by an own helper) before anything reads it, so the caller's
value is ignored."""

from __future__ import annotations

import libcst as cst

from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import names_read, parameters, pipeline_methods


def _constant(value: cst.BaseExpression) -> str | None:
    """The code of a literal constant (`1`, `0.5`, `"pil"`, `None`, `True`, `-1`), else None."""
    if isinstance(value, (cst.Integer, cst.Float, cst.SimpleString)):
        return value.value
    if isinstance(value, cst.Name) and value.value in ("None", "True", "False"):
        return value.value
    if isinstance(value, cst.UnaryOperation) and isinstance(value.operator, cst.Minus):
        inner = _constant(value.expression)
        return f"-{inner}" if inner is not None and not inner.startswith("-") else None
    return None


def _overwrite(statement: cst.CSTNode, name: str) -> str | None:
    """The constant of `name = <constant>` when `statement` is exactly that, else None."""
    if not isinstance(statement, cst.SimpleStatementLine) or len(statement.body) != 1:
        return None
    small = statement.body[0]
    if not isinstance(small, cst.Assign) or len(small.targets) != 1:
        return None
    target = small.targets[0].target
    if not (isinstance(target, cst.Name) and target.value == name):
        return None
    return _constant(small.value) or _own_helper(small.value, name)


def _own_helper(value: cst.BaseExpression, name: str) -> str | None:
    """`self.prepare_latents(...)` (a call of the pipeline's own method) when it is given nothing named `name`:
    the helper makes the value afresh, whatever the caller passed."""
    if not isinstance(value, cst.Call) or not isinstance(value.func, cst.Attribute):
        return None
    owner = value.func.value
    if not (isinstance(owner, cst.Name) and owner.value == "self"):
        return None
    if any(arg.star for arg in value.args) or name in {n.value for n in names_read(value)}:
        return None
    if any(arg.keyword is not None and arg.keyword.value == name for arg in value.args):
        return None
    return f"self.{value.func.attr.value}(...)"


def _touched(statement: cst.CSTNode) -> set[str]:
    """The names `statement` reads or binds anywhere (nested blocks and assignment targets included)."""
    return {n.value for n in names_read(statement)}


class ArgumentOverwrittenBeforeRead(Rule):
    """
    ## What it does
    Checks pipeline `__call__` methods for an argument that a statement of the method's own body sets to
    a constant (`num_videos_per_prompt = 1`) before anything reads or sets it: no statement before that
    one, nested blocks included, touches the name.

    ## Why is this bad?
    The argument is part of the public signature and documented, yet whatever the caller passes is
    replaced before it is used: `num_videos_per_prompt=4` silently gives one video per prompt. When the
    pipeline cannot honour other values, it should say so (`check_inputs` raising a `ValueError`), not
    ignore them (meta issue #13656, pattern 2).

    ## Example
    ```python
    def __call__(self, prompt, num_frames=49, num_videos_per_prompt=1, output_type="pil"):
        num_videos_per_prompt = 1
        self.check_inputs(prompt, num_frames)
        prompt_embeds = self.encode_prompt(prompt, num_videos_per_prompt=num_videos_per_prompt)
    ```

    Use instead:
    ```python
    def __call__(self, prompt, num_frames=49, num_videos_per_prompt=1, output_type="pil"):
        self.check_inputs(prompt, num_frames)
        prompt_embeds = self.encode_prompt(prompt, num_videos_per_prompt=num_videos_per_prompt)
    ```

    ## Known problems
    Only an assignment of a literal (a number, a string, `None`, `True`, `False`), or of a call of the
    pipeline's own method that is given nothing of that name (`latents = self.prepare_latents(image, ...)`),
    that is a statement of the method's body itself counts; one under an `if` is taken to be a deliberate override of some
    values, and any earlier statement that reads or sets the name (`x = x or 1`, a check) keeps the rule
    silent.

    ## References
    - huggingface/diffusers#13656, pattern 2
    - huggingface/diffusers#7582 (SDXL and ControlNet img2img replaced the caller's `latents` with
      `self.prepare_latents(image, ...)`)
    - DRC001 (one output per prompt and per `num_videos_per_prompt`) gives 2 outputs instead of 4 for
      the CogVideoX, Allegro, Wan video-to-video and AnimateDiff pipelines of the 2026-08 tree
    """

    code = "DRB207"
    pattern = 2
    severity = "error"
    message = (
        "`__call__` takes `{name}` but sets it to `{value}` before anything reads it, so the caller's `{name}=` is "
        "ignored; use the argument, or reject the values the pipeline cannot take in `check_inputs`."
    )
    REQUIRES_ANY = ("__call__",)
    PATHS = ("/pipelines/",)

    VALID = [
        # the caller's value is read first
        Valid(
            """
            class VideoPipeline(DiffusionPipeline):
                def __call__(self, prompt, num_videos_per_prompt=1):
                    if num_videos_per_prompt > 1:
                        logger.warning("one video per prompt only")
                    num_videos_per_prompt = 1
                    return self.generate(prompt, num_videos_per_prompt)
            """
        ),
        # an override for some values only
        Valid(
            """
            class ImagePipeline(DiffusionPipeline):
                def __call__(self, prompt, guidance_scale=5.0, image=None):
                    if image is None:
                        guidance_scale = 1.0
                    return self.generate(prompt, guidance_scale)
            """
        ),
        # a default filled in from the argument itself
        Valid(
            """
            class AudioPipeline(DiffusionPipeline):
                def __call__(self, prompt, audio_length_in_s=None):
                    audio_length_in_s = audio_length_in_s or 10.0
                    return self.generate(prompt, audio_length_in_s)
            """
        ),
        # a local name, not an argument
        Valid(
            """
            class LocalPipeline(DiffusionPipeline):
                def __call__(self, prompt):
                    num_images_per_prompt = 1
                    return self.generate(prompt, num_images_per_prompt)
            """
        ),
    ]
    INVALID = [
        Invalid(
            """
            class ClipPipeline(DiffusionPipeline):
                def __call__(self, prompt, height=480, width=720, num_videos_per_prompt=1, output_type="np"):
                    height = height or self.default_height
                    num_videos_per_prompt = 1
                    self.check_inputs(prompt, height, width)
                    embeds = self.encode_prompt(prompt, num_videos_per_prompt=num_videos_per_prompt)
                    return self.generate(embeds, height, width, output_type)
            """,
            message=(
                "`__call__` takes `num_videos_per_prompt` but sets it to `1` before anything reads it, so the "
                "caller's `num_videos_per_prompt=` is ignored; use the argument, or reject the values the pipeline "
                "cannot take in `check_inputs`."
            ),
        ),
        # the pipeline's own helper makes the value afresh: the caller's latents never reach it
        Invalid(
            """
            class Img2ImgPipeline(DiffusionPipeline):
                def __call__(self, prompt, image=None, latents=None, strength=0.3):
                    image = self.image_processor.preprocess(image)
                    timesteps = self.get_timesteps(strength)
                    latents = self.prepare_latents(image, timesteps[:1], len(prompt))
                    return self.denoise(latents, timesteps)
            """,
            message=(
                "`__call__` takes `latents` but sets it to `self.prepare_latents(...)` before anything reads it, so "
                "the caller's `latents=` is ignored; use the argument, or reject the values the pipeline cannot take "
                "in `check_inputs`."
            ),
        ),
        # a keyword-only argument, a string constant
        Invalid(
            """
            class DecodePipeline(DiffusionPipeline):
                def __call__(self, prompt, *, output_type="pil", return_dict=True):
                    output_type = "latent"
                    latents = self.generate(prompt)
                    return self.postprocess(latents, output_type=output_type)
            """
        ),
    ]

    def check(self) -> None:
        for cls, call in pipeline_methods(self.context, "__call__"):
            pending = {p.name.value for p in parameters(call)} - {"self"}
            for statement in call.body.body:
                if not pending:
                    break
                overwritten = {name: value for name in pending if (value := _overwrite(statement, name)) is not None}
                for name, value in sorted(overwritten.items()):
                    self.report(
                        statement,
                        self.message.format(name=name, value=value),
                        symbol=name,
                        scope=f"{cls.qualname}.__call__",
                    )
                pending -= overwritten.keys() | _touched(statement)
