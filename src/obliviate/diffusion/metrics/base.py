"""What a diffusion metric reads: the model's samples of a split and the judge's view of them.

A session (:class:`~obliviate.diffusion.evaluation.GenerationSession`) generates every class's
samples in one seeded pass and answers each need with the part that belongs to the split:
``forget`` (the forget classes' samples), ``retain`` (the other classes'), ``classes`` (all).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from obliviate.core.metric import Metric
from obliviate.diffusion import MODALITY


@dataclass
class Samples:
    """Generated images (``[N, C, H, W]`` in [-1, 1]) and what each should show: a class id of
    ``names`` (and the prompt, for text-conditioned models)."""

    images: torch.Tensor
    labels: torch.Tensor
    names: list[str]
    prompts: list[str] | None = None

    def subset(self, mask: torch.Tensor) -> Samples:
        prompts = [p for p, keep in zip(self.prompts, mask.tolist(), strict=True) if keep] \
            if self.prompts is not None else None
        return Samples(self.images[mask], self.labels[mask], self.names, prompts)

    def texts(self, template: str = "{}") -> list[str]:
        """The prompt of each sample, else its class name through ``template``."""
        if self.prompts is not None:
            return list(self.prompts)
        return [template.format(self.names[int(c)]) for c in self.labels]


@dataclass
class Judged:
    """The judge on samples (or real images): intended ``labels``, ``predicted`` classes and
    penultimate ``features`` (``predicted`` is ``None`` where only features were computed: the
    real images); ``forget`` the forget classes and ``neighbours`` each forget class's nearest
    retain classes (in the judge's feature space)."""

    labels: torch.Tensor
    predicted: torch.Tensor | None
    features: np.ndarray
    names: list[str]
    forget: list[int] = field(default_factory=list)
    neighbours: dict[int, list[int]] = field(default_factory=dict)

    @property
    def correct(self) -> torch.Tensor:
        """1.0 where the judge names the intended class."""
        if self.predicted is None:
            raise ValueError("no judge predictions here (only features)")
        return (self.predicted == self.labels).float()

    def subset(self, mask: torch.Tensor) -> Judged:
        predicted = self.predicted[mask] if self.predicted is not None else None
        return Judged(self.labels[mask], predicted, self.features[mask.numpy()], self.names,
                      self.forget, self.neighbours)


class ImageMetric(Metric):
    """A diffusion metric of the ``generation`` suite unless it says otherwise."""

    modality: ClassVar[str] = MODALITY
    suite: ClassVar[str] = "generation"

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)


__all__ = ["ImageMetric", "Judged", "Samples"]
