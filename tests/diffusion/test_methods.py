"""Every method lowers the judge's accuracy on the forgotten digit while the other digits hold.

On the tiny 8×8 model the settings below are the papers' (see each config) except for steps,
learning rate and batch size, scaled to a few seconds. Bounds: the forget-class accuracy must
fall by at least ``MIN_DROP`` (absolute) and the mean accuracy of the other classes may fall by
at most ``MAX_RETAIN_DROP``; the baselines are held to what they are known to do (gradient
ascent damages everything, so only its forgetting is checked; retain fine-tuning forgets
slowly, so only that it keeps the other classes). On the cross-attention model the forget
accuracy must fall by ``MIN_DROP / 2``; Forget-Me-Not may cost the other classes up to 0.3.
"""

from __future__ import annotations

import pytest
import torch

import obliviate.diffusion.methods  # noqa: F401  (registers the catalogue)
from obliviate.core.errors import ConfigError
from obliviate.core.registry import METHODS
from obliviate.diffusion.judge import predict
from obliviate.diffusion.methods.base import UnlearnContext
from obliviate.diffusion.sampling import sample

from .conftest import FORGET

MIN_DROP = 0.4
MAX_RETAIN_DROP = 0.15
PER_CLASS = 12

FAST = {
    "esd_x": {"steps": 30, "learning_rate": 1e-3, "batch_size": 8, "ddim_steps": 10},
    "esd_u": {"steps": 30, "learning_rate": 3e-4, "batch_size": 8, "ddim_steps": 10},
    "uce": {},
    "salun": {"steps": 30, "learning_rate": 1.5e-4, "batch_size": 32},
    "concept_ablation": {"steps": 30, "learning_rate": 3e-3, "batch_size": 16},
    "selective_amnesia": {"steps": 30, "learning_rate": 1e-3, "batch_size": 32,
                          "fisher_samples": 10, "fisher_timesteps": 50, "replay_per_class": 5,
                          "sample_steps": 10},
    "erasediff": {"steps": 30, "learning_rate": 2e-4, "batch_size": 32, "lambda_bome": 0.1},
    "grad_ascent": {"steps": 20, "learning_rate": 5e-4, "batch_size": 32},
    "retain_finetune": {"steps": 30, "learning_rate": 1e-3, "batch_size": 32},
}


def accuracies(model, judge) -> tuple[float, float]:
    """(forget-class accuracy, mean accuracy of the other classes) of the judge on samples."""
    labels = torch.arange(10).repeat_interleave(PER_CLASS)
    correct = (predict(judge, sample(model, labels, seed=5)) == labels).float()
    per_class = correct.view(10, PER_CLASS).mean(1)
    others = torch.cat([per_class[:FORGET], per_class[FORGET + 1:]])
    return float(per_class[FORGET]), float(others.mean())


@pytest.fixture(scope="module")
def before(trained) -> tuple[float, float]:
    forget, retain = accuracies(trained.model, trained.judge)
    assert forget >= 0.7 and retain >= 0.75, "the tiny target must know its digits"
    return forget, retain


