"""Sweeps: a grid of methods × hyperparameters × seeds, each cell independent and resumable.

The grid comes from the recipe's ``sweep:`` section (removed before the recipe is validated)::

    sweep:
      methods:                       # method -> its own grid (may be empty: {} or a list)
        npo: {beta: [0.05, 0.1, 0.2]}          # bare key: unlearn.method_args.npo.beta
        grad_diff: {}
        simnpo: {unlearn.train.epochs: [2, 4]} # dotted key: any recipe key
      grid:                          # shared by every method (cartesian product)
        unlearn.train.learning_rate: [0.0003, 0.001, 0.003]
      seeds: [0, 1]                  # set on every key of seed_keys
      seed_keys: [unlearn.train.seed, "unlearn.method_args.{method}.seed"]
      attacks: []                    # attacks each cell's model faces (robustness axis)
      rule: "threshold:0.5"          # how the report picks each method's point
      ray: {num_cpus: 1}             # resources of one cell under --executor ray

A cell is ``(method, swept values, seed)``; its overrides are ``{methods_key: [method],
key: value, ...}`` and its id is ``<method>-<first 12 hex digits of the SHA-256 of the
canonical JSON of the overrides>``, so the same cell keeps its id across runs and grid edits.
Cell ``c`` runs in ``<root>/sweep/<c>/``; when it finishes, the injected runner's metrics are
written atomically to ``<root>/sweep/<c>/done``. A rerun skips every cell with a ``done``
file, so a crash loses at most the cells in flight. A cell that raises leaves ``failed`` (the
error) instead; the other cells still run, the sweep then reports the failures, and a rerun
retries them.

Executors: ``local`` runs cells one after another in this process; ``ray`` submits each cell
as a Ray task on the cluster at ``--address`` (or ``RAY_ADDRESS``), else on a local Ray runtime
that obliviate starts; the run directory must then be on a filesystem every worker sees. Each
finished cell's row goes into the run's results store (:mod:`obliviate.core.store`), written by
the driver as the cell's result arrives.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from obliviate.core.errors import ConfigError, ObliviateError
from obliviate.core.io import atomic_write_json, canonical_json, read_json
from obliviate.core.recipe import StrictModel, validate
from obliviate.core.rundir import utc_now
from obliviate.core.store import record_cell

CellRunner = Callable[[dict[str, Any], Path], dict[str, float]]
EXECUTORS = ("local", "ray")
DONE = "done"
FAILED = "failed"


class CellsSpec(StrictModel):
    """What a grid sweep and a search share: how a method's settings become a cell's recipe
    overrides, the seeds each setting runs with, and what each cell faces."""

    methods: dict[str, Any]
    """the methods the cells run, each with its settings (grid values or search space)"""
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    """the unlearning seeds each configuration runs with (mean and spread over them)"""
    seed_keys: list[str] = Field(default_factory=lambda: [
        "unlearn.train.seed", "unlearn.method_args.{method}.seed"])
    """the recipe keys a cell's seed is written to ({method} is the method's name)"""
    methods_key: str = "unlearn.methods"
    """the recipe key that selects a cell's method"""
    method_args_key: str = "unlearn.method_args.{method}"
    """where a cell's method settings go in the recipe ({method} is the method's name)"""
    attacks: list[str] = Field(default_factory=list)
    """attacks run on every cell's model (their recovery joins the cell's metrics)"""
    rule: str = "threshold:0.5"
    """how the cells are ranked: threshold:<x> keeps cells forgetting at least x, then ranks by
    utility"""
    ray: dict[str, float] = Field(default_factory=lambda: {"num_cpus": 1})
    """resources each cell asks Ray for when cells run in parallel"""

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, value: Any) -> Any:
        return methods_mapping(value)


