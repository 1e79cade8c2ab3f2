"""LLM sweeps: target and oracle trained once in the sweep's run directory, then one cell per
(method, hyperparameters, seed), each unlearning the shared target and evaluated against the
shared oracle.

Layout::

    RUN_DIR/                  the root run: models/{target,oracle}, eval/{target,oracle}, cost.json
      sweep/plan.json         the grid (see obliviate.core.sweep)
      sweep/<cell_id>/        a run directory per cell: models/unlearned/<method>, eval/, run.json,
                              cost.json, and `done` once finished

Cost (see :mod:`obliviate.core.cost`): trained tokens T = steps × batch_size ×
gradient_accumulation_steps × (mean forget length + mean retain length if the method uses retain
batches + mean forget length if it trains on alternative answers), lengths in tokens of the
prompt-formatted records (fine-tuning: mean length of its training split); FLOPs ≈ 6·N·T with N
the total parameters. Every ratio divides by the oracle's fine-tuning (retraining) cost.
"""

from __future__ import annotations

import copy
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obliviate.core.axes import AxisMap, References
from obliviate.core.cost import FLOPS_RULE, cost_from_stage, cost_metrics, training_flops
from obliviate.core.errors import ConfigError
from obliviate.core.io import atomic_write_json, read_json, sha256_records
from obliviate.core.recipe import dump_recipe, load_recipe, validate
from obliviate.core.rundir import RunDir, environment_info
from obliviate.core.search import SearchSpec, method_space, run_search
from obliviate.core.sweep import SweepSpec, run_sweep, set_path
from obliviate.core.task import UnlearningTask
from obliviate.llm.recipe import LLMRecipe

# Sections every cell shares with the root run; a sweep may not vary them.
SHARED = ("task", "model", "finetune", "seed", "name", "modality", "output_dir")


def cell_recipe(base: dict[str, Any], overrides: dict[str, Any], target: str | Path
                ) -> LLMRecipe:
    """The base recipe with a cell's overrides; unlearns ``target`` (the root's model)."""
    shared = [k for k in overrides if k.split(".")[0] in SHARED]
    if shared:
        raise ConfigError(f"sweep: {shared[0]!r} is shared by every cell (trained once) and "
                          "cannot be swept; sweep unlearn.* keys or run separate sweeps")
    data = copy.deepcopy(base)
    for key, value in overrides.items():
        set_path(data, key, value)
    set_path(data, "unlearn.target", str(target))
    return validate(LLMRecipe, data, source="sweep cell")


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
    from obliviate.llm.finetune import TRAINING_SPLIT

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


@dataclass
class LLMCellRunner:
    """``run_cell(overrides, cell_dir) -> metrics`` for :func:`obliviate.core.sweep.run_sweep`.

    Plain data only, so Ray can ship it to workers.
    """

    base: dict[str, Any]
    root: str
    attacks: list[str] = field(default_factory=list)

    def __call__(self, overrides: dict[str, Any], cell_dir: Path) -> dict[str, float]:
        import torch

        from obliviate.llm import pipeline

        threads = os.environ.get("OMP_NUM_THREADS", "")
        if threads.isdigit():  # Ray workers start fresh processes
            torch.set_num_threads(int(threads))
        root = RunDir(self.root)
        recipe = cell_recipe(self.base, overrides, root.model("target"))
        method = recipe.unlearn.methods[0]
        run = RunDir(cell_dir).create()
        run.write_recipe(dump_recipe(recipe))
        run.update_record(name=recipe.name, modality=recipe.modality, sweep_root=str(root.root),
                          cell=overrides, environment=environment_info())
        task = pipeline.prepare_task(recipe, run)
        share_oracle(root, run)
        pipeline.unlearn_stage(recipe, run, task)
        model = f"unlearned/{method}"
        metrics = dict(pipeline.evaluate_stage(recipe, run, task, models=[model])[model])
        if self.attacks:
            found = pipeline.attack_stage(recipe, run, task, [model], list(self.attacks))
            metrics.update(attack_metrics(found.get(model, {})))
        root_costs = read_json(root.root / "cost.json")
        written = read_json(write_costs(run.root, root_costs.get("reference_cost"),
                                        root_costs.get("mean_tokens")))
        metrics.update(cost_metrics(written["models"].get(model, {}),
                                    root_costs.get("reference_cost")))
        return metrics


def share_oracle(root: RunDir, run: RunDir) -> None:
    """Give a cell the root's oracle: its evaluation (for Forget Quality, PrivLeak) as copies,
    its weights as a symlink (for attacks)."""
    for name in ("tofu.json", "mia.json"):
        src = root.root / "eval" / "oracle" / name
        if src.is_file() and not (run.root / "eval" / "oracle" / name).is_file():
            (run.root / "eval" / "oracle").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, run.root / "eval" / "oracle" / name)
    link = run.model("oracle")
    if root.model("oracle").is_dir() and not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(root.model("oracle").resolve(), link, target_is_directory=True)


