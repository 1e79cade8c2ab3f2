"""Multi-objective hyperparameter search: an Optuna study per method over the report's axes.

A grid costs the product of its axes and most of its cells land far from the front. A search
asks a multi-objective sampler (TPE's multi-objective mode, Ozaki et al. 2020, or NSGA-II, Deb
et al. 2002, both as Optuna implements them) for the next setting, given what the finished
trials scored, within a budget of trials. The recipe's ``search:`` section::

    search:
      methods:                  # method -> ranges; {} derives them from its typed config
        npo: {beta: {low: 0.02, high: 1.0, log: true}}
        grad_diff: {}
      shared:                   # searched for every method (a dotted recipe key)
        unlearn.train.learning_rate: {low: 1.0e-4, high: 3.0e-2, log: true}
      trials: 12                # the budget, per method
      sampler: tpe              # tpe | nsga2 | random
      objectives: [forgetting, utility]   # the report's axes (robustness needs attacks)
      storage: null             # Optuna RDB URL; default sqlite:///<run>/search/study.db

**The space.** A bare key is a field of the method's config (``unlearn.method_args.<m>.<key>``),
a dotted key any recipe key; a range is ``{low, high, log, int}``, a list is a categorical
choice. Where a method lists no ranges of its own, its typed config declares them: the
config class's ``search_space`` mapping when it has one, else every positive float field but the
seed, log-uniform from a tenth to ten times the paper's default, clipped to the field's bounds.

**Trials are sweep cells.** Trial *k*'s setting becomes the same ``overrides`` a grid cell
has, run by the same resumable unit (:func:`obliviate.core.sweep.attempt_cell`) in
``<run>/sweep/<cell id>/``, so trials share the run's target and oracle, a finished trial is
never run twice, and its row lands in the run's results store as it finishes.

**Resuming.** The study lives in Optuna's RDB storage (SQLite by default; any SQLAlchemy URL lets
many drivers share one study). A rerun reads it: a trial left ``RUNNING`` by a driver of this
host that is no longer alive is settled from its cell's ``done`` file when the cell finished,
else failed and its setting enqueued again, so no finished trial is repeated. The sampler is
reseeded with ``seed + number of trials so far`` after a restart, so a resumed study does not
propose the first trials' settings again (its later proposals differ from an uninterrupted
run's).

**Hypervolume.** ``search/<method>/<sampler>-seed<seed>.json`` records every trial, the front
and the hypervolume of the front after each trial, against the stated reference point (default 0 on
every axis: the report's axes are scores where higher is better, and 0 is "nothing forgotten"
/ "nothing kept").
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from obliviate.core.errors import ConfigError, ObliviateError
from obliviate.core.hypervolume import front_indices, hypervolume, hypervolume_curve
from obliviate.core.io import atomic_write_json, read_json
from obliviate.core.recipe import StrictModel, validate
from obliviate.core.registry import METHODS
from obliviate.core.rundir import utc_now
from obliviate.core.sweep import (
    DONE,
    CellRunner,
    CellsSpec,
    attempt_cell,
    cell_dir,
    make_cell,
    record_finished,
    start_ray,
)

Objective = Callable[[Mapping[str, Any]], Mapping[str, float | None]]
SAMPLERS = ("tpe", "nsga2", "random")


class Range(StrictModel):
    """A numeric range: uniform, or log-uniform with ``log``; integers with ``int``."""

    low: float
    """the range's lower end"""
    high: float
    """the range's upper end"""
    log: bool = False
    """draw on a log scale (learning rates, coefficients spanning decades)"""
    int: bool = False
    """draw whole numbers"""

    @model_validator(mode="after")
    def _check(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


Space = dict[str, Range | list[Any]]


class SearchSpec(CellsSpec):
    """The ``search:`` section of a recipe (see the module docstring)."""

    methods: dict[str, Space]
    """each method's search space: hyperparameter -> range {low, high, log, int} or a list of
    choices"""
    shared: Space = Field(default_factory=dict)
    """a search space every method shares (e.g. unlearn.train.learning_rate)"""
    trials: int = Field(default=12, ge=1, description="finished trials per method")
    sampler: Literal["tpe", "nsga2", "random"] = "tpe"
    """Optuna sampler: tpe (one objective at a time, scalarised), nsga2 (Pareto front) or random"""
    startup_trials: int | None = Field(
        default=None, ge=1, description="random trials before TPE models the front, or "
        "NSGA-II's population size (default: max(4, trials // 3))")
    seed: int = Field(default=0, description="the sampler's seed (every trial runs each of "
                      "`seeds`; the objectives are their mean)")
    objectives: list[str] = Field(default_factory=lambda: ["forgetting", "utility"],
                                  min_length=1)
    """what the search trades off (axes of the report: forgetting, utility, ...), each maximised"""
    reference_point: dict[str, float] = Field(
        default_factory=dict, description="hypervolume reference per objective (default 0)")
    storage: str | None = Field(default=None, description="Optuna RDB storage URL")
    parallel: int = Field(default=1, ge=1, description="trials in flight (ray executor)")
    retries: int = Field(default=1, ge=0, description="re-runs of a trial whose cell raised")

    @property
    def startup(self) -> int:
        return self.startup_trials or max(4, self.trials // 3)

    def reference(self) -> list[float]:
        unknown = set(self.reference_point) - set(self.objectives)
        if unknown:
            raise ConfigError(f"search.reference_point: {sorted(unknown)} are not objectives "
                              f"({', '.join(self.objectives)})")
        return [float(self.reference_point.get(o, 0.0)) for o in self.objectives]


def split_search(data: dict[str, Any], source: str = "recipe"
                 ) -> tuple[dict[str, Any], SearchSpec]:
    """``(recipe data without the search section, the validated search section)``."""
    data = dict(data)
    section = data.pop("search", None)
    data.pop("sweep", None)
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: no `search:` section (see `obliviate search --help`)")
    return data, validate(SearchSpec, section, source=f"{source}: search")


# -- the space ----------------------------------------------------------------------------------
def _bounds(info: Any) -> tuple[float, float]:
    low, high = -math.inf, math.inf
    for meta in getattr(info, "metadata", []):
        for attr, is_low in (("gt", True), ("ge", True), ("lt", False), ("le", False)):
            value = getattr(meta, attr, None)
            if isinstance(value, (int, float)):
                if is_low:
                    low = max(low, float(value))
                else:
                    high = min(high, float(value))
    return low, high


def derived_space(config_class: type) -> Space:
    """The search space a method's typed config declares (see the module docstring)."""
    declared = getattr(config_class, "search_space", None)
    if isinstance(declared, Mapping):
        return {k: (v if isinstance(v, (Range, list)) else Range.model_validate(v))
                for k, v in declared.items()}
    space: Space = {}
    for name, info in config_class.model_fields.items():
        default = info.default
        if name == "seed" or isinstance(default, bool) or not isinstance(default, float):
            continue
        if default <= 0:
            continue
        low, high = _bounds(info)
        lo, hi = max(default / 10, low), min(default * 10, high)
        if lo > 0 and lo < hi:
            space[name] = Range(low=lo, high=hi, log=True)
    return space


def method_space(spec: SearchSpec, method: str, modality: str) -> dict[str, Range | list[Any]]:
    """Full recipe keys -> ranges for ``method`` (its own, else derived, plus the shared)."""
    own = spec.methods.get(method) or derived_space(METHODS.get(method, modality).config_class)
    prefix = spec.method_args_key.format(method=method)
    space = {(k if "." in k else f"{prefix}.{k}"): v for k, v in own.items()}
    for key, value in spec.shared.items():
        space.setdefault(key, value)
    if not space:
        raise ConfigError(f"search: nothing to search for {method} (its config has no float "
                          "field; give ranges under search.methods or search.shared)")
    return space


def _distributions(space: Mapping[str, Range | list[Any]]) -> dict[str, Any]:
    import optuna

    out = {}
    for key, value in space.items():
        if isinstance(value, list):
            out[key] = optuna.distributions.CategoricalDistribution(value)
        elif value.int:
            out[key] = optuna.distributions.IntDistribution(int(value.low), int(value.high),
                                                            log=value.log)
        else:
            out[key] = optuna.distributions.FloatDistribution(value.low, value.high,
                                                              log=value.log)
    return out


# -- the study ----------------------------------------------------------------------------------
def _sampler(spec: SearchSpec, offset: int) -> Any:
    import optuna

    seed = spec.seed + offset
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, spec.startup))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.startup)


