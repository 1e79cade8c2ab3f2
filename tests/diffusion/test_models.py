"""Denoisers: storage, a diffusers UNet from a local folder, seeded sampling, resumable
training."""

from __future__ import annotations

import re

import pytest
import torch

from obliviate.core.errors import ModelLoadError
from obliviate.diffusion.data import to_tensor
from obliviate.diffusion.models import (
    PromptDenoiser,
    build_denoiser,
    load_denoiser,
    save_denoiser,
)
from obliviate.diffusion.sampling import ddim_timesteps, sample
from obliviate.diffusion.training import TrainConfig, latest_checkpoint, train_denoiser

from .conftest import TINY, TINY_DIFFUSERS, TINY_PROMPT


def _same_outputs(a, b) -> bool:
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t, y = torch.tensor([0, 500, 999]), torch.tensor([0, 4, 10])
    with torch.no_grad():
        return torch.allclose(a.eps(x, t, y), b.eps(x, t, y), atol=1e-6)


@pytest.mark.parametrize("config", [TINY, TINY_PROMPT, TINY_DIFFUSERS],
                         ids=["class_unet", "prompt_unet", "diffusers_unet"])
def test_save_and_load_round_trip(tmp_path, config):
    model = build_denoiser(config, 10, 8, 1, seed=3)
    with torch.no_grad():  # make the zero-initialised output layer matter
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_denoiser(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json",
                                                                 "model.safetensors"]
    loaded = load_denoiser(tmp_path / "m")
    assert type(loaded) is type(model) and _same_outputs(model, loaded)


def test_seeded_models_are_identical():
    assert _same_outputs(build_denoiser(TINY, 10, 8, 1, seed=5), build_denoiser(TINY, 10, 8, 1,
                                                                                 seed=5))


def test_load_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="not a saved model"):
        load_denoiser(tmp_path)
    with pytest.raises(ModelLoadError, match="not an obliviate model folder"):
        build_denoiser(TINY.model_copy(update={"pretrained": str(tmp_path)}), 10, 8, 1)


def test_diffusers_unet_from_a_local_folder(tmp_path):
    """A user's UNet2DConditionModel (saved with diffusers' own save_pretrained) loads as a
    diffusers_unet; its prompt embeddings come from a safetensors file."""
    from safetensors.torch import save_file

    own = build_denoiser(TINY_DIFFUSERS, 10, 8, 1, seed=1)
    assert isinstance(own, PromptDenoiser)
    own.unet.save_pretrained(tmp_path / "unet")
    save_file({"tokens": own.tokens.weight.detach().clone()}, str(tmp_path / "prompts.safetensors"))
    config = TINY_DIFFUSERS.model_copy(update={"pretrained": str(tmp_path / "unet"),
                                            "prompt_embeddings": str(tmp_path /
                                                                     "prompts.safetensors")})
    loaded = build_denoiser(config, 10, 8, 1)
    assert isinstance(loaded, PromptDenoiser) and _same_outputs(own, loaded)
    assert len(loaded.condition_readers()) == 2 * len(loaded.cross_attentions()) > 0
    with pytest.raises(ModelLoadError, match="takes 1 channels"):
        build_denoiser(config, 10, 8, 3)


def test_ddim_grid():
    assert ddim_timesteps(1000, 4) == [999, 666, 333, 0]
    assert ddim_timesteps(10, 50) == list(range(9, -1, -1))


