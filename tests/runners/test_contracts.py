"""The contract suite on CPU with diffusers 0.42.1: the known defects fail with a message naming them, clean
pipelines pass, and every contract fails on a defect planted in an otherwise clean pipeline."""

from __future__ import annotations

import dataclasses
import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from runners.contracts import all_contracts
from runners.suite import run_one
from runners.tiny import get_factory


torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = {c.code: c for c in all_contracts()}


def outcome(pipeline, code: str):
    result = run_one(pipeline, CONTRACTS[code])
    return result.outcome, result.message


def test_every_contract_has_a_code_pattern_and_one_test():
    assert len(CONTRACTS) >= 8
    for code, contract in CONTRACTS.items():
        assert code.startswith("DRC") and 1 <= contract.pattern <= 10
        assert [n for n in vars(contract) if n.startswith("test_drc")] == [f"test_{code.lower()}_" + n.split("_", 2)[2]
                                                                           for n in vars(contract) if n.startswith("test_drc")]  # fmt: skip


# -- the defects of #13656 that are still in 0.42.1 ------------------------------------------------------------


def test_wan_i2v_image_embeddings_are_not_expanded_per_video():
    # pipeline_wan_i2v.py: image_embeds.repeat(batch_size, 1, 1) ignores num_videos_per_prompt
    result, message = outcome("WanImageToVideoPipeline", "DRC001")
    assert result == "failed"
    assert "`encoder_hidden_states_image` has batch 2" in message and "latents have batch 4" in message


def test_cogvideox_sizes_pass_check_inputs_and_fail_in_the_transformer():
    # pipeline_cogvideox.py check_inputs asks for multiples of 8; the transformer patchifies 8x-downsampled latents by 2
    result, message = outcome("CogVideoXPipeline", "DRC007")
    assert result == "failed"
    assert "not a multiple of 16 (VAE scale 8 x patch 2), yet check_inputs accepted it" in message


def test_sdxl_inpaint_latent_output_ignores_return_dict():
    # pipeline_stable_diffusion_xl_inpaint.py returns StableDiffusionXLPipelineOutput(images=latents) early
    result, message = outcome("StableDiffusionXLInpaintPipeline", "DRC006")
    assert result == "failed"
    assert "output_type='latent', return_dict=False returned StableDiffusionXLPipelineOutput, not a tuple" in message


@pytest.mark.parametrize(
    "pipeline, code",
    [("WanPipeline", "DRC001"), ("StableDiffusionXLPipeline", "DRC001"), ("StableDiffusionPipeline", "DRC007"),
     ("WanPipeline", "DRC007"), ("StableDiffusionXLPipeline", "DRC006"), ("FluxPipeline", "DRC006"),
     ("FluxPipeline", "DRC014"), ("StableDiffusionXLPipeline", "DRC014"), ("QwenImagePipeline", "DRC015"),
     ("HunyuanVideoPipeline", "DRC015"), ("StableDiffusionXLPipeline", "DRC016"), ("FluxPipeline", "DRC017"),
     ("SanaPipeline", "DRC017"), ("StableDiffusion3Pipeline", "DRC018"), ("LTXPipeline", "DRC018"),
     ("SanaPipeline", "DRC019")],
)  # fmt: skip
def test_pipelines_without_the_defect_pass(pipeline, code):
    assert outcome(pipeline, code) == ("passed", "")


# -- every contract fails on a planted defect -----------------------------------------------------------------


