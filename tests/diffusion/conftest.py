"""Session fixtures: scikit-learn's 8×8 digits, a tiny class-conditional denoiser and a judge
trained on them in seconds (one torch thread), shared by every diffusion test."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch

from obliviate.diffusion.data import to_tensor
from obliviate.diffusion.judge import JudgeConfig, JudgeNet, train_judge
from obliviate.diffusion.models import Denoiser, ModelConfig, build_denoiser
from obliviate.diffusion.task import TaskConfig, build_task
from obliviate.diffusion.training import TrainConfig, train_denoiser

FORGET = 0
TINY = ModelConfig(channels=[16, 32], cond_dim=16, time_dim=32, sample_steps=10)
TINY_PROMPT = ModelConfig(architecture="prompt_unet", channels=[16, 32], cond_dim=16,
                          time_dim=32, attention_head_dim=8, sample_steps=10)
TINY_DIFFUSERS = TINY_PROMPT.model_copy(update={"architecture": "diffusers_unet"})
TRAIN = TrainConfig(steps=400, batch_size=32, learning_rate=3e-3, warmup_steps=20,
                    checkpoint_every=1000, log_every=100)


@dataclass
class Trained:
    task: object
    model: Denoiser
    judge: JudgeNet

    def fresh(self) -> Denoiser:
        return copy.deepcopy(self.model)


@pytest.fixture(scope="session")
def digits_task():
    return build_task(TaskConfig(dataset="digits", image_size=8, forget_classes=[FORGET]))


@pytest.fixture(scope="session")
def judge(digits_task) -> JudgeNet:
    x, y = to_tensor(digits_task.full.records)
    xv, yv = to_tensor(digits_task.eval_splits["holdout"].records)
    net, info = train_judge(x, y, 10, JudgeConfig(epochs=15, learning_rate=5e-3), xv, yv)
    assert info["holdout_accuracy"] > 0.9
    return net


def train_tiny(task, config: ModelConfig, train: TrainConfig = TRAIN) -> Denoiser:
    x, y = to_tensor(task.full.records)
    model = build_denoiser(config, 10, 8, 1, seed=0)
    train_denoiser(model, x, y, train)
    return model


@pytest.fixture(scope="session")
def trained(digits_task, judge) -> Trained:
    torch.set_num_threads(1)
    return Trained(digits_task, train_tiny(digits_task, TINY), judge)


@pytest.fixture(scope="session")
def trained_prompt(digits_task, judge) -> Trained:
    torch.set_num_threads(1)
    return Trained(digits_task, train_tiny(digits_task, TINY_PROMPT,
                                           TRAIN.model_copy(update={"steps": 400})), judge)


@pytest.fixture(scope="session")
def text2image(tmp_path_factory):
    """The tiny text-to-image pipeline, its UNet fine-tuned on two prompt → image pairs so that
    it tells the prompts apart (``tests/diffusion/test_text2image.py``)."""
    torch.set_num_threads(1)
    from tests.diffusion.test_text2image import tuned_pipeline

    return tuned_pipeline(tmp_path_factory.mktemp("t2i"))
