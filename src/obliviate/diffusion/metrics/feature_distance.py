"""Fréchet distance in the feature space of a pretrained image model the user supplies.

FID (Heusel et al., NeurIPS 2017) fits a Gaussian to the Inception-v3 pool features of real
and of generated images. Stein et al. ("Exposing flaws of generative model evaluation metrics
and their unfair treatment of diffusion models", NeurIPS 2023) found DINOv2 ViT-L/14 features
rank generated images closer to human judgement (FD_DINOv2), and Kynkäänniemi et al. (ICLR
2023) that Inception FID can be moved by ImageNet class cues; CLIP features are the other usual
choice (FD_CLIP). Here any local transformers folder supplies the features:

* a CLIP model (``CLIPModel``, or ``CLIPVisionModelWithProjection``): the projected image
  embedding;
* DINOv2 (``Dinov2Model``) or any vision backbone with a pooled output: ``pooler_output``
  (DINOv2's layer-normed CLS token); else the first token of ``last_hidden_state``.

Images go through the folder's own processor. The distance is the same function as the judge
feature FID (:func:`obliviate.diffusion.metrics.frechet_distance`), so the two agree wherever
their features do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pydantic import Field

from obliviate.core.metric import Inputs, Need
from obliviate.core.recipe import StrictModel
from obliviate.core.registry import METRICS
from obliviate.core.result import MetricResult
from obliviate.diffusion import MODALITY
from obliviate.diffusion.metrics.base import ImageMetric
from obliviate.diffusion.metrics.classifier import VisionFolder
from obliviate.diffusion.metrics.distances import frechet_distance


class FeatureExtractor(VisionFolder):
    """Image features from a local transformers folder (CLIP, DINOv2, any vision backbone)."""

    def _embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if hasattr(self.model, "get_image_features"):  # CLIPModel, SiglipModel: projected
            out = self.model.get_image_features(pixel_values=pixel_values)
            return getattr(out, "pooler_output", out)
        out = self.model(pixel_values=pixel_values)
        for name in ("image_embeds", "pooler_output"):
            value = getattr(out, name, None)
            if value is not None:
                return value
        return out.last_hidden_state[:, 0]

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 32) -> np.ndarray:
        """``[N, D]`` float64 features of ``[N, C, H, W]`` images in [−1, 1]."""
        out = [self._embed(x).float().flatten(1).cpu().numpy().astype(np.float64)
               for x in self.pixel_batches(images, batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 0))


def feature_fid(generated: np.ndarray, reference: np.ndarray, features: str = "",
                name: str = "feature_fid") -> MetricResult:
    """The Fréchet distance between two feature sets, with what they were."""
    return MetricResult(name, frechet_distance(generated, reference), higher_is_better=False,
                        details={"features": features, "n_generated": len(generated),
                                 "n_real": len(reference)})


class FeatureDistanceOptions(StrictModel):
    """The feature model's folder (a CLIP or DINOv2 checkpoint downloaded once)."""

    path: str = Field(description="local transformers vision model folder (CLIP, DINOv2)")
    batch_size: int = Field(default=32, ge=1)
    """images embedded at once"""


@METRICS.register("feature_fid", modality=MODALITY)
class FeatureFID(ImageMetric):
    """Fréchet distance (Heusel et al. 2017) between real and generated images in a user-
    supplied model's feature space: FD_DINOv2 / FD_CLIP (Stein et al. 2023)."""

    suite = "feature_distance"
    higher_is_better = False
    options: FeatureDistanceOptions
    options_class: type[StrictModel] = FeatureDistanceOptions

    def __init__(self, options: StrictModel | dict[str, Any],
                 extractor: Callable[[torch.Tensor, int], np.ndarray] | None = None) -> None:
        super().__init__(self.options_class.model_validate(options))
        self.extractor = extractor
        """``(images, batch size) -> [N, D] features``; by default :meth:`make_extractor`'s."""

    def make_extractor(self, device: Any) -> Callable[[torch.Tensor, int], np.ndarray]:
        """The features of ``options.path`` (a subclass reads another kind of model)."""
        return FeatureExtractor(self.options.path, device)

    def needs(self, split: str) -> list[Need]:
        return [Need.samples(split), Need.samples(split, real=True)]

    def compute(self, inputs: Inputs, split: str) -> MetricResult:
        generated = inputs.get(Need.samples(split)).images
        real = inputs.get(Need.samples(split, real=True)).images
        if self.extractor is None:
            self.extractor = self.make_extractor(generated.device)
        batch = self.options.batch_size
        result = feature_fid(self.extractor(generated, batch), self.extractor(real, batch),
                             self.options.path, self.name)
        result.split = split
        return result