def planted(method: str, replacement, **attributes):
    """The tiny StableDiffusionPipeline factory, building a subclass with one method replaced, and any other class
    `attributes` (and a feature extractor, an optional component DRC005 can then leave out)."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPImageProcessor

    base = get_factory("StableDiffusionPipeline")
    cls = type("PlantedStableDiffusionPipeline", (StableDiffusionPipeline,), {method: replacement, **attributes})

    def components(seed: int) -> dict:
        return {
            **base.make_components(seed),
            "feature_extractor": CLIPImageProcessor(),
            "requires_safety_checker": False,
        }

    return dataclasses.replace(base, cls=cls, make_components=components)


def _sd_call():
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.__call__


def _call_with(**overrides):
    from diffusers import StableDiffusionPipeline

    @functools.wraps(StableDiffusionPipeline.__call__)  # keeps the signature the contracts inspect
    def __call__(self, *args, **kwargs):
        for key, value in overrides.items():
            kwargs[key] = value(kwargs) if callable(value) else value
        return StableDiffusionPipeline.__call__(self, *args, **kwargs)

    return __call__


def _latent_object(self, *args, **kwargs):
    from diffusers import StableDiffusionPipeline
    from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput

    result = StableDiffusionPipeline.__call__(self, *args, **kwargs)
    if kwargs.get("output_type") == "latent" and isinstance(result, tuple):
        return StableDiffusionPipelineOutput(images=result[0], nsfw_content_detected=None)
    return result


def _no_size_check(self, prompt, height, width, *args, **kwargs):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.check_inputs(self, prompt, 8, 8, *args, **kwargs)


def _float64_latents(self, *args, **kwargs):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.prepare_latents(self, *args, **kwargs).double()


def _crash_without_feature_extractor(self, image, device, dtype):
    self.feature_extractor.size  # noqa: B018 - `None.size` when the optional component is left out
    return image, None


def _ignore_callback_return(kwargs):
    callback = kwargs.get("callback_on_step_end")
    if callback is None:
        return None

    def call_and_forget(pipe, step, timestep, callback_kwargs):
        callback(pipe, step, timestep, dict(callback_kwargs))
        return callback_kwargs

    return call_and_forget


def _swap_prompts(kwargs):
    prompt = kwargs.get("prompt")
    return list(reversed(prompt)) if isinstance(prompt, list) else prompt


def _encode_with(transform):
    """SD's encode_prompt with `transform(embeddings, num_images_per_prompt, negative=...)` applied to what it returns."""
    from diffusers import StableDiffusionPipeline

    original = StableDiffusionPipeline.encode_prompt

    @functools.wraps(original)  # keeps the signature and the source the contracts read
    def encode_prompt(self, prompt, device, num_images_per_prompt, *args, **kwargs):
        positive, negative = original(self, prompt, device, num_images_per_prompt, *args, **kwargs)
        return (transform(positive, num_images_per_prompt, negative=False),
                transform(negative, num_images_per_prompt, negative=True))  # fmt: skip

    return encode_prompt


def _tiled(embeddings, per_prompt, negative):
    """Rows p0, p0, p1, p1 reordered p0, p1, p0, p1: what `repeat(n, 1, 1)` gives where `repeat_interleave` belongs."""
    if embeddings is None or per_prompt == 1:
        return embeddings
    prompts = embeddings.shape[0] // per_prompt
    return embeddings.view(prompts, per_prompt, *embeddings.shape[1:]).transpose(0, 1).reshape(embeddings.shape)


def _negatives_reversed(embeddings, per_prompt, negative):
    """The negative embeddings in reverse prompt order: each prompt guided away from another prompt's negative."""
    return embeddings.flip(0) if negative and embeddings is not None else embeddings


def _latents_unscaled(self, *args, **kwargs):
    """`output_type="latent"` returns the latents already divided by the VAE scaling factor."""
    from diffusers import StableDiffusionPipeline

    result = StableDiffusionPipeline.__call__(self, *args, **kwargs)
    if kwargs.get("output_type") == "latent" and not isinstance(result, tuple):
        result.images = result.images / self.vae.config.scaling_factor
    return result


def _np_not_denormalized(self, *args, **kwargs):
    """`output_type="np"` returns the images in [-1, 1], as the VAE decodes them."""
    from diffusers import StableDiffusionPipeline

    result = StableDiffusionPipeline.__call__(self, *args, **kwargs)
    if kwargs.get("output_type") == "np" and not isinstance(result, tuple):
        result.images = result.images * 2 - 1
    return result


