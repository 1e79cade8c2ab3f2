"""The judge's ``generation`` suite, one registered metric each.

For every class the model generates samples (the same seeded noise for every model); a
classifier trained on the real images (the judge) labels them. On split ``forget`` (the forget
classes' samples), ``retain`` (the other classes') or ``classes`` (all):

``forget_accuracy``      share of the split's samples the judge calls their intended class
``unlearning_accuracy``  UA, one minus it per sample (Fan et al. 2024, SalUn, ICLR: "UA = 1 -
                         the accuracy of the generated images of the forgotten class")
``retain_accuracy``      the same share on the retain classes: what erasure must keep
``class_accuracy``       ``accuracy_<class>`` for every class (forget classes included)
``neighbour_accuracy``   accuracy on the retain classes nearest each forget class in the judge's
                         feature space, where collateral damage shows first (the "nearby
                         concepts" that UCE, Gandikota et al. 2024, WACV, checks)
``fid`` / ``kid``        Fréchet distance (Heusel et al. 2017, NeurIPS) and KID (Bińkowski et
                         al. 2018, ICLR) between the judge features of the split's samples and of
                         the split's real held-out images

Every metric keeps its per-sample values (1/0 correctness) where they exist.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from obliviate.core.metric import Inputs, Need
from obliviate.core.recipe import StrictModel
from obliviate.core.registry import METRICS
from obliviate.core.result import MetricResult
from obliviate.diffusion import MODALITY
from obliviate.diffusion.metrics.base import ImageMetric, Judged
from obliviate.diffusion.metrics.distances import frechet_distance, kernel_inception_distance


class _JudgeMetric(ImageMetric):
    """Reads the judge on the split's samples."""

    def needs(self, split: str) -> list[Need]:
        return [Need.judge(split)]

    def judged(self, inputs: Inputs, split: str) -> Judged:
        return inputs.get(Need.judge(split))


def _where_forget_went(judged: Judged) -> dict[str, Any]:
    counts = torch.bincount(judged.predicted, minlength=len(judged.names)).tolist()
    return {"predicted_as": {judged.names[i]: int(c) for i, c in enumerate(counts) if c},
            "classes": [judged.names[c] for c in judged.forget]}


@METRICS.register("forget_accuracy", modality=MODALITY)
class ForgetAccuracy(_JudgeMetric):
    """Forget accuracy: the share of the forget classes' samples the judge calls their class
    (one minus SalUn's UA, Fan et al. 2024); ``predicted_as`` says what they look like now."""

    higher_is_better = False

    def compute(self, inputs: Inputs, split: str) -> MetricResult:
        judged = self.judged(inputs, split)
        return MetricResult.from_items("forget_accuracy", judged.correct.tolist(), split=split,
                                       higher_is_better=False, details=_where_forget_went(judged))


@METRICS.register("unlearning_accuracy", modality=MODALITY)
class UnlearningAccuracy(_JudgeMetric):
    """Unlearning accuracy UA (Fan et al. 2024, SalUn, ICLR): one minus the judge's accuracy
    on the forget classes' samples, per sample."""

    higher_is_better = True

    def compute(self, inputs: Inputs, split: str) -> MetricResult:
        judged = self.judged(inputs, split)
        return MetricResult.from_items("unlearning_accuracy",
                                       [1 - v for v in judged.correct.tolist()], split=split,
                                       higher_is_better=True, details=_where_forget_went(judged))


@METRICS.register("retain_accuracy", modality=MODALITY)
class RetainAccuracy(_JudgeMetric):
    """Retain accuracy (Fan et al. 2024, SalUn): the judge's accuracy on the retain classes'
    samples, with each class's own accuracy in ``per_class``."""

    higher_is_better = True

    def compute(self, inputs: Inputs, split: str) -> MetricResult:
        judged = self.judged(inputs, split)
        every = inputs.get(Need.judge("classes"))
        per_class = {name: float(every.correct[every.labels == c].mean())
                     for c, name in enumerate(every.names)}
        return MetricResult.from_items("retain_accuracy", judged.correct.tolist(), split=split,
                                       higher_is_better=True, details={"per_class": per_class})

    def needs(self, split: str) -> list[Need]:
        return [Need.judge(split), Need.judge("classes")]


