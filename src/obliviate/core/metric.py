"""Metrics as registered parts that declare what they need.

A metric is one class plus one registration (name + modality). It declares its **needs** (what
must be computed on the model before it can be: token statistics of a split, greedy generations
of a split, a reference model's statistics, the oracle's recorded result of the same suite, a
judge's predictions) and **computes** a :class:`~obliviate.core.result.MetricResult` (per-item
values plus the aggregate) from those needs once resolved::

    @METRICS.register("exact_memorization", modality="llm")
    class ExactMemorization(Metric):
        "Exact memorisation (Tirumala et al. 2022): the fraction of answer tokens that are the
        teacher-forced argmax."
        suite = "memorization"
        higher_is_better = None

        def needs(self, split):
            return [Need.token_stats(split)]

        def compute(self, inputs, split):
            return exact_memorization(inputs.get(Need.token_stats(split)), split=split)

An evaluation collects the needs of every requested metric (:func:`collect_needs`, duplicates
dropped, order kept), has the modality's session compute them in one shared pass, then hands
each metric an :class:`Inputs` that answers ``get(need)``. The oracle's recorded results arrive
the same way (``Need.oracle(suite)``): :func:`load_oracle_results` reads
``<oracle eval dir>/<suite>.json`` for every suite, no file is mapped to an argument by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from obliviate.core.registry import METRICS, import_every
from obliviate.core.result import EvalResult, MetricResult

NeedKind = Literal["answer_scores", "token_stats", "generations", "reference_stats", "oracle",
                   "judge", "samples", "choice_scores", "harness"]


@dataclass(frozen=True)
class Need:
    """One thing a metric needs computed before it runs (hashable: equal needs are computed
    once). Build it with the class methods, which name what each kind takes."""

    kind: NeedKind
    split: str | None = None
    limit: int | None = None
    """Only the first ``limit`` records of the split."""
    all_answers: bool = False
    """answer_scores: the paraphrased and perturbed answers too, not only the answer."""
    max_new_tokens: int | None = None
    stop: tuple[str, ...] = ()
    suite: str | None = None
    real: bool = False
    """samples, judge: the split's real (held-out) images instead of the model's samples."""

    @classmethod
    def answer_scores(cls, split: str, *, all_answers: bool = True,
                      limit: int | None = None) -> Need:
        """Per-answer NLL (sum, mean, tokens) of each record of ``split``."""
        return cls("answer_scores", split, limit=limit, all_answers=all_answers)

    @classmethod
    def token_stats(cls, split: str, *, limit: int | None = None) -> Need:
        """Per-token statistics of each answer of ``split`` (log-probs, argmax, entropy)."""
        return cls("token_stats", split, limit=limit)

    @classmethod
    def generations(cls, split: str, max_new_tokens: int, *, stop: Sequence[str] = (),
                    limit: int | None = None) -> Need:
        """Greedy generations for each prompt of ``split``."""
        return cls("generations", split, limit=limit, max_new_tokens=max_new_tokens,
                   stop=tuple(stop))

    @classmethod
    def reference_stats(cls, split: str, *, limit: int | None = None) -> Need:
        """:meth:`token_stats` of ``split`` under the reference model (e.g. the target)."""
        return cls("reference_stats", split, limit=limit)

    @classmethod
    def oracle(cls, suite: str) -> Need:
        """The oracle's recorded :class:`EvalResult` of ``suite`` (``None`` when there is
        none yet, or when the model evaluated is the oracle)."""
        return cls("oracle", suite=suite)

    @classmethod
    def choice_scores(cls, split: str, *, limit: int | None = None) -> Need:
        """The log-likelihood of each choice of each multiple-choice item of ``split``."""
        return cls("choice_scores", split, limit=limit)

    @classmethod
    def harness(cls, suite: str) -> Need:
        """An external evaluation harness's own results for ``suite`` (lm-evaluation-harness's
        ``simple_evaluate`` output), read as they come."""
        return cls("harness", suite=suite)

    @classmethod
    def samples(cls, split: str, *, real: bool = False) -> Need:
        """What the model generates for ``split`` (images of its classes or prompts, with what
        each should show); every split's samples come from one seeded pass. ``real``: the
        split's real held-out images instead (what a feature distance compares against)."""
        return cls("samples", split, real=real)

    @classmethod
    def judge(cls, split: str, *, real: bool = False, suite: str | None = None) -> Need:
        """A judge's predictions and features on the samples of ``split`` (``real``: on the
        split's real images no model trained on; ``suite``: in the form that suite reads, e.g.
        one prediction per head of a two-domain judge for ``unlearncanvas``)."""
        return cls("judge", split, real=real, suite=suite)