PLANTS = {
    "DRC002": ("__call__", _call_with(prompt=_swap_prompts), "differs from its single-prompt result"),
    "DRC001": ("__call__", _call_with(num_images_per_prompt=1), "gave 2 outputs, expected 4"),
    "DRC003": ("__call__", _call_with(latents=None), "identical outputs: the argument is ignored"),
    "DRC004": ("__call__", _call_with(callback_on_step_end=_ignore_callback_return), "its return value is ignored"),
    "DRC005": ("run_safety_checker", _crash_without_feature_extractor, "`feature_extractor=None`"),
    "DRC006": (
        "__call__",
        functools.wraps(_sd_call())(_latent_object),
        "returned StableDiffusionPipelineOutput, not a tuple",
    ),
    "DRC007": ("check_inputs", _no_size_check, "check_inputs accepted it"),
    "DRC008": ("prepare_latents", _float64_latents, "float64 reached the denoiser"),
    "DRC014": (
        "encode_prompt",
        _encode_with(_tiled),
        "the rows hold prompts p0, p1, p0, p1 instead of p0, p0, p1, p1",
    ),
    "DRC015": ("__call__", _call_with(negative_prompt_embeds=None), "instead of the prompts, changed the output by"),
    "DRC017": (
        "encode_prompt",
        _encode_with(_negatives_reversed),
        "changed the first row by",
    ),
    "DRC018": (
        "__call__",
        functools.wraps(_sd_call())(_latents_unscaled),
        "output_type='latent' returned latents that are not what the pt call decodes",
    ),
}


@pytest.mark.parametrize("code", sorted(PLANTS))
def test_each_contract_fails_on_a_planted_defect_and_passes_without_it(code):
    from diffusers import StableDiffusionPipeline

    method, replacement, expected = PLANTS[code]
    # the same pipeline and factory without the defect: the contract does not report it
    control, control_message = outcome(planted(method, getattr(StableDiffusionPipeline, method)), code)
    assert control in ("passed", "failed") and expected not in control_message, control_message
    result, message = outcome(planted(method, replacement), code)
    assert result == "failed", message
    assert expected in message


def _text_encoders_optional(encode_prompt):
    """The planted SD factory with its text encoder and tokenizer listed as optional, and `encode_prompt`."""
    from diffusers import StableDiffusionPipeline

    optional = [*StableDiffusionPipeline._optional_components, "text_encoder", "tokenizer"]
    return planted("encode_prompt", encode_prompt, _optional_components=optional)


def _reads_the_tokenizer_first(self, *args, **kwargs):
    from diffusers import StableDiffusionPipeline

    self.tokenizer.model_max_length  # noqa: B018 - `None.model_max_length` when the tokenizer is left out
    return StableDiffusionPipeline.encode_prompt(self, *args, **kwargs)


def test_drc016_fails_when_the_pipeline_needs_its_optional_text_encoders():
    from diffusers import StableDiffusionPipeline

    # SD lists no text encoder as optional: skipped, with the reason
    result, message = outcome("StableDiffusionPipeline", "DRC016")
    assert result == "skipped" and "lists no text encoder or tokenizer in _optional_components" in message
    # listed as optional, and SD's encode_prompt does without them when the embeddings are given: passes
    assert outcome(_text_encoders_optional(StableDiffusionPipeline.encode_prompt), "DRC016") == ("passed", "")
    result, message = outcome(
        _text_encoders_optional(functools.wraps(StableDiffusionPipeline.encode_prompt)(_reads_the_tokenizer_first)),
        "DRC016",
    )
    assert result == "failed" and "`text_encoder`, `tokenizer` = None" in message and "the call raised" in message

    # without its encoders the pipeline puts zeros where the negative embeddings were given
    original = StableDiffusionPipeline.encode_prompt

    @functools.wraps(original)
    def zeros_without_encoder(self, *args, **kwargs):
        positive, negative = original(self, *args, **kwargs)
        return positive, (torch.zeros_like(negative) if self.text_encoder is None and negative is not None
                          else negative)  # fmt: skip

    result, message = outcome(_text_encoders_optional(zeros_without_encoder), "DRC016")
    assert result == "failed" and "does not use the embeddings as given" in message


def test_drc019_fails_when_an_init_option_is_not_saved():
    from diffusers import StableDiffusionPipeline

    def with_boost(register: bool):
        """SD with an `__init__` option that scales the guidance; registered to the config, or only kept."""

        def __init__(self, vae, text_encoder, tokenizer, unet, scheduler, safety_checker, feature_extractor,
                     image_encoder=None, requires_safety_checker: bool = True, boost: float = 1.0):  # fmt: skip
            StableDiffusionPipeline.__init__(self, vae, text_encoder, tokenizer, unet, scheduler, safety_checker,
                                             feature_extractor, image_encoder, requires_safety_checker)  # fmt: skip
            self.boost = boost
            if register:
                self.register_to_config(boost=boost)

        @functools.wraps(StableDiffusionPipeline.__call__)
        def __call__(self, *args, **kwargs):
            kwargs["guidance_scale"] = kwargs.get("guidance_scale", 7.5) * self.boost
            return StableDiffusionPipeline.__call__(self, *args, **kwargs)

        factory = planted("__call__", __call__, __init__=__init__)
        return dataclasses.replace(
            factory, make_components=lambda seed: {**factory.make_components(seed), "boost": 2.0}
        )

    assert outcome("StableDiffusionPipeline", "DRC019") == ("passed", "")
    assert outcome(with_boost(register=True), "DRC019") == ("passed", "")
    result, message = outcome(with_boost(register=False), "DRC019")
    assert result == "failed" and "the round trip changed `boost` 2.0 -> 1.0" in message