def attack_metrics(by_attack: dict[str, dict[str, Any]]) -> dict[str, float]:
    """``attack/<attack>/<metric>/<field>`` entries from attack stage records."""
    out = {}
    for attack, record in by_attack.items():
        for key in ("plain", "attacked", "oracle_attacked", "recovery"):
            value = record.get(key)
            if isinstance(value, (int, float)):
                out[f"attack/{attack}/{record.get('metric', 'probe')}/{key}"] = float(value)
    return out


def prepare_root(recipe: LLMRecipe, output: str | Path | None, command: str,
                 attacks: list[str]) -> RunDir:
    """Fine-tune target and oracle once, evaluate (and attack) them; write ``cost.json``."""
    from obliviate.llm import pipeline

    run = pipeline.open_run(recipe, output, command)
    task = pipeline.prepare_task(recipe, run)
    pipeline.finetune_stage(recipe, run, task)
    pipeline.evaluate_stage(recipe, run, task, models=["oracle", "target"])
    if attacks:
        pipeline.attack_stage(recipe, run, task, ["target"], attacks)
    if not (run.root / "cost.json").is_file():
        write_costs(run.root)
    return run


def recipe_fingerprint(recipe: LLMRecipe) -> str:
    """What every cell of a sweep or search shares: the validated base recipe."""
    return sha256_records([{k: v for k, v in recipe.model_dump(mode="json").items()
                            if k != "output_dir"}])[:16]


def sweep(base: dict[str, Any], spec: SweepSpec, output: str | Path | None = None,
          executor: str = "local", command: str = "obliviate sweep",
          log: Any = print, address: str | None = None, num_cpus: int | None = None
          ) -> tuple[RunDir, list[dict[str, Any]]]:
    """Run an LLM sweep; returns the root run directory and every cell's result."""
    recipe = validate(LLMRecipe, copy.deepcopy(base), source="recipe")
    check_cells(base, spec)  # fail before training anything
    run = prepare_root(recipe, output, command, spec.attacks)
    runner = LLMCellRunner(base=base, root=str(run.root.resolve()), attacks=list(spec.attacks))
    results = run_sweep(spec, run.root, runner, executor=executor,
                        fingerprint=recipe_fingerprint(recipe), log=log, address=address,
                        num_cpus=num_cpus)
    run.record_stage("sweep", status="done", cells=len(results), executor=executor,
                     ran=sum(r.get("status") == "ran" for r in results),
                     spec=spec.model_dump(), output=str(run.root / "sweep"))
    return run, results


def check_cells(base: dict[str, Any], spec: SweepSpec) -> int:
    """Validate every cell's recipe and method hyperparameters before anything trains."""
    from obliviate.core.sweep import expand
    from obliviate.llm.pipeline import method_config

    cells = expand(spec)
    for cell in cells:
        recipe = cell_recipe(base, cell["overrides"], "target")
        method_config(recipe, cell["method"])
    return len(cells)


def search(base: dict[str, Any], spec: SearchSpec, output: str | Path | None = None,
           executor: str = "local", command: str = "obliviate search", log: Any = print,
           address: str | None = None, num_cpus: int | None = None
           ) -> tuple[RunDir, dict[str, dict[str, Any]]]:
    """Run an LLM multi-objective search (:mod:`obliviate.core.search`): target and oracle
    trained once, then ``spec.trials`` trials per method; returns the root run and the
    per-method summaries."""
    import obliviate.llm.methods  # noqa: F401  (registers the catalogue)
    from obliviate.core.registry import METHODS

    recipe = validate(LLMRecipe, copy.deepcopy(base), source="recipe")
    for method in spec.methods:
        METHODS.get(method, "llm")
    check_space(base, spec)  # fail before training anything
    run = prepare_root(recipe, output, command, spec.attacks)
    runner = LLMCellRunner(base=base, root=str(run.root.resolve()), attacks=list(spec.attacks))
    axes, refs = AxisMap.for_modality("llm"), root_references(run)
    summaries = run_search(spec, run.root, runner, "llm",
                           objective=lambda m: axes.score(m, refs)[0],
                           executor=executor, fingerprint=recipe_fingerprint(recipe),
                           address=address, num_cpus=num_cpus, log=log)
    run.record_stage("search", status="done", executor=executor, spec=spec.model_dump(),
                     trials={m: len(s["trials"]) for m, s in summaries.items()},
                     hypervolume={m: s["hypervolume"] for m, s in summaries.items()},
                     output=str(run.root / "search"))
    return run, summaries


def root_references(run: RunDir) -> References:
    """The root's oracle and target evaluations, which oracle-relative axes read."""
    stages = run.read_record().get("stages", {})
    return References(oracle=stages.get("eval_oracle", {}).get("summary", {}),
                      target=stages.get("eval_target", {}).get("summary", {}))


def check_space(base: dict[str, Any], spec: SearchSpec) -> None:
    """Validate each method's recipe at both ends of every range before anything trains."""
    from obliviate.llm.pipeline import method_config

    for method in spec.methods:
        space = method_space(spec, method, "llm")
        for end in ("low", "high"):
            params = {k: (v[0] if end == "low" else v[-1]) if isinstance(v, list)
                      else getattr(v, end) for k, v in space.items()}
            recipe = cell_recipe(base, {spec.methods_key: [method], **params}, "target")
            method_config(recipe, method)