def test_sampling_is_deterministic_given_a_seed():
    model = build_denoiser(TINY, 10, 8, 1, seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    labels = [0, 1, 2, 3]
    a, b = sample(model, labels, steps=5, seed=11), sample(model, labels, steps=5, seed=11)
    assert torch.equal(a, b) and a.shape == (4, 1, 8, 8)
    assert not torch.equal(a, sample(model, labels, steps=5, seed=12))
    assert float(a.abs().max()) <= 1.0 + 1e-6
    # batching does not change the images
    assert torch.allclose(a, sample(model, labels, steps=5, seed=11, batch_size=4))


def test_training_resumes_exactly(tmp_path, digits_task, monkeypatch):
    import obliviate.diffusion.training as training

    x, y = to_tensor(digits_task.retain.records[:64])
    config = TrainConfig(steps=6, batch_size=8, checkpoint_every=3, log_every=1,
                         warmup_steps=2)
    straight = build_denoiser(TINY, 10, 8, 1, seed=0)
    train_denoiser(straight, x, y, config)

    real, calls = training.ddpm_loss, []

    def crash_at_step_five(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "ddpm_loss", crash_at_step_five)
    with pytest.raises(KeyboardInterrupt):
        train_denoiser(build_denoiser(TINY, 10, 8, 1, seed=0), x, y, config,
                       checkpoint_dir=tmp_path)
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path).name == "step-3"
    resumed = build_denoiser(TINY, 10, 8, 1, seed=0)  # a new process: fresh weights
    out = train_denoiser(resumed, x, y, config, checkpoint_dir=tmp_path)
    assert out.resumed_from == 3 and out.steps == 6
    assert _same_outputs(straight, resumed)


def test_methods_run_on_a_diffusers_unet(tmp_path, digits_task):
    """UCE, Forget-Me-Not (attention maps through diffusers' processors) and ESD-x run on a
    diffusers UNet2DConditionModel and change only what they should."""
    import obliviate.diffusion.methods  # noqa: F401
    from obliviate.core.registry import METHODS
    from obliviate.diffusion.methods.forget_me_not import record_cross_attention

    model = build_denoiser(TINY_DIFFUSERS, 10, 8, 1, seed=2)
    with record_cross_attention(model) as maps:
        model.eps(torch.zeros(2, 1, 8, 8), torch.tensor([3, 4]), torch.tensor([0, 1]))
    assert maps and maps[0].shape[-1] == 3
    assert torch.allclose(maps[0].sum(-1), torch.ones(()))
    for name, args in (("uce", {}), ("forget_me_not", {"steps": 2, "batch_size": 2}),
                       ("esd_x", {"steps": 1, "ddim_steps": 3})):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        METHODS.get(name, "diffusion")(**args).run(model, digits_task, tmp_path / name)
        changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        assert changed and all("attn2" in n for n in changed), (name, sorted(changed)[:3])


@pytest.mark.parametrize("config", [TINY, TINY_PROMPT, TINY_DIFFUSERS],
                         ids=["class_unet", "prompt_unet", "diffusers_unet"])
def test_gradient_checkpointing_recomputes_blocks_and_keeps_the_gradients(config):
    """``model.gradient_checkpointing``: the same loss and gradients, with the UNet's blocks run
    again in the backward pass (their activations were not kept)."""
    from obliviate.diffusion.training import ddpm_loss

    plain = build_denoiser(config, 10, 8, 1, seed=3)
    checkpointed = build_denoiser(config.model_copy(update={"gradient_checkpointing": True}),
                                  10, 8, 1, seed=3)
    with torch.no_grad():  # make the zero-initialised output layer matter
        for a, b in zip(plain.parameters(), checkpointed.parameters(), strict=True):
            a.add_(0.01 * torch.randn_like(a, generator=None))
            b.copy_(a)
    checkpointed_unit = re.compile(  # obliviate's UNet: its blocks; diffusers': each ResNet
        r"^(mid|down\.\d+|(mid_block|down_blocks\.\d+)\.resnets\.\d+)$")
    blocks = [m for n, m in checkpointed.unet.named_modules() if checkpointed_unit.match(n)]
    calls = []
    for block in blocks:
        block.register_forward_pre_hook(lambda *_: calls.append(1))  # recomputation stops early
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 3, 7, 9])
    losses = []
    for model in (plain, checkpointed):
        model.train()
        loss = ddpm_loss(model, x, y, torch.Generator().manual_seed(2))
        loss.backward()
        losses.append(loss.detach())
    # each unit ran forward, and (all of obliviate's; diffusers' but its mid block's first
    # ResNet) again in the backward pass
    assert blocks and len(calls) >= 2 * len(blocks) - (config is TINY_DIFFUSERS)
    assert torch.allclose(losses[0], losses[1])
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, atol=1e-6), name
    checkpointed.enable_gradient_checkpointing(False)
    calls.clear()
    ddpm_loss(checkpointed, x, y, torch.Generator().manual_seed(2)).backward()
    assert len(calls) == len(blocks)