def open_study(spec: SearchSpec, root: Path, name: str) -> Any:
    """Create or load the study ``name`` (one per method) in the search's storage."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = spec.storage or f"sqlite:///{(root / 'search' / 'study.db').resolve()}"
    (root / "search").mkdir(parents=True, exist_ok=True)
    directions = ["maximize"] * len(spec.objectives)
    study = optuna.create_study(study_name=name, storage=storage, directions=directions,
                                load_if_exists=True)
    if [d.name.lower() for d in study.directions] != directions:
        raise ConfigError(f"{storage}: study {name!r} has {len(study.directions)} objectives; "
                          f"this search has {len(directions)} (use another output directory)")
    study.sampler = _sampler(spec, offset=len(study.trials))
    return study


def _driver() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(driver: str) -> bool:
    host, _, pid = driver.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's driver: assume it is still working
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Search:
    """One method's study: ask a setting, run its cells, tell the objectives."""

    def __init__(self, spec: SearchSpec, root: Path, method: str, modality: str,
                 objective: Objective, fingerprint: str | None) -> None:
        self.spec, self.root, self.method, self.objective = spec, root, method, objective
        self.space = method_space(spec, method, modality)
        self.distributions = _distributions(self.space)
        self.name = f"{spec.sampler}-seed{spec.seed}"
        self.study = open_study(spec, root, f"{method}-{self.name}-{fingerprint or 'search'}")
        self.failures: dict[str, int] = {}

    # -- settling what an earlier driver left ------------------------------------------------
    def settle_stale(self, log: Callable[[str], None]) -> None:
        import optuna

        for trial in self.study.get_trials(deepcopy=False,
                                           states=(optuna.trial.TrialState.RUNNING,)):
            if _alive(str(trial.user_attrs.get("driver", ""))):
                continue
            cells = self.cells(trial.params, trial.number)
            if all((cell_dir(self.root, c["cell_id"]) / DONE).is_file() for c in cells):
                results = [read_json(cell_dir(self.root, c["cell_id"]) / DONE) for c in cells]
                self.study.tell(trial.number, self.values(results))
                log(f"{self.method}: trial {trial.number} had finished; recorded")
            else:
                self.study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
                self.study.enqueue_trial(dict(trial.params), skip_if_exists=False)
                log(f"{self.method}: trial {trial.number} was interrupted; queued again")

    # -- one trial ---------------------------------------------------------------------------
    def cells(self, params: Mapping[str, Any], number: int) -> list[dict[str, Any]]:
        out = []
        for seed in self.spec.seeds:
            cell = make_cell(self.method, dict(params), seed, self.spec.methods_key,
                             self.spec.seed_keys)
            out.append({**cell, "kind": "trial", "trial": number})
        return out

    def ask(self) -> tuple[Any, list[dict[str, Any]]]:
        trial = self.study.ask(self.distributions)
        trial.set_user_attr("driver", _driver())
        trial.set_user_attr("asked", utc_now())
        return trial, self.cells(trial.params, trial.number)

    def values(self, results: list[dict[str, Any]]) -> list[float]:
        per_seed = [self.objective(r.get("metrics", {})) for r in results]
        values = []
        for name in self.spec.objectives:
            found = [s.get(name) for s in per_seed]
            if any(v is None for v in found):
                raise ConfigError(
                    f"search objective {name!r} has no value for {self.method} (the "
                    "evaluation lacks its metrics; robustness needs search.attacks)")
            values.append(sum(found) / len(found))
        return values

    def tell(self, trial: Any, results: list[dict[str, Any]]) -> bool:
        """Record a trial's outcome; a failed cell is re-queued up to ``retries`` times."""
        import optuna

        failed = [r for r in results if r.get("status") == "failed"]
        if not failed:
            values = self.values(results)
            for r in results:
                r["values"] = values
            self.study.tell(trial, values)
            return True
        self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        key = results[0]["config_id"]
        self.failures[key] = self.failures.get(key, 0) + 1
        if self.failures[key] <= self.spec.retries:
            self.study.enqueue_trial(dict(trial.params), skip_if_exists=False)
        return False

    def complete(self) -> int:
        import optuna

        return len(self.study.get_trials(deepcopy=False,
                                         states=(optuna.trial.TrialState.COMPLETE,)))

    def exhausted(self) -> bool:
        return any(n > self.spec.retries for n in self.failures.values())

    # -- the record --------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        import optuna

        done = sorted(self.study.get_trials(deepcopy=False,
                                            states=(optuna.trial.TrialState.COMPLETE,)),
                      key=lambda t: t.number)
        points = [list(t.values) for t in done]
        reference = self.spec.reference()
        front = front_indices(points)
        trials = [{"number": t.number, "params": t.params, "values": list(t.values),
                   "cell_ids": [c["cell_id"] for c in self.cells(t.params, t.number)]}
                  for t in done]
        return {"method": self.method, "objectives": self.spec.objectives,
                "reference_point": reference, "sampler": self.spec.sampler,
                "seed": self.spec.seed, "startup_trials": self.spec.startup,
                "space": {k: (v if isinstance(v, list) else v.model_dump())
                          for k, v in self.space.items()},
                "trials": trials, "front": [trials[i]["number"] for i in front],
                "hypervolume": hypervolume(points, reference),
                "hypervolume_curve": hypervolume_curve(points, reference),
                "reference_rule": "hypervolume of the trials' non-dominated set against the "
                                  "reference point, every objective maximised",
                "written": utc_now()}


