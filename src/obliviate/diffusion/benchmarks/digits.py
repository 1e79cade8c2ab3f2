"""scikit-learn's 8×8 digits (Alpaydin & Kaynak 1998, UCI) as a benchmark: 1,797 images,
small and fast enough for tests and the quickest CPU runs."""

from __future__ import annotations

from obliviate.core.registry import BENCHMARKS
from obliviate.diffusion.benchmarks.base import ClassImagesConfig, ImageBenchmark
from obliviate.diffusion.data import ImageRecord, load_digits


@BENCHMARKS.register("digits", modality="diffusion")
class Digits(ImageBenchmark):
    """scikit-learn's 1,797 8×8 digits, forget some digits."""

    config_class = ClassImagesConfig
    recipe = None  # the tests' and quickest runs' data: the mnist recipe with task.benchmark=digits

    def records(self, config: ClassImagesConfig) -> tuple[list[ImageRecord], list[str]]:
        return load_digits(config.image_size), [str(i) for i in range(10)]
