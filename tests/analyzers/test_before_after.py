"""Findings that an older diffusers release had and 0.42.1 fixed: the rule fires before and is silent after.

Older releases come from PyPI (`pip download`), unpacked once under .cache/releases/.
"""

from __future__ import annotations

import pytest

from analyzers.core import Project, all_rules, analyze_file


P = "diffusers/pipelines/"
# (release with the bug, rule, file, scope, symbol, what changed by 0.42.1)
FIXED_LATER = [
    (
        "0.38.0",
        "DRB401",
        P + "z_image/pipeline_z_image_omni.py",
        "ZImageOmniPipeline.__call__",
        "negative_condition_siglip_embeds",
        "#13583/#13527: the normalisation moved under `if self.do_classifier_free_guidance:` (guidance_scale=0)",
    ),
    (
        "0.38.0",
        "DRB302",
        "diffusers/models/transformers/transformer_qwenimage.py",
        "QwenDoubleStreamAttnProcessor2_0.__call__",
        "encoder_hidden_states_mask",
        "#12294/#13581: the processor now builds the joint attention mask from `encoder_hidden_states_mask`",
    ),
    (
        "0.38.0",
        "DRB401",
        "diffusers/modular_pipelines/modular_pipeline.py",
        "ModularPipeline.__init__",
        "blocks_class",
        "`blocks_class` was bound only in a branch; 0.42.1 initialises `blocks_class = None`",
    ),
    (
        "0.35.2",
        "DRB504",
        P + "ddpm/pipeline_ddpm.py",
        "DDPMPipeline.__call__",
        "self.device",
        "#13649: `self.device` became `self._execution_device`",
    ),
    (
        "0.35.2",
        "DRB603",
        P + "ddpm/pipeline_ddpm.py",
        "DDPMPipeline.__call__",
        "output_type",
        '#13649: `output_type="pt"` silently became numpy; 0.42.1 returns tensors for "pt"',
    ),
    (
        "0.35.2",
        "DRB702",
        P + "flux/pipeline_flux_controlnet_image_to_image.py",
        "FluxControlNetImg2ImgPipeline.check_inputs",
        "height/width",
        "#13584/#13955: `height % self.vae_scale_factor * 2` was parenthesised",
    ),
    (
        "0.36.0",
        "DRB203",
        P + "ovis_image/pipeline_ovis_image.py",
        "OvisImagePipeline.__call__",
        "joint_attention_kwargs",
        "#13630/#13944: both transformer calls now pass `joint_attention_kwargs`",
    ),
    (
        "0.36.0",
        "DRB203",
        P + "bria_fibo/pipeline_bria_fibo.py",
        "BriaFiboPipeline.__call__",
        "timesteps",
        "#13618/#13981: `timesteps` now reaches `retrieve_timesteps`",
    ),
]


def _findings(package_root, path, code):
    rules = [rule for rule in all_rules() if rule.code == code]
    source = (package_root.parent / path).read_text(encoding="utf-8")
    result = analyze_file(path, source, project=Project.from_directory(str(package_root.parent)), rules=rules)
    assert result.errors == []
    return {(f.code, f.scope, f.symbol) for f in result.findings}


@pytest.mark.parametrize(
    "version, code, path, scope, symbol, why", FIXED_LATER, ids=[f"{c}-{s}" for _, c, _, s, _, _ in FIXED_LATER]
)
def test_fires_before_the_fix_and_not_after(diffusers_release, diffusers_dir, version, code, path, scope, symbol, why):
    before = _findings(diffusers_release(version), path, code)
    after = _findings(diffusers_dir, path, code)
    assert (code, scope, symbol) in before, f"{code} misses the {version} bug: {why}"
    assert (code, scope, symbol) not in after, f"{code} still fires on 0.42.1 after the fix: {why}"
