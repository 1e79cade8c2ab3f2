"""Selective Amnesia (Heng & Soh, "Selective Amnesia: A Continual Learning Approach to
Forgetting in Deep Generative Models", NeurIPS 2023; github.com/clear-nus/selective-amnesia).

Continual learning in reverse: the forget class is re-trained towards a surrogate distribution
(uniform noise images in [−1, 1]) while the rest is protected by

* generative replay: samples of the retained classes drawn from the frozen original model,
  trained on with the usual loss (weight γ), and
* EWC (Kirkpatrick et al. 2017): ``λ·Σ F_i (θ_i − θ*_i)²`` with the diagonal Fisher F computed
  on samples of every class, per sample, summing the gradient of the diffusion loss over the
  timesteps and then squaring (as the DDPM code).

Defaults are the DDPM code's (``cifar10_forget.yml``): γ = 1, λ = 10, Adam lr 1e-4, batch 128,
20,000 iterations, all 1,000 timesteps in the Fisher. The numbers of generated samples (the
code generates thousands per class) are smaller here and set by ``fisher_samples`` and
``replay_per_class``. The samples for the Fisher and the replay are drawn as the code's
``sample.py`` draws them: DDIM with η = 1 (``--eta 1.0``, ancestral sampling), not the
model's deterministic η = 0. On the tiny text-to-image test pipeline (with its earlier
letter-level vocabulary; 10 steps) η = 0 gave replay latents whose nearest real image was 2.1×
as far as the real images' nearest neighbours (η = 1: 1.6×), with the model's own loss on them
1.8× its loss on real images (η = 1: 1.0×); replaying them raised the kept prompt's loss more
than the erased one's (+26% vs +20%), with η = 1 it rose +2.3% against +12%
(``tests/diffusion/test_text2image.py``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from tqdm.auto import tqdm

from obliviate.core.registry import METHODS
from obliviate.diffusion.methods.base import (
    DiffusionMethodConfig,
    DiffusionUnlearningMethod,
    UnlearnContext,
)
from obliviate.diffusion.models import Denoiser
from obliviate.diffusion.sampling import sample
from obliviate.diffusion.training import LoopOutcome, ddpm_loss, latest_checkpoint, load_extra


class SelectiveAmnesiaConfig(DiffusionMethodConfig):
    gamma: float = Field(default=1.0, ge=0, description="weight of generative replay")
    lamb: float = Field(default=10.0, ge=0, description="EWC weight λ")
    fisher_samples: int = Field(default=100, ge=1, description="generated samples, all classes")
    fisher_timesteps: int = Field(default=1000, ge=1, description="timesteps summed per sample")
    replay_per_class: int = Field(default=100, ge=1)
    """generated replay images per retain class (the generative replay term)"""
    sample_steps: int = Field(default=50, ge=1, description="DDIM steps for generated samples")
    sample_eta: float = Field(default=1.0, ge=0, le=1,
                              description="DDIM η of the generated samples "
                                          "(1, ancestral: the paper's code)")
    steps: int = Field(default=20_000, ge=0)
    learning_rate: float = Field(default=1e-4, gt=0)
    batch_size: int = Field(default=128, ge=1)


def diagonal_fisher(model: Denoiser, x: torch.Tensor, y: torch.Tensor, timesteps: int,
                    params: list[tuple[str, torch.nn.Parameter]], seed: int = 0,
                    chunk: int = 250) -> dict[str, torch.Tensor]:
    """``E_x[(Σ_t ∇ℓ(x, t))²]`` per parameter: one sample at a time, its timesteps batched."""
    fisher = {n: torch.zeros_like(p) for n, p in params}
    total = model.schedule.timesteps
    grid = torch.linspace(0, total - 1, min(timesteps, total)).round().long().to(x.device)
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    for i in tqdm(range(len(x)), desc="Fisher", unit="sample", disable=None):
        model.zero_grad(set_to_none=True)
        for start in range(0, len(grid), chunk):
            t = grid[start:start + chunk]
            x0 = x[i:i + 1].expand(len(t), -1, -1, -1)
            noise = torch.randn(x0.shape, generator=gen).to(x.device)
            pred = model.eps(model.schedule.q_sample(x0, t, noise), t, y[i:i + 1].expand(len(t)))
            ((pred - noise) ** 2).flatten(1).mean(1).sum().backward()
        for n, p in params:
            if p.grad is not None:
                fisher[n] += p.grad.detach() ** 2 / len(x)
    model.zero_grad(set_to_none=True)
    return fisher


@METHODS.register("selective_amnesia", modality="diffusion")
class SelectiveAmnesia(DiffusionUnlearningMethod):
    """Selective Amnesia: noise surrogate for the forget class + generative replay + EWC."""

    config_class: ClassVar[type[SelectiveAmnesiaConfig]] = SelectiveAmnesiaConfig
    paper: ClassVar[str] = "Heng & Soh 2023, Selective Amnesia: A Continual Learning Approach " \
                           "to Forgetting in Deep Generative Models"

    def unlearn(self, model: Denoiser, ctx: UnlearnContext) -> LoopOutcome:
        cfg = self.config
        params = model.parameter_group("full")
        anchor = {n: p.detach().clone() for n, p in params}
        stored = load_extra(latest_checkpoint(ctx.checkpoint_dir))
        if stored:  # resuming: reuse the Fisher and replay set computed from θ*
            fisher = {n: stored[f"fisher.{n}"].to(p.device) for n, p in params}
            anchor = {n: stored[f"anchor.{n}"].to(p.device) for n, p in params}
            x_replay, y_replay = stored["replay.x"].to(ctx.device), stored["replay.y"].to(
                ctx.device)
        else:
            classes = torch.arange(model.num_classes)
            fisher_labels = classes[torch.randint(0, len(classes), (cfg.fisher_samples,),
                                                  generator=torch.Generator().manual_seed(
                                                      cfg.seed))]
            x_fisher = sample(model, fisher_labels, steps=cfg.sample_steps, seed=cfg.seed,
                              decode=False, eta=cfg.sample_eta)  # in the denoised space
            fisher = diagonal_fisher(model, x_fisher.to(ctx.device),
                                     fisher_labels.to(ctx.device), cfg.fisher_timesteps, params,
                                     seed=cfg.seed)
            y_replay = torch.tensor(ctx.retain).repeat_interleave(cfg.replay_per_class)
            x_replay = sample(model, y_replay, steps=cfg.sample_steps, seed=cfg.seed + 1,
                              decode=False, eta=cfg.sample_eta)
            x_replay, y_replay = x_replay.to(ctx.device), y_replay.to(ctx.device)
        dev = ctx.device

        def step_fn(step: int, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
            n = cfg.batch_size
            idx = torch.randint(0, len(x_replay), (n,), generator=gen).to(dev)
            noise = torch.rand((n, *model.image_shape), generator=gen).to(dev) * 2 - 1
            x_forget = model.encode(noise)  # noise images (their latents for a latent model)
            loss = ddpm_loss(model, x_forget, ctx.forget_labels(n, gen), gen)
            replay = ddpm_loss(model, x_replay[idx], y_replay[idx], gen)
            ewc = sum((fisher[name] * (p - anchor[name]) ** 2).sum() for name, p in params)
            logs = {"forget_loss": float(loss.detach()), "replay_loss": float(replay.detach()),
                    "ewc": float(ewc.detach())}
            return loss + cfg.gamma * replay + cfg.lamb * ewc, logs

        extra = {**{f"fisher.{n}": f for n, f in fisher.items()},
                 **{f"anchor.{n}": a for n, a in anchor.items()},
                 "replay.x": x_replay, "replay.y": y_replay}
        return self.optimise(model, params, step_fn, ctx, extra_state=extra)
