"""PDU, primal-dual unlearning (Entesari et al. 2025, "Constrained Entropic Unlearning: A
Primal-Dual Framework for Large Language Models", arXiv:2506.05314).

Unlearning as a constrained problem: flatten the output distribution on the forget set while the
retain loss stays below a bound ε,

    min_θ  γ·L_F(θ)   s.t.   NLL_R(θ) ≤ ε,

solved with the Lagrangian ``γ·L_F + λ·(NLL_R − ε)`` and dual ascent on λ after every step,
``λ ← max(0, λ + η·(NLL_R − ε))``, once ``dual_warmup_epochs`` epochs have passed. The forget loss
is the logit-margin flattening ``L_F = mean_t (max_v z_tv − mean_v z_tv)²`` over answer tokens
(:func:`~obliviate.llm.methods.losses.logit_margin_flattening`), which is zero exactly at the
uniform distribution. λ starts at ``alpha``; with ``primal_dual = False`` it stays there and the
method is a plain weighted sum (with the constant shift −α·ε, which changes no gradient).

Facts from OpenUnlearning's ``src/trainer/unlearn/pdu.py`` and ``configs/trainer/PDU.yaml``: γ = 1,
α (initial λ) = 1, η = ``dual_step_size`` = 1, per-step dual updates, 5 warm-up epochs. The YAML
leaves ε required; the default here is the authors' TOFU value ε = 0.3 (``community/methods/PDU/
run.sh``, with α = 100, η = 5, lr 1e-5, 10 epochs; MUSE uses ε 0.1-1.5, α = 50, η = 1). The
README's rule for ε: a value somewhat above the target's own retain loss.

Differences: OpenUnlearning takes the logits at the answer tokens' own positions (each predicting
the token *after* an answer token); here they are the positions that predict the answer tokens,
as in every other loss of the catalogue. Only per-step dual updates are implemented (the YAML's
default; its ``"epoch"`` variant needs an extra pass over the retain set). λ lives in memory: a run
resumed from a checkpoint restarts it at α.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from obliviate.core.method import MethodConfig
from obliviate.core.registry import METHODS
from obliviate.llm.answer_forward import answer_logits
from obliviate.llm.data.formatting import IGNORE_INDEX
from obliviate.llm.methods.base import LLMUnlearningMethod, UnlearnContext, UnlearnItem
from obliviate.llm.methods.losses import logit_margin_flattening, nll
from obliviate.llm.training import TrainOutcome


class PDUConfig(MethodConfig):
    """OpenUnlearning ``PDU.yaml`` defaults; ε = 0.3 from the authors' TOFU runs."""

    retain_loss_eps: float = Field(default=0.3, ge=0,
                                   description="ε: the bound on the retain NLL")
    gamma: float = Field(default=1.0, ge=0, description="weight of the forget term")
    alpha: float = Field(default=1.0, ge=0, description="initial dual variable λ (retain weight)")
    primal_dual: bool = Field(default=True, description="update λ by dual ascent")
    dual_step_size: float = Field(default=1.0, ge=0, description="η: the dual ascent step")
    dual_warmup_epochs: float = Field(default=5.0, ge=0,
                                      description="epochs before λ starts to move")


def dual_update(lam: float, retain_loss: float, eps: float, step_size: float) -> float:
    """One projected dual-ascent step: ``max(0, λ + η·(NLL_R − ε))``."""
    return max(0.0, lam + step_size * (retain_loss - eps))


@METHODS.register("pdu", modality="llm")
class PDU(LLMUnlearningMethod):
    """Flatten forget-token logits subject to a retain-loss bound, by primal-dual steps."""

    config_class = PDUConfig
    uses_retain = True
    paper = "Entesari et al. 2025, arXiv:2506.05314"

    def __init__(self, config: MethodConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.dual = float(self.config.alpha)
        self.calls = 0
        self.batches_per_epoch = 1

    def train(self, model: torch.nn.Module, items: list[UnlearnItem], ctx: UnlearnContext,
              out_dir: Path | None) -> TrainOutcome:
        dist = torch.distributed
        processes = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self.batches_per_epoch = max(1, math.ceil(len(items) / ctx.train.batch_size / processes))
        self.dual, self.calls = float(self.config.alpha), 0
        return super().train(model, items, ctx, out_dir)

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        logits, labels = answer_logits(model, batch["forget"])
        forget_loss = logit_margin_flattening(logits, labels != IGNORE_INDEX)
        retain_loss = nll(model, batch["retain"])
        lam = self.dual
        loss = cfg.gamma * forget_loss + lam * (retain_loss - cfg.retain_loss_eps)
        self.calls += 1
        warm = self.calls > cfg.dual_warmup_epochs * self.batches_per_epoch
        if cfg.primal_dual and warm:
            self.dual = dual_update(lam, float(retain_loss.detach()), cfg.retain_loss_eps,
                                    cfg.dual_step_size)
        return loss, {"forget_margin": float(forget_loss.detach()),
                      "retain_nll": float(retain_loss.detach()), "dual": lam}
