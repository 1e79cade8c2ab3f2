"""GradAscent, GradDiff and NPO: forgetting happens on a memorised tiny model, utility holds."""

from __future__ import annotations

import math

import pytest
import torch

from obliviate.core.registry import METHODS
from obliviate.llm.methods.losses import dpo_loss, npo_loss, simnpo_loss


def test_memorised_fixture_knows_its_facts(memorised):
    model = memorised.model()
    assert memorised.mean_nll(model, "forget") < 0.1
    assert memorised.mean_nll(model, "retain") < 0.1


# "forgetting happened, utility held": the bounds of Memorised.unlearn_and_check (conftest.py)
@pytest.mark.parametrize("name, steps, lr", [
    ("grad_ascent", 12, 3e-4),
    ("grad_diff", 6, 1e-3),
    ("npo", 6, 1e-3),
])
def test_method_forgets_and_keeps_utility(memorised, tmp_path, name, steps, lr):
    method = METHODS.get(name, "llm")()
    outcome = memorised.unlearn_and_check(method, memorised.model(), tmp_path, max_steps=steps,
                                          learning_rate=lr)
    assert (tmp_path / "model.safetensors").is_file()
    assert outcome.steps == steps and outcome.trainable_parameters > 0


@pytest.mark.parametrize("name", ["grad_diff", "npo"])
def test_method_forgets_in_bfloat16_weights(memorised, tmp_path, name):
    """``model.dtype: bfloat16`` (float32 master weights trained under bf16 autocast, the
    default ``master_weights``): the same bounds as in fp32, and the weights stay bf16."""
    from safetensors.torch import load_file

    method = METHODS.get(name, "llm")()
    outcome = memorised.unlearn_and_check(method, memorised.model().to(torch.bfloat16),
                                          tmp_path, max_steps=6, learning_rate=1e-3)
    assert outcome.model.lm_head.weight.dtype == torch.bfloat16
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}


def test_npo_uses_the_cached_reference_and_no_model_copy(memorised, tmp_path):
    method = METHODS.get("npo", "llm")()
    model = memorised.model()
    method.run(model, memorised.task, tmp_path, ctx=memorised.context(max_steps=1), save=False)
    assert method.reference_model is None
    ref = method.reference_logprobs["forget"]
    assert ref.shape == (len(memorised.task.forget),) and torch.all(ref < 0)


def test_npo_loss_equals_two_over_beta_log_two_at_the_reference():
    logp = torch.tensor([-3.0, -7.5])
    for beta in (0.1, 1.0, 2.5):
        assert float(npo_loss(logp, logp.clone(), beta)) == pytest.approx(2 / beta * math.log(2))


def test_npo_loss_hand_value():
    # one sample, log π_θ − log π_ref = 2, β = 0.5: (2/β)·log(1 + e^{β·2}) = 4·log(1 + e)
    value = npo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), 0.5)
    assert float(value) == pytest.approx(4 * math.log(1 + math.e))


def test_simnpo_loss_hand_value():
    # log π = -6 over 3 tokens, β = 2, δ = 0.5: -(2/2)·log σ(-(2/3)·(-6) - 0.5) = -log σ(3.5)
    value = simnpo_loss(torch.tensor([-6.0]), torch.tensor([3]), beta=2.0, delta=0.5)
    assert float(value) == pytest.approx(-math.log(1 / (1 + math.exp(-3.5))))


def test_dpo_loss_at_reference_and_hand_value():
    zero = torch.zeros(2)
    assert float(dpo_loss(zero, zero, zero, zero, 0.1)) == pytest.approx(20 * math.log(2))
    # margin = (−1 − −2) − (−5 − −3) = 3, β = 1: −2·log σ(3)
    value = dpo_loss(torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-5.0]),
                     torch.tensor([-3.0]), beta=1.0)
    assert float(value) == pytest.approx(-2 * math.log(1 / (1 + math.exp(-3))))


def test_answer_only_logits_match_full_logits(memorised):
    """The LM head runs only where answers are predicted; values equal the full computation."""
    from obliviate.llm.data.formatting import answer_nll, collate, encode_record
    from obliviate.llm.methods.losses import nll, sequence_logprob, token_logprobs

    model = memorised.model()
    records = list(memorised.task.forget.records) + list(memorised.task.retain.records)[:3]
    batch = collate([encode_record(memorised.tokenizer, memorised.fmt, r) for r in records],
                    memorised.tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        picked, mask = token_logprobs(logits, batch["labels"])
        logp, length = sequence_logprob(model, batch)
        token_mean = nll(model, batch)
    assert torch.allclose(logp, picked.sum(-1), atol=1e-4)
    assert torch.equal(length, mask.sum(-1))
    expected = answer_nll(logits, batch["labels"], "sum").sum() / mask.sum()
    assert torch.allclose(token_mean, expected, atol=1e-5)
