"""RMU forgets the synthetic hazardous-knowledge domain: on a tiny Llama that answers both
domains' four-choice questions (trained on both corpora plus every question in lm-eval's prompt
followed by its letter, as plain text), RMU on the forget corpus alone takes forget-domain
accuracy to chance (0.25) while retain-domain accuracy stays within a stated margin of the target's.

Settings, and where they come from (sweeps on this fixture, 30 questions per domain, so one
question is 0.033 and a model at chance scatters by about ±0.08):

* the coefficient: adaptive RMU's rule, c = 5 × the frozen mean activation norm at the layer
  (Dang et al. 2025). WMDP's fixed c = 6.5 leaves both domains at 1.00 within 60 steps.
* the trained weights: every MLP weight (gate, up, down) of the layers up to the steered one, as
  the WMDP paper's text says ("the MLP weights of layers ℓ−2, ℓ−1, ℓ"); its code and
  OpenUnlearning train ``down_proj`` only, which on a 4-layer model stopped at 0.37-0.43 forget
  with the retain domain at 0.53-0.83.
* the layer: 2 of 6 (none of the sources gives a rule for a model of another depth; layer 1 of 6
  left the retain domain at 0.47-0.90 across steering vectors).
* α = 400, 60 steps at lr 1e-2 (no rule in the papers for α or the learning rate: swept over
  α 30-1200, 30/45/60 steps, lr 5e-3/1e-2).

One steering vector's outcome scatters widely, so the test averages eight (seeds 0-7) and bounds
the mean, as one would report RMU. Measured (the tests' pinned AVX2 rounding, conftest.py):
forget 0.13 / 0.17 / 0.37 / 0.13 / 0.10 / 0.13 / 0.13 / 0.13 (mean 0.16, chance 0.25), retain
0.93 / 0.77 / 1.00 / 0.73 / 0.67 / 0.73 / 0.63 / 0.87 (mean 0.79, target 1.00). Seeds 0-2 are
the numbers this test first recorded, with three vectors, on an AVX2 CPU; the same bits on an
AVX-512 AMD CPU under the pin. Unpinned, AVX-512 rounding gave other targets and other numbers
(layer 2 there: forget 0.50 / 0.53 / 0.37 for seeds 0-2; layer 3, 8 vectors: retain mean 0.89 on
a Xeon, 0.80 on an AMD EPYC). Layer 3 under the pin: forget mean 0.23, retain mean 0.75; α 1200
or 45 steps there did not keep more of the retain domain (0.76, 0.72).

The practice questions here are plain text, not the generator's question-answer practice records
(the ``wmdp`` benchmark's): trained with the loss on the letter alone, the tiny model ties the
letter to the question more firmly, and the same RMU settings leave the forget domain at
0.50-0.67 (retain 0.97-1.00); α = 10 reaches 0.20-0.33 but the retain domain falls to
0.47-0.83."""

from __future__ import annotations

import copy

import pytest

from obliviate.core.task import DataSplit, UnlearningTask
from obliviate.llm.data.formatting import collate, encode_record, resolve_format
from obliviate.llm.data.records import QARecord
from obliviate.llm.data.synthetic_hazard import HazardConfig, generate_hazard_task
from obliviate.llm.data.wmdp import LETTERS
from obliviate.llm.evaluation.mcq import choice_loglikelihoods, mcq_metrics, mcq_prompt
from obliviate.llm.methods.base import UnlearnContext, UnlearnTrainConfig
from obliviate.llm.methods.rmu import RMU
from obliviate.llm.models import TinyModelConfig, tiny_llama, train_tokenizer
from obliviate.llm.training import TrainConfig, train

STEPS, LR, ALPHA, SCALE, LAYER = 60, 1e-2, 400.0, 5.0, 2
MLP = ["mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight"]
SEEDS = tuple(range(8))  # eight steering vectors u