class Inputs(Protocol):
    """What a metric reads its resolved needs from."""

    def get(self, need: Need) -> Any: ...


class Metric:
    """Base of every registered metric.

    ``suite`` is the evaluation suite whose result holds it (its summary keys read
    ``suite/split/name``); ``options`` are the suite's typed options, or ``None``.
    """

    name: ClassVar[str] = ""
    modality: ClassVar[str] = ""
    suite: ClassVar[str] = ""
    higher_is_better: ClassVar[bool | None] = None
    reads_oracle: ClassVar[bool] = False
    """Its value compares the model with the oracle's (Forget Quality, PrivLeak): a selection
    rule or score that reads it peeks at the yardstick (:func:`oracle_metric_names`). Results
    are named after the metric (``privleak`` gives ``privleak_<attack>``)."""

    def __init__(self, options: Any = None) -> None:
        self.options = options

    def needs(self, split: str) -> list[Need]:
        return []

    def compute(self, inputs: Inputs, split: str) -> MetricResult | list[MetricResult] | None:
        """The metric on ``split`` (a list where it yields several, e.g. one per attack;
        ``None`` where the inputs do not allow it: say why in the result's provenance)."""
        raise NotImplementedError


def get_metric(name: str, modality: str) -> type[Metric]:
    return METRICS.get(name, modality)


def oracle_metric_names() -> list[str]:
    """The names of the registered metrics that read the oracle (``reads_oracle``), of every
    installed modality (imported here by name: :func:`~obliviate.core.registry.import_every`),
    so that no caller can miss one by not having imported its modality yet."""
    import_every("metrics")
    return sorted({e.name for e in METRICS.entries() if getattr(e.obj, "reads_oracle", False)})


def metrics_of(suite: str, modality: str) -> list[type[Metric]]:
    """The registered metrics a suite reports, in registration-name order."""
    return [e.obj for e in METRICS.entries(modality) if getattr(e.obj, "suite", "") == suite]


def collect_needs(groups: Iterable[Iterable[Any]]) -> list[Any]:
    """Every need once, in first-asked order (so one pass computes them all); needs that
    cannot be hashed (a modality's own kinds) are kept as they come."""
    out: list[Any] = []
    seen: set[Any] = set()
    for need in (n for group in groups for n in group):
        try:
            if need in seen:
                continue
            seen.add(need)
        except TypeError:
            pass
        out.append(need)
    return out


@dataclass
class ResolvedInputs:
    """A plain :class:`Inputs`: needs mapped to values (what tests and simple modalities use)."""

    values: Mapping[Need, Any]

    def get(self, need: Need) -> Any:
        if need not in self.values:
            from obliviate.core.errors import ConfigError

            raise ConfigError(f"metric input {need} was not declared as a need")
        return self.values[need]


def load_oracle_results(directory: str | Path, suites: Iterable[str]) -> dict[str, EvalResult]:
    """The oracle's recorded result of each suite that has one (``<directory>/<suite>.json``)."""
    directory = Path(directory)
    return {s: EvalResult.load(directory / f"{s}.json") for s in suites
            if (directory / f"{s}.json").is_file()}


def as_results(value: MetricResult | list[MetricResult] | None) -> list[MetricResult]:
    if value is None:
        return []
    return [value] if isinstance(value, MetricResult) else list(value)


__all__ = ["METRICS", "Inputs", "Metric", "Need", "NeedKind", "ResolvedInputs", "as_results",
           "collect_needs", "get_metric", "load_oracle_results", "metrics_of",
           "oracle_metric_names"]
