"""What the class-conditional image benchmarks share: the ``task`` keys of a labelled image set
(resolution, which classes to forget, the held-out fraction), the seeded split of each class
into training and held-out images, and the suite, headline numbers and report axes of the judge's
``generation`` evaluation.

Each class's images are split (seeded) into a training part and a held-out part. The forget set
is the training images of the forget classes, the retain set those of every other class; the
held-out images (``holdout`` split) train nothing: they are the real images the Fréchet
distance compares against and the judge's test set.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from obliviate.core.benchmark import Benchmark, Headline
from obliviate.core.errors import ConfigError, DataError
from obliviate.core.recipe import StrictModel
from obliviate.core.task import DataSplit, UnlearningTask
from obliviate.diffusion import MODALITY
from obliviate.diffusion.data import ImageRecord

SUITE = "generation"
IMAGE_HEADLINE = (
    Headline("UA", f"{SUITE}/forget/unlearning_accuracy"),
    Headline("retain acc", f"{SUITE}/retain/retain_accuracy"),
    Headline("neighbour acc", f"{SUITE}/retain/neighbour_accuracy"),
    Headline("FID (judge)", f"{SUITE}/retain/fid"),
    Headline("KID (judge)", f"{SUITE}/retain/kid"),
)
IMAGE_AXES = {
    # UA: 1 − the judge's accuracy on the forgotten concept, a two-sided gap to the oracle's UA
    "forgetting": ("close(*unlearning_accuracy)", "close(*forget_accuracy)"),
    "utility": ("kept(*retain_accuracy)", "kept(-*fid)"),
    # the judge's forget-concept accuracy under the strongest attack
    "robustness": ("1-recovered(attack/*/accuracy/recovery)",),
    "raw_forgetting": ("*unlearning_accuracy", "1-*forget_accuracy"),
    "raw_utility": ("*retain_accuracy", "-*fid"),
    "raw_robustness": ("1-max(attack/*/accuracy/attacked)",),
}
"""The report's axes of the judge's numbers (``*`` matches any suite/split prefix; see
:mod:`obliviate.core.axes`)."""


class ClassImagesConfig(StrictModel):
    """Which classes to forget, at which resolution, and how much of each class is held out."""

    image_size: int = Field(default=16, ge=4)
    """side of the square images, in pixels (images are resized to it)"""
    forget_classes: list[int | str] = Field(default_factory=lambda: [0], min_length=1)
    """the classes to forget, by index or name"""
    holdout_fraction: float = Field(default=0.1, ge=0, lt=1)
    """fraction of each class kept out of training (the judge's validation images)"""
    max_per_class: int | None = Field(default=None, ge=2, description="subsample each class")


def resolve_classes(wanted: list[int | str], names: list[str]) -> list[int]:
    """Class ids from ids or names (``7`` and ``"7"`` both work for digits)."""
    out = []
    for item in wanted:
        if isinstance(item, str) and item in names:
            out.append(names.index(item))
        elif isinstance(item, int) or (isinstance(item, str) and item.isdigit()):
            index = int(item)
            if not 0 <= index < len(names):
                raise ConfigError(f"task.forget_classes: class {index} out of range "
                                  f"(0..{len(names) - 1})")
            out.append(index)
        else:
            raise ConfigError(f"task.forget_classes: unknown class {item!r}; known: "
                              f"{', '.join(names[:20])}")
    if len(set(out)) == len(names):
        raise ConfigError("task.forget_classes: forgetting every class leaves nothing to retain")
    return sorted(set(out))


def class_task(records: list[ImageRecord], names: list[str], config: ClassImagesConfig,
               seed: int, label: str, source: str, channels: int = 1) -> UnlearningTask:
    """Split the labelled ``records`` (classes ``names``) into forget, retain and held out;
    ``label`` names the task (``<label>-forget-<classes>``), ``source`` the splits' provenance."""
    forget = resolve_classes(config.forget_classes, names)
    rng = np.random.default_rng(seed)
    train: list[ImageRecord] = []
    holdout: list[ImageRecord] = []
    for cls in range(len(names)):
        members = [r for r in records if r.label == cls]
        if not members:
            raise DataError(f"{label}: class {names[cls]!r} has no images")
        order = rng.permutation(len(members))
        if config.max_per_class:
            order = order[:config.max_per_class]
        n_hold = math.ceil(config.holdout_fraction * len(order)) if config.holdout_fraction else 0
        holdout += [members[i] for i in order[:n_hold]]
        train += [members[i] for i in order[n_hold:]]
    forget_records = [r for r in train if r.label in forget]
    retain_records = [r for r in train if r.label not in forget]
    shown = "+".join(names[i] for i in forget)
    return UnlearningTask(
        name=f"{label}-forget-{shown}", modality=MODALITY,
        forget=DataSplit("forget", forget_records, source=f"{source}:classes={shown}"),
        retain=DataSplit("retain", retain_records, source=f"{source}:other classes"),
        eval_splits={"holdout": DataSplit("holdout", holdout, source=f"{source}:held out")}
        if holdout else {},
        seed=seed,
        metadata={"num_classes": len(names), "class_names": names, "forget_classes": forget,
                  "image_size": config.image_size,
                  "channels": int(records[0].pixels.shape[0]) if records else channels})


class ImageBenchmark(Benchmark):
    """A labelled image set: forget whole classes; the judge's ``generation`` suite reads it."""

    config_class: ClassVar[type[StrictModel]] = ClassImagesConfig
    splits: ClassVar[dict[str, Any]] = {"forget": "forget", "retain": "retain",
                                        "holdout": "holdout"}
    suites: ClassVar[tuple[str, ...]] = (SUITE,)
    headline: ClassVar[tuple[Headline, ...]] = IMAGE_HEADLINE
    axes: ClassVar[dict[str, tuple[str, ...]]] = IMAGE_AXES
    oracle = "the same denoiser trained from scratch on the retain classes only"
    recipe = "mnist"

    def records(self, config: Any) -> tuple[list[ImageRecord], list[str]]:
        """The labelled images at ``config.image_size`` and the class names."""
        raise NotImplementedError

    def load(self, config: Any, seed: int = 0) -> UnlearningTask:
        records, names = self.records(config)
        return class_task(records, names, config, seed, self.name, self.name)


__all__ = ["IMAGE_AXES", "IMAGE_HEADLINE", "SUITE", "ClassImagesConfig", "ImageBenchmark",
           "class_task", "resolve_classes"]