class SweepSpec(CellsSpec):
    """The ``sweep:`` section of a recipe (see the module docstring)."""

    methods: dict[str, dict[str, list[Any]]]
    """each method's grid: hyperparameter -> list of values (every combination is a cell)"""
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    """settings crossed with every method's grid (recipe key -> list of values)"""

    @field_validator("grid")
    @classmethod
    def _grid(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        empty = [k for k, v in value.items() if not v]
        if empty:
            raise ValueError(f"no values for {empty[0]!r}")
        return value


def methods_mapping(value: Any) -> Any:
    """A recipe's ``methods:`` as ``{method: its own settings}`` (a list names methods with
    none); an empty one is refused. Shared by the sweep and search sections."""
    if isinstance(value, (list, tuple)):
        value = {str(name): {} for name in value}
    if isinstance(value, dict):
        value = {k: (v or {}) for k, v in value.items()}
        if not value:
            raise ValueError("list at least one method")
    return value


def split_sweep(data: dict[str, Any], source: str = "recipe") -> tuple[dict[str, Any], SweepSpec]:
    """``(recipe data without the sweep section, the validated sweep section)``."""
    data = dict(data)
    section = data.pop("sweep", None)
    data.pop("search", None)  # a recipe may hold a search over the same space too
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: no `sweep:` section (see `obliviate sweep --help`)")
    return data, validate(SweepSpec, section, source=f"{source}: sweep")


def set_path(data: dict[str, Any], key: str, value: Any) -> None:
    """Set the dotted ``key`` in nested dicts (creating sections), e.g. ``a.b.c``."""
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"sweep key {key!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def stable_hash(obj: Any, length: int = 12) -> str:
    return hashlib.sha256(canonical_json(obj)).hexdigest()[:length]


def make_cell(method: str, params: dict[str, Any], seed: int, methods_key: str,
              seed_keys: list[str]) -> dict[str, Any]:
    """One cell: ``{cell_id, config_id, method, params, seed, overrides}``.

    ``params`` holds the swept values under their full keys; ``config_id`` identifies the
    configuration (the cell without its seed), so seeds of one configuration share it. Grid
    cells and search trials are both made here, so equal settings are one cell.
    """
    config_id = f"{method}-{stable_hash({'method': method, 'params': params})}"
    overrides = {methods_key: [method], **params,
                 **{k.format(method=method): seed for k in seed_keys}}
    return {"cell_id": f"{method}-{stable_hash(overrides)}", "config_id": config_id,
            "method": method, "params": params, "seed": seed, "overrides": overrides}


def expand(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every cell of the grid (see :func:`make_cell`), in plan order."""
    cells = []
    for method, own in spec.methods.items():
        prefix = spec.method_args_key.format(method=method)
        axes = {(k if "." in k else f"{prefix}.{k}"): v for k, v in own.items()}
        for key, values in spec.grid.items():
            axes.setdefault(key, values)
        for values in itertools.product(*axes.values()):
            params = dict(zip(axes, values, strict=True))
            for seed in spec.seeds:
                cells.append(make_cell(method, params, seed, spec.methods_key, spec.seed_keys))
    ids = [c["cell_id"] for c in cells]
    if len(set(ids)) != len(ids):
        raise ConfigError("sweep: two cells have the same settings (a value repeated?)")
    return cells


def cell_dir(root: str | Path, cell_id: str) -> Path:
    return Path(root) / "sweep" / cell_id


def is_done(root: str | Path, cell_id: str) -> bool:
    return (cell_dir(root, cell_id) / DONE).is_file()


def execute_cell(run_cell: CellRunner, cell: dict[str, Any], directory: str | Path
                 ) -> dict[str, Any]:
    """Run one cell unless its ``done`` file exists; return its result (the ``done`` record).

    This is the unit both executors run; only it writes ``done`` (atomically, last).
    """
    directory = Path(directory)
    marker = directory / DONE
    if marker.is_file():
        return {**read_json(marker), "status": "skipped"}
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(directory / "cell.json", cell)
    start = time.perf_counter()
    metrics = run_cell(dict(cell["overrides"]), directory)
    result = {**cell, "metrics": {k: float(v) for k, v in metrics.items()},
              "seconds": time.perf_counter() - start, "finished": utc_now()}
    atomic_write_json(marker, result)
    return {**result, "status": "ran"}


def attempt_cell(run_cell: CellRunner, cell: dict[str, Any], directory: str | Path
                 ) -> dict[str, Any]:
    """:func:`execute_cell`, with an exception recorded in ``failed`` (retried on a rerun)
    instead of stopping the other cells."""
    failed = Path(directory) / FAILED
    try:
        result = execute_cell(run_cell, cell, directory)
    except Exception as exc:  # noqa: BLE001  (one cell's error must not stop the sweep)
        error = f"{type(exc).__name__}: {exc}"
        atomic_write_json(failed, {**cell, "error": error, "failed": utc_now()})
        return {**cell, "status": "failed", "error": error}
    failed.unlink(missing_ok=True)
    return result


def record_finished(result: dict[str, Any], root: str | Path) -> None:
    """Write a cell's row into the run's results store as soon as it has finished (the
    driver writes, never a worker, so one process writes the store)."""
    if result.get("status") in ("ran", "skipped"):
        record_cell({k: v for k, v in result.items() if k != "status"}, root,
                    kind=result.get("kind", "cell"))


def start_ray(address: str | None = None, num_cpus: int | None = None) -> Any:
    """Ray, initialised: the cluster at ``address`` (or ``RAY_ADDRESS``), else a local
    runtime with ``num_cpus`` CPUs (default: all)."""
    try:
        import ray  # type: ignore[import-not-found]
    except ImportError:
        raise ConfigError("--executor ray needs Ray, which is not installed here "
                          "(pip install ray), or use --executor local") from None
    if not ray.is_initialized():
        if address:
            ray.init(address=address)
        else:  # joins RAY_ADDRESS's cluster when set, else starts a local runtime
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     ignore_reinit_error=True)
    return ray


def _run_local(run_cell: CellRunner, cells: list[dict[str, Any]], root: Path,
               log: Callable[[str], None]) -> list[dict[str, Any]]:
    out = []
    for i, cell in enumerate(cells, start=1):
        result = attempt_cell(run_cell, cell, cell_dir(root, cell["cell_id"]))
        record_finished(result, root)
        log(f"[{i}/{len(cells)}] {cell['cell_id']}: {result['status']}"
            + (f" ({result['error']})" if "error" in result else ""))
        out.append(result)
    return out


def _run_ray(run_cell: CellRunner, cells: list[dict[str, Any]], root: Path,
             log: Callable[[str], None], options: dict[str, float], address: str | None = None,
             num_cpus: int | None = None) -> list[dict[str, Any]]:
    ray = start_ray(address, num_cpus)
    task = ray.remote(**options)(attempt_cell)
    pending = {task.remote(run_cell, cell, str(cell_dir(root, cell["cell_id"]))): cell
               for cell in cells}
    results: dict[str, dict[str, Any]] = {}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            cell = pending.pop(ref)
            results[cell["cell_id"]] = ray.get(ref)
            result = results[cell["cell_id"]]
            record_finished(result, root)
            log(f"[{len(results)}/{len(cells)}] {cell['cell_id']}: {result['status']}"
                + (f" ({result['error']})" if "error" in result else ""))
    return [results[c["cell_id"]] for c in cells]


def run_sweep(spec: SweepSpec, root: str | Path, run_cell: CellRunner, executor: str = "local",
              fingerprint: str | None = None, log: Callable[[str], None] = print,
              address: str | None = None, num_cpus: int | None = None
              ) -> list[dict[str, Any]]:
    """Run every cell not yet done; write ``sweep/plan.json`` and ``sweep/results.json``.

    ``fingerprint`` identifies what the cells share (e.g. a hash of the base recipe); a run
    directory whose plan has another fingerprint is refused rather than mixed.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; use one of {', '.join(EXECUTORS)}")
    root = Path(root)
    cells = expand(spec)
    plan_path = root / "sweep" / "plan.json"
    if plan_path.is_file() and fingerprint is not None:
        previous = read_json(plan_path).get("fingerprint")
        if previous not in (None, fingerprint):
            raise ConfigError(f"{root}: holds a sweep of a different base recipe "
                              f"({previous} ≠ {fingerprint}); use another output directory")
    atomic_write_json(plan_path, {"fingerprint": fingerprint, "spec": spec.model_dump(),
                                  "executor": executor, "cells": cells, "written": utc_now()})
    done = sum(is_done(root, c["cell_id"]) for c in cells)
    log(f"sweep: {len(cells)} cells, {done} already done, executor {executor}")
    if executor == "ray":
        results = _run_ray(run_cell, cells, root, log, spec.ray, address, num_cpus)
    else:
        results = _run_local(run_cell, cells, root, log)
    finished = [{k: v for k, v in r.items() if k != "status"} for r in results
                if r["status"] != "failed"]
    atomic_write_json(root / "sweep" / "results.json", {
        "spec": spec.model_dump(), "fingerprint": fingerprint, "cells": finished})
    failed = [r for r in results if r["status"] == "failed"]
    if failed:
        raise ObliviateError(
            f"{len(failed)} of {len(cells)} cells failed, e.g. {failed[0]['cell_id']}: "
            f"{failed[0]['error']} (see {root / 'sweep'}/<cell>/failed); the finished cells "
            "are kept, and running the sweep again retries the failed ones")
    return results


def load_results(root: str | Path) -> list[dict[str, Any]]:
    """The finished cells of a run: the grid's in plan order, then any other finished cell (a
    search's trials, ``kind: trial``) by id."""
    root = Path(root)
    plan = root / "sweep" / "plan.json"
    markers = []
    if plan.is_file():
        markers = [cell_dir(root, c["cell_id"]) / DONE for c in read_json(plan)["cells"]]
    planned = set(markers)
    markers += [p for p in sorted((root / "sweep").glob(f"*/{DONE}")) if p not in planned]
    return [read_json(p) for p in markers if p.is_file()]


def load_spec(root: str | Path) -> SweepSpec | None:
    for name in ("results.json", "plan.json"):
        path = Path(root) / "sweep" / name
        if path.is_file():
            return SweepSpec.model_validate(read_json(path)["spec"])
    return None
