"""Loss building blocks shared by the LLM unlearning methods.

Pure functions of log-probabilities are separated from the functions that run a model, so each
formula can be checked by hand on fixed numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from obliviate.llm.answer_forward import label_logits
from obliviate.llm.data.formatting import IGNORE_INDEX


# -- answer log-probs (the model runs in obliviate.llm.answer_forward) ---------------------------
def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of the labels (shifted) and the answer-token mask, both ``[B, T-1]``."""
    return _picked(logits[:, :-1], labels[:, 1:])


def _picked(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each label under aligned logits (``logits[:, j]`` predicts ``labels[:, j]``)."""
    mask = labels != IGNORE_INDEX
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return picked * mask, mask


def answer_token_logprobs(model: torch.nn.Module, batch: dict[str, torch.Tensor]
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-answer-token log-probs and mask, ``[B, K]`` (K: positions that hold answers; the
    softmax runs only on the positions that predict an answer token of their own row)."""
    out = label_logits(model, batch)
    picked, _ = _picked(out.logits, out.targets)
    return out.grid(picked), out.labels != IGNORE_INDEX


def sequence_logprob(model: torch.nn.Module, batch: dict[str, torch.Tensor]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed answer log-prob ``log π(y|x)`` and answer length per sequence, shape ``[B]``."""
    picked, mask = answer_token_logprobs(model, batch)
    return picked.sum(-1), mask.sum(-1)


def nll(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Token-mean answer cross-entropy over the batch (the HF causal-LM loss)."""
    picked, mask = answer_token_logprobs(model, batch)
    return -picked.sum() / mask.sum().clamp_min(1)


def retain_kl(model: torch.nn.Module, reference: torch.nn.Module,
              batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """KL(π_ref ‖ π_θ) per answer token, averaged over answer tokens (TOFU's KL retain term)."""
    with torch.no_grad():
        ref_logp = torch.log_softmax(label_logits(reference, batch).logits.float(), -1)
    logp = torch.log_softmax(label_logits(model, batch).logits.float(), -1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1)
    return kl.sum() / max(kl.numel(), 1)


# -- formulas on log-probabilities ---------------------------------------------------------------
def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO: ``(2/β)·mean log(1 + (π_θ/π_ref)^β) = -(2/β)·mean log σ(-β·(log π_θ − log π_ref))``."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp - ref_logp)).mean()


def simnpo_loss(logp: torch.Tensor, length: torch.Tensor, beta: float, delta: float
                ) -> torch.Tensor:
    """SimNPO: ``-(2/β)·mean log σ(-(β/|y|)·log π_θ(y|x) − δ)`` (no reference model)."""
    return -(2.0 / beta) * F.logsigmoid(-(beta / length.clamp_min(1)) * logp - delta).mean()


def dpo_loss(logp_win: torch.Tensor, ref_win: torch.Tensor, logp_lose: torch.Tensor,
             ref_lose: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO: ``-(2/β)·mean log σ(β·[(log π_w − log π_ref,w) − (log π_l − log π_ref,l)])``.

    The 2/β scale follows the unlearning literature (Zhang et al. 2024; TOFU's IdkDPO), so that
    NPO is exactly DPO without a preferred answer.
    """
    margin = (logp_win - ref_win) - (logp_lose - ref_lose)
    return -(2.0 / beta) * F.logsigmoid(beta * margin).mean()


# -- representation losses (RMU) ---------------------------------------------------------------
def activation_mse(activations: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
                   ) -> torch.Tensor:
    """Squared error averaged over hidden units, then over the tokens where ``mask`` is set.

    ``activations`` is ``[B, T, D]``; ``target`` broadcasts to it (a ``[D]`` control vector, or
    ``[B, T, D]`` reference activations); ``mask`` is ``[B, T]``. Without padding this equals
    ``F.mse_loss(activations, target)``, the mean over every ``B·T·D`` entry that the WMDP
    reference code takes; padded positions are left out instead of being averaged in.
    """
    per_token = (activations.float() - target.float()).pow(2).mean(-1)
    weight = mask.to(per_token.dtype)
    return (per_token * weight).sum() / weight.sum().clamp_min(1)


def rmu_loss(forget_activations: torch.Tensor, control: torch.Tensor, forget_mask: torch.Tensor,
             retain_activations: torch.Tensor, reference_activations: torch.Tensor,
             retain_mask: torch.Tensor, alpha: float
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RMU (Li et al. 2024): ``mse(h_l(F), c·u) + α·mse(h_l(R), h_l^ref(R))``.

    ``control`` is the already scaled ``c·u``. Returns ``(total, forget_term, retain_term)``,
    the retain term before its weight α.
    """
    forget_term = activation_mse(forget_activations, control, forget_mask)
    retain_term = activation_mse(retain_activations, reference_activations.detach(), retain_mask)
    return forget_term + alpha * retain_term, forget_term, retain_term


def reweighted_ascent_loss(token_logprobs: torch.Tensor, mask: torch.Tensor, beta_sat: float,
                           beta_imp: float = 0.0) -> torch.Tensor:
    """Token-reweighted gradient ascent: ``mean_t w_t·log p(y_t)`` over answer tokens, with
    ``w_t = p(y_t)^β_sat · (1 − p(y_t))^β_imp`` detached.

    Minimising it lowers the answer log-probs, each token's gradient scaled by its (constant)
    weight. One mean over all answer tokens of the batch, no renormalisation of the weights
    (OpenUnlearning's ``-(w·CE)[mask].mean()``). ``β_imp = 0`` is WGA; ``β_sat = β_imp = 0`` is
    plain gradient ascent, ``−NLL``.
    """
    p = torch.exp(token_logprobs).detach()
    weights = p.pow(beta_sat) * (1 - p).pow(beta_imp)
    maskf = mask.to(token_logprobs.dtype)
    return (weights * token_logprobs * maskf).sum() / maskf.sum().clamp_min(1)


def wga_loss(token_logprobs: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """WGA ascent term: :func:`reweighted_ascent_loss` with weights ``p(y_t)^β`` (Wang et al.)."""
    return reweighted_ascent_loss(token_logprobs, mask, beta)


def satimp_loss(token_logprobs: torch.Tensor, mask: torch.Tensor, beta1: float, beta2: float
                ) -> torch.Tensor:
    """SatImp ascent term: weights ``p^β1·(1 − p)^β2`` (saturation × importance, Yang et al.)."""
    return reweighted_ascent_loss(token_logprobs, mask, beta1, beta2)


def ceu_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE-U: cross-entropy of the ``[N, V]`` logits against the model's own detached distribution
    with the label's logit set to −∞, averaged over the N tokens (rows already selected).

    The target is ``softmax(sg(z) − ∞·onehot(y))`` (UNDIAL's teacher with β → ∞, taken from the
    student itself), so the gradient on the logits is ``softmax(z) − target``: exactly ``p_y`` is
    pushed off the label and redistributed over the other tokens in proportion to their mass.
    """
    z = logits.float()
    target_logits = z.detach().scatter(-1, labels.unsqueeze(-1), float("-inf"))
    target = torch.softmax(target_logits, dim=-1)
    return -(target * torch.log_softmax(z, dim=-1)).sum(-1).mean()


def logit_margin_flattening(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PDU's forget loss: ``mean_t (max_v z_tv − mean_v z_tv)²`` over the positions in ``mask``.

    Zero exactly when every logit at a position is equal, i.e. the output is uniform.
    """
    z = logits.float()
    margin = (z.max(dim=-1).values - z.mean(dim=-1)).pow(2)
    maskf = mask.to(margin.dtype)
    return (margin * maskf).sum() / maskf.sum().clamp_min(1)


def undial_targets(ref_logits: torch.Tensor, labels: torch.Tensor, beta: float) -> torch.Tensor:
    """UNDIAL's adjusted teacher: ``softmax(ref_logits − β·onehot(y))`` per token, ``[N, V]``.

    ``ref_logits`` may be any per-row shift of the logits (e.g. log-softmax): softmax ignores it.
    """
    penalty = torch.full((*labels.shape, 1), -float(beta), device=ref_logits.device)
    adjusted = ref_logits.float().scatter_add(-1, labels.unsqueeze(-1), penalty)
    return torch.softmax(adjusted, dim=-1)


def undial_loss(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor,
                beta: float) -> torch.Tensor:
    """UNDIAL: cross-entropy of the student's ``[N, V]`` logits against :func:`undial_targets`,
    averaged over the N tokens (answer tokens only, rows already selected)."""
    targets = undial_targets(ref_logits, labels, beta)
    return -(targets * torch.log_softmax(logits.float(), dim=-1)).sum(-1).mean()
