"""Evaluate a denoiser with the judge: forgetting, utility, sample quality, neighbour damage.

For every class the model generates ``samples_per_class`` images (the same seeded noise for
every model, so models differ only by their weights); a :class:`GenerationSession` judges them
once and answers the needs of the registered metrics of the ``generation`` suite
(:mod:`obliviate.diffusion.metrics.generation`):

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
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, ValidationError

from obliviate.core.benchmark import headline
from obliviate.core.errors import ConfigError
from obliviate.core.metric import Need, as_results, get_metric
from obliviate.core.recipe import EvaluationSection
from obliviate.core.result import EvalResult, MetricResult
from obliviate.core.task import UnlearningTask
from obliviate.diffusion import MODALITY
from obliviate.diffusion.benchmarks.base import SUITE
from obliviate.diffusion.data import to_tensor, to_uint8
from obliviate.diffusion.judge import JudgeConfig, JudgeNet, features, predict
from obliviate.diffusion.metrics.base import Judged, Samples
from obliviate.diffusion.metrics.generation import KidOptions
from obliviate.diffusion.metrics.unlearncanvas import SUITE as CANVAS_SUITE
from obliviate.diffusion.models import Denoiser
from obliviate.diffusion.sampling import sample
from obliviate.diffusion.task import erased_domain, forget_classes, retain_classes

# (label, summary key) of the numbers a table of diffusion results shows first: every
# registered benchmark's headline declaration (diffusion/benchmarks/), in one list
HEADLINE = headline(MODALITY)
# the generation suite: (registered metric, split), in the order its result lists them
GENERATION = (("forget_accuracy", "forget"), ("unlearning_accuracy", "forget"),
              ("retain_accuracy", "retain"), ("class_accuracy", "classes"),
              ("neighbour_accuracy", "retain"), ("fid", "retain"), ("kid", "retain"))
# UnlearnCanvas's accuracies, for a task whose classes pair two domains (styles × objects) read
# by a judge with one head per domain: over every prompt's samples
CANVAS = ("ua", "ira", "cra")
GAP_METRICS = [("forget", "unlearning_accuracy"), ("forget", "forget_accuracy"),
               ("retain", "retain_accuracy"), ("retain", "neighbour_accuracy"),
               ("retain", "fid"), ("retain", "kid")]


class EvaluationConfig(EvaluationSection):
    """How many samples, how they are drawn, and the judge."""

    samples_per_class: int = Field(default=50, ge=2)
    """generated images per class that the judge scores"""
    sample_steps: int | None = Field(default=None, ge=1, description="DDIM steps (model's)")
    guidance_scale: float | None = Field(default=None, ge=0, description="(model's)")
    batch_size: int = Field(default=250, ge=1)
    """images sampled at once"""
    neighbours: int = Field(default=2, ge=0)
    """retain classes nearest the forget classes (by judge features) scored as neighbours"""
    grid_per_class: int = Field(default=8, ge=0)
    """samples per class in samples.png (0: no image)"""
    kid_subsets: int = Field(default=10, ge=1)
    """subsets KID is averaged over"""
    kid_subset_size: int = Field(default=100, ge=2)
    """images per KID subset"""
    seed: int = Field(default=1234, description="seeds the sampling noise (same for every model)")
    judge: JudgeConfig = JudgeConfig()
    """the classifier that reads generated images (trained on forget and retain images)"""
    metrics: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """more registered diffusion metrics, each by name with its options, on ``metric_splits``:
    ``nudity_rate: {}``, ``classifier_accuracy: {path: <folder>}``, ``feature_fid: {path:
    <CLIP or DINOv2 folder>}``"""
    metric_splits: list[Literal["forget", "retain", "classes"]] = Field(
        default_factory=lambda: ["forget", "retain"])
    """the generated images those metrics score: the forget classes', the retain classes', or
    each class's on its own"""


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


