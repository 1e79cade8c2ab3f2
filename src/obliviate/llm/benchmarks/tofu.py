"""TOFU (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs") as a benchmark.

A local folder laid out like the hub dataset ``locuslab/TOFU`` (see
:mod:`obliviate.llm.data.tofu`), else that hub id when online. The forget split is
``forget01``/``05``/``10`` (1, 5 or 10% of the 200 authors), the retain set the rest of
``full``; ``holdoutXX`` are non-members, and ``retain_eval``/``real_authors``/``world_facts``
are TOFU's evaluation-only splits.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from obliviate.core.recipe import StrictModel
from obliviate.core.registry import BENCHMARKS
from obliviate.core.task import UnlearningTask
from obliviate.llm.benchmarks.base import LLMBenchmark
from obliviate.llm.data.tofu import (
    FORGET_SPLITS,
    HUB_ID,
    default_tofu_root,
    load_idontknow,
    load_tofu,
)


class TofuConfig(StrictModel):
    """Where TOFU is and which forget split to use."""

    tofu_path: str | None = Field(default=None, description="TOFU folder or hub id (default: "
                                  "../shared/data/tofu, else the hub)")
    forget_split: str = "forget10"
    """TOFU's forget split: forget01, forget05 or forget10 (1, 5, 10% of the authors)"""

    @model_validator(mode="after")
    def _check(self) -> TofuConfig:
        if self.forget_split not in FORGET_SPLITS:
            raise ValueError(f"task.forget_split must be one of {', '.join(FORGET_SPLITS)}")
        return self

    def root(self) -> str | Path:
        return self.tofu_path or default_tofu_root() or HUB_ID


@BENCHMARKS.register("tofu", modality="llm")
class Tofu(LLMBenchmark):
    """TOFU (Maini et al. 2024): 200 fictitious authors, forget 1/5/10% of them."""

    config_class = TofuConfig
    splits = {"forget": "forget", "retain": "retain", "holdout": "holdout",
              "retain_eval": "evaluation", "real_authors": "evaluation",
              "world_facts": "evaluation"}
    oracle = "the target's base model fine-tuned on the retain set only (TOFU's retainYY model)"
    recipe = "tofu_smollm2"
    hub_id = HUB_ID

    def load(self, config: TofuConfig, seed: int = 0) -> UnlearningTask:
        root = config.root()
        splits = load_tofu(Path(root) if Path(str(root)).exists() else str(root),
                           forget_splits=(config.forget_split,))
        named = splits.splits(config.forget_split)
        forget, retain = named.pop("forget"), named.pop("retain")
        return UnlearningTask(name=f"tofu_{config.forget_split}", modality=self.modality,
                              forget=forget, retain=retain, eval_splits=named, seed=seed)

    def refusals(self, config: TofuConfig) -> tuple[str, ...]:
        """TOFU's own ``idontknow.jsonl`` when the local folder has it."""
        root = config.tofu_path or default_tofu_root()
        if root and (Path(root) / "idontknow.jsonl").is_file():
            return tuple(load_idontknow(Path(root) / "idontknow.jsonl"))
        return super().refusals(config)
