"""DRC014, pattern 1: 2 prompts x `num_*_per_prompt=2` give the rows p0, p0, p1, p1, each equal to its single-prompt
run with the same generator."""

from __future__ import annotations

from runners.contracts._base import ContractFailure, batch_size, describe, first_output


PROMPTS = ("a photo of the cat", "a red dog")


def _generators(*seeds: int) -> list:
    import torch

    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]


class BatchOrderContract:
    code = "DRC014"
    pattern = 1
    title = "batch x per-prompt rows come in prompt order, each equal to its single-prompt run"

    ATOL = 1e-3

    def test_drc014_batch_order(self):
        import pytest
        import torch

        per_prompt = self.factory.per_prompt_arg
        self.require("prompt", "generator", per_prompt)
        if self.dtype is not None and self.dtype != torch.float32:
            # as DRC002: half-precision batch-size numerics are as large as a prompt's effect on a tiny model
            pytest.skip("batch order is checked in float32 only")
        pipe = self.get_pipeline()
        inputs = self.get_dummy_inputs()
        negative = inputs.get("negative_prompt")
        # one generator per output row: diffusers' randn_tensor draws row i from generator[i], so row 2k+j of the
        # batch and row j of prompt k's own call (generators 2k, 2k+1) start from the same noise
        batched = {**inputs, "prompt": list(PROMPTS), per_prompt: 2, "generator": _generators(0, 1, 2, 3)}
        if isinstance(negative, str):
            batched["negative_prompt"] = [negative] * 2
        try:
            rows = torch.as_tensor(first_output(pipe(**batched))).float()
        except Exception as error:  # noqa: BLE001 - a crash of this batch is DRC001's and DRC002's finding
            pytest.skip(f"2 prompts x {per_prompt}=2 with one generator per output raised {describe(error, 160)}")
        if batch_size(rows) != 4:
            pytest.skip(f"2 prompts x {per_prompt}=2 gave {batch_size(rows)} outputs (DRC001 reports the count)")
        references = {}  # (prompt index, seed) -> the output row of a single-prompt call

        def single_runs(index, seeds):  # (prompt index, the two seeds of its rows)
            single = {**self.get_dummy_inputs(), "prompt": PROMPTS[index], per_prompt: 2,
                      "generator": _generators(*seeds)}  # fmt: skip
            try:
                alone = torch.as_tensor(first_output(pipe(**single))).float()
            except Exception as error:  # noqa: BLE001
                pytest.skip(f"one prompt x {per_prompt}=2 with a generator per output raised {describe(error, 160)}")
            if batch_size(alone) != 2:
                pytest.skip(f"one prompt x {per_prompt}=2 gave {batch_size(alone)} outputs (DRC001 reports the count)")
            references.update({(index, seeds[0]): alone[0], (index, seeds[1]): alone[1]})

        single_runs(0, (0, 1))
        single_runs(1, (2, 3))
        # accelerators reorder reductions with the batch size (as DRC002): 1e-2 still tells prompts apart
        atol = self.ATOL if self.torch_device == "cpu" else 1e-2
        expected = (0, 0, 1, 1)
        diffs = [(rows[r] - references[(expected[r], r)]).abs().max().item() for r in range(4)]
        wrong = [r for r, diff in enumerate(diffs) if diff > atol]
        if not wrong:
            return
        # which prompt each row holds: both prompts run again with the other generators, so every row has a
        # reference per prompt drawn from its own generator
        single_runs(0, (2, 3))
        single_runs(1, (0, 1))
        # an image or video the pipeline encodes draws from the generators too
        conditioning = ", ".join(
            f"`{k}`"
            for k, v in inputs.items()
            if ("image" in k or "video" in k) and v is not None and not isinstance(v, (bool, int, float, str))
        )
        held = []  # the prompt whose reference a row matches within the tolerance, None where neither does
        for r in range(4):
            close = [k for k in (0, 1) if (rows[r] - references[(k, r)]).abs().max().item() <= atol]
            held.append(close[0] if len(close) == 1 else None)
        order = ""
        if None not in held and tuple(held) != expected:
            order = (
                f"; the rows hold prompts {', '.join(f'p{k}' for k in held)} instead of p0, p0, p1, p1 (conditioning "
                "expanded with `repeat(n, ...)` where `repeat_interleave(n, ...)` keeps each prompt's copies together?)"
            )
        elif wrong == [1, 2]:
            order = (
                "; only rows 1 and 2 are off, the mark of a per-prompt tensor beside the embeddings (a text mask?) "
                "expanded p0, p1, p0, p1 while the embeddings are p0, p0, p1, p1"
            )
        elif all(r >= 2 for r in wrong) and conditioning:
            order = (
                f"; only the second prompt's rows are off and the call takes {conditioning}: the mark of a random "
                "draw besides the noise (the input encoded by the VAE, an embedding noised) that takes generator[0] "
                "for every row where a single run with generators 2 and 3 draws from generator 2"
            )
        detail = ", ".join(f"row {r} (p{expected[r]}, copy {r % 2}) by {diffs[r]:.2e}" for r in wrong)
        raise ContractFailure(
            f"2 prompts x {per_prompt}=2 with one generator per output: {detail} differ from the single-prompt "
            f"runs with the same generators{order}"
        )