@pytest.mark.parametrize(
    "code, method, replacement, expected",
    [
        ("DRC017", "__call__", _call_with(guidance_scale=1.0), "classifier-free guidance never ran"),
        ("DRC018", "__call__", functools.wraps(_sd_call())(_np_not_denormalized),
         "output_type='np' differs from the pt output (channels last)"),
    ],
)  # fmt: skip
def test_more_planted_defects(code, method, replacement, expected):
    result, message = outcome(planted(method, replacement), code)
    assert result == "failed" and expected in message, message


def _constant_output(self, *args, **kwargs):
    from diffusers import StableDiffusionPipeline

    result = StableDiffusionPipeline.__call__(self, *args, **kwargs)
    if not isinstance(result, tuple):
        result.images = torch.zeros_like(result.images)
    return result


def _blind_to_text(embeddings, per_prompt, negative):
    return None if embeddings is None else torch.zeros_like(embeddings)


def test_contracts_skip_where_the_test_model_cannot_show_the_effect():
    # AllegroPipeline's fast test gives the same frames for any seed (DRC004 reported its callback as ignored);
    # ZImage's and Wan I2V's fast-test transformers ignore the text, so guidance cannot change their output
    for code in ("DRC003", "DRC004"):
        result, message = outcome(planted("__call__", functools.wraps(_sd_call())(_constant_output)), code)
        assert result == "skipped" and "does not depend on the latents at all" in message, (code, message)
    result, message = outcome(planted("encode_prompt", _encode_with(_blind_to_text)), "DRC017")
    assert result == "skipped" and "guidance, which acts through the text, cannot show" in message


def _check_inputs_refusing_prompt_lists(deliberately: bool):
    """`check_inputs` that refuses a list of prompts: with a `raise` of its own (as video-to-video pipelines want one
    video per prompt), or by failing inside (a ValueError too, from unpacking)."""
    from diffusers import StableDiffusionPipeline

    def check_inputs(self, prompt, *args, **kwargs):
        if isinstance(prompt, list) and len(prompt) > 1:
            if deliberately:
                raise ValueError(f"You have passed {len(prompt)} text prompts (`prompt`), but only 1 initial images")
            prompt, _ = [prompt[0]]  # one value for two names
        return StableDiffusionPipeline.check_inputs(self, prompt, *args, **kwargs)

    return check_inputs


def test_an_input_check_declining_the_batch_is_a_skip_but_a_crash_stays_a_failure():
    result, message = outcome(planted("check_inputs", _check_inputs_refusing_prompt_lists(True)), "DRC001")
    assert result == "skipped" and "declines 2 prompts x num_images_per_prompt=2 up front" in message, message
    result, message = outcome(planted("check_inputs", _check_inputs_refusing_prompt_lists(False)), "DRC001")
    assert result == "failed" and "ValueError: not enough values to unpack" in message, message


def test_drc009_fails_when_fused_projections_change_the_output(monkeypatch):
    from diffusers import UNet2DConditionModel

    original = UNet2DConditionModel.fuse_qkv_projections

    def fuse_and_perturb(self):
        original(self)
        with torch.no_grad():
            for module in self.modules():
                if getattr(module, "to_qkv", None) is not None:
                    module.to_qkv.weight.mul_(1.5)

    assert outcome("StableDiffusionPipeline", "DRC009") == ("passed", "")
    monkeypatch.setattr(UNet2DConditionModel, "fuse_qkv_projections", fuse_and_perturb)
    result, message = outcome("StableDiffusionPipeline", "DRC009")
    assert result == "failed" and "fused QKV changes the output" in message


