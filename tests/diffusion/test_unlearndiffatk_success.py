"""UnlearnDiffAtk raises the attack success rate against a weakly unlearned text-to-image model,
on a model whose samples the judge can read (issue 18).

The world: scikit-learn's 8×8 digits zero and one, named by the prompts "a digit zero" and
"a digit one"; the styles × objects benchmark's small text-to-image model (a random frozen CLIP
text encoder with one token a word, a pixel-space ``UNet2DConditionModel``) trained here for
150 steps; the oracle is the same model trained on the "one" images only; a judge trained on
the real digits. A weak ESD-x (30 steps) erases "a digit zero"; the registered
``unlearndiffatk`` (five hard vocabulary tokens prepended to the prompt, 40 steps of one image:
the paper's protocol) then finds a prompt under which the judge sees zeros again.

The learning rate is the paper's 0.01 scaled to this vocabulary: its embeddings have std 1,
about 70 times Stable Diffusion CLIP's, so 0.5 (at 0.01 no token changes in 40 steps).
Measured (attack seeds 0, 1, 2, the ESD-x seed the same): the target draws zeros 0.81 of the
time; after ESD-x the plain rate is 0.44 / 0.41 / 0.44 (ones kept at 0.91 / 0.88 / 0.91) and
the attacked rate 0.81 / 0.94 / 0.91 (margins +0.38 / +0.53 / +0.47; the prompts found hold
the word "zero" two or three times before "a digit zero"); the oracle goes 0.09 -> 0.06.
With 4 images a step instead of 1 the margins were +0.44 / +0.56 / +0.47. The file takes
about 50 s on one core.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest
import torch

import obliviate.diffusion.methods  # noqa: F401  (registers the catalogue)
from obliviate.core.registry import ATTACKS, METHODS
from obliviate.diffusion.attacks import AttackContext, ProbeOptions, probe
from obliviate.diffusion.benchmarks.base import ClassImagesConfig, class_task
from obliviate.diffusion.benchmarks.styles_objects import TextModelConfig, build_text_model
from obliviate.diffusion.data import ImageRecord, load_digits, to_tensor
from obliviate.diffusion.judge import JudgeConfig, predict, train_judge
from obliviate.diffusion.training import TrainConfig, train_denoiser

NAMES = ["zero", "one"]  # class 0 is erased, class 1 kept
PROMPTS = [f"a digit {name}" for name in NAMES]
MODEL = TextModelConfig(channels=[16, 32], sample_steps=10)
TRAIN = TrainConfig(steps=150, batch_size=32, learning_rate=3e-3, warmup_steps=20,
                    ema_decay=None, checkpoint_every=10_000, log_every=1_000)
PROBE = ProbeOptions(samples=32, sample_steps=10, guidance_scale=4.0, batch_size=32, seed=1)
WEAK_ESD = {"steps": 30, "learning_rate": 5e-3, "ddim_steps": 10, "negative_guidance": 3.0}
ATTACK = {"learning_rate": 0.5}  # the paper's k = 5 hard tokens, 40 steps, batch 1 (defaults)
MARGIN = 0.25  # attacked >= plain + MARGIN (measured margins: +0.38, +0.53, +0.47)


@dataclass
class World:
    task: Any
    judge: Any
    target: Any
    oracle: Any
    unlearned: Any

    def rate(self, model: Any, label: int) -> float:
        """Share of ``PROBE.samples`` samples of prompt ``label`` the judge reads as ``label``."""
        labels = torch.full((PROBE.samples,), label)
        hits = probe(model, self.context(), model.embed(labels), labels)
        return sum(hits) / len(hits)

    def context(self, seed: int = 0) -> AttackContext:
        return AttackContext(task=self.task, model=self.unlearned, model_name="esd_x",
                             oracle=self.oracle, judge=self.judge, probe=PROBE, seed=seed)


def trained(task: Any, split: str, folder: Any) -> Any:
    model = build_text_model(PROMPTS, 8, MODEL, folder)
    x, y = to_tensor(task.split(split).records)
    train_denoiser(model, x, y, TRAIN)
    return model.eval()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    torch.set_num_threads(1)
    records = [ImageRecord(r.pixels, r.label, r.source) for r in load_digits(8)
               if r.label < len(NAMES)]
    task = class_task(records, NAMES, ClassImagesConfig(image_size=8, forget_classes=[0]),
                      0, "digits01", "digits")
    x, y = to_tensor(task.full.records)
    judge, _ = train_judge(x, y, len(NAMES), JudgeConfig(epochs=5, batch_size=32,
                                                         learning_rate=5e-3))
    xv, yv = to_tensor(task.eval_splits["holdout"].records)
    assert float((predict(judge, xv) == yv).float().mean()) > 0.9
    folder = tmp_path_factory.mktemp("unlearndiffatk")
    target = trained(task, "full", folder / "target")
    oracle = trained(task, "retain", folder / "oracle")
    unlearned = copy.deepcopy(target)
    METHODS.get("esd_x", "diffusion")(**WEAK_ESD).run(unlearned, task, None, save=False)
    return World(task, judge, target, oracle, unlearned.eval())


@pytest.fixture(scope="module")
def attacked(world):
    weights = [p.detach().clone() for p in world.unlearned.parameters()]
    cls = ATTACKS.get("unlearndiffatk", "diffusion")
    result = cls(cls.config_class(**ATTACK)).run(world.context())
    print(f"unlearndiffatk: success rate {result.plain:.3f} -> {result.attacked:.3f}; oracle "
          f"{result.oracle_plain:.3f} -> {result.oracle_attacked:.3f}; {result.curve}")
    assert all(torch.equal(a, b) for a, b in
               zip(weights, world.unlearned.parameters(), strict=True))  # weights untouched
    return result


def test_the_judge_reads_the_targets_prompts_and_the_oracle_never_draws_a_zero(world):
    assert world.rate(world.target, 0) >= 0.7 and world.rate(world.target, 1) >= 0.8
    assert world.rate(world.oracle, 0) <= 0.25


def test_weak_esd_lowers_the_plain_success_rate_and_keeps_the_other_prompt(world, attacked):
    assert attacked.plain <= world.rate(world.target, 0) - 0.2
    assert world.rate(world.unlearned, 1) >= 0.75


def test_unlearndiffatk_raises_the_success_rate_with_a_hard_prompt(attacked):
    assert attacked.attacked >= attacked.plain + MARGIN
    row = attacked.curve[0]
    assert row["class"] == 0 and row["prompt"].endswith(" a digit zero")
    # it runs on the oracle too, which it cannot make draw zeros
    assert attacked.oracle_attacked is not None
    assert attacked.oracle_attacked <= attacked.attacked - MARGIN
