"""A user's own labelled images as a benchmark: ``path/<class>/<images>``, any resolution
(resized to ``image_size``), gray or RGB; forget some classes by name or index."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from obliviate.core.errors import ConfigError
from obliviate.core.registry import BENCHMARKS
from obliviate.core.task import UnlearningTask
from obliviate.diffusion.benchmarks.base import ClassImagesConfig, ImageBenchmark, class_task
from obliviate.diffusion.data import ImageRecord, load_image_folder


class ImageFolderConfig(ClassImagesConfig):
    """The folder and its colour mode, besides the shared class-image keys."""

    path: str | None = Field(default=None, description="the image folder: path/<class>/<images>")
    channels: Literal[1, 3] = Field(default=1, description="1 gray, 3 RGB")


@BENCHMARKS.register("image_folder", modality="diffusion")
class ImageFolder(ImageBenchmark):
    """Your own images, one sub-folder per class."""

    config_class = ImageFolderConfig
    oracle = "the same denoiser trained from scratch on the other classes' images only"
    recipe = None

    def records(self, config: ImageFolderConfig) -> tuple[list[ImageRecord], list[str]]:
        if not config.path:
            raise ConfigError("task.path: the image_folder benchmark needs the image folder's "
                              "path")
        return load_image_folder(config.path, config.image_size, config.channels)

    def load(self, config: ImageFolderConfig, seed: int = 0) -> UnlearningTask:
        records, names = self.records(config)
        return class_task(records, names, config, seed, "folder", str(config.path),
                          config.channels)
