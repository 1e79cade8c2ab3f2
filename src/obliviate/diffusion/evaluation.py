"""Evaluate a denoiser with the judge: forgetting, utility, sample quality, neighbour damage.

For every class the model generates ``samples_per_class`` images (the same seeded noise for
every model, so models differ only by their weights). The judge then gives

``forget/forget_accuracy``        fraction of forget-class samples the judge calls the forget
                                  class; ``forget/unlearning_accuracy`` is one minus it (UA)
``retain/retain_accuracy``        fraction of retain-class samples recognised as their class
``classes/accuracy_<name>``       the same per class (forget classes included)
``retain/fid``, ``retain/kid``    Fréchet distance and KID between the judge features of the
                                  retain-class samples and of real held-out retain images
``retain/neighbour_accuracy``     accuracy on the ``neighbours`` retain classes nearest each
                                  forget class (class centroids of real images in the judge's
                                  feature space): where collateral damage shows first
``*_oracle_gap``                  each of those minus the oracle's value, when the oracle has
                                  been evaluated

Every metric keeps its per-sample values (1/0 correctness) where they exist. The samples are
also drawn as a grid, one row per class: ``eval/<model>/samples.png``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from obliviate.core.recipe import StrictModel
from obliviate.core.result import EvalResult, MetricResult
from obliviate.core.task import UnlearningTask
from obliviate.diffusion.data import to_tensor, to_uint8
from obliviate.diffusion.judge import JudgeConfig, JudgeNet, features, predict
from obliviate.diffusion.metrics import frechet_distance, kernel_inception_distance
from obliviate.diffusion.models import Denoiser
from obliviate.diffusion.sampling import sample
from obliviate.diffusion.task import forget_classes, retain_classes

SUITE = "generation"
# (label, summary key) of the numbers a table of diffusion results shows first
HEADLINE = [
    ("UA", f"{SUITE}/forget/unlearning_accuracy"),
    ("retain acc", f"{SUITE}/retain/retain_accuracy"),
    ("neighbour acc", f"{SUITE}/retain/neighbour_accuracy"),
    ("FID (judge)", f"{SUITE}/retain/fid"),
    ("KID (judge)", f"{SUITE}/retain/kid"),
]
GAP_METRICS = [("forget", "unlearning_accuracy"), ("forget", "forget_accuracy"),
               ("retain", "retain_accuracy"), ("retain", "neighbour_accuracy"),
               ("retain", "fid"), ("retain", "kid")]


class EvaluationConfig(StrictModel):
    """How many samples, how they are drawn, and the judge."""

    samples_per_class: int = Field(default=50, ge=2)
    sample_steps: int | None = Field(default=None, ge=1, description="DDIM steps (model's)")
    guidance_scale: float | None = Field(default=None, ge=0, description="(model's)")
    batch_size: int = Field(default=250, ge=1)
    neighbours: int = Field(default=2, ge=0)
    grid_per_class: int = Field(default=8, ge=0)
    kid_subsets: int = Field(default=10, ge=1)
    kid_subset_size: int = Field(default=100, ge=2)
    seed: int = Field(default=1234, description="seeds the sampling noise (same for every model)")
    judge: JudgeConfig = JudgeConfig()


def reference_images(task: UnlearningTask) -> tuple[torch.Tensor, torch.Tensor]:
    """Real images no model trained on (held out), or the retain set when there are none."""
    split = task.eval_splits.get("holdout")
    records = split.records if split is not None and len(split) else task.retain.records
    return to_tensor(records)


def neighbour_classes(judge: JudgeNet, task: UnlearningTask, k: int) -> dict[int, list[int]]:
    """For each forget class, the ``k`` retain classes with the nearest feature centroids."""
    x, y = reference_images(task)
    x_all, y_all = to_tensor(list(task.forget.records) + list(task.retain.records))
    x, y = torch.cat([x, x_all]), torch.cat([y, y_all])
    feats = features(judge, x)
    centroids = {c: feats[y == c].mean(0) for c in range(task.metadata["num_classes"])
                 if (y == c).any()}
    out = {}
    for f in forget_classes(task):
        if f not in centroids:
            out[f] = []
            continue
        dist = sorted((float((centroids[c] - centroids[f]).norm()), c)
                      for c in retain_classes(task) if c in centroids)
        out[f] = [c for _, c in dist[:k]]
    return out


def save_grid(images: np.ndarray, labels: np.ndarray, names: list[str], per_class: int,
              path: Path, title: str, marked: set[int]) -> Path | None:
    """One row per class, ``per_class`` samples each (forget-class rows marked with ✗)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = sorted(set(labels.tolist()))
    if not classes or per_class == 0:
        return None
    fig, axes = plt.subplots(len(classes), per_class, squeeze=False,
                             figsize=(0.6 * per_class + 0.8, 0.6 * len(classes) + 0.4))
    for row, c in enumerate(classes):
        picks = np.flatnonzero(labels == c)[:per_class]
        for col in range(per_class):
            ax = axes[row][col]
            ax.axis("off")
            if col < len(picks):
                img = images[picks[col]]
                cmap = "gray" if img.shape[0] == 1 else None
                ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap=cmap,
                          vmin=0, vmax=255)
        label = names[c] + (" ✗" if c in marked else "")
        axes[row][0].text(-0.3, 0.5, label, transform=axes[row][0].transAxes, ha="right",
                          va="center", fontsize=8, color="crimson" if c in marked else "black")
    fig.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def evaluate_denoiser(model: Denoiser, judge: JudgeNet, task: UnlearningTask,
                      config: EvaluationConfig, model_name: str = "model",
                      oracle: EvalResult | None = None, out_dir: str | Path | None = None,
                      reference_features: np.ndarray | None = None,
                      neighbours: dict[int, list[int]] | None = None) -> EvalResult:
    """Sample every class, judge the samples, and compute the metrics listed above."""
    start = time.perf_counter()
    names: list[str] = task.metadata["class_names"]
    forget, retain = forget_classes(task), retain_classes(task)
    n = config.samples_per_class
    labels = torch.arange(len(names)).repeat_interleave(n)
    images = sample(model, labels, steps=config.sample_steps, guidance=config.guidance_scale,
                    seed=config.seed, batch_size=config.batch_size)
    pred = predict(judge, images)
    feats = features(judge, images).numpy()
    correct = (pred == labels).float()
    if reference_features is None:
        x_ref, y_ref = reference_images(task)
        keep = torch.isin(y_ref, torch.tensor(retain))
        reference_features = features(judge, x_ref[keep]).numpy()
    if neighbours is None:
        neighbours = neighbour_classes(judge, task, config.neighbours)

    result = EvalResult(suite=SUITE, model=model_name, options=config.model_dump(mode="json"))
    is_forget = torch.isin(labels, torch.tensor(forget))
    is_retain = ~is_forget
    forget_items = correct[is_forget].tolist()
    where = torch.bincount(pred[is_forget], minlength=len(names)).tolist()
    details = {"predicted_as": {names[i]: int(c) for i, c in enumerate(where) if c},
               "classes": [names[c] for c in forget]}
    result.add(MetricResult.from_items("forget_accuracy", forget_items, split="forget",
                                       higher_is_better=False, details=details))
    result.add(MetricResult.from_items("unlearning_accuracy", [1 - v for v in forget_items],
                                       split="forget", higher_is_better=True, details=details))
    per_class = {names[c]: float(correct[labels == c].mean()) for c in range(len(names))}
    result.add(MetricResult.from_items("retain_accuracy", correct[is_retain].tolist(),
                                       split="retain", higher_is_better=True,
                                       details={"per_class": per_class}))
    for c in range(len(names)):
        result.add(MetricResult.from_items(f"accuracy_{names[c]}",
                                           correct[labels == c].tolist(), split="classes",
                                           higher_is_better=c not in forget))
    near = sorted({c for f in forget for c in neighbours.get(f, [])})
    if near:
        mask = torch.isin(labels, torch.tensor(near))
        result.add(MetricResult.from_items(
            "neighbour_accuracy", correct[mask].tolist(), split="retain", higher_is_better=True,
            details={"neighbours": {names[f]: [names[c] for c in neighbours.get(f, [])]
                                    for f in forget}}))
    generated = feats[is_retain.numpy()]
    result.add(MetricResult("fid", frechet_distance(generated, reference_features),
                            split="retain", higher_is_better=False,
                            details={"features": "judge penultimate layer",
                                     "n_generated": len(generated),
                                     "n_real": len(reference_features)}))
    kid, kid_std = kernel_inception_distance(generated, reference_features, config.kid_subsets,
                                             config.kid_subset_size, seed=config.seed)
    result.add(MetricResult("kid", kid, split="retain", higher_is_better=False,
                            details={"std": kid_std, "subsets": config.kid_subsets,
                                     "subset_size": config.kid_subset_size}))
    if oracle is not None and model_name != "oracle":
        for split, name in GAP_METRICS:
            key = f"{split}/{name}"
            if key in result.metrics and key in oracle.metrics:
                gap = result.metrics[key].value - oracle.metrics[key].value
                result.add(MetricResult(f"{name}_oracle_gap", gap, split=split,
                                        details={"oracle": oracle.metrics[key].value}))
    result.seconds = time.perf_counter() - start
    if out_dir is not None:
        save_grid(to_uint8(images), labels.numpy(), names, config.grid_per_class,
                  Path(out_dir) / "samples.png", f"{model_name}: samples per class",
                  set(forget))
    return result
