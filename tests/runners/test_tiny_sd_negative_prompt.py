"""A string negative prompt with batched `prompt_embeds` on the tiny offline SD pipeline: the runtime side of DRB112.

diffusers 0.42.1's `StableDiffusionPipeline.encode_prompt` takes `batch_size = prompt_embeds.shape[0]` when only
embeddings are given, but encodes a string negative prompt as one row (`uncond_tokens = [negative_prompt]`), so the
later `.view(batch_size * num_images_per_prompt, seq_len, -1)` folds the hidden size instead of the batch. A list of
one negative prompt per embedding row works: the failure is the string's, not the embeddings'.
"""

from __future__ import annotations

import pytest


torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from runners.tiny.sd import sd_components  # noqa: E402


torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pipe_and_embeds():
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**sd_components(0))
    pipe.set_progress_bar_config(disable=True)
    prompt_embeds, _ = pipe.encode_prompt(["a cat", "a dog"], "cpu", 1, False)
    return pipe, prompt_embeds


def _call(pipe, prompt_embeds, negative_prompt):
    return pipe(
        prompt_embeds=prompt_embeds,
        negative_prompt=negative_prompt,
        num_inference_steps=2,
        guidance_scale=5.0,
        height=32,
        width=32,
        output_type="np",
        generator=torch.Generator("cpu").manual_seed(0),
    ).images


def test_a_negative_prompt_per_embedding_row_works(pipe_and_embeds):
    pipe, prompt_embeds = pipe_and_embeds
    images = _call(pipe, prompt_embeds, ["blurry", "blurry"])
    assert images.shape == (2, 32, 32, 3)


@pytest.mark.xfail(
    strict=True,
    raises=RuntimeError,
    reason="diffusers 0.42.1 pipeline_stable_diffusion.py:464 encodes a string negative_prompt as one row while "
    "batch_size comes from prompt_embeds (DRB112)",
)
def test_a_string_negative_prompt_goes_with_batched_prompt_embeds(pipe_and_embeds):
    pipe, prompt_embeds = pipe_and_embeds
    images = _call(pipe, prompt_embeds, "blurry")
    assert images.shape == (2, 32, 32, 3)
