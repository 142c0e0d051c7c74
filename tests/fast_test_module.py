"""A diffusers fast test module for tests that need one: `tests/pipelines/foo/test_foo.py` of a synthetic checkout
(tests/runners/test_checkout.py) or of a pull request's tarball (tests/bot/test_contract_jobs.py). Its classes build
real tiny pipelines the way diffusers' own fast tests do, with planted defects beside them."""

from __future__ import annotations

import textwrap


TEST_FOO = textwrap.dedent('''
import functools
import os

import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

from ..pipeline_params import TEXT_TO_IMAGE_PARAMS  # a relative import, as the real test modules have


class LatentsIgnoredPipeline(StableDiffusionPipeline):
    """A planted defect: takes `latents` (its signature is the parent's) and drops them."""

    @functools.wraps(StableDiffusionPipeline.__call__)
    def __call__(self, *args, **kwargs):
        kwargs.pop("latents", None)
        return StableDiffusionPipeline.__call__(self, *args, **kwargs)


class CrashingPipeline(StableDiffusionPipeline):
    pass


class BrokenPipeline(StableDiffusionPipeline):
    pass


class UnstoodPipeline(StableDiffusionPipeline):
    pass


class StableDiffusionPipelineFastTests:
    """The PipelineTesterMixin idiom: get_dummy_inputs(device, seed)."""

    pipeline_class = StableDiffusionPipeline
    params = TEXT_TO_IMAGE_PARAMS

    def get_dummy_components(self):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            block_out_channels=(4, 8), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32, norm_num_groups=2,
        )
        scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False)
        torch.manual_seed(0)
        vae = AutoencoderKL(
            block_out_channels=[4, 8], in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
            up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=2,
        )
        torch.manual_seed(0)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            bos_token_id=0, eos_token_id=2, hidden_size=32, intermediate_size=37, layer_norm_eps=1e-05,
            num_attention_heads=4, num_hidden_layers=2, pad_token_id=1, vocab_size=1000,
        ))
        tokenizer = CLIPTokenizer.from_pretrained("hf-internal-testing/tiny-random-clip")
        return {"unet": unet, "scheduler": scheduler, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer,
                "safety_checker": None, "feature_extractor": None, "image_encoder": None}

    def get_dummy_inputs(self, device, seed=0):
        generator = torch.Generator(device=device).manual_seed(seed)
        return {"prompt": "A painting of a squirrel eating a burger", "generator": generator,
                "num_inference_steps": 2, "guidance_scale": 6.0, "output_type": "np"}


class LatentsIgnoredPipelineTesterConfig(StableDiffusionPipelineFastTests):
    """The BasePipelineTesterConfig idiom: get_dummy_inputs() takes no device or seed."""

    pipeline_class = LatentsIgnoredPipeline

    def get_dummy_inputs(self):
        return super().get_dummy_inputs("cpu", 0)


class CrashingPipelineFastTests(StableDiffusionPipelineFastTests):
    pipeline_class = CrashingPipeline

    def get_dummy_components(self):
        os._exit(3)  # the worker process dies: the pipelines after it must still run


class BrokenPipelineFastTests(StableDiffusionPipelineFastTests):
    pipeline_class = BrokenPipeline

    def get_dummy_components(self):
        raise RuntimeError("no components today")


class UnstoodPipelineFastTests(StableDiffusionPipelineFastTests):
    pipeline_class = UnstoodPipeline

    def get_dummy_components(self):
        return {"tokenizer": CLIPTokenizer.from_pretrained("hf-internal-testing/tiny-random-nothing")}


class StableDiffusionPipelineSlowTests:
    pipeline_class = StableDiffusionPipeline

    def get_dummy_components(self):
        raise AssertionError("slow tests are never built from")

    def get_dummy_inputs(self, device, seed=0):
        return {}
''')


def checkout_tests(test_module: str = TEST_FOO) -> dict[str, str]:
    """The files of a checkout's `tests/` package holding `test_module` (paths relative to the checkout)."""
    packages = ("tests", "tests/pipelines", "tests/pipelines/foo")
    return {
        **{f"{package}/__init__.py": "" for package in packages},
        "tests/pipelines/pipeline_params.py": 'TEXT_TO_IMAGE_PARAMS = frozenset(["prompt"])\n',
        "tests/pipelines/foo/test_foo.py": test_module,
    }


def write_checkout_tests(root, test_module: str = TEST_FOO) -> None:
    """Write `checkout_tests()` under the checkout `root` (a Path)."""
    for relative, text in checkout_tests(test_module).items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
