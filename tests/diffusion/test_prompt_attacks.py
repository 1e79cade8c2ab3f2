"""Prompt attacks on the tiny text-to-image pipeline (``text2image``, fine-tuned so that it
draws each prompt's images): UnlearnDiffAtk and concept inversion learn prompt tokens that bring
an erased prompt back, relearning fine-tunes it back; each also runs on the oracle (the
pipeline fine-tuned on the kept prompt's images only).

The judge is trained on the VAE's reconstructions of the task's images (the random VAE's
decoder is what every sample passes through). On this pipeline the judge's success rate did
not separate the prompts' samples (measured with the earlier letter-level test vocabulary:
samples under the erased prompt judged church 75% of the time before unlearning, under the
kept prompt 69%), so the tests read what the attacks optimise: the denoising loss on the
erased concept's images under the learned prompt against the plain prompt, on a model
EraseDiff erased (that loss rose +631% on the church images, +6.3% on the tench ones). The
success-rate rise itself is asserted on a pixel-space text-to-image model whose samples a
judge can read (test_unlearndiffatk_success.py)."""

from __future__ import annotations

import copy

import pytest
import torch

import obliviate.diffusion.methods  # noqa: F401  (registers the catalogue)
from obliviate.core.errors import ConfigError
from obliviate.core.registry import ATTACKS, METHODS
from obliviate.diffusion.attacks import AttackContext, ProbeOptions
from obliviate.diffusion.data import to_tensor
from obliviate.diffusion.judge import JudgeConfig, predict, train_judge
from obliviate.diffusion.models import build_denoiser
from obliviate.diffusion.text import invert_tokens
from obliviate.diffusion.training import train_denoiser
from tests.diffusion.test_text2image import FINETUNE

PROBE = ProbeOptions(samples=16, sample_steps=10, batch_size=16, seed=1)
ERASE = {"steps": 30, "learning_rate": 2e-3, "batch_size": 4}  # EraseDiff
RECOVERS = 0.5  # the learned prompt's loss on the erased concept's images <= this x the plain


@pytest.fixture(scope="module")
def arena(text2image):
    model, task = text2image.model, text2image.task
    x, y = to_tensor(task.full.records)
    with torch.no_grad():
        seen = model.decode(model.encode(x))
    judge, _ = train_judge(seen.repeat(8, 1, 1, 1), y.repeat(8), 2,
                           JudgeConfig(epochs=10, batch_size=16, learning_rate=5e-3))
    assert bool((predict(judge, seen) == y).all())
    oracle = build_denoiser(model.config, 2, 16, 3)
    keep = y == 1
    train_denoiser(oracle, x[keep], y[keep], FINETUNE.model_copy(update={"steps": 200}))
    unlearned = copy.deepcopy(model)
    METHODS.get("erasediff", "diffusion")(**ERASE).run(unlearned, task, None, save=False)

    def context(victim=unlearned):
        return AttackContext(task=task, model=victim.eval(), model_name="erasediff",
                             oracle=oracle.eval(), judge=judge, probe=PROBE, seed=0)

    return context


def run(name, ctx, **options):
    cls = ATTACKS.get(name, "diffusion")
    result = cls(cls.config_class(**options)).run(ctx)
    print(f"{name}: success rate {result.plain:.3f} -> {result.attacked:.3f}; oracle "
          f"{result.oracle_plain:.3f} -> {result.oracle_attacked:.3f}; {result.curve}")
    return result


def test_learned_slots_filled_with_a_words_tokens_give_that_prompts_states(text2image):
    """The slot machinery is exact: a template whose slots hold the input embeddings of
    "church"'s tokens reads as the prompt "a photo of a church"."""
    text = text2image.model.text
    church = text.tokenizer("church", add_special_tokens=False).input_ids
    ids, positions = text.slot_ids("a photo of a {}", len(church))
    assert positions == list(range(5, 5 + len(church)))
    assert ids[0, 5 + len(church)] == text.tokenizer.eos_token_id
    states = text.encode_slots(ids, positions, text.token_table.weight[church])
    assert torch.allclose(states, text.encode(["a photo of a church"]), atol=1e-6)
    with pytest.raises(ConfigError, match="exactly one"):
        text.slot_ids("a photo of a church", 1)


def test_token_inversion_lowers_the_models_loss_and_keeps_it_unchanged(text2image):
    model, task = text2image.model, text2image.task
    x, y = to_tensor(task.forget.records)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    table = model.text.token_table.weight
    found = invert_tokens(model, model.encode(x), "{} a photo", table[:3].clone(), steps=30,
                          learning_rate=0.05, batch_size=4, gen=torch.Generator().manual_seed(0),
                          discrete=True)
    assert len(found["tokens"]) == 3 and found["prompt"].endswith(" a photo")
    assert torch.equal(found["vectors"], table[found["tokens"]])  # a hard prompt
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not any(p.requires_grad for p in model.text.encoder.parameters())


def test_unlearndiffatk_finds_a_prompt_that_denoises_the_erased_concept(arena):
    """Five free prefix tokens before "a photo of a church". The paper's hard prompt (vocabulary
    tokens, 40 steps at lr 0.01) left the loss where it was here (1.075 -> 1.076, measured):
    the test vocabulary's embeddings have std 1, 70 times Stable Diffusion's, so no token
    changes in 40 steps; the hard-prompt mechanics are tested with ``invert_tokens`` below."""
    result = run("unlearndiffatk", arena(), hard=False, steps=100, learning_rate=0.05,
                 batch_size=4)
    row = result.curve[0]
    assert row["attacked_loss"] <= RECOVERS * row["plain_loss"]
    assert result.oracle_attacked is not None


def test_concept_inversion_brings_the_concept_back(arena):
    result = run("concept_inversion", arena(), steps=100, learning_rate=0.05)
    row = result.curve[0]
    assert row["attacked_loss"] <= RECOVERS * row["plain_loss"]
    assert result.oracle_attacked is not None


def test_relearning_brings_an_erased_prompt_back(arena):
    result = run("relearning", arena(), steps=20, images=8, batch_size=8, learning_rate=1e-3)
    assert [row["k"] for row in result.curve] == [20] and result.curve[0]["loss"] < 0.5
    assert result.oracle_attacked is not None


@pytest.mark.parametrize("name", ["unlearndiffatk", "concept_inversion"])
def test_prompt_attacks_need_a_text_to_image_model(name):
    from obliviate.diffusion.models import ModelConfig

    model = build_denoiser(ModelConfig(channels=[16, 32], cond_dim=16, time_dim=32), 10, 8, 1)
    ctx = AttackContext(task=None, model=model, model_name="m", oracle=model, judge=None)
    with pytest.raises(ConfigError, match="text_pipeline"):
        ATTACKS.get(name, "diffusion")().attack(model, ctx)
