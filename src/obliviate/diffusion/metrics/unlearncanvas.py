"""UnlearnCanvas's accuracies (Zhang et al., "UnlearnCanvas: Stylized Image Dataset for Enhanced
Machine Unlearning Evaluation in Diffusion Models", NeurIPS 2024 Datasets and Benchmarks).

Every model answers a grid of prompts, one per (style, object) pair ("An {object} image in
{style} style."), and a style classifier and an object classifier judge each image. With one
unlearning target (a style or an object):

``ua``   unlearning accuracy: the share of the images whose prompt names the target that are
         *not* classified as the target (by the target domain's classifier);
``ira``  in-domain retain accuracy: every other concept of the target's domain, the accuracy of
         the target domain's classifier on its images, averaged over those concepts;
``cra``  cross-domain retain accuracy: every concept of the other domain, the accuracy of the
         other domain's classifier on its images that do not name the target, averaged over
         those concepts.

These follow the repository's ``machine_unlearning/README.md``: "any images generated involving
the unlearned target will be considered for unlearning accuracy ... For other images, the
retaining accuracy associated with each style/class will be calculated separately ... averaged
as the in-domain retaining accuracy, and ... all the objects are averaged as the out-of-domain
retaining accuracy". The script that averages them is not published; here the retain
accuracies are the mean of per-concept accuracies (equal to the per-image mean when every
concept has as many images, as in the benchmark's full grid).

Each result keeps its per-image 1/0 values (``per_item``, in the order of the samples used) and
the per-concept accuracies (``details["per_concept"]``).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from obliviate.core.errors import DataError
from obliviate.core.metric import Inputs, Need
from obliviate.core.recipe import StrictModel
from obliviate.core.registry import METRICS
from obliviate.core.result import MetricResult
from obliviate.diffusion import MODALITY
from obliviate.diffusion.metrics.base import ImageMetric

Domain = Literal["style", "object"]
SUITE = "unlearncanvas"


@dataclass(frozen=True)
class CanvasSample:
    """One generated image: the style and object its prompt names, and what the style and
    object classifiers call it (``None`` where that classifier was not run). Labels are any
    hashable values (names or class indices), compared with ``==``."""

    style: Hashable
    object: Hashable
    predicted_style: Hashable | None = None
    predicted_object: Hashable | None = None

    def concept(self, domain: Domain) -> Hashable:
        return self.style if domain == "style" else self.object

    def predicted(self, domain: Domain) -> Hashable | None:
        return self.predicted_style if domain == "style" else self.predicted_object


def _other(domain: Domain) -> Domain:
    return "object" if domain == "style" else "style"


def infer_domain(samples: Sequence[CanvasSample], target: Hashable) -> Domain:
    """The domain whose concepts include ``target`` (an error when neither or both do)."""
    found = [d for d in ("style", "object") if any(s.concept(d) == target for s in samples)]
    if len(found) != 1:
        where = "no prompt names it" if not found else "it is both a style and an object"
        raise DataError(f"unlearncanvas: cannot tell the domain of target {target!r}: {where}; "
                        "give domain: style or object")
    return found[0]  # type: ignore[return-value]


def _correct(sample: CanvasSample, domain: Domain) -> float:
    predicted = sample.predicted(domain)
    if predicted is None:
        raise DataError(f"unlearncanvas: a sample ({sample.style!r}, {sample.object!r}) has no "
                        f"{domain} prediction; run the {domain} classifier on every sample")
    return float(predicted == sample.concept(domain))


def _retain(name: str, samples: Sequence[CanvasSample], domain: Domain, target: Hashable,
            target_domain: Domain) -> MetricResult:
    """Per-concept accuracy of ``domain``'s classifier on the samples not naming the target,
    averaged over the concepts (the target itself excluded)."""
    used = [s for s in samples if s.concept(target_domain) != target]
    items = [_correct(s, domain) for s in used]
    groups: dict[Hashable, list[float]] = {}
    for sample, ok in zip(used, items, strict=True):
        groups.setdefault(sample.concept(domain), []).append(ok)
    per_concept = {str(c): sum(v) / len(v) for c, v in groups.items()}
    value = sum(per_concept.values()) / len(per_concept) if per_concept else float("nan")
    return MetricResult(name, value, per_item=items, higher_is_better=True,
                        details={"per_concept": per_concept, "domain": domain,
                                 "target": str(target), "target_domain": target_domain,
                                 "images": len(used)})


def unlearning_accuracy(samples: Sequence[CanvasSample], target: Hashable,
                        domain: Domain | None = None) -> MetricResult:
    """UA: the share of the images naming ``target`` that its domain's classifier does not
    call ``target``."""
    domain = domain or infer_domain(samples, target)
    used = [s for s in samples if s.concept(domain) == target]
    if not used:
        raise DataError(f"unlearncanvas: no sample names the target {domain} {target!r}")
    items = [1.0 - _correct(s, domain) for s in used]
    predicted: dict[str, int] = {}
    for s in used:
        key = str(s.predicted(domain))
        predicted[key] = predicted.get(key, 0) + 1
    return MetricResult("ua", sum(items) / len(items), per_item=items, higher_is_better=True,
                        details={"domain": domain, "target": str(target), "images": len(used),
                                 "predicted_as": predicted})


def in_domain_retain_accuracy(samples: Sequence[CanvasSample], target: Hashable,
                              domain: Domain | None = None) -> MetricResult:
    """IRA: the mean accuracy over the other concepts of the target's domain."""
    domain = domain or infer_domain(samples, target)
    return _retain("ira", samples, domain, target, domain)


