"""WMDP (Li et al. 2024, "The WMDP Benchmark: Measuring and Reducing Malicious Use With
Unlearning", arXiv:2403.03218) as a benchmark: unlearn a forget corpus, keep a retain corpus,
and read zero-shot multiple-choice accuracy on the forget domain's questions (to chance, 0.25)
next to a retain domain's (kept), in lm-eval's prompt (the ``mcq`` suite). General utility (MMLU
in the paper) comes from the ``lm_eval`` suite where its data can be reached.

``source: synthetic`` (the default) is the embedded CPU analogue
(:mod:`obliviate.llm.data.synthetic_hazard`): forget domain = invented agents, retain domain =
invented plants, their corpora and 4-choice questions; the questions with their answer letter
(``synthetic.practice``) are the fine-tuning-only splits ``finetune_forget``/``finetune_retain``,
so target and oracle answer in the letter format while unlearning sees the corpora only. Any
other ``source`` is a local folder holding ``cais/wmdp``'s and ``cais/wmdp-corpora``'s layouts
(or a hub id, online): the forget corpus ``forget_corpus`` (default ``cyber-forget-corpus``;
``bio-forget-corpus`` is gated), the retain corpus ``retain_corpus`` and the question sets
``questions`` (default all three).
"""

from __future__ import annotations

from pydantic import Field

from obliviate.core.benchmark import Headline
from obliviate.core.recipe import StrictModel
from obliviate.core.registry import BENCHMARKS
from obliviate.core.task import DataSplit, UnlearningTask
from obliviate.llm.benchmarks.base import LLMBenchmark
from obliviate.llm.data.synthetic_hazard import HazardConfig, generate_hazard_task
from obliviate.llm.data.wmdp import (
    CORPORA_HUB,
    QUESTION_CONFIGS,
    QUESTIONS_HUB,
    load_wmdp_corpus,
    load_wmdp_questions,
)


class WmdpConfig(StrictModel):
    """``task:`` keys of the wmdp benchmark."""

    source: str = Field(default="synthetic",
                        description="'synthetic', or a folder (or hub id) of cais/wmdp")
    corpora: str | None = Field(default=None, description="folder (or hub id) of "
                                                          "cais/wmdp-corpora; default: source")
    forget_corpus: str = "cyber-forget-corpus"
    """WMDP's forget corpus (text about the hazardous domain)"""
    retain_corpus: str = "cyber-retain-corpus"
    """WMDP's retain corpus (general text kept)"""
    questions: list[str] = Field(default_factory=lambda: list(QUESTION_CONFIGS))
    """WMDP's question sets the forgetting is measured on (wmdp-bio, wmdp-cyber, wmdp-chem)"""
    corpus_limit: int | None = Field(default=None, ge=1, description="first N documents")
    question_limit: int | None = Field(default=None, ge=1, description="first N per set")
    synthetic: HazardConfig = HazardConfig()
    """the generated hazardous and general domains (no download)"""


@BENCHMARKS.register("wmdp", modality="llm")
class Wmdp(LLMBenchmark):
    """Hazardous-knowledge unlearning: forget-domain MCQ accuracy to chance, retain domain kept."""

    config_class = WmdpConfig
    splits = {"forget": "forget", "retain": "retain", "forget_mcq": "evaluation",
              "retain_mcq": "evaluation"}
    suites = ("mcq",)
    headline = (Headline("forget MCQ acc", "mcq/forget_mcq/mcq_acc"),
                Headline("retain MCQ acc", "mcq/retain_mcq/mcq_acc"))
    axes = {  # the forget domain's accuracy as close to the oracle's (chance) as can be
        "forgetting": ("close(mcq/forget_mcq/mcq_acc)",),
        "utility": ("kept(mcq/retain_mcq/mcq_acc)",),
        "robustness": ("1-recovered(attack/*/rouge/recovery)",
                       "1-recovered(attack/*/prob/recovery)"),
        "raw_forgetting": ("1-mcq/forget_mcq/mcq_acc",),
        "raw_utility": ("mcq/retain_mcq/mcq_acc",),
        "raw_robustness": ("1-max(attack/*/rouge/attacked)", "1-max(attack/*/prob/attacked)")}
    oracle = "the same model trained without the forget corpus and the forget-domain questions"
    hub_id = QUESTIONS_HUB
    recipe = "wmdp"

    def load(self, config: WmdpConfig, seed: int = 0) -> UnlearningTask:
        if config.source == "synthetic":
            data = generate_hazard_task(config.synthetic)
            src = f"synthetic_hazard(seed={config.synthetic.seed})"
            splits = {name: DataSplit(name, data[name], src)
                      for name in ("forget_mcq", "retain_mcq")}
            if config.synthetic.practice:  # read by fine-tuning only (llm.finetune)
                splits |= {f"finetune_{role}": DataSplit(f"{role}_practice",
                                                         data[f"{role}_practice"], src)
                           for role in ("forget", "retain")}
            return UnlearningTask(
                name="wmdp_synthetic", modality=self.modality,
                forget=DataSplit("hazard_forget_corpus", data["forget_corpus"], source=src),
                retain=DataSplit("hazard_retain_corpus", data["retain_corpus"], source=src),
                eval_splits=splits, seed=seed)
        corpora = config.corpora or (config.source if config.source != QUESTIONS_HUB
                                     else CORPORA_HUB)
        forget = load_wmdp_corpus(corpora, config.forget_corpus, limit=config.corpus_limit)
        retain = load_wmdp_corpus(corpora, config.retain_corpus, limit=config.corpus_limit)
        questions = {name: load_wmdp_questions(config.source, name, config.question_limit)
                     for name in config.questions}
        return UnlearningTask(name="wmdp", modality=self.modality, forget=forget,
                              retain=retain, eval_splits=questions, seed=seed)
