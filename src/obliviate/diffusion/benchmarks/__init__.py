"""The diffusion benchmarks, each one file registered in
:data:`obliviate.core.registry.BENCHMARKS`: importing this package registers them all.

A new one (a prompt task, a styles x objects grid) is one file here that subclasses
:class:`~obliviate.diffusion.benchmarks.base.ImageBenchmark` (or
:class:`~obliviate.core.benchmark.Benchmark`), plus its name in the import below."""

from obliviate.diffusion.benchmarks import (  # noqa: F401  (registers them)
    digits,
    image_folder,
    mnist,
    styles_objects,
)
