"""Tiny offline pipelines: factories that build a pipeline from tiny configs of the real classes, no Hub access.

`get_factory("FluxPipeline")` returns a `Factory` (or raises `NoTinyFactory`); `factory.build(device, dtype)`
gives an eval-mode pipeline and `factory.inputs(device, seed)` the inputs of a 2-step call at 32x32.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field


class NoTinyFactory(LookupError):
    """No tiny factory for this pipeline class: its contracts are skipped with this message."""


@dataclass
class Factory:
    pipeline_class: str
    make_components: Callable[[int], dict]
    make_inputs: Callable[[str, int], dict]
    #: the `__call__` argument that multiplies outputs per prompt (`num_images_per_prompt`, `num_videos_per_prompt`)
    per_prompt_arg: str = "num_images_per_prompt"
    #: the denoiser component (its forward is hooked by some contracts)
    denoiser: str = "unet"
    tags: frozenset[str] = field(default_factory=frozenset)
    #: a class to build instead of `diffusers.<pipeline_class>` (tests plant defects in subclasses)
    cls: type | None = None

    def pipeline_type(self):
        if self.cls is not None:
            return self.cls
        import diffusers

        return getattr(diffusers, self.pipeline_class)

    def build(self, device: str = "cpu", dtype=None, seed: int = 0):
        """The pipeline on `device` (in `dtype` when given), every module in eval mode (dropout off)."""
        import torch

        components = self.make_components(seed)
        for value in components.values():
            if isinstance(value, torch.nn.Module):
                value.eval()
        pipe = self.pipeline_type()(**components)
        pipe.set_progress_bar_config(disable=True)
        if dtype is not None:
            pipe = pipe.to(dtype=dtype)
        return pipe.to(device)

    def inputs(self, device: str = "cpu", seed: int = 0) -> dict:
        return self.make_inputs(device, seed)


#: family modules, imported on first lookup (each registers its factories)
FAMILIES = ("runners.tiny.sd", "runners.tiny.sd_xl", "runners.tiny.sd3", "runners.tiny.flux", "runners.tiny.sana",
            "runners.tiny.wan", "runners.tiny.cogvideox", "runners.tiny.qwenimage", "runners.tiny.ltx",
            "runners.tiny.hunyuan_video")  # fmt: skip
_FACTORIES: dict[str, Factory] = {}
_loaded = False


def register(factory: Factory) -> Factory:
    _FACTORIES[factory.pipeline_class] = factory
    return factory


def _load() -> None:
    global _loaded
    if _loaded:
        return
    for name in FAMILIES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:  # a missing family module is fine, a broken import inside one is not
                raise
    _loaded = True


def factories() -> dict[str, Factory]:
    _load()
    return dict(sorted(_FACTORIES.items()))


def get_factory(pipeline_class: str) -> Factory:
    _load()
    try:
        return _FACTORIES[pipeline_class]
    except KeyError:
        raise NoTinyFactory(
            f"no tiny factory for {pipeline_class}; drbot has {', '.join(sorted(_FACTORIES))}"
        ) from None


def generator(device: str, seed: int):
    import torch

    # a CPU generator works for every device, and keeps seeded runs identical across devices
    return torch.Generator(device="cpu").manual_seed(seed)
