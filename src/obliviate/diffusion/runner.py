"""The diffusion stage runners: one unlearning run and one evaluation, on objects in memory (one
attack is :func:`obliviate.core.runner.run_attack`, the same for every modality).

``obliviate.unlearn`` and ``evaluate`` (api.py) and the CLI's stages
(:mod:`obliviate.diffusion.pipeline`, which pick the models of a run directory, load them and
skip what is done) call these same functions. Given ``out_dir`` a runner writes its outputs
there (the weights, checkpoints and manifest; ``generation.json`` and ``samples.png``); given
``run`` it records the stage in ``run.json`` (:func:`obliviate.core.runner.recorded_work`);
given neither it writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from obliviate.core.rundir import RunDir
from obliviate.core.runner import (
    recorded_unlearning,
    recorded_work,
    tracked,
    tracker_config,
    write_manifest,
)
from obliviate.core.task import UnlearningTask


def unlearn(name: str, cls: Any, config: Any, model: Any, task: UnlearningTask,
            ctx: Any = None, *, seed: int = 0, out_dir: str | Path | None = None,
            run: RunDir | None = None, base_model: str | None = None,
            record: Mapping[str, Any] | None = None, log_with: Any = None,
            logging_dir: str | Path | None = None) -> tuple[Any, dict[str, Any]]:
    """Run method ``name`` (class ``cls``, validated ``config``) on the denoiser ``model`` in
    place; ``(outcome, stage record)`` (the record is ``{}`` without ``run``).

    ``ctx`` defaults to the task's images on the model's device, seeded with ``seed``.
    ``out_dir``: the unlearned model's folder (weights, resumable checkpoints while it trains,
    and the manifest naming ``base_model``). ``run``: stage ``unlearn_<name>`` is recorded with
    the config, cost, history and weights hash (plus ``record``). ``log_with``: the
    training curve goes live to those trackers under ``logging_dir``
    (:func:`obliviate.core.runner.tracked`).
    """
    import torch

    from obliviate.core.io import sha256_dir
    from obliviate.diffusion.methods.base import UnlearnContext

    out = Path(out_dir) if out_dir is not None else None
    data = task.provenance()["splits"]
    ctx = ctx or UnlearnContext.build(task, model.device, seed=seed,
                                      checkpoint_dir=out / "checkpoints" if out else None)

    def work() -> Any:
        torch.manual_seed(seed)
        outcome = tracked(lambda: cls(config).run(model, task, out, ctx=ctx), log_with,
                          logging_dir, name,
                          tracker_config(name, cls, config, task, base_model))
        if out is not None:
            write_manifest(out, name, cls, config, base_model)
        return outcome

    def finished(outcome: Any) -> dict[str, Any]:
        return {
            "method": name, "paper": cls.paper, "config": config.model_dump(mode="json"),
            "seconds": outcome.seconds, "steps": outcome.steps,
            "trainable_parameters": outcome.trainable_parameters,
            "total_parameters": outcome.total_parameters, "peak_memory": outcome.peak_memory,
            "history": outcome.history, "output": str(out), "model_path": outcome.model_path,
            "data": data, "details": outcome.extra,
            "weights_sha256": sha256_dir(out, ("*.safetensors",)) if out is not None else None,
            **dict(record or {})}

    return recorded_unlearning(run, name, work, data, finished, log_with, logging_dir)


def summary(result: Any) -> dict[str, float]:
    """``generation/split/metric`` -> value of an evaluation's result (NaN where a metric has
    none; the run record stores those as null)."""
    from obliviate.diffusion.evaluation import SUITE

    return {f"{SUITE}/{k}": v for k, v in result.summary().items()}


def evaluate(model: Any, judge: Any, task: UnlearningTask, config: Any, *,
             name: str = "model", seed: int = 0, oracle: Any = None,
             out_dir: str | Path | None = None, run: RunDir | None = None,
             stage: str | None = None, provenance: Mapping[str, Any] | None = None,
             record: Mapping[str, Any] | None = None, **reference: Any
             ) -> tuple[Any, dict[str, Any]]:
    """Sample and judge ``model`` (:func:`~obliviate.diffusion.evaluation.evaluate_denoiser`
    with the ``EvaluationConfig`` ``config``; ``oracle`` is the oracle's result, for the gaps);
    ``(EvalResult, stage record)``.

    ``reference`` passes ``reference_features`` and ``neighbours`` computed once for many
    models. ``out_dir`` gets ``generation.json`` and ``samples.png``; ``run`` records ``stage``
    (default ``eval_<name>``) with the summary (plus ``record``)."""
    import torch

    from obliviate.core.safety import output_name
    from obliviate.diffusion.evaluation import SUITE, evaluate_denoiser

    def work() -> Any:
        torch.manual_seed(seed)
        result = evaluate_denoiser(model, judge, task, config, model_name=name, oracle=oracle,
                                   out_dir=out_dir, **reference)
        result.provenance.update(provenance or {})
        if out_dir is not None:
            result.save(Path(out_dir) / f"{SUITE}.json")
        return result

    def finished(result: Any) -> dict[str, Any]:
        return {"summary": summary(result),
                "seconds": result.seconds, "suites": [SUITE], "output": str(out_dir),
                **({"samples": str(Path(out_dir) / "samples.png")} if out_dir else {}),
                **dict(record or {})}

    return recorded_work(run, stage or f"eval_{output_name(name)}", work, record, finished)
