"""The LLM stage runners: one unlearning run and one evaluation, on objects in memory (one
attack is :func:`obliviate.core.runner.run_attack`, the same for every modality).

``obliviate.unlearn`` and ``evaluate`` (api.py) and the CLI's stages
(:mod:`obliviate.llm.pipeline`, which pick the models of a run directory, load them and skip
what is done) call these same functions. Given ``out_dir`` a runner writes its outputs there
(the weights, checkpoints and manifest; each suite's JSON); given ``run`` it records the stage
in ``run.json`` (:func:`obliviate.core.runner.recorded_work`); given neither it writes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from obliviate.core.io import sha256_dir
from obliviate.core.rundir import RunDir
from obliviate.core.runner import (
    recorded_unlearning,
    recorded_work,
    tracked,
    tracker_config,
    write_manifest,
)
from obliviate.core.task import UnlearningTask


def weights_sha256(path: str | Path) -> str | None:
    """SHA-256 of a model's safetensors files (None where there are none: a prompt-only model)."""
    path = Path(path)
    if (path / "model").is_dir():  # an unlearned model's folder from before 0.2
        path = path / "model"
    if not path.is_dir() or not any(path.glob("*.safetensors")):
        return None
    return sha256_dir(path, ("*.safetensors",))


def unlearn(name: str, cls: Any, config: Any, model: Any, task: UnlearningTask, ctx: Any, *,
            seed: int = 0, out_dir: str | Path | None = None, run: RunDir | None = None,
            base_model: str | None = None, record: Mapping[str, Any] | None = None,
            log_with: Any = None, logging_dir: str | Path | None = None
            ) -> tuple[Any, dict[str, Any]]:
    """Run method ``name`` (class ``cls``, validated ``config``) on ``model`` in place with the
    :class:`~obliviate.llm.methods.base.UnlearnContext` ``ctx``; ``(outcome, stage record)``
    (the record is ``{}`` without ``run``).

    ``out_dir``: the unlearned model's folder (its weights, resumable checkpoints while it
    trains, and the manifest naming ``base_model``). ``run``: stage ``unlearn_<name>`` is
    recorded with the config, training settings, cost, history and hashes (plus ``record``).
    ``log_with``: the training curve goes live to those trackers under ``logging_dir``
    (:func:`obliviate.core.runner.tracked`).
    """
    import torch

    from obliviate.core.integrity import MANIFEST
    from obliviate.core.io import sha256_file
    from obliviate.core.profiling import peak_memory
    from obliviate.llm.training import barrier

    out = Path(out_dir) if out_dir is not None else None
    data = task.provenance()["splits"]

    def work() -> Any:
        torch.manual_seed(seed)
        outcome = tracked(lambda: cls(config).run(model, task, out, ctx=ctx), log_with,
                          logging_dir, name, tracker_config(
                              name, cls, config, task, base_model,
                              train=ctx.train.model_dump(mode="json")))
        if out is not None:
            write_manifest(out, name, cls, config, base_model, outcome.prompt_format)
            barrier()  # the main process has saved the weights
        return outcome

    def finished(outcome: Any) -> dict[str, Any]:
        return {
            "method": name, "paper": cls.paper, "config": config.model_dump(mode="json"),
            "train": ctx.train.model_dump(mode="json"), "lora": ctx.lora.model_dump(mode="json"),
            "seconds": outcome.seconds, "steps": outcome.steps,
            "trainable_parameters": outcome.trainable_parameters,
            "total_parameters": outcome.total_parameters,
            "peak_memory": outcome.peak_memory or peak_memory(),
            "selection": outcome.selection, "history": outcome.history, "data": data,
            "output": str(out), "resumed_from": outcome.resumed_from,
            "weights_sha256": weights_sha256(out) if out is not None else None,
            "manifest_sha256": sha256_file(out / MANIFEST) if out is not None else None,
            **dict(record or {})}

    return recorded_unlearning(run, name, work, data, finished, log_with, logging_dir)


def evaluation_splits(task: UnlearningTask) -> dict[str, Any]:
    """The splits the LLM suites read, keyed by the names their options expect."""
    return {"forget": task.forget, "retain": task.retain, **task.eval_splits}


def summary(outputs: Mapping[str, Any]) -> dict[str, float]:
    """``suite/split/metric`` -> value over the suites' outputs (NaN where a metric has none;
    the run record stores those as null)."""
    return {f"{suite}/{k}": v for suite, output in outputs.items()
            for k, v in output.result.summary().items()}


def evaluate(model: Any, tokenizer: Any, fmt: Any, task: UnlearningTask, *,
             suites: Sequence[str], options: Mapping[str, Any] | None = None,
             name: str = "model", seed: int = 0, inputs: Mapping[str, Any] | None = None,
             out_dir: str | Path | None = None, run: RunDir | None = None,
             stage: str | None = None, provenance: Mapping[str, Any] | None = None,
             record: Mapping[str, Any] | None = None
             ) -> tuple[tuple[dict[str, Any], float], dict[str, Any]]:
    """Run ``suites`` on ``model`` in one shared scoring pass; ``((outputs by suite, seconds),
    stage record)`` (the record is ``{}`` without ``run``).

    ``inputs`` are the oracle's results the metrics compare with; ``provenance`` is added to
    each result. ``out_dir`` gets ``<suite>.json`` (and the suites' other files); ``run``
    records ``stage`` (default ``eval_<name>``) with the summary (plus ``record``)."""
    import torch

    from obliviate.core.safety import output_name
    from obliviate.llm.evaluation.suites import evaluate as run_suites

    def work() -> tuple[dict[str, Any], float]:
        torch.manual_seed(seed)
        start = time.perf_counter()  # the shared scoring and generation run before the suites
        outputs = run_suites(model, tokenizer, fmt, evaluation_splits(task), suites=list(suites),
                             options=options, model_name=name, **dict(inputs or {}))
        seconds = time.perf_counter() - start
        for output in outputs.values():
            output.result.provenance.update(provenance or {})
            if out_dir is not None:
                output.save(out_dir)
        return outputs, seconds

    def finished(done: tuple[dict[str, Any], float]) -> dict[str, Any]:
        outputs, seconds = done
        return {"summary": summary(outputs), "seconds": seconds, "suites": list(outputs),
                "output": str(out_dir), "options": dict(options or {}), **dict(record or {})}

    return recorded_work(run, stage or f"eval_{output_name(name)}", work, record, finished)