class GenerationSession:
    """Answers the needs of the diffusion metrics (:class:`~obliviate.core.metric.Inputs`):
    every class's samples come from one seeded sampling pass and are judged once; a split's
    need gets its part (``forget``: the forget classes, ``retain``: the others, ``classes``:
    all). ``Need.judge(split, real=True)`` holds the judge features of the split's real
    held-out images (``reference_features``, when given, are the retain split's);
    ``Need.oracle("generation")`` the oracle's recorded result."""

    def __init__(self, model: Denoiser, judge: JudgeNet, task: UnlearningTask,
                 config: EvaluationConfig, oracle: EvalResult | None = None,
                 reference_features: np.ndarray | None = None,
                 neighbours: dict[int, list[int]] | None = None) -> None:
        self.model, self.judge, self.task, self.config = model, judge, task, config
        self.oracle = oracle
        self.names: list[str] = task.metadata["class_names"]
        self.forget = forget_classes(task)
        self.reference_features = reference_features
        self._neighbours = neighbours
        self._samples: Samples | None = None
        self._judged: Judged | None = None
        self._real: dict[str, Judged] = {}
        self._factors: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def neighbours(self) -> dict[int, list[int]]:
        if self._neighbours is None:
            self._neighbours = neighbour_classes(self.judge, self.task, self.config.neighbours)
        return self._neighbours

    def classes(self, split: str) -> list[int]:
        if split == "forget":
            return self.forget
        if split == "retain":
            return retain_classes(self.task)
        if split == "classes":
            return list(range(len(self.names)))
        raise ConfigError(f"the generation suite has no split {split!r}; known: forget, retain, "
                          "classes")

    def samples(self) -> Samples:
        if self._samples is None:
            n = self.config.samples_per_class
            labels = torch.arange(len(self.names)).repeat_interleave(n)
            images = sample(self.model, labels, steps=self.config.sample_steps,
                            guidance=self.config.guidance_scale, seed=self.config.seed,
                            batch_size=self.config.batch_size)
            self._samples = Samples(images, labels, self.names)
        return self._samples

    def judged(self) -> Judged:
        if self._judged is None:
            images = self.samples().images
            self._judged = Judged(self.samples().labels, predict(self.judge, images),
                                  features(self.judge, images).numpy(), self.names,
                                  self.forget, self.neighbours)
        return self._judged

    def real(self, split: str) -> Judged:
        if split not in self._real:
            x_ref, y_ref = reference_images(self.task)
            keep = torch.isin(y_ref, torch.tensor(self.classes(split)))
            feats = self.reference_features if split == "retain" and \
                self.reference_features is not None else features(self.judge, x_ref[keep]).numpy()
            self._real[split] = Judged(y_ref[keep], None, feats, self.names, self.forget)
        return self._real[split]

    @property
    def factored(self) -> bool:
        """Whether the task's classes pair two domains (``metadata["factors"]``, an erased
        ``target`` of the ``erase`` domain) and the judge reads each domain with its own head:
        UnlearnCanvas's accuracies apply."""
        return erased_domain(self.task, getattr(self.judge, "factors", None)) is not None and \
            "target" in self.task.metadata

    def canvas(self, split: str) -> list[Any]:
        """One :class:`~obliviate.diffusion.metrics.unlearncanvas.CanvasSample` per sample of
        ``split``'s classes: the two concepts its prompt names and each head's prediction."""
        from obliviate.diffusion.judge import predict_factors
        from obliviate.diffusion.metrics.unlearncanvas import CanvasSample

        if not self.factored:
            raise ConfigError("unlearncanvas metrics need a task whose classes pair two "
                              "domains (metadata 'factors', e.g. task.benchmark: styles_objects)")
        if self._factors is None:
            self._factors = predict_factors(self.judge, self.samples().images)
        (first, firsts), (second, seconds) = self.task.metadata["factors"].items()
        labels = self.samples().labels
        keep = torch.isin(labels, torch.tensor(self.classes(split)))
        n = len(seconds)
        return [CanvasSample(**{first: firsts[k // n], second: seconds[k % n],
                                f"predicted_{first}": firsts[a],
                                f"predicted_{second}": seconds[b]})
                for k, a, b in zip(labels[keep].tolist(), self._factors[0][keep].tolist(),
                                   self._factors[1][keep].tolist(), strict=True)]

    def get(self, need: Need) -> Any:
        if need.kind == "judge" and need.suite == CANVAS_SUITE:
            return self.canvas(need.split or "")
        if need.kind == "oracle":
            return self.oracle if need.suite == SUITE else None
        if need.kind == "judge" and need.real:
            return self.real(need.split or "")
        if need.kind == "samples" and need.real:  # the split's real held-out images
            x_ref, y_ref = reference_images(self.task)
            keep = torch.isin(y_ref, torch.tensor(self.classes(need.split or "")))
            return Samples(x_ref[keep], y_ref[keep], self.names)
        if need.kind in ("judge", "samples"):
            labels = self.samples().labels
            mask = torch.isin(labels, torch.tensor(self.classes(need.split or "")))
            return (self.judged() if need.kind == "judge" else self.samples()).subset(mask)
        raise ConfigError(f"diffusion metrics cannot be given {need.kind!r} inputs")


def oracle_gaps(result: EvalResult, oracle: EvalResult) -> None:
    """Add ``<metric>_oracle_gap`` (this model's value minus the oracle's) to ``result``."""
    for split, name in GAP_METRICS:
        key = f"{split}/{name}"
        if key in result.metrics and key in oracle.metrics:
            gap = result.metrics[key].value - oracle.metrics[key].value
            result.add(MetricResult(f"{name}_oracle_gap", gap, split=split,
                                    details={"oracle": oracle.metrics[key].value}))


def evaluate_denoiser(model: Denoiser, judge: JudgeNet, task: UnlearningTask,
                      config: EvaluationConfig, model_name: str = "model",
                      oracle: EvalResult | None = None, out_dir: str | Path | None = None,
                      reference_features: np.ndarray | None = None,
                      neighbours: dict[int, list[int]] | None = None) -> EvalResult:
    """Sample every class, judge the samples, and compute the ``generation`` suite's registered
    metrics (:data:`GENERATION`) and the gaps to the oracle."""
    start = time.perf_counter()
    session = GenerationSession(model, judge, task, config, oracle, reference_features,
                                neighbours)
    kid = KidOptions(subsets=config.kid_subsets, subset_size=config.kid_subset_size,
                     seed=config.seed)
    result = EvalResult(suite=SUITE, model=model_name, options=config.model_dump(mode="json"))
    for name, split in GENERATION:
        metric = get_metric(name, MODALITY)(kid if name == "kid" else None)
        for item in as_results(metric.compute(session, split)):
            result.add(item)
    if session.factored:
        erased = {"target": task.metadata["target"], "domain": task.metadata["erase"]}
        for name in CANVAS:
            result.add(get_metric(name, MODALITY)(erased).compute(session, "classes"))
    for name, options in config.metrics.items():
        try:
            extra = get_metric(name, MODALITY)(options)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(k) for k in first["loc"])
            raise ConfigError(f"evaluation.metrics.{name}{'.' + where if where else ''}: "
                              f"{first['msg']}") from None
        for split in config.metric_splits:
            for item in as_results(extra.compute(session, split)):
                result.add(item)
    if oracle is not None and model_name != "oracle":
        oracle_gaps(result, oracle)
    result.seconds = time.perf_counter() - start
    if out_dir is not None:
        samples = session.samples()
        save_grid(to_uint8(samples.images), samples.labels.numpy(), session.names,
                  config.grid_per_class, Path(out_dir) / "samples.png",
                  f"{model_name}: samples per class", set(session.forget))
    return result
