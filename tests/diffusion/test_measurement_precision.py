"""``evaluation.mixed_precision`` and ``attack.mixed_precision`` for denoisers: the network (and a
VAE) runs in bf16 autocast while the sampler, the losses, the judge and the weights stay in
float32; a bf16 stage is its own stage input, never mixed with the float32 record."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from obliviate.core.precision import measured_in
from obliviate.core.recipe import load_recipe
from obliviate.diffusion import pipeline
from obliviate.diffusion.models import build_denoiser
from obliviate.diffusion.recipe import DiffusionRecipe
from obliviate.diffusion.sampling import generate
from tests.diffusion.conftest import TINY, TINY_PROMPT
from tests.diffusion.test_latent import latent_config, save_pipeline
from tests.diffusion.test_pipeline import TINY_RECIPE

torch.set_num_threads(1)


def _inner_dtypes(model: torch.nn.Module) -> list[torch.dtype]:
    """The output dtypes of the model's convolutions and linear maps, as they run."""
    seen: list[torch.dtype] = []
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            module.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    return seen


@pytest.mark.parametrize("config", [TINY, TINY_PROMPT], ids=["class_unet", "prompt_unet"])
def test_the_network_runs_in_bf16_and_answers_in_float32(config):
    model = build_denoiser(config, 10, 8, 1, seed=0)
    with torch.no_grad():  # the output convolution starts at zero: give it weights
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    seen = _inner_dtypes(model)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([10, 400, 900])
    cond = model.embed(torch.tensor([0, 1, 2])).detach()
    plain = model(x, t, cond)
    assert plain.dtype == torch.float32 and set(seen) == {torch.float32}

    seen.clear()
    cond.requires_grad_(True)
    with measured_in("bf16"):
        low = model(x, t, cond)
    assert set(seen) == {torch.bfloat16}, "the products ran in bf16"
    assert low.dtype == torch.float32 and all(p.dtype == torch.float32
                                              for p in model.parameters())
    assert not torch.equal(low, plain)
    assert torch.allclose(low, plain, atol=0.05, rtol=0.05)
    low.pow(2).mean().backward()  # an attack optimises the condition through it
    assert cond.grad is not None and cond.grad.dtype == torch.float32 and cond.grad.abs().sum() > 0


def test_bf16_sampling_is_close_to_float32(trained):
    model = trained.model
    fp32 = generate(model, [0, 3, 7], seeds=[0, 1], steps=5)
    with measured_in("bf16"):
        bf16 = generate(model, [0, 3, 7], seeds=[0, 1], steps=5)
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    assert not torch.equal(bf16, fp32)
    assert (bf16 - fp32).abs().mean() < 0.05  # images in [-1, 1]


def test_a_vae_decodes_in_bf16_and_returns_float32(tmp_path):
    model = build_denoiser(latent_config(save_pipeline(tmp_path / "sd")), 10, 8, 1)
    seen = _inner_dtypes(model.codec.vae)
    z = torch.randn(2, model.in_channels, model.image_size, model.image_size)
    plain = model.decode(z)
    assert set(seen) == {torch.float32}
    seen.clear()
    with measured_in("bf16"):
        low = model.decode(z)
        latents = model.encode(low)
    assert torch.bfloat16 in seen and low.dtype == torch.float32
    assert latents.dtype == torch.float32
    assert torch.allclose(low, plain, atol=0.05)


@pytest.fixture
def tiny_run(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_RECIPE))
    recipe = load_recipe(DiffusionRecipe, path)
    run = pipeline.open_run(recipe, tmp_path / "run", "obliviate test")
    task = pipeline.prepare_task(recipe, run)
    pipeline.finetune_stage(recipe, run, task)
    return path, run, task


def test_a_bf16_evaluation_and_attack_rerun_their_stages(tiny_run, monkeypatch):
    from obliviate.diffusion import runner

    path, run, task = tiny_run
    recipe = load_recipe(DiffusionRecipe, path)
    fp32 = pipeline.evaluate_stage(recipe, run, task, models=["oracle"])["oracle"]
    plain_inputs = run.read_record()["stages"]["eval_oracle"]["inputs"]
    assert "mixed_precision" not in plain_inputs
    assert "mixed_precision" not in plain_inputs["evaluation"]  # records from before reuse
    pipeline.attack_stage(recipe, run, task, models=["target"], attacks=["relearning"])

    evaluated: list[str] = []
    real = runner.evaluate
    monkeypatch.setattr(runner, "evaluate",
                        lambda *a, **k: evaluated.append(k["name"]) or real(*a, **k))
    assert pipeline.evaluate_stage(recipe, run, task, models=["oracle"])["oracle"] == fp32
    assert evaluated == []

    bf16 = load_recipe(DiffusionRecipe, path, ["evaluation.mixed_precision=bf16",
                                               "attack.mixed_precision=bf16"])
    low = pipeline.evaluate_stage(bf16, run, task, models=["oracle"])["oracle"]
    assert evaluated == ["oracle"]
    stages = run.read_record()["stages"]
    assert stages["eval_oracle"]["inputs"]["mixed_precision"] == "bf16"
    assert "mixed_precision" in stages["eval_oracle"]["rerun_reason"]
    assert set(low) == set(fp32) and all(math.isfinite(v) for v in low.values()
                                        if isinstance(v, float))

    before = stages["attack_target_relearning"]
    assert "mixed_precision" not in before["inputs"]
    pipeline.attack_stage(bf16, run, task, models=["target"], attacks=["relearning"])
    record = run.read_record()["stages"]["attack_target_relearning"]
    assert record["inputs"]["mixed_precision"] == "bf16"
    assert "mixed_precision" in record["rerun_reason"]
