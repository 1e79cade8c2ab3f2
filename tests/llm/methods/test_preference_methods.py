"""KL, IdkNLL, IdkDPO, SimNPO, WGA and UNDIAL: behaviour on the memorised tiny model, the loss
formulas on fixed numbers, and how each method holds its reference."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from obliviate.core.registry import METHODS
from obliviate.llm.data.formatting import answer_nll, collate
from obliviate.llm.methods.losses import (
    retain_kl,
    token_logprobs,
    undial_loss,
    undial_targets,
    wga_loss,
)

LN2 = math.log(2.0)


@torch.no_grad()
def refusal_nll(method, model, items, pad_token_id) -> float:
    """Mean per-question NLL of each forget question's refusal answer."""
    batch = collate([it.alternative for it in items], pad_token_id)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return float(answer_nll(logits, batch["labels"]).mean())


def first_batch(method, memorised, ctx, model=None, n=4):
    items = method.build_items(ctx)
    if model is not None and method.reference == "logprobs":
        method.precompute_reference(model, items, memorised.tokenizer.pad_token_id)
    return method.collate_fn(memorised.tokenizer.pad_token_id)(items[:n]), items


# -- behaviour on the memorised model --------------------------------------------------------------
# Same bounds as test_gradient_methods.py: "forgets" = forget NLL up by >= 1.5 nats while retain
# NLL stays below 1.0 and rises less than half as much; "refuses" = the refusal answer's NLL on the
# forget questions falls by >= 3 nats (from ~6.4) while retain NLL stays below 1.0 and rises less
# than half as much as the refusal NLL falls. lr/steps were picked from a sweep over lr in
# {2e-4 .. 2e-3} x steps in {6 .. 24} (batch 4, constant lr, no warmup) for the widest margins.
# Measured (forget NLL, retain NLL, refusal NLL; before -> after; before = 0.020, 0.020, 6.39):
#   kl       5e-4 x 10: forget 2.17, retain 0.62
#   simnpo   2e-3 x 16: forget 1.88, retain 0.51   (defaults: γ = 0.125 slows it down)
#   wga      3e-4 x 16: forget 2.20, retain 0.51
#   undial   3e-4 x 12: forget 1.93, retain 0.77   (α = 0: no retain term, as in the paper;
#                                                   forget NLL saturates near 2.2 for any lr)
#   idk_dpo  1e-3 x 24: forget 2.01, retain 0.56, refusal 2.58
#   idk_nll  1e-3 x 24: forget 1.29, retain 0.53, refusal 0.44
@pytest.mark.parametrize("name, steps, lr, forgets, refuses", [
    ("kl", 10, 5e-4, True, False),
    ("simnpo", 16, 2e-3, True, False),
    ("wga", 16, 3e-4, True, False),
    ("undial", 12, 3e-4, True, False),
    ("idk_dpo", 24, 1e-3, True, True),
    ("idk_nll", 24, 1e-3, False, True),
])
def test_method_forgets_and_keeps_utility(memorised, tmp_path, name, steps, lr, forgets,
                                          refuses):
    method = METHODS.get(name, "llm")()
    model = memorised.model()
    ctx = memorised.context(max_steps=steps, learning_rate=lr)
    pad = memorised.tokenizer.pad_token_id
    items = method.build_items(ctx) if refuses else None
    forget_before = memorised.mean_nll(model, "forget")
    retain_before = memorised.mean_nll(model, "retain")
    idk_before = refusal_nll(method, model, items, pad) if refuses else None

    outcome = method.run(model, memorised.task, tmp_path, ctx=ctx)
    unlearned = outcome.model.eval()
    forget_rise = memorised.mean_nll(unlearned, "forget") - forget_before
    retain_after = memorised.mean_nll(unlearned, "retain")
    retain_rise = retain_after - retain_before
    assert retain_after < 1.0, (name, retain_after)
    if forgets:
        assert forget_rise >= 1.5, (name, forget_rise)
        assert forget_rise > 2 * retain_rise, (name, forget_rise, retain_after)
    if refuses:
        idk_fall = idk_before - refusal_nll(method, unlearned, items, pad)
        assert idk_fall >= 3.0, (name, idk_before, idk_fall)
        assert idk_fall > 2 * retain_rise, (name, idk_fall, retain_after)
    assert (tmp_path / "model.safetensors").is_file()
    assert outcome.steps == steps


