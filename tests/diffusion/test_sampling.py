"""Batched generation (issue 21): every prompt with every seed in batches gives the images a loop
over prompts and seeds gives one at a time, and guidance 1 runs no unconditional branch."""

from __future__ import annotations

import pytest
import torch

from obliviate.diffusion.models import ModelConfig, build_denoiser
from obliviate.diffusion.sampling import generate, sample_cond
from tests.diffusion.conftest import TINY, TINY_PROMPT
from tests.diffusion.test_text2image import PROMPTS, build_pipeline

ATOL = 1e-4  # batched convolutions and matmuls round differently from batch-1 ones


def one_at_a_time(model, prompts, seeds, guidance, eta=0.0):
    """The unbatched path: each (prompt, seed) alone, as a loop calling a pipeline would."""
    images = []
    for prompt in prompts:
        cond = model.encode_prompts([prompt]) if isinstance(prompt, str) else \
            model.embed(torch.tensor([prompt]))
        for seed in seeds:
            x = sample_cond(model, cond, guidance=guidance, eta=eta,
                            generator=torch.Generator().manual_seed(seed))
            images.append(model.decode(x))
    return torch.cat(images)


class Rows:
    """Counts the rows each denoiser pass takes."""

    def __init__(self, model):
        self.rows: list[int] = []
        model.register_forward_pre_hook(lambda _m, args: self.rows.append(len(args[0])))


@pytest.mark.parametrize("config", [TINY, TINY_PROMPT], ids=["class_unet", "prompt_unet"])
@pytest.mark.parametrize("guidance,eta", [(3.0, 0.0), (1.0, 0.0), (2.0, 1.0)])
def test_batched_images_equal_one_at_a_time(config, guidance, eta):
    model = build_denoiser(config.model_copy(update={"sample_steps": 4}), 10, 8, 1, seed=0)
    prompts, seeds = [3, 0, 7], [0, 5]
    alone = one_at_a_time(model, prompts, seeds, guidance, eta)
    counted = Rows(model)
    batched = generate(model, prompts, seeds, guidance=guidance, eta=eta, batch_size=4)
    assert batched.shape == alone.shape == (6, 1, 8, 8)
    assert torch.allclose(batched, alone, atol=ATOL), (batched - alone).abs().max()
    # 6 images at 4 denoiser rows a pass, 4 steps each: 4 + 2 images at guidance 1, else
    # 2 + 2 + 2 (each image beside its unconditional row)
    passes = [4] * 4 + [2] * 4 if guidance == 1.0 else [4] * 12
    assert counted.rows == passes
    # seeds, not batch positions, decide an image: the same pair in another batch, same image
    other = generate(model, [7], [5], guidance=guidance, eta=eta, batch_size=1)
    assert torch.allclose(other[0], batched[5], atol=ATOL)
    assert not torch.allclose(batched[4], batched[5], atol=1e-2)  # seed 0 vs 5 of class 7


def test_text_prompts_batch_like_one_at_a_time(tmp_path):
    config = ModelConfig(architecture="text_pipeline", pretrained=str(build_pipeline(tmp_path)),
                         prompts=PROMPTS, sample_steps=3, guidance_scale=2.0)
    model = build_denoiser(config, 2, 16, 3)
    prompts = ["a photo of a tench", "a cat", "a photo of a church"]  # "a cat": not a class
    alone = one_at_a_time(model, prompts, [1, 2], guidance=None)
    counted = Rows(model.unet)
    batched = generate(model, prompts, [1, 2], batch_size=12)
    assert batched.shape == alone.shape == (6, 3, 16, 16)
    assert torch.allclose(batched, alone, atol=ATOL), (batched - alone).abs().max()
    assert counted.rows == [12] * 3  # one pass a step: 6 images and their unconditional rows
    with pytest.raises(ValueError, match="class-conditional"):
        generate(build_denoiser(TINY, 10, 8, 1), ["a cat"], [0])
