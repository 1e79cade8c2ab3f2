"""CLIP score (Hessel et al. 2021, "CLIPScore", EMNLP) as a registered metric: how well each
sample matches its prompt (or ``prompt_template`` filled with its class name), by a local CLIP
model folder; ``w · max(cos, 0)`` with torchmetrics' ``w = 100`` (see
:mod:`obliviate.diffusion.clip_score`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from obliviate.core.metric import Inputs, Need
from obliviate.core.recipe import StrictModel
from obliviate.core.registry import METRICS
from obliviate.core.result import MetricResult
from obliviate.diffusion import MODALITY
from obliviate.diffusion.clip_score import CLIPScorer, clip_score
from obliviate.diffusion.metrics.base import ImageMetric


class ClipScoreOptions(StrictModel):
    """Which CLIP model (a local folder), the weight ``w`` and the class-name prompt."""

    model_path: str | None = Field(default=None, description="a CLIPModel + processor folder")
    weight: float = Field(default=100.0, gt=0)
    """CLIP score scale: w x max(cos, 0) (100 as in Hessel et al. 2021)"""
    prompt_template: str = Field(default="{}", description="prompt of a class-conditioned "
                                                          "sample: its class name filled in")


@METRICS.register("clip_score", modality=MODALITY)
class ClipScore(ImageMetric):
    """CLIP score (Hessel et al. 2021) of each sample against its prompt; the mean over the
    split. Higher on the retain prompts is kept alignment; on the forget prompts, lower is
    erasure."""

    suite = "clip"
    higher_is_better = None
    options: ClipScoreOptions

    def __init__(self, options: ClipScoreOptions | dict[str, Any] | None = None,
                 embedder: Any = None) -> None:
        super().__init__(ClipScoreOptions.model_validate(options or {}))
        self.embedder = embedder
        """``(images, prompts) -> (image embeddings, text embeddings)``; by default
        :meth:`CLIPScorer.embed` of ``options.model_path``."""

    def needs(self, split: str) -> list[Need]:
        return [Need.samples(split)]

    def compute(self, inputs: Inputs, split: str) -> MetricResult:
        samples = inputs.get(Need.samples(split))
        prompts = samples.texts(self.options.prompt_template)
        if self.embedder is None:
            if not self.options.model_path:
                from obliviate.core.errors import ConfigError

                raise ConfigError("clip_score.model_path: the CLIP score needs a local CLIP "
                                  "model folder")
            self.embedder = CLIPScorer(self.options.model_path,
                                       device=samples.images.device).embed
        image, text = self.embedder(samples.images, prompts)
        scores = clip_score(image, text, self.options.weight)
        return MetricResult.from_items("clip_score", scores.tolist(), split=split,
                                       details={"weight": self.options.weight,
                                                "model": self.options.model_path})


__all__ = ["ClipScore", "ClipScoreOptions"]
