"""The config half of the config + mixin idiom: `TinyConfig` builds a pipeline from a tiny factory; contract
mixins (`drcNNN_*.py`) test it. Helpers shared by the contracts live here too."""

from __future__ import annotations

import inspect
from contextlib import contextmanager

import pytest

from runners.tiny import Factory


class ContractFailure(AssertionError):
    """A contract's finding: the message names the defect and what was observed."""


class TinyConfig:
    """What a contract mixin needs: `pipeline_class`, `get_pipeline()`, `get_dummy_inputs()`, device and dtype."""

    factory: Factory
    torch_device: str = "cpu"
    dtype = None  # a torch dtype, or None for the components' own (fp32)
    offload: bool = False  # model CPU offload onto `torch_device` (an accelerator)

    @property
    def pipeline_class(self):
        return self.factory.pipeline_type()

    def get_pipeline(self):
        if self.offload:
            pipe = self.factory.build("cpu", self.dtype)
            pipe.enable_model_cpu_offload(device=self.torch_device)
            return pipe
        return self.factory.build(self.torch_device, self.dtype)

    def build_from(self, components: dict):
        """The pipeline of these components (some left out, say), built, placed and cast as `get_pipeline` does."""
        import torch

        for value in components.values():
            if isinstance(value, torch.nn.Module):
                value.eval()
        pipe = self.pipeline_class(**components)
        pipe.set_progress_bar_config(disable=True)
        if self.offload:
            if self.dtype is not None:
                pipe = pipe.to(dtype=self.dtype)
            pipe.enable_model_cpu_offload(device=self.torch_device)
            return pipe
        if self.dtype is not None:
            pipe = pipe.to(dtype=self.dtype)
        return pipe.to(self.torch_device)

    def get_dummy_inputs(self, seed: int = 0) -> dict:
        return self.factory.inputs(self.torch_device, seed)

    def call_parameters(self) -> set[str]:
        return set(inspect.signature(self.pipeline_class.__call__).parameters)

    def require(self, *names: str) -> None:
        """Skip unless `__call__` takes every one of `names`."""
        missing = [n for n in names if n not in self.call_parameters()]
        if missing:
            pytest.skip(f"{self.factory.pipeline_class}.__call__ takes no {', '.join(missing)}")


def first_output(result):
    """The images/frames of a pipeline result: a tuple's first item, or the output object's first field."""
    if isinstance(result, tuple):
        return result[0]
    for name in ("images", "frames", "audios", "latents"):
        if hasattr(result, name):
            return getattr(result, name)
    return result[0]


def batch_size(output) -> int:
    return len(output) if isinstance(output, list) else int(output.shape[0])


@contextmanager
def denoiser_calls(pipe, factory: Factory):
    """Record every forward of the denoiser: a list of {argument: tensor shape/dtype} (positional as `arg{i}`)."""
    import torch

    module = getattr(pipe, factory.denoiser)
    calls: list[dict] = []

    def hook(_module, args, kwargs):
        seen = {}
        for i, value in enumerate(args):
            if isinstance(value, torch.Tensor):
                seen[f"arg{i}"] = (tuple(value.shape), value.dtype)
        for key, value in kwargs.items():
            if isinstance(value, torch.Tensor):
                seen[key] = (tuple(value.shape), value.dtype)
        calls.append(seen)

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def _raised_on_purpose(error: BaseException):
    """The frame whose own `raise` statement raised `error` (a ValueError or NotImplementedError), or None when an
    operation failed inside the code instead (a shape mismatch, a ValueError from unpacking)."""
    import traceback

    if not isinstance(error, (ValueError, NotImplementedError)):
        return None
    frames = traceback.extract_tb(error.__traceback__)
    return frames[-1] if frames and (frames[-1].line or "").startswith("raise ") else None


def refused(error: BaseException) -> bool:
    """Whether the code raised this on purpose ("requires the 'flex' attention backend", "not supported for models
    having added KV projections"), rather than an operation failing inside it."""
    return _raised_on_purpose(error) is not None


def declined(error: BaseException) -> bool:
    """Whether the pipeline refused its inputs on purpose: a ValueError raised by its own input check (`check_inputs`,
    `_check_*`), such as "only one of `video` or `latents`" or "2 prompts but 1 image"."""
    frame = _raised_on_purpose(error)
    return isinstance(error, ValueError) and frame is not None and frame.name.lstrip("_").startswith("check")


def describe(error: BaseException, limit: int = 240) -> str:
    text = f"{type(error).__name__}: {error}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
