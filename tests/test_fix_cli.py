"""`drbot fix`: fixes applied in place or shown as a diff, composed, idempotent, checked, and `# Copied from` copies kept
in step with their sources; exit statuses."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
UTILS = textwrap.dedent(
    """
    class DiffusionPipeline:
        @property
        def _execution_device(self):
            return self.device
    """
)
PREPARE = """
    def prepare_latents(self, shape, dtype, device, generator, latents=None):
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        else:
            latents = latents.to(device)  # the user's tensor
        return latents
"""
TOY = (
    textwrap.dedent(
        """
        import torch

        from ..pipeline_utils import DiffusionPipeline


        class ToyPipeline(DiffusionPipeline):
            model_cpu_offload_seq = "unet"

            def check_inputs(self, height, width):
                # both sides must be multiples of twice the VAE factor
                if height % self.vae_scale_factor * 2 != 0 or width % self.vae_scale_factor * 2 != 0:
                    raise ValueError(f"bad size {height}x{width}")
        """
    )
    + PREPARE
    + textwrap.indent(
        textwrap.dedent(
            """
            def __call__(self, prompt, height=64, width=64, latents=None, output_type="pil", return_dict=True):
                self.check_inputs(height, width)
                latents = self.prepare_latents((1, 4, height, width), torch.float16, self.device, None, latents)
                latents = self.unet(latents, prompt)
                if output_type == "latent":
                    return ToyPipelineOutput(images=latents)
                image = self.vae.decode(latents)
                self.maybe_free_model_hooks()
                if not return_dict:
                    return (image,)
                return ToyPipelineOutput(images=image)
            """
        ),
        "    ",
    )
)
TOY_FIXED = (
    TOY.replace("height % self.vae_scale_factor * 2", "height % (self.vae_scale_factor * 2)")
    .replace("width % self.vae_scale_factor * 2", "width % (self.vae_scale_factor * 2)")
    .replace("latents = latents.to(device)", "latents = latents.to(device=device, dtype=dtype)")
    .replace("torch.float16, self.device,", "torch.float16, self._execution_device,")
    .replace(
        """            return ToyPipelineOutput(images=latents)""",
        """            self.maybe_free_model_hooks()
                if not return_dict:
                    return (latents,)
                return ToyPipelineOutput(images=latents)""".replace("\n    ", "\n"),
    )
)
#: a copy of ToyPipeline.prepare_latents that no rule reports (no `__call__` hands it the user's latents)
COPY = (
    "from ..pipeline_utils import DiffusionPipeline\n\n\nclass ToyImg2ImgPipeline(DiffusionPipeline):\n"
    "    # Copied from diffusers.pipelines.toy.pipeline_toy.ToyPipeline.prepare_latents" + PREPARE
)
#: a deprecated pipeline (never fixed on its own) and a copy of it that DRB501 reports
OLD = "class OldPipeline:" + PREPARE
OLD_COPY = (
    "from ..pipeline_utils import DiffusionPipeline\n\n\nclass NewPipeline(DiffusionPipeline):\n"
    "    # Copied from diffusers.pipelines.deprecated.old.pipeline_old.OldPipeline.prepare_latents"
    + PREPARE
    + "\n    def __call__(self, prompt, latents=None):\n"
    "        latents = self.prepare_latents((1, 4), torch.float16, 'cuda', None, latents)\n"
    "        return self.unet(latents, prompt)\n"
)
FILES = {
    "pipelines/pipeline_utils.py": UTILS,
    "pipelines/toy/pipeline_toy.py": TOY,
    "pipelines/toy/pipeline_toy_img2img.py": COPY,
    "pipelines/deprecated/old/pipeline_old.py": OLD,
    "pipelines/new/pipeline_new.py": OLD_COPY,
}
FIXED_PREPARE = PREPARE.replace("latents.to(device)", "latents.to(device=device, dtype=dtype)")


def drbot(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "DRBOT_CACHE_DIR": os.environ["DRBOT_CACHE_DIR"]}
    return subprocess.run([sys.executable, "-m", "drbot", *args], cwd=cwd, capture_output=True, text=True, env=env)


@pytest.fixture
def package(tmp_path: Path) -> Path:
    root = tmp_path / "diffusers"
    for path, text in {"__init__.py": "", "pipelines/__init__.py": "", **FILES}.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
        if path.endswith("/pipeline_utils.py") or "/" not in path:
            continue
        init = (root / path).parent / "__init__.py"
        if not init.exists():
            init.write_text("")
    for directory in ("pipelines/deprecated",):
        (root / directory / "__init__.py").write_text("")
    return root


def texts(package: Path) -> dict[str, str]:
    return {path: (package / path).read_text() for path in FILES}


def test_fix_composes_the_fixes_keeps_comments_and_copies_in_step(package):
    result = drbot("fix", str(package), "-j", "1")
    assert "Traceback" not in result.stderr, result.stderr
    after = texts(package)
    assert after["pipelines/toy/pipeline_toy.py"] == TOY_FIXED
    # the copy follows its fixed source; the deprecated source takes its copy's fix, so both still match
    assert after["pipelines/toy/pipeline_toy_img2img.py"] == COPY.replace(PREPARE, FIXED_PREPARE)
    assert after["pipelines/new/pipeline_new.py"] == OLD_COPY.replace(PREPARE, FIXED_PREPARE)
    assert after["pipelines/deprecated/old/pipeline_old.py"] == OLD.replace(PREPARE, FIXED_PREPARE)
    analyzed = drbot("analyze", str(package), "-j", "1", "--select", "DRB501,DRB504,DRB601,DRB602,DRB702,DRB801")
    assert analyzed.returncode == 0, analyzed.stdout
    for path in FILES:
        compile((package / path).read_text(), path, "exec")
    # idempotent: a second run changes nothing
    again = drbot("fix", str(package), "-j", "1")
    assert texts(package) == after and "fixed 0 findings in 0 files" in again.stderr, again.stderr
    assert again.returncode == (0 if "0 findings of the selected rules remain" in again.stderr else 1)


def test_diff_changes_no_file_and_exits_1(package):
    before = texts(package)
    result = drbot("fix", str(package), "--diff", "-j", "1")
    assert result.returncode == 1, result.stderr
    assert texts(package) == before
    assert (
        "--- a/diffusers/pipelines/toy/pipeline_toy.py\n+++ b/diffusers/pipelines/toy/pipeline_toy.py\n"
        in result.stdout
    )
    assert "+        if height % (self.vae_scale_factor * 2) != 0" in result.stdout
    assert "would fix" in result.stderr


def test_select_fixes_only_the_selected_rules(package):
    result = drbot("fix", str(package), "--select", "DRB702", "-j", "1")
    assert result.returncode in (0, 1), result.stderr
    after = texts(package)
    assert after["pipelines/toy/pipeline_toy.py"] == TOY.replace(
        "height % self.vae_scale_factor * 2", "height % (self.vae_scale_factor * 2)"
    ).replace("width % self.vae_scale_factor * 2", "width % (self.vae_scale_factor * 2)")
    assert after["pipelines/new/pipeline_new.py"] == OLD_COPY


def test_usage_errors_exit_2(package, tmp_path):
    for args, named in (
        (["--select", "DRB201"], "no rule with a fix"),
        (["--select", "DRB999"], "DRB999"),
    ):
        result = drbot("fix", str(package), *args)
        assert result.returncode == 2 and named in result.stderr.strip().splitlines()[-1], result.stderr
    assert drbot("fix", str(tmp_path / "missing")).returncode == 2
    help_text = drbot("fix", "--help").stdout
    assert "Exit status: 0" in help_text and "--diff" in help_text
