"""The diffusion metrics, each registered by name on
:data:`obliviate.core.registry.METRICS` (modality ``diffusion``): importing this package
registers them all.

* :mod:`.generation`: the judge's ``generation`` suite: forget and unlearning accuracy, retain
  accuracy, per-class accuracy, neighbour accuracy, FID and KID on judge features.
* :mod:`.clip`: the CLIP score of samples against their prompts.
* :mod:`.nudity`: NudeNet's nudity rate; :mod:`.classifier`: a local image classifier's
  accuracy against the intended object or style; :mod:`.feature_distance`: the Fréchet distance
  on a CLIP or DINOv2 folder's features; :mod:`.inception`: FID on Inception-v3 pool3 features
  from a local weights file (pytorch-fid's or torchvision's); :mod:`.unlearncanvas`:
  UnlearnCanvas's UA, IRA, CRA.
* :mod:`.distances`: the Fréchet distance and KID formulas the metrics share.

A new metric is one file here (a :class:`~obliviate.diffusion.metrics.base.ImageMetric`
subclass with ``@METRICS.register(name, modality="diffusion")``) plus its name in the import
below; its needs (``Need.samples``, ``Need.judge``, ``Need.oracle``) are resolved by
:class:`~obliviate.diffusion.evaluation.GenerationSession`.
"""

from obliviate.diffusion.metrics import (  # noqa: F401  (registers them)
    classifier,
    clip,
    feature_distance,
    generation,
    inception,
    nudity,
    unlearncanvas,
)
from obliviate.diffusion.metrics.distances import (
    frechet_distance,
    kernel_inception_distance,
    polynomial_mmd2,
)

__all__ = ["frechet_distance", "kernel_inception_distance", "polynomial_mmd2"]