def _supports_only(*types):
    """`__call__` that refuses every other `output_type` up front, as Kandinsky's and Shap-E's do."""
    from diffusers import StableDiffusionPipeline

    @functools.wraps(StableDiffusionPipeline.__call__)
    def __call__(self, *args, **kwargs):
        output_type = kwargs.get("output_type", "pil")
        if output_type not in types:
            raise ValueError(f"Only the output types {types} are supported not output_type={output_type}")
        return StableDiffusionPipeline.__call__(self, *args, **kwargs)

    return __call__


def test_drc006_leaves_out_the_output_types_a_pipeline_refuses_up_front():
    assert outcome(planted("__call__", _supports_only("pil", "np", "pt")), "DRC006") == ("passed", "")
    result, message = outcome(planted("__call__", _supports_only("pil", "np")), "DRC006")
    assert result == "skipped" and "declines both output types" in message, message


def test_drc009_skips_a_model_that_declares_it_cannot_fuse_or_switch_backend(monkeypatch):
    from diffusers import UNet2DConditionModel

    def cannot_fuse(self):
        raise ValueError("fuse_qkv_projections() is not supported for models having added KV projections.")

    def needs_flex(self, backend):
        raise ValueError(f"this processor requires the 'flex' attention backend (got {backend})")

    def breaks_inside(self):
        self.to_qkv.weight  # noqa: B018 - the model has no `to_qkv`: an AttributeError, not a declared limitation

    monkeypatch.setattr(UNet2DConditionModel, "fuse_qkv_projections", cannot_fuse)
    monkeypatch.setattr(UNet2DConditionModel, "set_attention_backend", needs_flex)
    result, message = outcome("StableDiffusionPipeline", "DRC009")
    assert result == "skipped" and "declines every variant" in message and "'flex' attention backend" in message
    monkeypatch.setattr(UNet2DConditionModel, "fuse_qkv_projections", breaks_inside)
    result, message = outcome("StableDiffusionPipeline", "DRC009")
    assert result == "failed" and "fuse_qkv_projections(): AttributeError" in message, message