def test_defaults_are_the_documented_ones():
    expected = {
        "kl": {"gamma": 1.0, "alpha": 1.0},
        "idk_nll": {"alpha": 1.0},
        "idk_dpo": {"beta": 0.1, "gamma": 1.0, "alpha": 1.0},
        "simnpo": {"beta": 4.5, "delta": 0.0, "gamma": 0.125, "alpha": 1.0},
        "wga": {"beta": 1.0, "gamma": 1.0, "alpha": 1.0},
        "undial": {"beta": 10.0, "gamma": 1.0, "alpha": 0.0},
    }
    for name, values in expected.items():
        config = METHODS.get(name, "llm")().config.model_dump()
        assert {k: config[k] for k in values} == values, name


# -- KL: a frozen reference model, released after the run -----------------------------------------
def test_kl_keeps_a_frozen_copy_and_releases_it(memorised, tmp_path):
    method = METHODS.get("kl", "llm")()
    model = memorised.model()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    loss_fn = method.loss

    def spy(live, batch):
        ref = method.reference_model
        params = dict(ref.named_parameters())
        seen.append({
            "separate": ref is not live and all(
                p.data_ptr() != params[n].data_ptr() for n, p in live.named_parameters()
                if n in params),
            "frozen": not ref.training and not any(p.requires_grad for p in ref.parameters()),
            "unchanged": all(torch.equal(params[n], original[n]) for n in params),
        })
        return loss_fn(live, batch)

    method.loss = spy
    outcome = method.run(model, memorised.task, tmp_path, ctx=memorised.context(max_steps=3),
                         save=False)
    assert len(seen) == 3 and all(all(s.values()) for s in seen), seen
    assert method.reference_model is None
    trained = outcome.model.state_dict()
    assert any(not torch.equal(trained[k], original[k]) for k in original)