def _local(search: Search, run_cell: CellRunner, log: Callable[[str], None]) -> None:
    while search.complete() < search.spec.trials and not search.exhausted():
        trial, cells = search.ask()
        results = [attempt_cell(run_cell, c, cell_dir(search.root, c["cell_id"]))
                   for c in cells]
        for r in results:
            record_finished(r, search.root)
        ok = search.tell(trial, results)
        log(f"{search.method}: trial {trial.number} "
            + (f"{[round(v, 4) for v in results[0]['values']]}" if ok else
               f"failed ({next(r['error'] for r in results if 'error' in r)})"))


def _ray(search: Search, run_cell: CellRunner, log: Callable[[str], None],
         address: str | None, num_cpus: int | None) -> None:
    ray = start_ray(address, num_cpus)
    task = ray.remote(**search.spec.ray)(attempt_cell)
    pending: dict[Any, tuple[Any, int]] = {}  # object ref -> (trial, index in its cells)
    gathered: dict[int, list[dict[str, Any] | None]] = {}
    trials: dict[int, Any] = {}

    def submit() -> None:
        trial, cells = search.ask()
        trials[trial.number] = trial
        gathered[trial.number] = [None] * len(cells)
        for i, c in enumerate(cells):
            ref = task.remote(run_cell, c, str(cell_dir(search.root, c["cell_id"])))
            pending[ref] = (trial, i)

    while True:
        in_flight = len(trials)
        while (search.complete() + in_flight < search.spec.trials and in_flight
               < search.spec.parallel and not search.exhausted()):
            submit()
            in_flight += 1
        if not pending:
            break
        ready, _ = ray.wait(list(pending), num_returns=1)
        trial, index = pending.pop(ready[0])
        result = ray.get(ready[0])
        record_finished(result, search.root)
        gathered[trial.number][index] = result
        if all(r is not None for r in gathered[trial.number]):
            results = [r for r in gathered.pop(trial.number) if r is not None]
            trials.pop(trial.number)
            ok = search.tell(trial, results)
            log(f"{search.method}: trial {trial.number} " + ("done" if ok else "failed"))


