"""What every diffusion attack shares: its context (the model attacked, the oracle, the judge),
the forget probe (the judge's verdict on samples drawn under a condition) and the run that
measures the attack on the model and on the oracle and writes one result (:class:`DiffusionAttack`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import Field

from obliviate.core.attack import Attack, AttackContextBase
from obliviate.core.recipe import StrictModel
from obliviate.core.result import AttackResult
from obliviate.core.task import UnlearningTask
from obliviate.diffusion.data import to_tensor
from obliviate.diffusion.judge import JudgeNet, predict, predict_factors
from obliviate.diffusion.models import Denoiser
from obliviate.diffusion.sampling import sample_cond
from obliviate.diffusion.task import erased_domain, forget_classes

METRIC = "accuracy"  # the judge's accuracy on the forget class = attack success rate


class ProbeOptions(StrictModel):
    """The forget probe: ``samples`` images under the forget condition(s), judged."""

    samples: int = Field(default=64, ge=1)
    """samples of the forget concept the judge reads, on the model and on the oracle"""
    sample_steps: int | None = Field(default=25, ge=1, description="DDIM steps (model's: None)")
    guidance_scale: float | None = Field(default=None, ge=0)
    """classifier-free guidance of the probe's samples (None: the model's)"""
    batch_size: int = Field(default=256, ge=1)
    """images sampled at once"""
    seed: int = 4321
    """seeds the probe's sampling noise (the same for the model and the oracle)"""


@dataclass
class AttackContext(AttackContextBase):
    """What a diffusion attack reads: the task, the model attacked (and its name), the oracle,
    the judge, the probe, a seed, and what the attacks measured on the oracle."""

    task: UnlearningTask
    model: Denoiser
    model_name: str
    oracle: Denoiser
    judge: JudgeNet
    probe: ProbeOptions = field(default_factory=ProbeOptions)
    seed: int = 0
    oracle_cache: dict[str, Any] = field(default_factory=dict)

    def forget_labels(self) -> torch.Tensor:
        classes = torch.tensor(forget_classes(self.task))
        return classes.repeat(self.probe.samples // len(classes) + 1)[:self.probe.samples]

    def hits(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """1.0 where the judge still sees the forgotten concept in an image drawn for
        ``labels``: the judge names its class; or, for a task whose classes pair two domains
        (styles × objects), the erased domain's head names the erased concept (UnlearnCanvas's
        attack success: the style stays erased whatever digit is drawn)."""
        domain = erased_domain(self.task, getattr(self.judge, "factors", None))
        if domain is None:
            return (predict(self.judge, images) == labels).float()
        seen = predict_factors(self.judge, images)[domain]
        second = self.judge.factors[1]  # type: ignore[index]
        return (seen == (labels // second if domain == 0 else labels % second)).float()

    def forget_images(self, model: Denoiser, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The attacker's images of the forgotten concept: the task's first ``count`` forget
        images and their labels, on ``model``'s device and in the space it denoises (a VAE's
        latents, or pixels)."""
        x, y = to_tensor(self.task.forget.records[:count], model.device)
        return model.encode(x), y


@torch.no_grad()
def probe(model: Denoiser, ctx: AttackContext, cond: torch.Tensor, labels: torch.Tensor
          ) -> list[float]:
    """Per sample: 1 when the judge still sees the forgotten concept of ``labels`` in the image
    drawn from ``cond`` (:meth:`AttackContext.hits`), sampled as ``ctx.probe`` says."""
    options = ctx.probe
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(options.seed)
    images = []
    for start in range(0, len(cond), options.batch_size):
        chunk = cond[start:start + options.batch_size].to(model.device)
        images.append(model.decode(sample_cond(model, chunk, steps=options.sample_steps,
                                               guidance=options.guidance_scale,
                                               generator=gen)).cpu())
    model.train(was_training)
    return ctx.hits(torch.cat(images), labels.cpu()).tolist()


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


class DiffusionAttack(Attack):
    """Subclass: set ``config_class``, implement :meth:`attack` (→ variants), register (see
    :class:`~obliviate.core.attack.Attack`)."""

    def attack(self, model: Denoiser, ctx: AttackContext
               ) -> tuple[dict[str, float], list[dict[str, Any]]]:
        """``({variant: success rate}, curve)`` of the attack on ``model``."""
        raise NotImplementedError

    def run(self, ctx: AttackContext) -> AttackResult:
        start = time.perf_counter()
        labels = ctx.forget_labels()
        plain = mean(probe(ctx.model, ctx, ctx.model.embed(labels.to(ctx.model.device)), labels))
        variants, curve = self.attack(ctx.model, ctx)
        key = f"{self.name}:{self.config.model_dump_json()}:{ctx.probe.model_dump_json()}"
        if key not in ctx.oracle_cache:
            oracle_plain = mean(probe(ctx.oracle, ctx,
                                      ctx.oracle.embed(labels.to(ctx.oracle.device)), labels))
            ctx.oracle_cache[key] = (oracle_plain, *self.attack(ctx.oracle, ctx))
        oracle_plain, oracle_variants, oracle_curve = ctx.oracle_cache[key]
        return AttackResult(
            attack=self.name, model=ctx.model_name, metric=METRIC, plain=plain,
            attacked=max(variants.values()), oracle_plain=oracle_plain,
            oracle_attacked=max(oracle_variants.values()), higher_is_recovered=True,
            curve=curve, variants={k: {"attacked": v, "oracle_attacked": oracle_variants.get(k)}
                                   for k, v in variants.items()},
            options={"attack": self.config.model_dump(mode="json"),
                     "probe": ctx.probe.model_dump(mode="json")},
            details={"metric": "attack success rate: fraction of forget-condition samples in "
                               "which the judge still sees the forgotten concept (its class; "
                               "for paired domains, the erased domain's concept)",
                     "oracle_curve": oracle_curve},
            seconds=time.perf_counter() - start)