class FixedLogits(torch.nn.Module):
    """A stand-in model that returns the same logits for every input."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, input_ids, attention_mask=None, **_):
        return SimpleNamespace(logits=self.logits.expand(input_ids.shape[0], -1, -1))


def test_kl_retain_term_hand_value():
    # two positions, the second an answer token; reference p = (1/2, 1/4, 1/4), model uniform:
    # KL(p ‖ u) = ½·ln(3/2) + 2·¼·ln(3/4)
    ref_logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]]]))
    reference, model = FixedLogits(ref_logits), FixedLogits(torch.zeros(1, 2, 3))
    batch = {"input_ids": torch.zeros(1, 2, dtype=torch.long),
             "attention_mask": torch.ones(1, 2, dtype=torch.long),
             "labels": torch.tensor([[-100, 1]])}
    expected = 0.5 * math.log(1.5) + 0.5 * math.log(0.75)
    assert float(retain_kl(model, reference, batch)) == pytest.approx(expected)
    assert float(retain_kl(reference, reference, batch)) == pytest.approx(0.0, abs=1e-7)


# -- IdkNLL / IdkDPO -------------------------------------------------------------------------------
def test_idk_nll_loss_is_refusal_nll_plus_weighted_retain_nll(memorised):
    method = METHODS.get("idk_nll", "llm")(alpha=0.5)
    model = memorised.model()
    batch, _ = first_batch(method, memorised, memorised.context())
    loss, logs = method.loss(model, batch)
    idk = model(**batch["alternative"]).loss.item()
    retain = model(**batch["retain"]).loss.item()
    assert logs["idk_nll"] == pytest.approx(idk, rel=1e-5)
    assert loss.item() == pytest.approx(idk + 0.5 * retain, rel=1e-5)


def test_idk_dpo_equals_two_over_beta_log_two_at_the_reference(memorised):
    # At θ = θ_ref both log-ratios vanish: DPO = (2/β)·log 2 = 20·log 2 for β = 0.1.
    method = METHODS.get("idk_dpo", "llm")()
    model = memorised.model()
    batch, items = first_batch(method, memorised, memorised.context(), model=model)
    assert set(method.reference_logprobs) == {"forget", "alternative"}
    assert method.reference_logprobs["alternative"].shape == (len(items),)
    loss, logs = method.loss(model, batch)
    assert logs["forget_dpo"] == pytest.approx(20 * LN2, rel=1e-4)
    assert loss.item() == pytest.approx(20 * LN2 + logs["retain_nll"], rel=1e-4)


# -- SimNPO ----------------------------------------------------------------------------------------
def test_simnpo_forget_term_matches_the_length_normalised_nll_form(memorised):
    # OpenUnlearning: -(2/β)·mean log σ(β·(NLL_sum/|y| − δ)); with δ = 0 it is ours exactly.
    method = METHODS.get("simnpo", "llm")()
    model = memorised.model()
    batch, _ = first_batch(method, memorised, memorised.context())
    _, logs = method.loss(model, batch)
    forget = batch["forget"]
    with torch.no_grad():
        logits = model(input_ids=forget["input_ids"], attention_mask=forget["attention_mask"])
        mean_nll = answer_nll(logits.logits, forget["labels"])
    beta = method.config.beta
    expected = float(-(2 / beta) * F.logsigmoid(beta * mean_nll).mean())
    assert logs["forget_simnpo"] == pytest.approx(expected, rel=1e-5)


# -- WGA -------------------------------------------------------------------------------------------
def test_wga_with_beta_zero_is_gradient_ascent():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 1, 4], [-100, 2, 6, -100, -100]])
    picked, mask = token_logprobs(logits, labels)
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1),
                         ignore_index=-100)
    assert float(wga_loss(picked, mask, beta=0.0)) == pytest.approx(-float(ce), rel=1e-6)


def test_wga_hand_value_and_detached_weights():
    # tokens with p = 1/2 and 1/4 (a third, masked out), β = 1: weights 1/2 and 1/4, so
    # loss = (½·ln ½ + ¼·ln ¼)/2 and ∂loss/∂log p = weight/2 (the weights are constants).
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.9]])).requires_grad_(True)
    mask = torch.tensor([[True, True, False]])
    loss = wga_loss(logp, mask, beta=1.0)
    assert loss.item() == pytest.approx((0.5 * math.log(0.5) + 0.25 * math.log(0.25)) / 2)
    loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([0.25, 0.125, 0.0])
    # β = 2 squares the weights
    assert float(wga_loss(logp.detach(), mask, beta=2.0)) == pytest.approx(
        (0.25 * math.log(0.5) + 0.0625 * math.log(0.25)) / 2)


# -- UNDIAL ----------------------------------------------------------------------------------------
def test_undial_targets_by_hand_on_a_three_token_vocabulary():
    # logits (0, ln2, 0), true token 1, β = ln 2: (0, 0, 0) -> uniform
    uniform = undial_targets(torch.tensor([[0.0, LN2, 0.0]]), torch.tensor([1]), LN2)
    assert uniform[0].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    # logits (0, 0, 0), true token 0, β = ln 2: weights (½, 1, 1)/2.5 = (0.2, 0.4, 0.4);
    # a per-row shift of the logits (log-softmax, +5) changes nothing
    for shift in (0.0, 5.0, -math.log(3)):
        target = undial_targets(torch.full((1, 3), shift), torch.tensor([0]), LN2)
        assert target[0].tolist() == pytest.approx([0.2, 0.4, 0.4])
    # β = 0 is the plain teacher distribution; batched rows take their own labels
    ref = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(undial_targets(ref, torch.tensor([2, 0]), 0.0), ref.softmax(-1))
    both = undial_targets(torch.zeros(2, 3), torch.tensor([0, 2]), LN2)
    torch.testing.assert_close(both, torch.tensor([[0.2, 0.4, 0.4], [0.4, 0.4, 0.2]]))


def test_undial_loss_is_the_target_entropy_when_the_student_matches():
    targets = torch.tensor([[0.2, 0.4, 0.4]])
    entropy = -(0.2 * math.log(0.2) + 0.8 * math.log(0.4))
    value = undial_loss(torch.log(targets), torch.zeros(1, 3), torch.tensor([0]), LN2)
    assert float(value) == pytest.approx(entropy)


def test_undial_teacher_cache_holds_answer_positions_and_matches_a_model_teacher(memorised):
    cached = METHODS.get("undial", "llm")()
    assert not cached.uses_retain and METHODS.get("undial", "llm")(alpha=1.0).uses_retain
    model = memorised.model()
    ctx = memorised.context()
    batch, items = first_batch(cached, memorised, ctx, model=model)
    assert len(cached.reference_logits) == len(items)
    vocab = model.config.vocab_size
    for item, rows in zip(items, cached.reference_logits, strict=True):
        assert rows.shape == (item.forget.num_answer_tokens, vocab)
        assert rows.dtype == torch.float16 and rows.device.type == "cpu"
        assert torch.allclose(rows.float().exp().sum(-1), torch.ones(len(rows)), atol=1e-2)

    live = METHODS.get("undial", "llm")(teacher="model")
    assert live.reference == "model"
    live.reference_model = copy.deepcopy(model).requires_grad_(False)
    loss_cached, _ = cached.loss(model, batch)
    loss_live, _ = live.loss(model, batch)
    assert loss_cached.item() == pytest.approx(loss_live.item(), rel=1e-3)


@pytest.mark.parametrize("teacher", ["cache", "model"])
def test_undial_releases_its_teacher_after_run(memorised, tmp_path, teacher):
    method = METHODS.get("undial", "llm")(teacher=teacher)
    method.run(memorised.model(), memorised.task, tmp_path,
               ctx=memorised.context(max_steps=1), save=False)
    assert method.reference_logits == [] and method.reference_model is None
