"""LLM sweeps and searches: :class:`obliviate.core.modality_sweep.ModalitySweep` on the LLM
pipeline, with the LLM cost model (``cost.json`` in the root run and in every cell).

Cost (see :mod:`obliviate.core.cost`): trained tokens T = steps × batch_size ×
gradient_accumulation_steps × (mean forget length + mean retain length if the method uses retain
batches + mean forget length if it trains on alternative answers), lengths in tokens of the
prompt-formatted records (fine-tuning: mean length of its training split); FLOPs ≈ 6·N·T with N
the total parameters. Every ratio divides by the oracle's fine-tuning (retraining) cost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from obliviate.core.cost import FLOPS_RULE, cost_from_stage, training_flops
from obliviate.core.io import atomic_write_json
from obliviate.core.modality_sweep import ModalitySweep
from obliviate.core.recipe import load_recipe
from obliviate.core.rundir import RunDir
from obliviate.core.task import UnlearningTask
from obliviate.llm.recipe import LLMRecipe


def mean_tokens(task: UnlearningTask, recipe: LLMRecipe, tokenizer_dir: Path) -> dict[str, float]:
    """Mean prompt-formatted length in tokens of the forget, retain and full splits."""
    from transformers import AutoTokenizer

    from obliviate.llm.data.formatting import encode_record
    from obliviate.llm.finetune import prompt_format

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    fmt = prompt_format(recipe.model, tokenizer)
    lengths = {}
    for name in ("forget", "retain"):
        sizes = [len(encode_record(tokenizer, fmt, r, max_length=recipe.model.max_length)
                     .input_ids) for r in task.split(name).records]
        lengths[name] = sum(sizes) / len(sizes) if sizes else 0.0
    n_f, n_r = len(task.forget), len(task.retain)
    lengths["full"] = (lengths["forget"] * n_f + lengths["retain"] * n_r) / max(n_f + n_r, 1)
    return lengths


def stage_cost(stage: dict[str, Any], tokens_per_step: float) -> dict[str, Any]:
    """A stage's cost record with its trained tokens and estimated FLOPs."""
    train = stage.get("train") or (stage.get("config") or {}).get("train") or {}
    batch = train.get("batch_size", 1) * train.get("gradient_accumulation_steps", 1)
    cost = cost_from_stage(stage)
    cost["tokens"] = (stage.get("steps") or 0) * batch * tokens_per_step
    cost["flops"] = training_flops(cost.get("total_parameters") or 0, cost["tokens"])
    return cost


def unlearn_tokens_per_sequence(method: str, lengths: dict[str, float]) -> float:
    import obliviate.llm.methods  # noqa: F401  (registers the catalogue)
    from obliviate.core.registry import METHODS

    cls = METHODS.get(method, "llm")
    if cls.starts_from == "base":
        return lengths["retain"]
    return (lengths["forget"] + lengths["retain"] * bool(getattr(cls, "uses_retain", False))
            + lengths["forget"] * bool(getattr(cls, "uses_alternative", False)))


def run_costs(run: RunDir, lengths: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Cost records of every fine-tuning and unlearning stage of ``run``, keyed by model."""
    from obliviate.core.task import TRAINING_SPLIT

    stages = run.read_record().get("stages", {})
    out = {}
    for name, stage in stages.items():
        if stage.get("status") != "done":
            continue
        if name.startswith("finetune_"):
            role = name.removeprefix("finetune_")
            out[role] = stage_cost(stage, lengths[TRAINING_SPLIT.get(role, "full")])
        elif name.startswith("unlearn_"):
            method = stage.get("method") or name.removeprefix("unlearn_")
            out[f"unlearned/{method}"] = stage_cost(
                stage, unlearn_tokens_per_sequence(method, lengths))
    return out


def write_costs(run_dir: str | Path, reference: dict[str, Any] | None = None,
                lengths: dict[str, float] | None = None) -> Path:
    """Write ``cost.json`` for a run: each model's cost, FLOPs estimate, the rule used.

    ``reference`` is the oracle's cost (default: this run's ``finetune_oracle``).
    """
    from obliviate.llm.task import build_task

    run = RunDir(run_dir)
    recipe = load_recipe(LLMRecipe, run.root / "recipe.yaml")
    if lengths is None:
        target = Path(recipe.unlearn.target) if recipe.unlearn.target else run.model("target")
        lengths = mean_tokens(build_task(recipe.task, seed=recipe.seed), recipe, target)
    models = run_costs(run, lengths)
    reference = reference or models.get("oracle")
    return atomic_write_json(run.root / "cost.json", {
        "rule": FLOPS_RULE, "tokens": "steps × batch × (mean tokens of the sequences one "
        "training item holds)", "mean_tokens": lengths, "reference": "oracle fine-tuning "
        "(retraining without the forget set)", "reference_cost": reference, "models": models})


class LLMSweep(ModalitySweep):
    """The LLM pipeline and its token-based cost model for the shared sweep and search."""

    modality = "llm"
    recipe_class = LLMRecipe

    def pipeline(self) -> Any:
        from obliviate.llm import pipeline

        return pipeline

    def write_costs(self, run_dir: str | Path, reference: dict[str, Any] | None = None,
                    lengths: dict[str, float] | None = None) -> Path:
        return write_costs(run_dir, reference, lengths)


SWEEP = LLMSweep()
sweep = SWEEP.sweep
search = SWEEP.search
cell_recipe = SWEEP.cell_recipe
