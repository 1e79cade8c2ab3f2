"""MUSE (Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation for Language Models",
arXiv:2407.06460) and a synthetic MUSE-like corpus, as benchmarks.

* ``muse``: the published data (``muse-bench/MUSE-News`` / ``MUSE-Books``) from a local folder
  in either published layout, else the hub (see :mod:`obliviate.llm.data.muse`).
* ``muse_synthetic``: news-style articles about fictitious people
  (:mod:`obliviate.llm.data.synthetic_news`), the CPU default: no download, any size.

Both give the same task: forget = raw forget articles, retain = raw retain1, holdout = raw
holdout, and MUSE's evaluation splits (verbmem, knowmem with ICL, privleak, sust/scal) under the
names the ``muse`` suite reads. The oracle is the model trained on the retain articles only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from obliviate.core.benchmark import Headline
from obliviate.core.recipe import StrictModel
from obliviate.core.registry import BENCHMARKS
from obliviate.core.task import DataSplit, UnlearningTask
from obliviate.llm.benchmarks.base import TEXT_HEADLINE, LLMBenchmark
from obliviate.llm.data.muse import HUB_IDS, load_muse
from obliviate.llm.data.synthetic_news import SyntheticNewsConfig, generate_synthetic_news

MUSE_SUITES = ("muse",)
MUSE_HEADLINE = (
    TEXT_HEADLINE[0],  # VerbMem on the forget articles
    Headline("KnowMem f ↓", "muse/knowmem_forget_qa/knowmem", 1),
    Headline("KnowMem r ↑", "muse/knowmem_retain_qa/knowmem", 1),
    *TEXT_HEADLINE[1:3],  # the Min-K% AUC and PrivLeak
)
MUSE_AXES = {
    "forgetting": ("close(muse/*/verbmem, muse/knowmem_forget_qa/knowmem, muse/*/mia_min_k)",
                   "close(muse/*/verbmem, muse/*/mia_min_k)", "close(muse/*/verbmem)"),
    "utility": ("kept(muse/knowmem_retain_qa/knowmem)",),
    "robustness": ("1-recovered(attack/*/verbmem/recovery)",
                   "1-recovered(attack/*/rouge/recovery)"),
    "raw_forgetting": ("1-muse/verbmem_forget/verbmem",),
    "raw_utility": ("muse/knowmem_retain_qa/knowmem",),
    "raw_robustness": ("1-max(attack/*/rouge/attacked)",),
}
EVAL_SPLITS = ("verbmem_forget", "knowmem_forget_qa", "knowmem_retain_qa",
               "knowmem_forget_qa_icl", "knowmem_retain_qa_icl", "privleak_forget",
               "privleak_retain", "privleak_holdout")


def muse_task(name: str, splits: dict[str, DataSplit], seed: int) -> UnlearningTask:
    """The task from MUSE-named splits: raw forget/retain1/holdout plus the evaluation splits
    (and the ``sust``/``scal`` parts where present, for deletion requests and scaling)."""
    extra = {"holdout": splits["raw_holdout"]}
    extra.update({k: v for k, v in splits.items()
                  if k in EVAL_SPLITS or k.startswith(("sust_", "scal_"))})
    return UnlearningTask(name=name, modality="llm", forget=splits["raw_forget"],
                          retain=splits["raw_retain1"], eval_splits=extra, seed=seed)


class MuseBenchConfig(StrictModel):
    """Where MUSE is: a folder in the hub's parquet layout or muse_bench's JSON layout, or the
    hub id (default, needs ``datasets`` and a network)."""

    muse_path: str | None = Field(default=None, description="MUSE folder or hub id")
    corpus: Literal["news", "books"] = "news"
    """MUSE's corpus: news (BBC articles) or books (Harry Potter)"""

    def source(self) -> str:
        return self.muse_path or HUB_IDS[self.corpus]


@BENCHMARKS.register("muse", modality="llm")
class Muse(LLMBenchmark):
    """MUSE (Shi et al. 2024): news articles or books; VerbMem, KnowMem, PrivLeak, utility."""

    config_class = MuseBenchConfig
    splits = {"forget": "forget", "retain": "retain", "holdout": "holdout",
              **dict.fromkeys(EVAL_SPLITS, "evaluation")}
    suites = MUSE_SUITES
    headline = MUSE_HEADLINE
    axes = MUSE_AXES
    oracle = "the target's base model trained on the retain articles (MUSE's retrained model)"
    recipe = None  # GPU-sized: muse_synthetic's recipe with task.benchmark=muse task.muse_path=...
    hub_id = HUB_IDS["news"]

    def load(self, config: MuseBenchConfig, seed: int = 0) -> UnlearningTask:
        source = config.source()
        local = Path(source)
        data = load_muse(local if local.is_dir() else source, config.corpus)
        return muse_task(f"muse_{config.corpus}", data.splits, seed)


class MuseSyntheticConfig(StrictModel):
    """The synthetic corpus's size and seed (``task.news.*``)."""

    news: SyntheticNewsConfig = SyntheticNewsConfig()
    """the generated news corpus (MUSE's layout, no download)"""


@BENCHMARKS.register("muse_synthetic", modality="llm")
class MuseSynthetic(LLMBenchmark):
    """A synthetic MUSE-like corpus: news articles about fictitious people, any size."""

    config_class = MuseSyntheticConfig
    splits = Muse.splits
    suites = MUSE_SUITES
    headline = MUSE_HEADLINE
    axes = MUSE_AXES
    oracle = "the same model trained on the retain articles only"
    recipe = "muse_synthetic"

    def load(self, config: MuseSyntheticConfig, seed: int = 0) -> UnlearningTask:
        return muse_task("muse_synthetic", generate_synthetic_news(config.news), seed)


__all__ = ["MUSE_AXES", "MUSE_HEADLINE", "Muse", "MuseBenchConfig", "MuseSynthetic",
           "MuseSyntheticConfig", "muse_task"]