@pytest.mark.parametrize("name", sorted(FAST))
def test_method_forgets_and_keeps(name, trained, before, tmp_path):
    model = trained.fresh()
    method = METHODS.get(name, "diffusion")(**FAST[name])
    outcome = method.run(model, trained.task, tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert outcome.steps == FAST[name].get("steps", 0)
    assert not (tmp_path / "checkpoints").exists()
    forget, retain = accuracies(model, trained.judge)
    print(f"{name}: forget {before[0]:.2f} -> {forget:.2f}, retain {before[1]:.2f} -> "
          f"{retain:.2f}")
    if name != "retain_finetune":
        assert forget <= before[0] - MIN_DROP
    else:
        assert forget <= before[0] + 0.1
    if name != "grad_ascent":
        assert retain >= before[1] - MAX_RETAIN_DROP


def test_methods_leave_the_condition_embeddings_alone(trained, tmp_path):
    model = trained.fresh()
    table = model.class_embedding.weight.detach().clone()
    METHODS.get("salun", "diffusion")(**FAST["salun"]).run(model, trained.task, tmp_path)
    assert torch.equal(model.class_embedding.weight, table)


def test_uce_maps_forget_onto_null(trained, tmp_path):
    model = trained.fresh()
    null = model.concept_vectors(model.null_label).detach().clone()
    forget = model.concept_vectors(FORGET).detach().clone()
    keep = model.concept_vectors(3).detach().clone()
    before = {n: m.weight.detach().clone() for n, m in model.condition_readers()}
    METHODS.get("uce", "diffusion")(lamb=1e-6, preserve_scale=1.0).run(model, trained.task,
                                                                      tmp_path)
    for name, linear in model.condition_readers():
        w0 = before[name]
        assert torch.allclose(linear.weight @ forget[0], w0 @ null[0], atol=1e-3)
        assert torch.allclose(linear.weight @ keep[0], w0 @ keep[0], atol=1e-3)


@pytest.mark.parametrize("name", ["esd_x", "erasediff"])
def test_methods_resume_from_their_checkpoint(trained, tmp_path, name):
    """An interrupted method resumes: same weights and the same logged losses as an
    uninterrupted run (EraseDiff's q = f(θ) − f* depends on its inner optimizer's state)."""
    cls = METHODS.get(name, "diffusion")
    settings = {**FAST[name], "steps": 6, "checkpoint_every": 3, "log_every": 1}
    straight = trained.fresh()
    expected = cls(**settings).run(straight, trained.task, tmp_path / "a")
    interrupted = trained.fresh()
    ctx = UnlearnContext.build(trained.task, "cpu", checkpoint_dir=tmp_path / "b" / "ckpt")
    # a 4-step run checkpoints at step 3 and stops after step 4 (a run's last step writes no
    # checkpoint: its final save follows), as one interrupted before its save would
    cls(**{**settings, "steps": 4}).unlearn(interrupted, ctx)
    resumed = trained.fresh()
    out = cls(**settings).run(resumed, trained.task, tmp_path / "b", ctx=ctx)
    assert out.resumed_from == 3
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert len(out.history) == len(expected.history) == 6
    for got, want in zip(out.history, expected.history, strict=True):
        assert got.keys() == want.keys()
        assert all(got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-7) for k in want)


def test_forget_me_not_needs_cross_attention(trained, tmp_path):
    with pytest.raises(ConfigError, match="prompt_unet"):
        METHODS.get("forget_me_not", "diffusion")().run(trained.fresh(), trained.task, tmp_path)


PROMPT_FAST = {
    "forget_me_not": {"steps": 30, "learning_rate": 3e-3, "batch_size": 16, "parameters": "kv"},
    "uce": {},
    "esd_x": {"steps": 30, "learning_rate": 1e-3, "batch_size": 8, "ddim_steps": 10},
}


@pytest.mark.parametrize("name", sorted(PROMPT_FAST))
def test_cross_attention_methods(name, trained_prompt, tmp_path):
    before = accuracies(trained_prompt.model, trained_prompt.judge)
    model = trained_prompt.fresh()
    METHODS.get(name, "diffusion")(**PROMPT_FAST[name]).run(model, trained_prompt.task, tmp_path)
    forget, retain = accuracies(model, trained_prompt.judge)
    print(f"prompt {name}: forget {before[0]:.2f} -> {forget:.2f}, retain {before[1]:.2f} -> "
          f"{retain:.2f}")
    assert forget <= before[0] - MIN_DROP / 2
    # Forget-Me-Not re-steers attention onto the prompt tokens every class shares, so it also
    # weakens the other classes: its bound is looser
    assert retain >= before[1] - (0.3 if name == "forget_me_not" else MAX_RETAIN_DROP)
