"""DRB523: noise is drawn on the device of a freshly preprocessed (CPU) image instead of the execution device."""

from __future__ import annotations

import libcst as cst

from analyzers import walk
from analyzers.core import Invalid, Rule, Valid
from analyzers.matchers import call_name, keyword, target_names


#: processor methods that return a new CPU tensor
PREPROCESSORS = frozenset({"preprocess", "preprocess_video", "pil_to_numpy", "numpy_to_pt"})
#: functions that draw random numbers with a generator on a given device
DRAWS = frozenset({"randn_tensor", "torch.randn", "torch.rand", "torch.randint", "torch.randn_like"})


def _preprocessed(value: cst.BaseExpression) -> bool:
    """`self.image_processor.preprocess(...)` as the whole value (no `.to(device)` after it)."""
    if not isinstance(value, cst.Call):
        return False
    name = call_name(value) or ""
    return "." in name and name.rpartition(".")[2] in PREPROCESSORS


def _device_of(call: cst.Call) -> str | None:
    """`device=x.device`: the name `x`."""
    device = keyword(call, "device")
    if device is None:
        return None
    value = device.value
    if isinstance(value, cst.Attribute) and value.attr.value == "device" and isinstance(value.value, cst.Name):
        return value.value.value
    return None


def _keeps_device(value: cst.BaseExpression, name: str) -> bool:
    """`x * 2 - 1`: arithmetic on `name` and constants only, which keeps its device."""
    if not isinstance(value, (cst.BinaryOperation, cst.UnaryOperation)):
        return False
    if any(walk.nodes(value, kind) for kind in (cst.Call, cst.Attribute, cst.Subscript)):
        return False
    return all(n.value == name for n in walk.nodes(value, cst.Name))


class NoiseOnPreprocessedInputDevice(Rule):
    """
    ## What it does
    Checks pipelines for random noise drawn with `device=image.device` (`randn_tensor`, `torch.randn`, ...) where
    `image` is the value just returned by the image or video processor (`self.image_processor.preprocess(...)`)
    and was not moved to the execution device in between.

    ## Why is this bad?
    The processors build tensors on the CPU, so the noise is drawn on the CPU: a `generator` created on the GPU
    (`torch.Generator("cuda")`) raises a device mismatch, and a CPU draw where the rest of the pipeline draws on
    the execution device gives other samples for the same seed. The image then reaches the VAE on the CPU too.

    ## Example
    ```python
    image = self.image_processor.preprocess(image, height=height, width=width)
    noise = randn_tensor(image.shape, generator=generator, device=image.device, dtype=image.dtype)
    ```

    Use instead:
    ```python
    image = self.image_processor.preprocess(image, height=height, width=width).to(device)
    noise = randn_tensor(image.shape, generator=generator, device=device, dtype=image.dtype)
    ```

    ## Known problems
    Only a name assigned from the processor call in the same function, and drawn from before it is assigned
    again, is followed; a preprocessed tensor passed to a helper that draws the noise stays silent.

    ## References
    - huggingface/diffusers#13656, pattern 5
    - huggingface/diffusers#6484 (Stable Video Diffusion drew the augmentation noise on the CPU image's device)
    """

    code = "DRB523"
    pattern = 5
    severity = "error"
    message = (
        "The noise is drawn on `{name}.device`, but `{name}` comes straight from `{source}` (a CPU tensor), so a "
        "GPU generator fails with a device mismatch; move `{name}` to the execution device first and draw on it."
    )
    REQUIRES_ANY = ("preprocess",)
    PATHS = ("/pipelines/",)

    VALID = [
        Valid(
            """
            class VideoPipeline(DiffusionPipeline):
                def __call__(self, image, generator=None):
                    device = self._execution_device
                    image = self.image_processor.preprocess(image).to(device)
                    noise = randn_tensor(image.shape, generator=generator, device=image.device, dtype=image.dtype)
                    video = self.video_processor.preprocess_video(image)
                    video = video.to(device=device)
                    eps = randn_tensor(video.shape, generator=generator, device=video.device)
                    return noise, eps
            """,
            path="diffusers/pipelines/example/pipeline_example.py",
        ),
    ]
    INVALID = [
        Invalid(
            """
            class VideoPipeline(DiffusionPipeline):
                def __call__(self, image, height, width, generator=None, noise_aug_strength=0.02):
                    image = self.image_processor.preprocess(image, height=height, width=width)
                    noise = randn_tensor(image.shape, generator=generator, device=image.device, dtype=image.dtype)
                    image = image + noise_aug_strength * noise
                    return image
            """,
            message=(
                "The noise is drawn on `image.device`, but `image` comes straight from "
                "`self.image_processor.preprocess` (a CPU tensor), so a GPU generator fails with a device mismatch; "
                "move `image` to the execution device first and draw on it."
            ),
            path="diffusers/pipelines/example/pipeline_example.py",
        ),
        Invalid(
            """
            class VideoPipeline(DiffusionPipeline):
                def __call__(self, video, generator=None):
                    frames = self.video_processor.preprocess_video(video)
                    frames = frames * 2 - 1
                    eps = torch.randn(frames.shape, generator=generator, device=frames.device)
                    return frames + eps
            """,
            path="diffusers/pipelines/example/pipeline_example.py",
        ),
    ]

    def check(self) -> None:
        for definition in self.context.definitions:
            function = definition.node
            if not isinstance(function, cst.FunctionDef):
                continue
            draws = [c for c in walk.own_nodes(function, cst.Call) if call_name(c) in DRAWS and _device_of(c)]
            if not draws:
                continue
            # every assignment of the function, in source order: (where it takes effect, name, processor call,
            # whether it keeps the name's previous value's device: `x = x * 2 - 1`)
            events: list[tuple[int, str, cst.BaseExpression | None, bool]] = []
            for assign in walk.own_nodes(function, cst.Assign):
                position = walk.span(assign)
                if position is None:
                    continue
                fresh = assign.value if _preprocessed(assign.value) else None
                for target in assign.targets:
                    for name in target_names(target.target):
                        events.append((position[1], name, fresh, _keeps_device(assign.value, name)))
            events.sort(key=lambda event: event[0])
            for draw in draws:
                device_of = _device_of(draw)
                position = walk.span(draw)
                if device_of is None or position is None:
                    continue
                source_call: cst.BaseExpression | None = None
                for at, bound, fresh, keeps in events:
                    if bound != device_of or at > position[0]:
                        continue
                    if not keeps:
                        source_call = fresh
                if source_call is None:
                    continue
                source = (call_name(source_call) if isinstance(source_call, cst.Call) else None) or "preprocess"
                message = self.message.format(name=device_of, source=source)
                self.report(draw, message, symbol=device_of, scope=definition.qualname)
