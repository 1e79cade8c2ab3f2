"""Deletion requests over time (MUSE's sustainability, C6; Shi et al. 2024, arXiv:2407.06460).

A deletion request rarely comes alone. With ``unlearn.requests`` in a recipe, the forget set is
split into ``count`` requests (whole entities kept together where records name one), or taken
from ``splits`` (e.g. MUSE's ``sust_forget_1..4``) or ``files``; then, for each method,

* request *i* unlearns its part from the model request *i − 1* left (request 1 from the target),
  with retain = the retain set ∪ the forget data not yet requested (still legitimately held);
* an oracle per request is trained on that same retain ∪ not-yet-requested data, where the task
  trains oracles (``oracles: true``);
* the model is evaluated after each request with the recipe's suites, its forget split being
  every request so far (forgetting must hold for the earlier ones too) and its retain split
  the retain set ∪ the requests still to come (still held: they must not be lost on the way).

Each request is a run directory of its own, ``RUN/requests/r<i>/``, with the usual stages,
records and hashes (every intermediate model is kept there, with its weights' hashes), so a
killed chain resumes where it stopped. ``RUN/requests/requests.json`` and ``requests.png`` hold
each metric against the request index, per method and for the oracles.

Forget-set scaling (MUSE's scalability, C5) runs the same way with ``unlearn.scaling.sizes``
(fractions or counts of the forget set's entities): each size is unlearned from the target,
with an oracle per size trained on retain ∪ the forget data that size leaves in place, into
``RUN/scaling/n<size>/``, and ``scaling.json``/``scaling.png`` hold each metric against the size.

Modality-neutral: the stages are the modality pipeline's own (``prepare``, ``finetune_stage``,
``unlearn_stage``, ``evaluate_stage``); records need ``key()`` and may carry ``entity``.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from obliviate.core.errors import ConfigError
from obliviate.core.io import atomic_write_json
from obliviate.core.recipe import RequestsConfig, ScalingConfig
from obliviate.core.stages import record_task
from obliviate.core.task import DataSplit, UnlearningTask

SHARED_MODELS = ("tokenizer",)
"""Folders of the root run's ``models/`` every request reuses (a tiny model's tokenizer is
trained on the task's text: each request must keep the target's)."""


def parts(items: Sequence[Any], k: int) -> list[list[Any]]:
    """``items`` in ``k`` consecutive parts of near-equal size (the first ones one larger)."""
    if not 1 <= k <= max(len(items), 1):
        raise ConfigError(f"cannot split {len(items)} item(s) into {k} request(s)")
    size, extra = divmod(len(items), k)
    out, start = [], 0
    for i in range(k):
        stop = start + size + (1 if i < extra else 0)
        out.append(list(items[start:stop]))
        start = stop
    return out


def entity_of(record: Any, index: int) -> Any:
    """What a request deletes whole: the record's ``entity`` (a person, an image class: class
    0 included), else the record alone."""
    entity = getattr(record, "entity", None)
    return ("record", index) if entity is None else entity


def split_requests(records: Sequence[Any], k: int) -> list[list[Any]]:
    """The forget records as ``k`` requests, order kept; records that name the same
    ``entity`` stay in one request (a person is deleted whole)."""
    groups: dict[Any, list[Any]] = {}
    for i, r in enumerate(records):
        groups.setdefault(entity_of(r, i), []).append(r)
    if len(groups) < k:
        raise ConfigError(f"unlearn.requests.count={k}: the forget set has only "
                          f"{len(groups)} entit(y/ies) to split")
    return [[r for group in part for r in group] for part in parts(list(groups.values()), k)]


def request_parts(task: UnlearningTask, config: RequestsConfig,
                  load_file: Callable[[str], Sequence[Any]] | None = None) -> list[DataSplit]:
    """The requests as named splits (``request_1`` ...)."""
    if config.count:
        chunks = split_requests(task.forget.records, config.count)
        return [DataSplit(f"request_{i}", c, source=f"{task.forget.name}[request {i}]")
                for i, c in enumerate(chunks, 1)]
    if config.splits:
        return [DataSplit(f"request_{i}", task.split(s).records, source=s)
                for i, s in enumerate(config.splits, 1)]
    if load_file is None:
        raise ConfigError("unlearn.requests.files: this modality cannot read request files")
    return [DataSplit(f"request_{i}", list(load_file(f)), source=f)
            for i, f in enumerate(config.files, 1)]


def held(task: UnlearningTask, requests: Sequence[DataSplit], i: int) -> DataSplit:
    """What is still legitimately held once request ``i`` is made: the retain set ∪ the
    requests not yet made."""
    pending = [r for part in requests[i:] for r in part.records]
    return task.retain if not pending else DataSplit(
        f"{task.retain.name}+pending_{i}", [*task.retain.records, *pending],
        source=f"{task.retain.name} + requests {i + 1}..{len(requests)}")


def request_task(task: UnlearningTask, requests: Sequence[DataSplit], i: int) -> UnlearningTask:
    """Request ``i`` (1-based) to unlearn: forget = its part; retain = retain ∪ the requests
    not yet made (what the oracle of this request is trained on)."""
    return UnlearningTask(name=f"{task.name}_request_{i}", modality=task.modality,
                          forget=requests[i - 1], retain=held(task, requests, i),
                          eval_splits=dict(task.eval_splits), seed=task.seed,
                          metadata={**task.metadata, "request": i,
                                    "requests": len(requests)}).validate()


def evaluation_task(task: UnlearningTask, requests: Sequence[DataSplit], i: int
                    ) -> UnlearningTask:
    """What is checked after request ``i``: forget = requests 1..i together, retain = the
    task's retain ∪ the requests not yet made (what a diffusion judge must also know).

    Evaluation splits about forget entities (every record's ``entity`` among the forget
    set's) are cut to the entities requested so far; splits about the forget set without
    entities (named ``*forget*``, or repeating forget records) are left out: they would mix
    forgotten and pending data, and the suites fall back to the ``forget`` split."""
    done = [r for part in requests[:i] for r in part.records]
    forget_entities = {getattr(r, "entity", None) for part in requests for r in part.records}
    forget_entities |= {getattr(r, "entity", None) for r in task.forget.records}
    forget_entities.discard(None)
    requested = {getattr(r, "entity", None) for r in done} - {None}
    forget_names = {task.forget.name, *(p.source for p in requests)}
    extra: dict[str, DataSplit] = {}
    for name, split in task.eval_splits.items():
        entities = {getattr(r, "entity", None) for r in split.records}
        if split.name in forget_names or name.startswith(("sust_", "scal_")):
            continue
        if forget_entities and entities and entities <= forget_entities:
            kept = [r for r in split.records if getattr(r, "entity", None) in requested]
            if kept:
                extra[name] = DataSplit(f"{split.name}_r{i}", kept, source=split.source)
        elif "forget" not in name and not _about_forget(split, task):
            extra[name] = split
    return UnlearningTask(name=f"{task.name}_after_request_{i}", modality=task.modality,
                          forget=DataSplit(f"requests_1_{i}", done, source=f"requests 1..{i}"),
                          retain=held(task, requests, i), eval_splits=extra, seed=task.seed,
                          metadata={**task.metadata, "request": i})


def _about_forget(split: DataSplit, task: UnlearningTask) -> bool:
    """True when a split repeats forget records (e.g. MUSE's privleak forget, raw forget)."""
    keys = {r.key() for r in task.forget.records}
    return bool(split.records) and all(r.key() in keys for r in split.records)


def run_requests(pipeline: Any, recipe: Any, run: Any, task: UnlearningTask,
                 methods: Sequence[str] | None, command: str,
                 load_file: Callable[[str], Sequence[Any]] | None = None) -> dict[str, Any]:
    """Run every method through the requests in order (see the module docstring); return and
    write ``requests/requests.json`` (metric summaries per request, method and oracle)."""
    config: RequestsConfig = recipe.unlearn.requests
    requests = request_parts(task, config, load_file)
    steps = [(f"r{i}", request_task(task, requests, i), evaluation_task(task, requests, i))
             for i in range(1, len(requests) + 1)]
    return _run_steps(pipeline, recipe, run, methods, command, steps, "requests",
                      chained=True, oracles=config.oracles,
                      extra={"requests": [p.provenance() for p in requests]})


def scaling_steps(task: UnlearningTask, config: ScalingConfig
                  ) -> list[tuple[str, UnlearningTask, UnlearningTask]]:
    """One (name, unlearning task, evaluation task) per size: forget = the first ``n``
    entities of the forget set, retain = retain ∪ the rest of the forget set (the data that
    size leaves in place: what its oracle is trained on)."""
    entities: dict[Any, list[Any]] = {}
    for i, r in enumerate(task.forget.records):
        entities.setdefault(entity_of(r, i), []).append(r)
    total = len(entities)
    steps = []
    for size in config.sizes:
        n = round(size * total) if size <= 1 else int(size)
        if not 1 <= n <= total:
            raise ConfigError(f"unlearn.scaling.sizes: {size} gives {n} of the forget set's "
                              f"{total} entities")
        parts_ = [DataSplit(f"forget_{n}", [r for g in list(entities.values())[:n] for r in g],
                            source=f"{task.forget.name}[:{n} entities]"),
                  DataSplit(f"rest_{n}", [r for g in list(entities.values())[n:] for r in g],
                            source=f"{task.forget.name}[{n}:]")]
        parts_ = [p for p in parts_ if len(p)]
        steps.append((f"n{n}", request_task(task, parts_, 1), evaluation_task(task, parts_, 1)))
    return steps


def run_scaling(pipeline: Any, recipe: Any, run: Any, task: UnlearningTask,
                methods: Sequence[str] | None, command: str) -> dict[str, Any]:
    """Forget-set scaling: each size unlearned from the target, with an oracle per size;
    ``scaling/scaling.json`` and ``scaling.png`` hold each metric against the size."""
    config: ScalingConfig = recipe.unlearn.scaling
    steps = scaling_steps(task, config)
    return _run_steps(pipeline, recipe, run, methods, command, steps, "scaling",
                      chained=False, oracles=config.oracles,
                      extra={"sizes": [len(t.forget) for _, t, _ in steps]})


def _run_steps(pipeline: Any, recipe: Any, run: Any, methods: Sequence[str] | None,
               command: str, steps: Sequence[tuple[str, UnlearningTask, UnlearningTask]],
               folder: str, chained: bool, oracles: bool, extra: dict[str, Any]
               ) -> dict[str, Any]:
    names = list(methods or recipe.unlearn.methods)
    root_target = Path(recipe.unlearn.target) if recipe.unlearn.target else run.model("target")
    summary: dict[str, Any] = {**extra, "methods": names, "oracles": oracles, "after": []}
    previous = dict.fromkeys(names, root_target)
    for index, (label, unlearn_task, eval_task) in enumerate(steps, 1):
        sub_dir = run.root / folder / label
        for name in names:
            sub_recipe = recipe.model_copy(deep=True)
            sub_recipe.unlearn.target = str(previous[name])
            sub_recipe.unlearn.requests = sub_recipe.unlearn.scaling = None
            sub = pipeline.open_run(sub_recipe, sub_dir, command)
            _share_models(run, sub)
            record_task(sub, unlearn_task)
            if oracles:
                pipeline.finetune_stage(sub_recipe, sub, unlearn_task, ("oracle",))
            pipeline.unlearn_stage(sub_recipe, sub, unlearn_task, [name])
            if chained:
                previous[name] = sub.model(f"unlearned/{name}")
        models = [*(["oracle"] if oracles else []), *(f"unlearned/{n}" for n in names)]
        results = pipeline.evaluate_stage(sub_recipe, sub, eval_task, models)
        summary["after"].append({"request" if chained else "step": index, "label": label,
                                 "forget_size": len(eval_task.forget),
                                 "run": str(sub_dir.relative_to(run.root)), "models": results})
    atomic_write_json(run.root / folder / f"{folder}.json", summary)
    xs = ([s["forget_size"] for s in summary["after"]] if not chained else None)
    plot_requests(summary, run.root / folder / f"{folder}.png", x=xs,
                  xlabel="request" if chained else "forget-set size")
    return summary


def _share_models(run: Any, sub: Any) -> None:
    for name in SHARED_MODELS:
        src, dst = run.model(name), sub.model(name)
        if src.is_dir() and not dst.exists():
            shutil.copytree(src, dst)


def curves(summary: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """``{metric: {model: [value after request 1, 2, ...]}}`` from a requests summary (NaN
    where a model has no value after a request)."""
    after = summary.get("after", [])
    keys = sorted({k for step in after for m in step["models"].values() for k in m})
    out: dict[str, dict[str, list[float]]] = {}
    for key in keys:
        models = sorted({m for step in after for m in step["models"]})
        out[key] = {m: [_num(step["models"].get(m, {}).get(key)) for step in after]
                    for m in models}
    return out


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def plot_requests(summary: dict[str, Any], path: Path, keys: Sequence[str] | None = None,
                  max_panels: int = 6, x: Sequence[float] | None = None,
                  xlabel: str = "request") -> Path | None:
    """Each metric against the request index (or ``x``, e.g. forget-set sizes): one line per
    method, the oracles dashed."""
    data = curves(summary)
    chosen = [k for k in (keys or data) if k in data and any(
        math.isfinite(v) for vals in data[k].values() for v in vals)][:max_panels]
    if not chosen:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(chosen), figsize=(3.6 * len(chosen), 3.0), squeeze=False)
    for ax, key in zip(axes[0], chosen, strict=True):
        for model, values in data[key].items():
            xs = list(x) if x is not None else list(range(1, len(values) + 1))
            style = {"linestyle": "--", "color": "black"} if model == "oracle" else {}
            ax.plot(xs, values, marker="o", label=model.removeprefix("unlearned/"), **style)
        ax.set_title(key, fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_xticks(list(x) if x is not None else range(1, len(summary["after"]) + 1))
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


__all__ = ["RequestsConfig", "ScalingConfig", "curves", "evaluation_task", "parts",
           "plot_requests", "request_parts", "request_task", "run_requests", "run_scaling",
           "scaling_steps", "split_requests"]
