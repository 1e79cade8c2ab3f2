"""AltPO, SatImp, CE-U and PDU: each loss by hand on fixed numbers, and forgetting on the
``memorised`` tiny Llama (settings from a small sweep, bounds stated as in
test_gradient_methods.py: forget NLL up by >= 1.5 nats, retain below 1.0 and rising less than
half as much)."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch

from obliviate.core.registry import METHODS
from obliviate.llm.data.formatting import IGNORE_INDEX
from obliviate.llm.methods.altpo import AltPO
from obliviate.llm.methods.ce_u import drop_first_answer_tokens
from obliviate.llm.methods.losses import (
    ceu_loss,
    logit_margin_flattening,
    satimp_loss,
    wga_loss,
)
from obliviate.llm.methods.pdu import PDU, dual_update


def test_satimp_loss_hand_value():
    # p = 0.5 and 0.25 (third token masked), β1 = β2 = 1: weights 0.5·0.5, 0.25·0.75
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.9]]))
    mask = torch.tensor([[True, True, False]])
    expected = (0.25 * math.log(0.5) + 0.1875 * math.log(0.25)) / 2
    assert float(satimp_loss(logp, mask, 1.0, 1.0)) == pytest.approx(expected)
    # β1 = 2, β2 = 0 is WGA with β = 2
    assert float(satimp_loss(logp, mask, 2.0, 0.0)) == pytest.approx(float(wga_loss(logp, mask,
                                                                                    2.0)))


def test_satimp_weights_are_constants():
    logp = torch.log(torch.tensor([[0.5, 0.25]])).requires_grad_(True)
    satimp_loss(logp, torch.ones(1, 2, dtype=torch.bool), 1.0, 1.0).backward()
    # d/dlogp of mean(w·logp) with w detached is w / 2
    assert torch.allclose(logp.grad, torch.tensor([[0.25 / 2, 0.1875 / 2]]))


def test_ceu_loss_hand_value_and_gradient():
    # z = [0, 0, ln 2], label 2: target softmax([0, 0, -inf]) = [1/2, 1/2, 0];
    # log softmax(z) = [-ln 4, -ln 4, ln 2 - ln 4]: CE = ln 4
    z = torch.tensor([[0.0, 0.0, math.log(2.0)]], requires_grad=True)
    loss = ceu_loss(z, torch.tensor([2]))
    assert float(loss.detach()) == pytest.approx(math.log(4.0))
    loss.backward()
    # gradient softmax(z) − target = [1/4, 1/4, 1/2] − [1/2, 1/2, 0]
    assert torch.allclose(z.grad, torch.tensor([[-0.25, -0.25, 0.5]]))


def test_ceu_drops_the_first_answer_token_of_each_row():
    x = IGNORE_INDEX
    labels = torch.tensor([[x, 5, 6, 7], [x, x, 8, 9]])
    assert drop_first_answer_tokens(labels, 1).tolist() == [[x, x, 6, 7], [x, x, x, 9]]
    assert torch.equal(drop_first_answer_tokens(labels, 0), labels)


def test_logit_margin_flattening_hand_value():
    # row 1: max 6, mean 3 -> 9; row 2: uniform -> 0; row 3 masked
    z = torch.tensor([[[1.0, 2.0, 6.0], [1.0, 1.0, 1.0], [0.0, 0.0, 30.0]]])
    mask = torch.tensor([[True, True, False]])
    assert float(logit_margin_flattening(z, mask)) == pytest.approx(4.5)


def test_pdu_dual_ascent_is_projected():
    assert dual_update(1.0, 0.5, 0.3, 2.0) == pytest.approx(1.4)
    assert dual_update(1.0, 0.0, 0.3, 5.0) == 0.0


def test_defaults_are_the_papers():
    assert (AltPO().config.beta, AltPO().config.alpha) == (0.1, 1.0)
    sat = METHODS.get("satimp", "llm")().config
    assert (sat.beta1, sat.beta2, sat.gamma, sat.alpha) == (5.0, 1.0, 1.0, 0.1)
    ceu = METHODS.get("ce_u", "llm")()
    assert ceu.config.ignore_first_n_answer_tokens == 1 and not ceu.uses_retain
    pdu = PDU().config
    assert (pdu.retain_loss_eps, pdu.dual_step_size, pdu.dual_warmup_epochs) == (0.3, 1.0, 5.0)


@pytest.mark.parametrize("name, options, steps, lr", [
    ("satimp", {}, 12, 1e-3),
    ("ce_u", {}, 12, 2.5e-4),
    ("pdu", {"dual_warmup_epochs": 0.0, "retain_loss_eps": 0.05, "alpha": 100.0,
             "dual_step_size": 5.0}, 12, 3e-4),
    ("altpo", {}, 6, 1e-3),
])
def test_new_method_forgets_and_keeps_utility(memorised, name, options, steps, lr):
    method = METHODS.get(name, "llm")(**options)
    outcome = memorised.unlearn_and_check(method, memorised.model(), max_steps=steps,
                                          learning_rate=lr)
    assert outcome.steps == steps


def test_pdu_raises_the_dual_variable_while_the_retain_bound_is_violated(memorised):
    # ε = 0 cannot be met, so λ grows by η·NLL_R > 0 at every step after warm-up (none here)
    method = PDU(retain_loss_eps=0.0, alpha=2.0, dual_step_size=1.0, dual_warmup_epochs=0.0)
    outcome = method.run(memorised.model(), memorised.task,
                         ctx=memorised.context(max_steps=4, learning_rate=1e-4, log_every=1))
    duals = [h["dual"] for h in outcome.history if "dual" in h]
    assert duals[0] == pytest.approx(2.0) and all(b > a for a, b in pairwise(duals))


def test_altpo_prefers_the_target_generated_alternate(memorised):
    method = AltPO()
    model = memorised.model()
    outcome = method.run(model, memorised.task, ctx=memorised.context(max_steps=1))
    alternates = outcome.extra["altpo"]["alternates"]
    answers = [r.answer for r in memorised.task.forget.records]
    assert len(alternates) == len(answers)
    assert sum(outcome.extra["altpo"]["alternate_sources"].values()) == len(answers)
    assert all(a.strip() and a != b for a, b in zip(alternates, answers, strict=True))
    # the cached reference holds the target's log-prob of each alternate (preferred) answer
    assert method.reference_logprobs["alternative"].shape == (len(answers),)


def test_altpo_perturbed_alternates_need_no_generation(memorised):
    method = AltPO(alternates="perturbed")
    method.run(memorised.model(), memorised.task, ctx=memorised.context(max_steps=1))
    records = list(memorised.task.forget.records)
    assert method.sources == {"perturbed": len(records)}
    assert all(a in r.perturbed_answers for a, r in zip(method.alternates, records, strict=True))