def full_logits_loss(model, batch):
    """transformers' causal-LM loss from every position's logits: the target the settings above
    were swept on. ``lm_loss`` computes the same loss from the answer positions only; its float
    rounding differs, and after 60 epochs the target differs enough that (layer 2, AVX2)
    retain accuracy over six steering vectors read 0.87 / 0.87 / 0.63 / 0.93 / 0.73 / 0.80 (mean
    0.81; forget at chance), against 0.93 / 0.77 / 1.00 for the first three with this loss:
    RMU's retain margin on this fixture is that sensitive to float rounding (see above)."""
    loss = model(**batch).loss
    return loss, {"loss": float(loss.detach())}


def accuracy(model, tok, items) -> float:
    ll = choice_loglikelihoods(model, tok, items, add_special_tokens=False)
    return mcq_metrics(items, ll)[0].value


@pytest.fixture(scope="module")
def hazard():
    data = generate_hazard_task(HazardConfig(entities_per_domain=6, seed=0))
    # each question in lm-eval's prompt with its letter, as plain text (the loss on every token)
    practice = [QARecord(question="", answer=mcq_prompt(q) + " " + LETTERS[q.answer])
                for q in data["forget_mcq"] + data["retain_mcq"]]
    corpus = data["forget_corpus"] + data["retain_corpus"]
    tok = train_tokenizer([r.answer for r in corpus + practice], vocab_size=600)
    fmt = resolve_format(tok, "base")
    model = tiny_llama(tok, TinyModelConfig(hidden_size=64, num_layers=6, num_heads=4,
                                            intermediate_size=128, vocab_size=600), seed=0)
    train(model, [encode_record(tok, fmt, r) for r in corpus + practice],
          lambda b: collate(b, tok.pad_token_id),
          TrainConfig(epochs=60, learning_rate=3e-3, batch_size=8, warmup_ratio=0.05,
                      weight_decay=0.0, lr_scheduler="cosine"), loss_fn=full_logits_loss)
    return data, tok, fmt, model.eval()


def test_rmu_takes_the_forget_domain_to_chance_and_keeps_the_retain_domain(hazard):
    data, tok, fmt, model = hazard
    forget_before = accuracy(model, tok, data["forget_mcq"])
    retain_before = accuracy(model, tok, data["retain_mcq"])
    assert forget_before == 1.0 and retain_before == 1.0  # the target answers both domains
    task = UnlearningTask("hazard", "llm", DataSplit("forget", data["forget_corpus"]),
                          DataSplit("retain", data["retain_corpus"]))
    forget, retain = [], []
    for seed in SEEDS:
        ctx = UnlearnContext(tokenizer=tok, fmt=fmt, task=task, max_length=128,
                             train=UnlearnTrainConfig(max_steps=STEPS, learning_rate=LR,
                                                      batch_size=4, warmup_ratio=0.0))
        outcome = RMU(layer=LAYER, alpha=ALPHA, adaptive_scale=SCALE, param_names=MLP,
                      seed=seed).run(copy.deepcopy(model), task, ctx=ctx, save=False)
        assert outcome.extra["rmu"]["steering_coeff"] == pytest.approx(
            SCALE * outcome.extra["rmu"]["activation_norm"])
        unlearned = outcome.model.eval()
        forget.append(accuracy(unlearned, tok, data["forget_mcq"]))
        retain.append(accuracy(unlearned, tok, data["retain_mcq"]))
    mean_forget, mean_retain = sum(forget) / len(SEEDS), sum(retain) / len(SEEDS)
    # chance 0.25: the mean at most 0.1 above it (one vector's 30 questions scatter by ±0.08 at
    # chance; below chance, RMU's noise steers away from the right letter), and every vector
    # takes the forget domain at least 0.4 below the target's
    assert mean_forget <= 0.25 + 0.10 and max(forget) <= forget_before - 0.4, forget
    # the retain domain: the mean within 0.25 of the target, every vector above twice chance and
    # at least 0.3 above its own forget accuracy (RMU's selectivity, vector by vector)
    assert mean_retain >= retain_before - 0.25 and min(retain) >= 0.5, retain
    assert all(r - f >= 0.3 for r, f in zip(retain, forget, strict=True)), (retain, forget)