@METRICS.register("class_accuracy", modality=MODALITY)
class ClassAccuracy(_JudgeMetric):
    """The judge's accuracy on each class's samples, ``accuracy_<class>`` (higher is better on
    the retain classes, lower on the forget classes)."""

    def compute(self, inputs: Inputs, split: str) -> list[MetricResult]:
        judged = self.judged(inputs, split)
        return [MetricResult.from_items(f"accuracy_{name}",
                                        judged.correct[judged.labels == c].tolist(), split=split,
                                        higher_is_better=c not in judged.forget)
                for c, name in enumerate(judged.names)]


@METRICS.register("neighbour_accuracy", modality=MODALITY)
class NeighbourAccuracy(_JudgeMetric):
    """Neighbour accuracy: the judge's accuracy on the retain classes whose real images lie
    nearest each forget class (feature centroids), where erasure damages first (UCE's "nearby
    concepts", Gandikota et al. 2024). ``None`` when no class is a neighbour."""

    higher_is_better = True

    def compute(self, inputs: Inputs, split: str) -> MetricResult | None:
        judged = self.judged(inputs, split)
        near = sorted({c for f in judged.forget for c in judged.neighbours.get(f, [])})
        if not near:
            return None
        mask = torch.isin(judged.labels, torch.tensor(near))
        names = judged.names
        return MetricResult.from_items(
            "neighbour_accuracy", judged.correct[mask].tolist(), split=split,
            higher_is_better=True,
            details={"neighbours": {names[f]: [names[c] for c in judged.neighbours.get(f, [])]
                                    for f in judged.forget}})


class _FeatureDistance(ImageMetric):
    """Compares the judge features of the split's samples with those of its real images."""

    higher_is_better = False

    def needs(self, split: str) -> list[Need]:
        return [Need.judge(split), Need.judge(split, real=True)]

    def features(self, inputs: Inputs, split: str) -> tuple[Any, Any]:
        return (inputs.get(Need.judge(split)).features,
                inputs.get(Need.judge(split, real=True)).features)


@METRICS.register("fid", modality=MODALITY)
class FID(_FeatureDistance):
    """Fréchet distance (Heusel et al. 2017, NeurIPS) between Gaussians fitted to the judge's
    penultimate features of the samples and of real held-out images."""

    def compute(self, inputs: Inputs, split: str) -> MetricResult:
        generated, real = self.features(inputs, split)
        return MetricResult("fid", frechet_distance(generated, real), split=split,
                            higher_is_better=False,
                            details={"features": "judge penultimate layer",
                                     "n_generated": len(generated), "n_real": len(real)})


class KidOptions(StrictModel):
    """KID's random subsets (Bińkowski et al. 2018 use 100 subsets of 1,000)."""

    subsets: int = Field(default=10, ge=1)
    """subsets KID is averaged over"""
    subset_size: int = Field(default=100, ge=2)
    """images per KID subset"""
    seed: int = 1234
    """seeds the choice of KID subsets"""


@METRICS.register("kid", modality=MODALITY)
class KID(_FeatureDistance):
    """Kernel inception distance (Bińkowski et al. 2018, ICLR): the unbiased MMD² with a cubic
    polynomial kernel on the judge features, mean (and ``std``) over random subsets."""

    options: KidOptions

    def __init__(self, options: KidOptions | dict[str, Any] | None = None) -> None:
        super().__init__(KidOptions.model_validate(options or {}))

    def compute(self, inputs: Inputs, split: str) -> MetricResult:
        generated, real = self.features(inputs, split)
        opts = self.options
        kid, std = kernel_inception_distance(generated, real, opts.subsets, opts.subset_size,
                                             seed=opts.seed)
        return MetricResult("kid", kid, split=split, higher_is_better=False,
                            details={"std": std, "subsets": opts.subsets,
                                     "subset_size": opts.subset_size})


__all__ = ["FID", "KID", "ClassAccuracy", "ForgetAccuracy", "KidOptions", "NeighbourAccuracy",
           "RetainAccuracy", "UnlearningAccuracy"]
