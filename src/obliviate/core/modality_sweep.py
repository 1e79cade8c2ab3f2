"""Sweeps and searches for any modality: target and oracle trained once in the root run, then one
cell per (method, hyperparameters, seed), each unlearning the shared target and evaluated (and
attacked) against the shared oracle.

Layout::

    RUN_DIR/                  the root run: models/{target,oracle}, eval/{target,oracle}
      sweep/plan.json         the grid (see obliviate.core.sweep)
      sweep/<cell_id>/        a run directory per cell: models/unlearned/<method>, eval/, run.json,
                              and `done` once finished

A modality plugs in with one :class:`ModalitySweep` subclass (``obliviate.<modality>.sweep``) that
names its recipe class and its pipeline (the stage functions every pipeline offers:
``open_run``, ``prepare_task``, ``finetune_stage``, ``unlearn_stage``, ``evaluate_stage``,
``attack_stage``, ``method_config``) and, where it has one, its cost model. The subclass is plain
data, so Ray ships a cell runner holding it to workers.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obliviate.core.axes import AxisMap, References
from obliviate.core.benchmark import run_benchmark
from obliviate.core.cost import cost_from_stage, cost_metrics
from obliviate.core.errors import ConfigError
from obliviate.core.io import atomic_write_bytes, read_json, sha256_records
from obliviate.core.recipe import RecipeBase, dump_recipe, validate
from obliviate.core.rundir import RunDir, environment_info
from obliviate.core.search import SearchSpec, method_space, run_search
from obliviate.core.sweep import SweepSpec, expand, run_sweep, set_path

SHARED = ("task", "model", "finetune", "seed", "name", "modality", "output_dir")
"""Sections every cell shares with the root run; a sweep may not vary them."""


class ModalitySweep:
    """What a modality tells the shared sweep and search: its name, recipe class and pipeline,
    and its cost model (:meth:`write_costs`; by default each stage's recorded cost against the
    oracle's fine-tuning)."""

    modality: str = ""
    recipe_class: type[RecipeBase] = RecipeBase

    def pipeline(self) -> Any:
        """The modality's pipeline module (imported when a cell runs, also in a Ray worker)."""
        raise NotImplementedError

    def cell_recipe(self, base: dict[str, Any], overrides: dict[str, Any],
                    target: str | Path) -> RecipeBase:
        """The base recipe with a cell's overrides; unlearns ``target`` (the root's model)."""
        shared = [k for k in overrides if k.split(".")[0] in SHARED]
        if shared:
            raise ConfigError(f"sweep: {shared[0]!r} is shared by every cell (trained once) "
                              "and cannot be swept; sweep unlearn.* keys or run separate sweeps")
        data = copy.deepcopy(base)
        for key, value in overrides.items():
            set_path(data, key, value)
        set_path(data, "unlearn.target", str(target))
        return validate(self.recipe_class, data, source="sweep cell")

    def write_costs(self, run_dir: str | Path, reference: dict[str, Any] | None = None,
                    lengths: dict[str, float] | None = None) -> Path | None:
        """Write the run's ``cost.json`` where the modality has a cost model (None: it has
        none, and cells take each stage's recorded cost)."""
        return None

    def cell_costs(self, root: RunDir, run: RunDir, model: str) -> dict[str, float]:
        """``cost/*`` metrics of a cell's unlearned ``model`` against the oracle's fine-tuning."""
        if (root.root / "cost.json").is_file():
            root_costs = read_json(root.root / "cost.json")
            written = self.write_costs(run.root, root_costs.get("reference_cost"),
                                       root_costs.get("mean_tokens"))
            if written is not None:
                return cost_metrics(read_json(written)["models"].get(model, {}),
                                    root_costs.get("reference_cost"))
        stages = run.read_record().get("stages", {})
        oracle = root.read_record().get("stages", {}).get("finetune_oracle")
        stage = stages.get("unlearn_" + model.removeprefix("unlearned/"), {})
        return cost_metrics(cost_from_stage(stage), cost_from_stage(oracle) if oracle else None)

    def prepare_root(self, recipe: RecipeBase, output: str | Path | None, command: str,
                     attacks: list[str]) -> RunDir:
        """Fine-tune target and oracle once, evaluate (and attack) them; write the costs."""
        pipeline = self.pipeline()
        run = pipeline.open_run(recipe, output, command)
        task = pipeline.prepare_task(recipe, run)
        pipeline.finetune_stage(recipe, run, task)
        pipeline.evaluate_stage(recipe, run, task, models=["oracle", "target"])
        if attacks:
            pipeline.attack_stage(recipe, run, task, ["target"], attacks)
        if not (run.root / "cost.json").is_file():
            self.write_costs(run.root)
        return run

    def check_cells(self, base: dict[str, Any], spec: SweepSpec) -> int:
        """Validate every cell's recipe and method hyperparameters before anything trains."""
        cells = expand(spec)
        for cell in cells:
            recipe = self.cell_recipe(base, cell["overrides"], "target")
            self.pipeline().method_config(recipe, cell["method"])
        return len(cells)

    def check_space(self, base: dict[str, Any], spec: SearchSpec) -> None:
        """Validate each method's recipe at both ends of every range before anything trains."""
        for method in spec.methods:
            space = method_space(spec, method, self.modality)
            for end in ("low", "high"):
                params = {k: (v[0] if end == "low" else v[-1]) if isinstance(v, list)
                          else getattr(v, end) for k, v in space.items()}
                recipe = self.cell_recipe(base, {spec.methods_key: [method], **params}, "target")
                self.pipeline().method_config(recipe, method)

    def sweep(self, base: dict[str, Any], spec: SweepSpec, output: str | Path | None = None,
              executor: str = "local", command: str = "obliviate sweep", log: Any = print,
              address: str | None = None, num_cpus: int | None = None
              ) -> tuple[RunDir, list[dict[str, Any]]]:
        """Run a sweep; returns the root run directory and every cell's result."""
        recipe = validate(self.recipe_class, copy.deepcopy(base), source="recipe")
        self.check_cells(base, spec)  # fail before training anything
        run = self.prepare_root(recipe, output, command, spec.attacks)
        runner = CellRunner(self, base=base, root=str(run.root.resolve()),
                            attacks=list(spec.attacks))
        results = run_sweep(spec, run.root, runner, executor=executor,
                            fingerprint=recipe_fingerprint(recipe), log=log, address=address,
                            num_cpus=num_cpus)
        run.record_stage("sweep", status="done", cells=len(results), executor=executor,
                         ran=sum(r.get("status") == "ran" for r in results),
                         spec=spec.model_dump(), output=str(run.root / "sweep"))
        return run, results

    def search(self, base: dict[str, Any], spec: SearchSpec, output: str | Path | None = None,
               executor: str = "local", command: str = "obliviate search", log: Any = print,
               address: str | None = None, num_cpus: int | None = None
               ) -> tuple[RunDir, dict[str, dict[str, Any]]]:
        """Run a multi-objective search (:mod:`obliviate.core.search`): target and oracle
        trained once, then ``spec.trials`` trials per method; returns the root run and the
        per-method summaries."""
        from obliviate.core.registry import METHODS

        self.pipeline()  # the modality's catalogue registers with its pipeline
        recipe = validate(self.recipe_class, copy.deepcopy(base), source="recipe")
        for method in spec.methods:
            METHODS.get(method, self.modality)
        self.check_space(base, spec)  # fail before training anything
        run = self.prepare_root(recipe, output, command, spec.attacks)
        runner = CellRunner(self, base=base, root=str(run.root.resolve()),
                            attacks=list(spec.attacks))
        axes, refs = root_axes(run, self.modality), root_references(run)
        summaries = run_search(spec, run.root, runner, self.modality,
                               objective=lambda m: axes.score(m, refs)[0],
                               executor=executor, fingerprint=recipe_fingerprint(recipe),
                               address=address, num_cpus=num_cpus, log=log)
        run.record_stage("search", status="done", executor=executor, spec=spec.model_dump(),
                         trials={m: len(s["trials"]) for m, s in summaries.items()},
                         hypervolume={m: s["hypervolume"] for m, s in summaries.items()},
                         output=str(run.root / "search"))
        return run, summaries


@dataclass
class CellRunner:
    """``run_cell(overrides, cell_dir) -> metrics`` for :func:`obliviate.core.sweep.run_sweep`.

    Plain data only, so Ray can ship it to workers.
    """

    hooks: ModalitySweep
    base: dict[str, Any]
    root: str
    attacks: list[str] = field(default_factory=list)

    def __call__(self, overrides: dict[str, Any], cell_dir: Path) -> dict[str, float]:
        import torch

        threads = os.environ.get("OMP_NUM_THREADS", "")
        if threads.isdigit():  # Ray workers start fresh processes
            torch.set_num_threads(int(threads))
        pipeline = self.hooks.pipeline()
        root = RunDir(self.root)
        recipe = self.hooks.cell_recipe(self.base, overrides, root.model("target"))
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
        metrics.update(self.hooks.cell_costs(root, run, model))
        return metrics


def share_oracle(root: RunDir, run: RunDir) -> None:
    """Give a cell the root's oracle: its evaluation results (for Forget Quality, PrivLeak, the
    gaps to the oracle) as copies, its weights as a symlink (for attacks). Each copy is written
    atomically and rewritten whenever it differs from the root's, so a sweep killed mid-copy (a
    truncated file, as a plain copy leaves) resumes with the oracle's results intact."""
    source = root.root / "eval" / "oracle"
    for src in sorted(source.glob("*.json")) if source.is_dir() else []:
        dst = run.root / "eval" / "oracle" / src.name
        data = src.read_bytes()
        if not dst.is_file() or dst.read_bytes() != data:
            atomic_write_bytes(dst, data)
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


def recipe_fingerprint(recipe: RecipeBase) -> str:
    """What every cell of a sweep or search shares: the validated base recipe."""
    return sha256_records([{k: v for k, v in recipe.model_dump(mode="json").items()
                            if k != "output_dir"}])[:16]


def root_axes(run: RunDir, modality: str) -> AxisMap:
    """The axes the root run's benchmark declares, which its cells are scored on."""
    return AxisMap.for_benchmark(modality, run_benchmark(run.read_record()))


def root_references(run: RunDir) -> References:
    """The root's oracle and target evaluations, which oracle-relative axes read."""
    stages = run.read_record().get("stages", {})
    return References(oracle=stages.get("eval_oracle", {}).get("summary", {}),
                      target=stages.get("eval_target", {}).get("summary", {}))
