"""The judge: a small CNN classifier trained on the task's real images.

It decides which class a generated image shows (unlearning accuracy, retain accuracy, attack
success), and its penultimate layer is the feature space of the Fréchet distance and KID — the
role the Inception network plays for ImageNet-scale models (Heusel et al. 2017; Bińkowski et
al. 2018), and a ResNet classifier plays in the SA, SalUn and EraseDiff DDPM evaluations.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from obliviate.core.errors import ModelLoadError
from obliviate.core.io import atomic_write_json, read_json, writing
from obliviate.core.recipe import StrictModel
from obliviate.core.safety import check_safetensors

FORMAT = "obliviate-judge"


class JudgeConfig(StrictModel):
    """Architecture and training of the judge (Adam; ±1-pixel random shifts as augmentation)."""

    width: int = Field(default=16, ge=4)
    """channels of the first convolution (doubled after)"""
    feature_dim: int = Field(default=64, ge=2)
    """size of the feature layer (FID/KID and neighbour features)"""
    epochs: int = Field(default=6, ge=1)
    """passes over forget and retain images"""
    batch_size: int = Field(default=128, ge=1)
    """images per training step"""
    learning_rate: float = Field(default=2e-3, gt=0)
    """Adam's learning rate"""
    augment_shift: int = Field(default=1, ge=0)
    """random shift of training images, in pixels (augmentation)"""
    seed: int = 0
    """seed of the judge's initialisation and data order"""


class JudgeNet(nn.Module):
    """conv–conv–pool–conv–pool–linear(features)–linear(classes).

    With ``factors=(a, b)`` the classes are the pairs of two domains (class ``k`` is
    ``(k // b, k % b)``, e.g. a style and an object) and the judge has one head per domain: its
    class scores are ``log p(k // b) + log p(k % b)``, so the cross-entropy on them is the sum
    of the two heads' cross-entropies and :func:`predict_factors` reads each head alone."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int, width: int = 32,
                 feature_dim: int = 64, factors: tuple[int, int] | None = None) -> None:
        super().__init__()
        if factors is not None and factors[0] * factors[1] != num_classes:
            raise ValueError(f"factors {factors} do not multiply to {num_classes} classes")
        self.factors = tuple(factors) if factors is not None else None
        self.spec = {"in_channels": in_channels, "num_classes": num_classes,
                     "image_size": image_size, "width": width, "feature_dim": feature_dim,
                     **({"factors": list(self.factors)} if self.factors else {})}
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        side = image_size // 4
        self.fc = nn.Linear(2 * width * side * side, feature_dim)
        self.head = nn.Linear(feature_dim, sum(self.factors) if self.factors else num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (the Fréchet distance / KID feature space)."""
        return F.relu(self.fc(self.conv(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(F.dropout(self.features(x), 0.2, self.training))
        if self.factors is None:
            return logits
        first, second = self.split_heads(logits)
        return (first.log_softmax(1)[:, :, None] + second.log_softmax(1)[:, None, :]).flatten(1)

    def split_heads(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two heads' logits of a factored judge."""
        assert self.factors is not None
        return logits[:, :self.factors[0]], logits[:, self.factors[0]:]


def _shift(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    if k <= 0:
        return x
    dx, dy = (int(v) for v in torch.randint(-k, k + 1, (2,), generator=gen))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def train_judge(x: torch.Tensor, y: torch.Tensor, num_classes: int, config: JudgeConfig,
                x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None,
                factors: tuple[int, int] | None = None) -> tuple[JudgeNet, dict[str, Any]]:
    """Train on images in [-1, 1]; report held-out accuracy when ``x_val`` is given.
    ``factors``: a two-head judge of paired classes (see :class:`JudgeNet`)."""
    with torch.random.fork_rng(devices=[]):  # dropout and init: seeded, global RNG untouched
        torch.manual_seed(config.seed)
        return _train_judge(x, y, num_classes, config, x_val, y_val, factors)


def _train_judge(x: torch.Tensor, y: torch.Tensor, num_classes: int, config: JudgeConfig,
                 x_val: torch.Tensor | None, y_val: torch.Tensor | None,
                 factors: tuple[int, int] | None = None) -> tuple[JudgeNet, dict[str, Any]]:
    gen = torch.Generator().manual_seed(config.seed)
    net = JudgeNet(x.shape[1], num_classes, x.shape[-1], config.width, config.feature_dim,
                   factors)
    net.to(x.device)
    opt = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    steps_per_epoch = math.ceil(len(x) / config.batch_size)
    total = config.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.learning_rate, total_steps=total)
    start = time.perf_counter()
    net.train()
    with tqdm(total=total, desc="judge", unit="step", dynamic_ncols=True, disable=None) as bar:
        for _ in range(config.epochs):
            order = torch.randperm(len(x), generator=gen).to(x.device)
            for i in range(steps_per_epoch):
                idx = order[i * config.batch_size:(i + 1) * config.batch_size]
                loss = F.cross_entropy(net(_shift(x[idx], config.augment_shift, gen)), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
    net.eval()
    info: dict[str, Any] = {"seconds": time.perf_counter() - start, "train_size": len(x),
                            "final_loss": float(loss.detach()), "epochs": config.epochs}
    if x_val is not None and y_val is not None and len(x_val):
        info["holdout_accuracy"] = float((predict(net, x_val) == y_val.cpu()).float().mean())
        info["holdout_size"] = len(x_val)
    return net, info


@torch.no_grad()
def predict(net: JudgeNet, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    dev = next(net.parameters()).device
    return torch.cat([net(x[i:i + batch_size].to(dev)).argmax(1).cpu()
                      for i in range(0, len(x), batch_size)])


@torch.no_grad()
def predict_factors(net: JudgeNet, x: torch.Tensor, batch_size: int = 1024
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each head's prediction of a factored judge: ``(first domain, second domain)``."""
    if net.factors is None:
        raise ValueError("predict_factors needs a judge built with factors")
    dev = next(net.parameters()).device
    parts = [net.split_heads(net.head(net.features(x[i:i + batch_size].to(dev))))
             for i in range(0, len(x), batch_size)]
    return (torch.cat([a.argmax(1).cpu() for a, _ in parts]),
            torch.cat([b.argmax(1).cpu() for _, b in parts]))


@torch.no_grad()
def features(net: JudgeNet, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    dev = next(net.parameters()).device
    return torch.cat([net.features(x[i:i + batch_size].to(dev)).cpu()
                      for i in range(0, len(x), batch_size)])


def save_judge(net: JudgeNet, path: str | Path, info: dict[str, Any]) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with writing(path / "judge.safetensors", "the judge"):
        save_file({k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()},
                  str(path / "judge.safetensors"))
    atomic_write_json(path / "config.json", {"format": FORMAT, **net.spec, "info": info})
    return path


def load_judge(path: str | Path, device: Any = None) -> tuple[JudgeNet, dict[str, Any]]:
    path = Path(path)
    if not (path / "config.json").is_file() or not (path / "judge.safetensors").is_file():
        raise ModelLoadError(f"{path}: no judge here (run `obliviate finetune` first)")
    spec = read_json(path / "config.json")
    if spec.get("format") != FORMAT:
        raise ModelLoadError(f"{path}/config.json: not an obliviate judge")
    net = JudgeNet(spec["in_channels"], spec["num_classes"], spec["image_size"], spec["width"],
                   spec["feature_dim"], spec.get("factors"))
    check_safetensors(path / "judge.safetensors")
    net.load_state_dict(load_file(str(path / "judge.safetensors")))
    net.eval()
    return (net.to(device) if device is not None else net), spec.get("info", {})