def test_the_command_line_prints_json_and_exits_1_on_a_failure():
    result = subprocess.run(
        [sys.executable, "-m", "drbot", "contracts", "StableDiffusionXLInpaintPipeline", "--contract", "DRC006",
         "--format", "json"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    rows = json.loads(result.stdout)["results"]
    assert [(r["pipeline"], r["contract"], r["pattern"], r["outcome"]) for r in rows] == [
        ("StableDiffusionXLInpaintPipeline", "DRC006", 6, "failed"),
    ]
    assert set(rows[0]) == {"pipeline", "contract", "pattern", "outcome", "message", "duration_s"}


def test_drc011_fails_when_custom_sigmas_are_dropped():
    from diffusers import FluxPipeline

    @functools.wraps(FluxPipeline.__call__)
    def drop_sigmas(self, *args, **kwargs):
        kwargs.pop("sigmas", None)
        return FluxPipeline.__call__(self, *args, **kwargs)

    flux = get_factory("FluxPipeline")
    assert outcome(flux, "DRC011") == ("passed", "")
    result, message = outcome(
        dataclasses.replace(flux, cls=type("Planted", (FluxPipeline,), {"__call__": drop_sigmas})), "DRC011"
    )
    assert result == "failed" and "`sigmas=[1.0, 0.3]` gave the same output as the default schedule" in message


def test_drc011_skips_a_schedule_the_input_check_constrains_but_fails_one_the_pipeline_breaks():
    from diffusers import FluxPipeline

    def check_schedule(self, sigmas):
        # SanaSprint's check_inputs: "If providing custom timesteps, `timesteps` must be of length ... + 1."
        if sigmas is not None:
            raise ValueError("If providing custom sigmas, `sigmas` must be of length `num_inference_steps + 1`.")

    @functools.wraps(FluxPipeline.__call__)
    def constrained_call(self, *args, sigmas=None, **kwargs):
        self.check_schedule(sigmas)
        return FluxPipeline.__call__(self, *args, sigmas=sigmas, **kwargs)

    @functools.wraps(FluxPipeline.__call__)
    def conflicting(self, *args, sigmas=None, **kwargs):
        # LTX's: the pipeline makes its own sigmas and hands both to retrieve_timesteps, which refuses
        if sigmas is not None:
            raise ValueError(
                "Only one of `timesteps` or `sigmas` can be passed. Please choose one to set custom values"
            )
        return FluxPipeline.__call__(self, *args, **kwargs)

    flux = get_factory("FluxPipeline")
    methods = {"check_schedule": check_schedule, "__call__": constrained_call}
    constrained = dataclasses.replace(flux, cls=type("Constrained", (FluxPipeline,), methods))
    result, message = outcome(constrained, "DRC011")
    assert result == "skipped" and "must be of length `num_inference_steps + 1`" in message, message
    broken = dataclasses.replace(flux, cls=type("Conflicting", (FluxPipeline,), {"__call__": conflicting}))
    result, message = outcome(broken, "DRC011")
    assert result == "failed" and "`sigmas=[1.0, 0.3]` raised ValueError: Only one of" in message, message


def test_more_0_42_1_defects_the_contracts_find():
    # pipeline_ltx.py always computes `sigmas` and hands both to retrieve_timesteps: `timesteps` can never be used
    result, message = outcome("LTXPipeline", "DRC011")
    assert (
        result == "failed"
        and "`timesteps=[999, 300]` raised ValueError: Only one of `timesteps` or `sigmas`" in message
    )
    # pipeline_stable_diffusion_xl_inpaint.py _encode_vae_image loops over the image batch (1), not the generator
    # list: every row's image latents are drawn from generator[0]; diffusers' own batch test compares row 0 only
    result, message = outcome("StableDiffusionXLInpaintPipeline", "DRC002")
    assert result == "failed" and message.startswith("row 1 differs from its single-prompt result")


@pytest.mark.parametrize("pipeline", ["LTXPipeline", "SanaPipeline", "QwenImagePipeline"])
def test_text_masks_expanded_in_another_order_than_the_embeddings(pipeline):
    # pipeline_ltx.py:277-278 and pipeline_sana.py:373-374 (and 397-398 for the negative) expand the embeddings
    # `repeat(1, n, 1).view(b * n, ...)` (p0, p0, p1, p1) but the text mask `.repeat(n, 1)` (p0, p1, p0, p1);
    # pipeline_qwenimage.py:262-263 gives the 2-D mask `.repeat(1, n, 1)`, which tiles the batch the same way
    result, message = outcome(pipeline, "DRC014")
    assert result == "failed" and "only rows 1 and 2 are off" in message, message


def test_drc012_fails_when_max_sequence_length_is_dropped():
    from diffusers import FluxPipeline

    @functools.wraps(FluxPipeline.__call__)
    def drop_length(self, *args, **kwargs):
        kwargs.pop("max_sequence_length", None)
        return FluxPipeline.__call__(self, *args, **kwargs)

    flux = get_factory("FluxPipeline")
    assert outcome(flux, "DRC012") == ("passed", "")
    planted_flux = dataclasses.replace(flux, cls=type("Planted", (FluxPipeline,), {"__call__": drop_length}))
    result, message = outcome(planted_flux, "DRC012")
    assert result == "failed" and "the argument is ignored" in message


def test_drc013_fails_when_the_model_drops_the_text_mask(monkeypatch):
    from diffusers import SanaTransformer2DModel

    forward = SanaTransformer2DModel.forward

    def drop_mask(self, *args, **kwargs):
        kwargs["encoder_attention_mask"] = None  # the pre-hook saw it; the attention never does
        return forward(self, *args, **kwargs)

    assert outcome("SanaPipeline", "DRC013") == ("passed", "")
    monkeypatch.setattr(SanaTransformer2DModel, "forward", drop_mask)
    result, message = outcome("SanaPipeline", "DRC013")
    assert result == "failed" and "changed the output" in message


def test_padding_and_sequence_length_defects_of_0_42_1():
    # pipeline_ltx.py:269 encodes the prompt with T5 without its attention mask: real tokens attend to padding
    result, message = outcome("LTXPipeline", "DRC013")
    assert result == "failed" and "`encoder_attention_mask`" in message
    # CogVideoX's transformer only takes its configured max_text_seq_length; check_inputs does not say so
    result, message = outcome("CogVideoXPipeline", "DRC012")
    assert result == "failed" and "max_sequence_length=24 raised RuntimeError" in message
