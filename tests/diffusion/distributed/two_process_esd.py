"""Fine-tune a tiny class-conditional denoiser, then run ESD-x, in each process of a torchrun job.

Used by ``test_distributed.py``; prints one JSON line from the main process.
"""

from __future__ import annotations

import json
import sys

import torch
from accelerate import PartialState

import obliviate.diffusion.methods  # noqa: F401  (registers the catalogue)
from obliviate.core.registry import METHODS
from obliviate.core.training import has_accelerator
from obliviate.diffusion.data import to_tensor
from obliviate.diffusion.models import ModelConfig, build_denoiser
from obliviate.diffusion.task import TaskConfig, build_task
from obliviate.diffusion.training import TrainConfig, train_denoiser

torch.set_num_threads(1)
state = PartialState(cpu=not has_accelerator())
task = build_task(TaskConfig(dataset="digits", image_size=8, forget_classes=[0]))
config = ModelConfig(channels=[16, 32], cond_dim=16, time_dim=32, sample_steps=10)
model = build_denoiser(config, 10, 8, 1, seed=0)
x, y = to_tensor(task.full.records)  # a short fine-tune (also data-parallel) gives ESD a target
train_denoiser(model, x, y, TrainConfig(steps=10, batch_size=16, learning_rate=3e-3,
                                        warmup_steps=0, ema_decay=None))
start = [float(p.detach().sum()) for _, p in model.parameter_group("xattn")]
method = METHODS.get("esd_x", "diffusion")(steps=3, batch_size=2, ddim_steps=5,
                                            learning_rate=1e-3, log_every=1)
outcome = method.run(model, task, sys.argv[1], save=state.is_main_process)


def gather(value: float) -> list[float]:
    out = [torch.zeros(1) for _ in range(state.num_processes)]
    torch.distributed.all_gather(out, torch.tensor([value]))
    return [float(v) for v in out]


total = sum(float(p.detach().double().sum()) for p in model.parameters())
first_loss = outcome.history[0]["loss"]
sums, losses = gather(total), gather(first_loss)
moved = sum(abs(a - float(p.detach().sum()))
            for a, (_, p) in zip(start, model.parameter_group("xattn"), strict=True))
if state.is_main_process:
    print(json.dumps({"processes": state.num_processes, "backend": str(state.backend),
                      "param_sums": sums, "first_losses": losses, "steps": outcome.steps,
                      "moved": moved, "model_path": outcome.model_path}))