def run_search(spec: SearchSpec, root: str | Path, run_cell: CellRunner, modality: str,
               objective: Objective, executor: str = "local", fingerprint: str | None = None,
               address: str | None = None, num_cpus: int | None = None,
               log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Run each method's study to ``spec.trials`` finished trials; write and return the
    summaries (see :func:`summary_path`). Studies of other seeds or samplers in the same run
    directory are separate studies that share finished cells of equal settings."""
    if executor not in ("local", "ray"):
        raise ConfigError(f"unknown executor {executor!r}; use local or ray")
    root = Path(root)
    plan = root / "search" / "plan.json"
    if plan.is_file() and fingerprint is not None:
        previous = read_json(plan).get("fingerprint")
        if previous not in (None, fingerprint):
            raise ConfigError(f"{root}: holds a search of a different base recipe "
                              f"({previous} ≠ {fingerprint}); use another output directory")
    atomic_write_json(plan, {"fingerprint": fingerprint, "spec": spec.model_dump(),
                             "executor": executor, "written": utc_now()})
    summaries = {}
    for method in spec.methods:
        start = time.perf_counter()
        search = Search(spec, root, method, modality, objective, fingerprint)
        search.settle_stale(log)
        log(f"search {method}: {search.complete()} of {spec.trials} trials already finished "
            f"({spec.sampler}, seed {spec.seed}, executor {executor})")
        if executor == "ray":
            _ray(search, run_cell, log, address, num_cpus)
        else:
            _local(search, run_cell, log)
        summary = search.summary()
        summary["seconds"] = time.perf_counter() - start
        atomic_write_json(summary_path(root, method, search.name), summary)
        summaries[method] = summary
        if search.exhausted():
            raise ObliviateError(
                f"search {method}: a trial failed {spec.retries + 1} times (see "
                f"{root / 'sweep'}/<cell>/failed); the finished trials are kept, and running "
                "the search again continues it")
    return summaries


def summary_path(root: str | Path, method: str, name: str) -> Path:
    """``search/<method>/<sampler>-seed<seed>.json``: one study's summary."""
    return Path(root) / "search" / method / f"{name}.json"


def load_summaries(root: str | Path) -> list[dict[str, Any]]:
    """Every study summary of a run directory (each names its method, sampler and seed)."""
    return [read_json(p) for p in sorted(Path(root).glob("search/*/*-seed*.json"))]
