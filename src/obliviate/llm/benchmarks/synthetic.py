"""Synthetic fictitious facts (see :mod:`obliviate.llm.data.synthetic`) as a benchmark: no
download, seeded, sized to train a model from scratch on a CPU in minutes (the demo's task)."""

from __future__ import annotations

from obliviate.core.recipe import StrictModel
from obliviate.core.registry import BENCHMARKS
from obliviate.core.task import DataSplit, UnlearningTask
from obliviate.llm.benchmarks.base import LLMBenchmark
from obliviate.llm.data.synthetic import SyntheticFactsConfig, generate_synthetic_facts


class SyntheticConfig(StrictModel):
    """How many people and facts, and their seed (``task.synthetic.*``)."""

    synthetic: SyntheticFactsConfig = SyntheticFactsConfig()
    """the generated people and facts (no download)"""


@BENCHMARKS.register("synthetic", modality="llm")
class Synthetic(LLMBenchmark):
    """Synthetic facts about fictitious people: forget some people, keep the rest."""

    config_class = SyntheticConfig
    splits = {"forget": "forget", "retain": "retain", "holdout": "holdout"}
    oracle = "the same model trained from scratch on the retain people only"
    recipe = "demo"

    def load(self, config: SyntheticConfig, seed: int = 0) -> UnlearningTask:
        facts = generate_synthetic_facts(config.synthetic)
        src = f"synthetic(seed={config.synthetic.seed})"
        extra = ({"holdout": DataSplit("synthetic_holdout", facts["holdout"], source=src)}
                 if facts.get("holdout") else {})
        return UnlearningTask(
            name="synthetic", modality=self.modality,
            forget=DataSplit("synthetic_forget", facts["forget"], source=src),
            retain=DataSplit("synthetic_retain", facts["retain"], source=src),
            eval_splits=extra, seed=seed)