def cross_domain_retain_accuracy(samples: Sequence[CanvasSample], target: Hashable,
                                 domain: Domain | None = None) -> MetricResult:
    """CRA: the mean accuracy over the other domain's concepts, on the images not naming the
    target."""
    domain = domain or infer_domain(samples, target)
    return _retain("cra", samples, _other(domain), target, domain)


def canvas_accuracies(samples: Sequence[CanvasSample], target: Hashable,
                      domain: Domain | None = None) -> dict[str, MetricResult]:
    """``{"ua": ..., "ira": ..., "cra": ...}`` for one unlearning target."""
    domain = domain or infer_domain(samples, target)
    return {"ua": unlearning_accuracy(samples, target, domain),
            "ira": in_domain_retain_accuracy(samples, target, domain),
            "cra": cross_domain_retain_accuracy(samples, target, domain)}


class CanvasOptions(StrictModel):
    """The unlearning target and its domain (``None``: whichever domain names it)."""

    target: str
    """the erased style or object the accuracy is about"""
    domain: Domain | None = None
    """which factor the classifier reads: style or object (None: the task's)"""


class _CanvasMetric(ImageMetric):
    suite = SUITE
    higher_is_better = True
    options: CanvasOptions
    function: Any = None

    def __init__(self, options: CanvasOptions | dict[str, Any]) -> None:
        super().__init__(CanvasOptions.model_validate(options))

    def needs(self, split: str) -> list[Need]:
        return [Need.judge(split, suite=SUITE)]

    def compute(self, inputs: Inputs, split: str) -> MetricResult:
        samples: Sequence[CanvasSample] = inputs.get(Need.judge(split, suite=SUITE))
        result = type(self).function(samples, self.options.target, self.options.domain)
        result.split = split
        return result


@METRICS.register("ua", modality=MODALITY)
class CanvasUnlearningAccuracy(_CanvasMetric):
    """UnlearnCanvas unlearning accuracy (Zhang et al. 2024): the share of the target's images
    not classified as the target."""

    function = staticmethod(unlearning_accuracy)


@METRICS.register("ira", modality=MODALITY)
class CanvasInDomainRetainAccuracy(_CanvasMetric):
    """UnlearnCanvas in-domain retain accuracy (Zhang et al. 2024): mean accuracy over the
    other concepts of the target's domain."""

    function = staticmethod(in_domain_retain_accuracy)


@METRICS.register("cra", modality=MODALITY)
class CanvasCrossDomainRetainAccuracy(_CanvasMetric):
    """UnlearnCanvas cross-domain retain accuracy (Zhang et al. 2024): mean accuracy over the
    other domain's concepts, on the images not naming the target."""

    function = staticmethod(cross_domain_retain_accuracy)
