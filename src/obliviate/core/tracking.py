"""Experiment trackers (TensorBoard, MLflow, Weights & Biases, ...) through accelerate's tracking.

``log_with`` takes accelerate's tracker names (``accelerate.tracking.LOGGER_TYPE_TO_CLASS``:
``tensorboard``, ``mlflow``, ``wandb``, ``comet_ml``, ``aim``, ...). Everything stays offline
by default: TensorBoard writes event files, MLflow a file store (``file:<logging_dir>/mlruns``
unless ``MLFLOW_TRACKING_URI`` says otherwise), W&B runs with ``WANDB_MODE=offline`` unless
the environment sets a mode.

What is logged: an unlearning run's configuration, its training curve (loss, learning rate and
the method's own terms at every logged step, sent as the loop logs it: :func:`live_unlearning`)
and its cost; an evaluation's metrics; attack results (plain, attacked, recovery).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from obliviate.core.method import check_names

PROJECT = "obliviate"
_MLFLOW_URI: str | None = None  # the file store obliviate pointed MLflow at last


def tracker_names(log_with: str | Sequence[str]) -> list[str]:
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    names = [log_with] if isinstance(log_with, str) else list(log_with)
    names = [str(n).lower() for n in names]
    check_names(names, sorted(LOGGER_TYPE_TO_CLASS), "log_with")
    return names


def _offline(names: list[str], logging_dir: Path) -> None:
    """Point MLflow at a local file store and W&B at offline mode, unless the user chose."""
    global _MLFLOW_URI
    current = os.environ.get("MLFLOW_TRACKING_URI")
    if "mlflow" in names and current in (None, "", _MLFLOW_URI):  # unless the user chose one
        import mlflow

        # MLflow 3 keeps its file store (the offline store that needs no database package)
        # behind this switch; obliviate chose the store, so it opts in
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        _MLFLOW_URI = (logging_dir / "mlruns").resolve().as_uri()
        mlflow.set_tracking_uri(_MLFLOW_URI)  # (MLflow also exports it to the environment)
    if "wandb" in names:
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_DIR", str(logging_dir))


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested configs as ``a/b`` keys with scalar values (what every tracker accepts)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{name}/"))
        elif isinstance(value, (bool, int, float, str)) or value is None:
            out[name] = value if value is not None else "None"
        else:
            out[name] = str(value)
    return out


def _scalars(values: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class Tracking:
    """accelerate trackers opened for one run (``with Tracking(...) as t: t.log(...)``)."""

    def __init__(self, log_with: str | Sequence[str], logging_dir: str | Path,
                 run_name: str, config: Mapping[str, Any] | None = None,
                 project: str = PROJECT) -> None:
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        names = tracker_names(log_with)
        self.logging_dir = Path(logging_dir)
        self.logging_dir.mkdir(parents=True, exist_ok=True)
        _offline(names, self.logging_dir)
        self.trackers = []
        for name in names:  # as Accelerator.init_trackers builds them
            cls = LOGGER_TYPE_TO_CLASS[name]
            kwargs = {"mlflow": {"run_name": run_name}, "wandb": {"name": run_name},
                      "tensorboard": {}}.get(name, {})
            tracker = cls(run_name if name == "tensorboard" else project,
                          str(self.logging_dir), **kwargs) \
                if cls.requires_logging_directory else cls(project, **kwargs)
            tracker.start()
            if config:
                tracker.store_init_configuration(_flat(config))
            self.trackers.append(tracker)

    def log(self, values: Mapping[str, Any], step: int | None = None) -> None:
        scalars = _scalars(values)
        if scalars:
            for tracker in self.trackers:
                tracker.log(scalars, step=step)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.finish()

    def __enter__(self) -> Tracking:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _log_entry(tracking: Tracking, entry: Mapping[str, Any]) -> None:
    """One history entry of a training curve as ``train/<name>`` at its step."""
    step = entry.get("step")
    tracking.log({f"train/{k}": v for k, v in entry.items() if k != "step"},
                 step=int(step) if step is not None else None)


def _log_training(tracking: Tracking, history: list[dict[str, Any]],
                  cost: Mapping[str, Any], steps: int) -> None:
    for entry in history:
        _log_entry(tracking, entry)
    tracking.log({f"cost/{k}": v for k, v in cost.items()}, step=steps)


def log_cost(tracking: Tracking, outcome: Any) -> None:
    """What a method run cost (its outcome's seconds, steps, trainable parameters and peak
    memory), as ``cost/<name>`` at its last step."""
    _log_training(tracking, [], {
        "seconds": outcome.seconds, "steps": outcome.steps,
        "trainable_parameters": outcome.trainable_parameters, **(outcome.peak_memory or {})},
        outcome.steps)


@contextmanager
def live_unlearning(log_with: str | Sequence[str] | None, logging_dir: str | Path | None,
                    method: str, config: Mapping[str, Any]) -> Iterator[Tracking | None]:
    """Trackers open around one unlearning run (run ``unlearn-<method>``, with ``config``):
    every history entry goes to them the moment the training loop logs it, at its step
    (:func:`obliviate.core.training.log_listener`), so a dashboard follows the curve while it
    trains, and a run that fails keeps what it logged. Yields ``None`` without ``log_with``."""
    if not log_with:
        yield None
        return
    from obliviate.core.errors import ConfigError
    from obliviate.core.training import log_listener

    if logging_dir is None:
        raise ConfigError("log_with needs a place for the logs: give logging_dir= or output_dir=")
    with Tracking(log_with, logging_dir, f"unlearn-{method}", config) as tracking, \
            log_listener(lambda entry: _log_entry(tracking, entry)):
        yield tracking


def mark_logged(logging_dir: str | Path, stage: str, record: Mapping[str, Any]) -> None:
    """Note that ``stage`` (as recorded, ``record["updated"]``) is logged already, so
    :func:`log_run` does not log it a second time."""
    from obliviate.core.io import atomic_write_json, read_json

    seen_file = Path(logging_dir) / "logged.json"
    seen = read_json(seen_file) if seen_file.is_file() else {}
    atomic_write_json(seen_file, {**seen, stage: record.get("updated", "")})


def log_metrics(values: Mapping[str, Any], log_with: str | Sequence[str],
                logging_dir: str | Path, run_name: str, step: int = 0) -> None:
    """One set of final numbers (an evaluation's summary, attack results)."""
    with Tracking(log_with, logging_dir, run_name) as tracking:
        tracking.log(values, step=step)


def log_run(record: Mapping[str, Any], log_with: str | Sequence[str], logging_dir: str | Path,
            kinds: Sequence[str] = ("unlearn", "eval", "attack")) -> None:
    """A CLI run's records (``run.json``): each unlearning stage's curve and cost, each model's
    evaluation, each model's attack results — one tracker run apiece. A stage already logged
    (same ``updated`` time, noted in ``logging_dir/logged.json``) is not logged twice."""
    from obliviate.core.io import atomic_write_json, read_json

    seen_file = Path(logging_dir) / "logged.json"
    seen = read_json(seen_file) if seen_file.is_file() else {}
    prefixes = tuple(f"{kind}_" for kind in kinds)
    stages = {k: v for k, v in (record.get("stages") or {}).items()
              if k.startswith(prefixes) and isinstance(v, Mapping)
              and v.get("status") == "done" and seen.get(k) != v.get("updated", "")}
    if not stages:
        return
    for name, stage in stages.items():
        if name.startswith("unlearn_"):
            config = {k: stage.get(k) for k in ("method", "paper", "config", "train", "target")}
            with Tracking(log_with, logging_dir, name.replace("_", "-", 1), config) as tracking:
                cost = {k: stage.get(k) for k in ("seconds", "steps", "trainable_parameters")}
                _log_training(tracking, list(stage.get("history") or []),
                              {**cost, **(stage.get("peak_memory") or {})},
                              int(stage.get("steps") or 0))
        elif name.startswith("eval_") and stage.get("summary"):
            log_metrics(stage["summary"], log_with, logging_dir,
                        f"evaluate-{name.removeprefix('eval_').replace('/', '-')}")
    by_model: dict[str, dict[str, Any]] = {}  # attack stages carry their model and attack
    for stage in stages.values():
        if stage.get("attack") and stage.get("model"):
            values = by_model.setdefault(str(stage["model"]).replace("/", "-"), {})
            values.update({f"attack/{stage['attack']}/{k}": stage.get(k)
                           for k in ("plain", "attacked", "recovery")})
    for model, values in by_model.items():
        log_metrics(values, log_with, logging_dir, f"attack-{model}")
    atomic_write_json(seen_file, {**seen, **{k: v.get("updated", "") for k, v in stages.items()}})
