"""UNDIAL (Dong et al. 2024, "UNDIAL: Self-Distillation with Adjusted Logits for Robust
Unlearning in Large Language Models", NAACL 2025, arXiv:2402.10052).

Self-distillation on the forget set: at every answer position the student is trained towards the
frozen original's next-token distribution with the true token's logit lowered by β,

    target_t = softmax(ref_logits_t − β·onehot(y_t)),   loss = γ·mean_t CE(target_t, π_θ) + α·NLL(R)

so the true token loses probability mass while the rest of the distribution is kept.

Defaults are OpenUnlearning's ``configs/trainer/UNDIAL.yaml``: β = 10, γ = 1, α = 0 (the paper
uses no retain set; OpenUnlearning's UNDIAL README: α = 0, β typically in {3, 10, 30}, lr 1e-4).
With α = 0 no retain data is needed. Difference from OpenUnlearning's ``compute_undial_loss``:
that distils over every position of the padded batch (prompt and padding included); here only
answer tokens are distilled, the tokens unlearning is about and the ones the targets are defined
on.

The teacher. The forget set does not change during unlearning, so by default (``teacher =
"cache"``) the original model's answer-position next-token log-probs are computed once before
training and kept in host memory: one ``[n_answer_tokens, V]`` tensor per forget item, stored in
float16 as log-softmax values (the shift makes the probable tokens, those near 0, exact to ~1e-3;
softmax is shift-invariant, so targets are unchanged). Cost: 2·V bytes per answer token (4·V with
``cache_dtype = "float32"``). For Llama-3 (V = 128,256) that is 256 KB a token, so TOFU forget10
(400 answers of ~45 tokens) takes ~4.6 GB of host RAM and forget01 ~0.5 GB; with Llama-2
(V = 32,000) forget10 is ~1.2 GB; the tests' tiny model needs a few hundred KB. This saves the
accelerator memory of a second model (2.5 GB for a 1B model in bf16, 16 GB for 8B) and one
teacher forward per step; each step moves its batch's slice of the cache (~B·45·2V bytes) to the
device. Every data-parallel process holds its own full copy, so with many processes and a large
vocabulary × forget set, ``teacher = "model"`` (a frozen copy of the target, as OpenUnlearning
does) may be the better trade; both give the same targets up to the float16 rounding.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from obliviate.core.method import MethodConfig, MethodOutcome
from obliviate.core.registry import METHODS
from obliviate.core.task import UnlearningTask
from obliviate.llm.answer_forward import forward
from obliviate.llm.data.formatting import IGNORE_INDEX, collate
from obliviate.llm.methods.base import LLMUnlearningMethod, UnlearnContext, UnlearnItem
from obliviate.llm.methods.kl import reference_on_device
from obliviate.llm.methods.losses import undial_loss


class UNDIALConfig(MethodConfig):
    """OpenUnlearning defaults: β = 10 (logit penalty on the true token), γ = 1, α = 0."""

    beta: float = Field(default=10.0, ge=0, description="logit reduction of the true token")
    gamma: float = Field(default=1.0, ge=0, description="weight of the distillation term")
    alpha: float = Field(default=0.0, ge=0, description="weight of the retain NLL term")
    teacher: Literal["cache", "model"] = Field(
        default="cache", description="precomputed answer-position log-probs, or a frozen copy")
    cache_dtype: Literal["float16", "float32"] = "float16"
    """precision the teacher's logits are cached in"""


@METHODS.register("undial", modality="llm")
class UNDIAL(LLMUnlearningMethod):
    """Self-distillation towards the original distribution with the true token's logit lowered."""

    config_class = UNDIALConfig
    reference = "logprobs"
    paper = "Dong et al. 2024, arXiv:2402.10052"

    def __init__(self, config: MethodConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        # Per-instance: the retain set is only needed (and required) when α > 0, and the teacher
        # is either the precomputed cache ("logprobs") or a frozen model copy.
        self.uses_retain = self.config.alpha > 0
        self.reference = "logprobs" if self.config.teacher == "cache" else "model"
        self.reference_logits: list[torch.Tensor] = []

    @torch.no_grad()
    def precompute_reference(self, model: torch.nn.Module, items: list[UnlearnItem],
                             pad_token_id: int, batch_size: int = 16) -> None:
        """The original's next-token log-probs at each forget item's answer positions, once."""
        dtype = torch.float16 if self.config.cache_dtype == "float16" else torch.float32
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        cache: list[torch.Tensor] = []
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            batch = collate([it.forget for it in chunk], pad_token_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            logp = torch.log_softmax(forward(model, batch).logits[:, :-1].float(), dim=-1)
            mask = batch["labels"][:, 1:] != IGNORE_INDEX
            cache.extend(logp[row][mask[row]].to(dtype).cpu() for row in range(len(chunk)))
        self.reference_logits = cache
        model.train(was_training)

    def teacher_logits(self, model: torch.nn.Module, batch: dict[str, Any], mask: torch.Tensor
                       ) -> torch.Tensor:
        """Teacher logits (up to a per-row shift) at the batch's answer positions, ``[N, V]``."""
        if self.reference_model is not None:
            with torch.no_grad():
                reference = reference_on_device(self, model)
                logits = forward(reference, batch["forget"]).logits[:, :-1]
            return logits[mask].float()
        if not self.reference_logits:
            raise RuntimeError("UNDIAL needs its teacher cache (set by run())")
        # each row to float32 first: under bf16 autocast (mixed precision, bf16 weights) a
        # concatenation of float16 rows is refused by autocast's type promotion
        rows = [self.reference_logits[i].float() for i in batch["index"].tolist()]
        return torch.cat(rows).to(mask.device)

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        forget = batch["forget"]
        logits = forward(model, forget).logits[:, :-1]
        labels = forget["labels"][:, 1:]
        mask = labels != IGNORE_INDEX
        teacher = self.teacher_logits(model, batch, mask)
        forget_loss = undial_loss(logits[mask], teacher, labels[mask], cfg.beta)
        loss = cfg.gamma * forget_loss
        logs = {"forget_undial": float(forget_loss.detach())}
        loss = self.add_retain_nll(model, batch, loss, logs)
        return loss, logs

    def run(self, model: Any, task: UnlearningTask, out_dir: Any = None,
            ctx: UnlearnContext | None = None, save: bool = True, *,
            tokenizer: Any = None) -> MethodOutcome:
        try:
            return super().run(model, task, out_dir, ctx=ctx, save=save, tokenizer=tokenizer)
        finally:
            self.reference_logits = []  # release the teacher cache with the run
