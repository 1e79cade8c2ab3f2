"""What every stage runner shares: record a piece of work in a run directory, or nothing.

Each modality's runner (``obliviate.llm.runner``, ``obliviate.diffusion.runner``) does one
unlearning run, one evaluation or one attack on objects in memory; the Python verbs
(``obliviate.unlearn`` ...) and the CLI's stages call the same runner. When the CLI gives a run
directory, :func:`recorded_work` marks the stage ``running`` in ``run.json``, then ``done`` with
what the work produced (or ``failed`` with the one-line error); without one it only runs the
work, so the Python verbs write nothing they were not asked to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from obliviate.core.errors import ObliviateError
from obliviate.core.rundir import RunDir
from obliviate.core.task import UnlearningTask

T = TypeVar("T")


def recorded_work(run: RunDir | None, stage: str, work: Callable[[], T],
                  running: Mapping[str, Any] | None = None,
                  finished: Callable[[T], Mapping[str, Any]] | None = None
                  ) -> tuple[T, dict[str, Any]]:
    """``(work(), record)``: with ``run``, stage ``stage`` is recorded as running (with
    ``running``), then done with ``finished(result)``, or failed when the work raises an
    :class:`ObliviateError` (a diverged loss, a bad input), which is raised again. Without
    ``run`` the record is ``{}`` and nothing is written."""
    if run is None:
        return work(), {}
    run.record_stage(stage, status="running", **dict(running or {}))
    try:
        result = work()
    except ObliviateError as exc:  # the record says so, not "running"
        run.record_stage(stage, status="failed", error=str(exc))
        raise
    return result, run.record_stage(stage, status="done",
                                    **dict(finished(result) if finished else {}))


def recorded_unlearning(run: RunDir | None, name: str, work: Callable[[], T],
                        data: Mapping[str, Any], finished: Callable[[T], Mapping[str, Any]],
                        log_with: Any = None, logging_dir: str | Path | None = None
                        ) -> tuple[T, dict[str, Any]]:
    """:func:`recorded_work` for stage ``unlearn_<name>`` (its ``data`` recorded from the
    start); a stage whose curve went live to trackers is noted as logged there, so the CLI's
    ``--log-with`` does not log it a second time."""
    outcome, done = recorded_work(run, f"unlearn_{name}", work, {"method": name, "data": data},
                                  finished)
    if run is not None and log_with:
        from obliviate.core.tracking import mark_logged

        mark_logged(logging_dir or run.root / "logs", f"unlearn_{name}", done)
    return outcome, done


def write_manifest(folder: str | Path, name: str, cls: Any, config: Any,
                   base_model: str | None, prompt_format: Any = None) -> Path:
    """The manifest beside an unlearned model (the method, its paper and config, the model it
    started from, and for a prompt-only method the prompt it is used with): one writer for the
    run directory's ``models/unlearned/<method>/`` and for ``UnlearnResult.save_pretrained``."""
    from obliviate.core.integrity import MANIFEST
    from obliviate.core.io import atomic_write_json

    dumped = config.model_dump(mode="json") if hasattr(config, "model_dump") else dict(config)
    return atomic_write_json(Path(folder) / MANIFEST, {
        "method": name, "paper": cls.paper, "config": dumped, "base_model": base_model,
        "changes_weights": cls.changes_weights,
        "prompt_format": prompt_format.to_dict() if prompt_format is not None else None})


def run_attack(cls: Any, config: Any, ctx: Any, seed: int = 0,
               out_file: str | Path | None = None) -> Any:
    """One attack (class ``cls``, validated ``config``) in its modality's attack context
    ``ctx``, seeded; the result is saved to ``out_file`` when given. ``obliviate.attack`` calls
    it for each attack, the CLI through :func:`obliviate.core.stages.attack_loop` (which skips
    what is done and records each attack in the run directory)."""
    import torch

    torch.manual_seed(seed)
    result = cls(config).run(ctx)
    if out_file is not None:
        result.save(out_file)
    return result


def tracked(work: Callable[[], T], log_with: Any, logging_dir: str | Path | None, method: str,
            config: Mapping[str, Any]) -> T:
    """``work()`` (a method run) with its training curve sent live to the ``log_with``
    trackers under ``logging_dir`` and its cost logged when it ends
    (:func:`obliviate.core.tracking.live_unlearning`); just ``work()`` without trackers."""
    from obliviate.core.tracking import live_unlearning, log_cost

    with live_unlearning(log_with, logging_dir, method, config) as tracking:
        outcome = work()
        if tracking is not None:
            log_cost(tracking, outcome)
    return outcome


def tracker_config(name: str, cls: Any, config: Any, task: UnlearningTask,
                   base_model: str | None, **more: Any) -> dict[str, Any]:
    """What a tracker run of an unlearning run records as its configuration: the method, its
    paper and config, the base model and the data hashes (plus ``more``, e.g. ``train``)."""
    return {"method": name, "modality": task.modality, "paper": cls.paper,
            "config": config.model_dump(mode="json"), "base_model": base_model,
            "data": {k: v.get("sha256") for k, v in task.provenance()["splits"].items()},
            **more}
