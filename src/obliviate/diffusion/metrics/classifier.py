"""Accuracy of generated images under a local transformers image classifier: does the image
show the object or style its prompt asked for?

Any folder that ``AutoModelForImageClassification`` and ``AutoImageProcessor`` load works: the
ImageNet ResNet-50 that ESD (Gandikota et al., ICCV 2023, ``imageclassify.py``: torchvision
ResNet-50 top-1 on Imagenette prompts) and UnlearnDiffAtk (Zhang et al., ECCV 2024,
``object_eval.py``: ``microsoft/resnet-50`` through transformers) judge object erasure with, or
a ViT fine-tuned on styles or objects as UnlearnCanvas's classifiers are (Zhang et al. 2024).
The folder's own processor prepares the images (resize, crop, normalisation), the prediction
is the top-1 class, and the intended label is a class index or a class name: an exact
``id2label`` name, or any of its comma-separated synonyms (ImageNet's ``"church, church
building"``), compared case-insensitively with underscores read as spaces (``"garbage_truck"``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from obliviate.core.errors import ConfigError, ModelLoadError
from obliviate.core.metric import Inputs, Need
from obliviate.core.recipe import StrictModel
from obliviate.core.registry import METRICS
from obliviate.core.result import MetricResult
from obliviate.diffusion import MODALITY
from obliviate.diffusion.data import to_rgb_uint8
from obliviate.diffusion.metrics.base import ImageMetric

Label = int | str


def _key(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


class VisionFolder:
    """A local transformers vision model folder and its image processor, on ``device``
    (``auto``: the transformers auto class that loads it, ``what`` names it in errors)."""

    auto = "AutoModel"
    what = "a vision model"

    def __init__(self, path: str | Path, device: Any = "cpu") -> None:
        try:
            import transformers

            self.model = getattr(transformers, self.auto).from_pretrained(str(path))
            self.processor = transformers.AutoImageProcessor.from_pretrained(str(path))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path}: cannot load {self.what} and its image processor "
                                 f"({str(exc).splitlines()[0]})") from None
        self.model.eval().to(device)
        self.device, self.path = torch.device(device), str(path)

    def pixel_batches(self, images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
        """``[N, C, H, W]`` images in [−1, 1] through the folder's processor, a batch at a
        time, on the model's device."""
        try:
            pixels = list(to_rgb_uint8(images))
        except ValueError as exc:
            raise ConfigError(f"{self.path}: {exc}") from None
        for start in range(0, len(pixels), batch_size):
            batch = self.processor(images=pixels[start:start + batch_size],
                                   return_tensors="pt", input_data_format="channels_last")
            yield batch["pixel_values"].to(self.device)


class ImageClassifier(VisionFolder):
    """A local image-classification folder (``AutoModelForImageClassification``)."""

    auto = "AutoModelForImageClassification"
    what = "an image classifier"

    def __init__(self, path: str | Path, device: Any = "cpu") -> None:
        super().__init__(path, device)
        names = {int(i): str(n) for i, n in self.model.config.id2label.items()}
        self.id2label = names
        self._lookup: dict[str, int] = {}
        for i, name in sorted(names.items()):
            for alias in [name, *name.split(",")]:
                self._lookup.setdefault(_key(alias), i)

    def label_index(self, label: Label) -> int:
        """A class index, or a class name / synonym (see the module doc) as its index."""
        if isinstance(label, int):
            if label not in self.id2label:
                raise ConfigError(f"{self.path}: class index {label} is not one of the "
                                  f"classifier's 0..{len(self.id2label) - 1}")
            return label
        index = self._lookup.get(_key(label))
        if index is None:
            shown = ", ".join(list(self.id2label.values())[:8])
            raise ConfigError(f"{self.path}: no class named {label!r}; classes: {shown}"
                              f"{', ...' if len(self.id2label) > 8 else ''}")
        return index

    @torch.no_grad()
    def logits(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """``[N, classes]`` logits of ``[N, C, H, W]`` images in [−1, 1]."""
        out = [self.model(pixel_values=x).logits.float().cpu()
               for x in self.pixel_batches(images, batch_size)]
        return torch.cat(out) if out else torch.zeros(0, len(self.id2label))


def classifier_accuracy(logits: torch.Tensor, labels: Sequence[int],
                        id2label: dict[int, str] | None = None,
                        name: str = "classifier_accuracy") -> MetricResult:
    """Top-1 accuracy of ``logits`` against the intended ``labels`` (indices): 1/0 per image,
    with what the images were classified as."""
    if len(labels) != len(logits):
        raise ConfigError(f"image classifier: {len(logits)} images but {len(labels)} labels")
    predicted = logits.argmax(-1).tolist()
    items = [float(p == y) for p, y in zip(predicted, labels, strict=True)]
    names = id2label or {}
    counts: dict[str, int] = {}
    for p in predicted:
        key = names.get(p, str(p))
        counts[key] = counts.get(key, 0) + 1
    value = sum(items) / len(items) if items else float("nan")
    return MetricResult(name, value, per_item=items, higher_is_better=None,
                        details={"predicted": predicted, "predicted_as": counts})


class ClassifierOptions(StrictModel):
    """The classifier folder, and which of its classes each sample's class should show."""

    path: str = Field(description="local transformers image-classification folder")
    label_map: dict[str, int | str] = Field(
        default_factory=dict, description="sample class name -> classifier class (index or "
        "name); a class not listed is looked up by its own name")
    batch_size: int = Field(default=32, ge=1)
    """images classified at once"""


@METRICS.register("classifier_accuracy", modality=MODALITY)
class ClassifierAccuracy(ImageMetric):
    """Top-1 accuracy of generated images against their intended object or style under a
    local image classifier (ESD, Gandikota et al. 2023; UnlearnDiffAtk, Zhang et al. 2024)."""

    suite = "classifier"
    higher_is_better = None  # low on the erased concept, high on the kept ones
    options: ClassifierOptions

    def __init__(self, options: ClassifierOptions | dict[str, Any],
                 classifier: ImageClassifier | None = None) -> None:
        super().__init__(ClassifierOptions.model_validate(options))
        self.classifier = classifier
        """The loaded classifier (by default :class:`ImageClassifier` of ``options.path``)."""

    def needs(self, split: str) -> list[Need]:
        return [Need.samples(split)]

    def compute(self, inputs: Inputs, split: str) -> MetricResult:
        samples = inputs.get(Need.samples(split))
        if self.classifier is None:
            self.classifier = ImageClassifier(self.options.path, samples.images.device)
        clf = self.classifier
        names = [samples.names[int(c)] for c in samples.labels]
        labels = [clf.label_index(self.options.label_map.get(n, n)) for n in names]
        result = classifier_accuracy(clf.logits(samples.images, self.options.batch_size),
                                     labels, clf.id2label)
        result.split = split
        return result
