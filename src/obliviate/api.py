"""The Python verbs: ``unlearn``, ``evaluate``, ``attack`` and ``report``.

They take what a notebook already holds — a Hugging Face model and its tokenizer, an obliviate
diffusion model, forget and retain data as a ``datasets.Dataset``, a list of dicts or a pandas
DataFrame — and return the unlearned model and typed results (``.to_dict()``,
``.to_pandas()``)::

    import obliviate
    result = obliviate.unlearn(model, tokenizer, forget=forget, retain=retain, method="npo")
    scores = obliviate.evaluate(result, forget=forget, retain=retain, holdout=holdout)

Nothing is written to disk unless ``output_dir`` is given; a model stays on the device it came
on. LLM rows are TOFU-style dicts (``question``, ``answer``, optional ``paraphrased_answer``,
``perturbed_answer``, ...) or ``{"text": ...}``; image rows are ``{"image": array or PIL image,
"label": int}``. The verbs and the CLI call the same stage runners
(``obliviate.<modality>.runner``); the CLI gives them a run directory, where they record each
stage.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from obliviate.core.errors import ConfigError, DataError
from obliviate.core.method import check_names
from obliviate.core.precision import measured_in
from obliviate.core.recipe import validate
from obliviate.core.result import AttackResult, EvalResult
from obliviate.core.task import DataSplit, UnlearningTask

__all__ = ["AttackReport", "EvaluationResult", "Report", "UnlearnResult", "attack", "evaluate",
           "report", "unlearn"]

# ------------------------------------------------------------------------------------------------
# Typed results
# ------------------------------------------------------------------------------------------------
class _Table:
    """``to_pandas()`` from :meth:`rows` (pandas is imported only when asked for)."""

    def rows(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.rows())


@dataclass
class UnlearnResult(_Table):
    """An unlearning run: the unlearned ``model`` (and, for prompt-only methods, the
    ``prompt_format`` it is used with), the method and its config, the data hashes and the cost.
    ``to_pandas()`` is the training history (one row per logged step)."""

    model: Any
    tokenizer: Any
    method: str
    modality: str
    config: dict[str, Any]
    train: dict[str, Any]
    data: dict[str, Any]
    seconds: float
    steps: int
    trainable_parameters: int
    total_parameters: int
    peak_memory: dict[str, int] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    prompt_format: Any = None
    base_model: str | None = None
    output_dir: str | None = None
    denoiser: Any = field(default=None, repr=False)
    """For a diffusers pipeline (``model``), the denoiser the method edited: its UNet is the
    pipeline's."""

    def __repr__(self) -> str:
        data = ", ".join(f"{k}={v.get('n')} records" for k, v in self.data.items())
        return (f"UnlearnResult(method={self.method!r}, steps={self.steps}, "
                f"seconds={self.seconds:.1f}, trainable_parameters={self.trainable_parameters:,}"
                f", {data})")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(replace(self, model=None, tokenizer=None, prompt_format=None,
                             denoiser=None))  # (asdict would deep-copy the models)
        for key in ("model", "tokenizer", "denoiser"):
            del out[key]
        out["prompt_format"] = self.prompt_format.to_dict() if self.prompt_format else None
        return out

    def rows(self) -> list[dict[str, Any]]:
        return list(self.history)

    def save_pretrained(self, output_dir: str | Path, push_to_hub: str | None = None,
                        evaluation: EvaluationResult | None = None,
                        attacks: AttackReport | None = None) -> Path:
        """Write the model (it loads with the modality's ``from_pretrained``), its manifest and
        its model card (with ``evaluation`` next to its oracle's and ``attacks`` when given) to
        ``output_dir``; ``push_to_hub="user/name"`` then uploads the folder (opt-in)."""
        from obliviate.core.modelcard import push_folder

        path = _save_unlearned(self, Path(output_dir), evaluation, attacks)
        self.output_dir = str(path)
        if push_to_hub:
            push_folder(path, push_to_hub)
        return path

    def card_info(self, evaluation: EvaluationResult | None = None,
                  attacks: AttackReport | None = None) -> dict[str, Any]:
        """What the model card shows (see :func:`obliviate.core.modelcard.card_text`)."""
        cls = _method(self.method, self.modality)
        return {"method": self.method, "paper": cls.paper, "modality": self.modality,
                "base_model": self.base_model, "config": self.config, "train": self.train,
                "data": self.data,
                "metrics": evaluation.summary if evaluation is not None else {},
                "oracle": evaluation.oracle.summary
                if evaluation is not None and evaluation.oracle is not None else {},
                "attacks": {r["attack"]: r for r in attacks.rows()} if attacks else {},
                "cost": {"seconds": self.seconds, "steps": self.steps,
                         "trainable_parameters": self.trainable_parameters,
                         "total_parameters": self.total_parameters, **self.peak_memory}}


@dataclass
class EvaluationResult(_Table):
    """One model's evaluation: each suite's :class:`~obliviate.core.result.EvalResult`.

    ``summary`` maps ``suite/split/metric`` to the aggregate; ``result["tofu/forget/prob"]``
    reads one; ``to_pandas()`` has one row per metric (with the oracle's value when known).
    """

    model: str
    suites: dict[str, EvalResult] = field(repr=False)
    oracle: EvaluationResult | None = field(default=None, repr=False)
    seconds: float | None = None
    modality: str = "llm"
    left_out: dict[str, str] = field(default_factory=dict)
    """default suites that do not apply to the data given -> why (``suites=None`` only)"""

    @property
    def summary(self) -> dict[str, float]:
        return {f"{suite}/{k}": v for suite, result in self.suites.items()
                for k, v in result.summary().items()}

    def __getitem__(self, key: str) -> float:
        return self.summary[key]

    def headline(self) -> dict[str, float]:
        """The numbers the modality's tables show first (the headline its benchmarks declare,
        :func:`obliviate.core.benchmark.headline`), when present."""
        from obliviate.core.benchmark import headline

        keys = [key for _, key in headline(self.modality)]
        summary = self.summary
        return {k: summary[k] for k in keys if k in summary}

    def __str__(self) -> str:
        """The headline numbers next to the oracle's (``to_pandas()`` has every metric)."""
        oracle = self.oracle.summary if self.oracle is not None else {}
        shown = self.headline() or self.summary
        width = max([len(k) for k in shown] + [6])
        lines = [f"{self.model}:".ljust(width + 2) + f"{'value':>10}"
                 + (f"{'oracle':>10}" if oracle else "")]
        for key, value in shown.items():
            line = f"  {key:<{width}}{value:>10.4g}"
            if oracle:
                line += f"{oracle[key]:>10.4g}" if key in oracle else f"{'-':>10}"
            lines.append(line)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "summary": self.summary, "seconds": self.seconds,
                "suites": {k: v.to_dict() for k, v in self.suites.items()},
                "oracle": self.oracle.summary if self.oracle is not None else None}

    def rows(self) -> list[dict[str, Any]]:
        oracle = self.oracle.summary if self.oracle is not None else {}
        out = []
        for suite, result in self.suites.items():
            for key, metric in result.metrics.items():
                out.append({"model": self.model, "suite": suite, "split": metric.split,
                            "metric": metric.name, "value": metric.value,
                            "oracle": oracle.get(f"{suite}/{key}"),
                            "higher_is_better": metric.higher_is_better})
        return out


@dataclass
class AttackReport(_Table):
    """Attacks on one model: each attack's :class:`~obliviate.core.result.AttackResult`
    (the forget probe plain and attacked, on the model and on the oracle, and the recovery)."""

    model: str
    results: dict[str, AttackResult]

    def __getitem__(self, attack: str) -> AttackResult:
        return self.results[attack]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "results": {k: v.to_dict() for k, v in self.results.items()}}

    def rows(self) -> list[dict[str, Any]]:
        return [{"model": self.model, "attack": name, "metric": r.metric, "plain": r.plain,
                 "attacked": r.attacked, "oracle_plain": r.oracle_plain,
                 "oracle_attacked": r.oracle_attacked, "recovery": r.recovery}
                for name, r in self.results.items()]


@dataclass
class Report(_Table):
    """Models side by side: one row per model, one column per metric (and attack recovery)."""

    table: list[dict[str, Any]]
    details: dict[str, Any] = field(default_factory=dict)
    html: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "details": self.details, "html": self.html}

    def rows(self) -> list[dict[str, Any]]:
        return list(self.table)


# ------------------------------------------------------------------------------------------------
# Inputs: rows from lists, datasets and DataFrames
# ------------------------------------------------------------------------------------------------
def _rows(data: Any, what: str) -> list[Any]:
    """The items of a list, a ``datasets.Dataset`` or a pandas ``DataFrame``."""
    if hasattr(data, "columns") and hasattr(data, "to_dict"):  # pandas.DataFrame
        return [_clean(row) for row in data.to_dict(orient="records")]
    if hasattr(data, "column_names") and hasattr(data, "to_list"):  # datasets.Dataset
        return data.to_list()
    if isinstance(data, (str, bytes, Mapping)) or not isinstance(data, Iterable):
        raise DataError(f"{what}: expected rows (a list of dicts, a datasets.Dataset or a pandas "
                        f"DataFrame), got {type(data).__name__}")
    return list(data)


def _clean(row: Mapping[str, Any]) -> dict[str, Any]:
    """A DataFrame row without its missing cells (NaN/None) and with arrays as lists."""
    out = {}
    for key, value in row.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        out[key] = value.tolist() if hasattr(value, "tolist") and not isinstance(
            value, (str, bytes)) and getattr(value, "ndim", 0) > 0 else value
    return out


def _qa_split(data: Any, name: str) -> DataSplit:
    from obliviate.llm.data.records import QARecord

    if isinstance(data, DataSplit):
        return data
    records = []
    for i, item in enumerate(_rows(data, name)):
        if isinstance(item, QARecord):
            records.append(item)
        elif isinstance(item, str):
            records.append(QARecord.from_dict({"text": item}, where=f"{name}[{i}]"))
        else:
            records.append(QARecord.from_dict(item, where=f"{name}[{i}]"))
    return DataSplit(name, records, source="python")


def _image_array(value: Any, where: str) -> Any:
    import numpy as np

    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.ndim == 3 and array.shape[-1] in (1, 3) and array.shape[0] not in (1, 3):
        array = array.transpose(2, 0, 1)  # H, W, C -> C, H, W
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise DataError(f"{where}: an image must be [H, W], [H, W, C] or [C, H, W], got shape "
                        f"{array.shape}")
    return array


def _image_split(data: Any, name: str, size: int, channels: int) -> DataSplit:
    import numpy as np

    from obliviate.diffusion.data import ImageRecord, records_from_arrays

    if isinstance(data, DataSplit):
        return data
    rows = _rows(data, name)
    if all(isinstance(r, ImageRecord) for r in rows):
        return DataSplit(name, rows, source="python")
    images, labels = [], []
    for i, row in enumerate(rows):
        where = f"{name}[{i}]"
        if isinstance(row, Mapping):
            key = next((k for k in ("image", "img", "pixels") if k in row), None)
            label = next((row[k] for k in ("label", "labels", "class") if k in row), None)
            if key is None or label is None:
                raise DataError(f"{where}: expected an 'image' and a 'label' field, got "
                                f"{', '.join(map(str, row)) or 'none'}")
            image = row[key]
        elif isinstance(row, (tuple, list)) and len(row) == 2:
            image, label = row
        else:
            raise DataError(f"{where}: expected {{'image': ..., 'label': ...}} or (image, label)")
        array = _image_array(image, where)
        if array.shape[0] != channels:
            array = array.mean(0, keepdims=True).astype(array.dtype) if channels == 1 else \
                np.repeat(array, 3, axis=0)
        images.append(array)
        labels.append(int(label))
    if len({a.shape for a in images}) > 1:
        raise DataError(f"{name}: images of different sizes ({images[0].shape} and others)")
    return DataSplit(name, records_from_arrays(np.stack(images), labels, name, size),
                     source="python")


# ------------------------------------------------------------------------------------------------
# Models: which modality, what the user passed
# ------------------------------------------------------------------------------------------------
def _modality(model: Any) -> str:
    from obliviate.diffusion.models import Denoiser

    if isinstance(model, Denoiser):
        return "diffusion"
    return "llm"


def _is_pipeline(model: Any) -> bool:
    """A diffusers pipeline object (read without importing diffusers for an LLM)."""
    return hasattr(model, "unet") and hasattr(model, "scheduler") and \
        not hasattr(model, "eps")  # an obliviate Denoiser also holds a UNet


def _pipeline_prompts(splits: Mapping[str, Any]) -> tuple[list[str], dict[str, list[Any]]]:
    """The prompts of rows ``{"image": ..., "prompt": ...}`` (each distinct prompt a class, in
    order of first appearance: the forget prompts first) and the rows with those classes as
    their labels."""
    prompts: list[str] = []
    rows = {name: _rows(data, name) for name, data in splits.items() if data is not None}
    for name, items in rows.items():
        for i, row in enumerate(items):
            if not isinstance(row, Mapping) or "prompt" not in row or "image" not in row:
                raise DataError(f"{name}[{i}]: a diffusers pipeline learns from rows with an "
                                "'image' and its 'prompt' (each prompt a concept)")
            if str(row["prompt"]) not in prompts:
                prompts.append(str(row["prompt"]))
    return prompts, {name: [{"image": row["image"], "label": prompts.index(str(row["prompt"]))}
                            for row in items] for name, items in rows.items()}


def _from_pipeline(pipe: Any, prompts: list[str], image: Any) -> Any:
    """The pipeline as a text-conditioned denoiser (:func:`obliviate.diffusion.text.from_pipeline`)
    for images shaped like ``image``."""
    from obliviate.diffusion.text import from_pipeline

    channels = int(pipe.vae.config.in_channels)
    return from_pipeline(pipe, prompts, int(_image_array(image, "forget[0]").shape[1]), channels)


def _pipeline_inputs(model: Any, splits: dict[str, Any]) -> tuple[Any, dict[str, Any], Any]:
    """``(model, splits, make)``: a diffusers pipeline becomes a denoiser whose classes are the
    rows' prompts, and its rows get those classes as labels; ``make(pipe)`` wraps another
    pipeline (an oracle) alike. Other models pass unchanged (``make`` is the identity)."""
    if not _is_pipeline(model):
        return model, splits, lambda other: other
    prompts, rows = _pipeline_prompts(splits)
    first = rows["forget"][0]["image"] if rows.get("forget") else None
    if first is None:
        raise DataError("forget: a diffusers pipeline needs at least one forget row")

    def make(pipe: Any) -> Any:
        return _from_pipeline(pipe, prompts, first) if _is_pipeline(pipe) else pipe

    return make(model), {**splits, **rows}, make


def _unwrap(model: Any, tokenizer: Any) -> tuple[Any, Any, Any]:
    """``(model, tokenizer, prompt format)`` from a model or an :class:`UnlearnResult`."""
    fmt = None
    if isinstance(model, UnlearnResult):
        fmt, tokenizer = model.prompt_format, tokenizer or model.tokenizer
        model = model.model
    return model, tokenizer, fmt


def _llm_format(tokenizer: Any, fmt: Any) -> Any:
    from obliviate.llm.data.formatting import resolve_format

    if tokenizer is None:
        raise ConfigError("an LLM needs its tokenizer: pass it as the second argument")
    return fmt or resolve_format(tokenizer)


def _task(model: Any, modality: str, forget: Any, retain: Any, holdout: Any = None,
          seed: int = 0, extra: Mapping[str, Any] | None = None) -> UnlearningTask:
    """An :class:`UnlearningTask` from the user's data (checked: non-empty, no overlap)."""
    if forget is None or retain is None:
        raise ConfigError("give both forget= and retain= data")
    named = {"holdout": holdout, **dict(extra or {})}
    if modality == "llm":
        splits = {k: _qa_split(v, k) for k, v in named.items() if v is not None}
        return UnlearningTask("python", "llm", _qa_split(forget, "forget"),
                              _qa_split(retain, "retain"), eval_splits=splits, seed=seed
                              ).validate()
    channels, size, _ = model.image_shape
    forget_split = _image_split(forget, "forget", size, channels)
    retain_split = _image_split(retain, "retain", size, channels)
    splits = {k: _image_split(v, k, size, channels) for k, v in named.items() if v is not None}
    classes = sorted({r.label for r in forget_split.records})
    kept = {r.label for r in retain_split.records}
    if set(classes) & kept:
        raise DataError(f"class(es) {sorted(set(classes) & kept)} appear in both forget and "
                        "retain: diffusion unlearning forgets whole classes")
    out_of_range = [c for c in [*classes, *kept] if not 0 <= c < model.num_classes]
    if out_of_range:
        raise DataError(f"label {out_of_range[0]} is not a class of this model "
                        f"(0..{model.num_classes - 1})")
    return UnlearningTask(
        "python", "diffusion", forget_split, retain_split, eval_splits=splits, seed=seed,
        metadata={"num_classes": model.num_classes, "forget_classes": classes,
                  "class_names": [str(i) for i in range(model.num_classes)],
                  "image_size": size, "channels": channels}).validate()


def _method(name: str, modality: str) -> Any:
    from obliviate.core.registry import METHODS

    importlib.import_module(f"obliviate.{modality}.methods")  # registers the catalogue
    return METHODS.get(name, modality)


def _split_hyperparameters(cls: Any, name: str, modality: str, hyperparameters: dict[str, Any]
                           ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The method's own settings and (LLM) the optimiser's; a name neither knows is a one-line
    error listing the valid names with the closest suggested."""
    own = list(cls.config_class.model_fields)
    shared: list[str] = []
    if modality == "llm":
        from obliviate.llm.methods.base import UnlearnTrainConfig

        shared = [k for k in UnlearnTrainConfig.model_fields if k not in own]
    check_names(list(hyperparameters), own + shared, f"unlearn(method={name!r})")
    return ({k: v for k, v in hyperparameters.items() if k in own},
            {k: v for k, v in hyperparameters.items() if k in shared or k == "learning_rate"})


# ------------------------------------------------------------------------------------------------
# The verbs
# ------------------------------------------------------------------------------------------------
def unlearn(model: Any, tokenizer: Any = None, *, forget: Any, retain: Any,
            method: str = "npo", output_dir: str | Path | None = None,
            lora: bool | Mapping[str, Any] = False, max_length: int = 256,
            refusals: Sequence[str] | None = None, seed: int = 0,
            log_with: str | Sequence[str] | None = None, logging_dir: str | Path | None = None,
            push_to_hub: str | None = None, **hyperparameters: Any) -> UnlearnResult:
    """Unlearn ``forget`` from ``model`` (in place) while keeping ``retain``.

    ``hyperparameters`` are the method's (``beta=0.2`` for NPO; ``obliviate methods`` lists
    them) and, for LLMs, the optimiser's (``learning_rate``, ``epochs``, ``max_steps``,
    ``batch_size``, ...); defaults are the papers'. ``output_dir`` saves the model (it then
    loads with ``from_pretrained``), its manifest and a model card; without it nothing is
    written. ``log_with`` (``"tensorboard"``, ``"mlflow"``, ``"wandb"``) logs the training
    curve live, each logged step as it trains, through accelerate's trackers, offline, under
    ``logging_dir`` (default ``output_dir/logs``). ``retrain`` (the oracle) trains the model
    it is given on ``retain``: pass it the base weights. LLM methods train one copy of the
    model per process; a model sharded with ``device_map`` is refused with the reason
    (prompt-only methods accept it).
    """
    model, tokenizer, _ = _unwrap(model, tokenizer)
    logs = _logging_dir(log_with, logging_dir, output_dir)
    pipeline = model if _is_pipeline(model) else None
    model, data, _ = _pipeline_inputs(model, {"forget": forget, "retain": retain})
    forget, retain = data["forget"], data["retain"]
    modality = _modality(model)
    cls = _method(method, modality)
    own, train = _split_hyperparameters(cls, method, modality, dict(hyperparameters))
    config = validate(cls.config_class, {"seed": seed, **own},
                      source=f"unlearn(method={method!r})")
    task = _task(model, modality, forget, retain, seed=seed)
    runner = importlib.import_module(f"obliviate.{modality}.runner")
    start = time.perf_counter()
    if modality == "llm":
        from obliviate.llm.methods.base import DEFAULT_REFUSALS, UnlearnTrainConfig
        from obliviate.llm.models import LoraSettings

        train_config = validate(UnlearnTrainConfig, {"seed": seed, **train},
                                source=f"unlearn(method={method!r})")
        lora_config = validate(LoraSettings, {"enabled": bool(lora), **(
            dict(lora) if isinstance(lora, Mapping) else {})}, source="unlearn(lora=...)")
        _llm_format(tokenizer, None)  # one-line error without a tokenizer
        ctx = cls(config).context(task, tokenizer, train=train_config, lora=lora_config,
                                  max_length=max_length,
                                  refusals=tuple(refusals or DEFAULT_REFUSALS))
        outcome, _ = runner.unlearn(method, cls, config, model, task, ctx, seed=seed,
                                    base_model=_model_name(model), log_with=log_with,
                                    logging_dir=logs)
        train_dump = train_config.model_dump(mode="json")
        prompt_format, details = outcome.prompt_format, {
            **outcome.extra, "selection": outcome.selection}
    else:
        outcome, _ = runner.unlearn(method, cls, config, model, task, seed=seed,
                                    base_model=_model_name(model), log_with=log_with,
                                    logging_dir=logs)
        train_dump, prompt_format, details = {}, None, dict(outcome.extra)
    result = UnlearnResult(
        model=pipeline if pipeline is not None else outcome.model, tokenizer=tokenizer,
        method=method, modality=modality,
        config=config.model_dump(mode="json"), train=train_dump,
        data=task.provenance()["splits"], seconds=time.perf_counter() - start,
        steps=outcome.steps, trainable_parameters=outcome.trainable_parameters,
        total_parameters=outcome.total_parameters, peak_memory=dict(outcome.peak_memory),
        history=list(outcome.history), details=details, prompt_format=prompt_format,
        base_model=_model_name(pipeline or model), denoiser=outcome.model)
    if output_dir is not None:
        result.save_pretrained(output_dir, push_to_hub=push_to_hub)
    elif push_to_hub:
        raise ConfigError("push_to_hub needs output_dir (the folder that is uploaded)")
    return result


def evaluate(model: Any, tokenizer: Any = None, *, forget: Any, retain: Any,
             holdout: Any = None, suites: Sequence[str] | None = None,
             oracle: Any = None, options: Mapping[str, Any] | None = None,
             judge: Any = None, name: str = "model", output_dir: str | Path | None = None,
             log_with: str | Sequence[str] | None = None,
             logging_dir: str | Path | None = None, seed: int = 0,
             mixed_precision: str = "no", **splits: Any) -> EvaluationResult:
    """Evaluate ``model`` on the forget and retain data (and ``holdout``, other named splits).

    LLM suites default to what applies to the data: TOFU (question-answer records) or MUSE's
    VerbMem (plain ``{"text"}`` documents), MIA (needs ``holdout``) and memorisation; the
    defaults that do not apply are in ``left_out`` with the reason. ``options`` maps a
    suite to its options (``{"tofu": {"max_new_tokens": 32}}``). Diffusion evaluates with a
    ``judge`` classifier (trained on forget ∪ retain when not given). ``oracle`` is the
    oracle's :class:`EvaluationResult` or the oracle model itself (evaluated first): it adds
    Forget Quality, PrivLeak and the gaps to the oracle. ``output_dir`` saves each suite's
    JSON; without it nothing is written. ``mixed_precision="bf16"`` runs the model's forward
    passes under bf16 autocast (an LLM's scoring and generation, a denoiser's sampling; the
    judge and the metrics stay in float32, the weights unchanged), as the recipe's
    ``evaluation.mixed_precision``.
    """
    start = time.perf_counter()
    logs = _logging_dir(log_with, logging_dir, output_dir)
    model, tokenizer, fmt = _unwrap(model, tokenizer)
    model, data, make = _pipeline_inputs(
        model, {"forget": forget, "retain": retain, "holdout": holdout, **splits})
    forget, retain, holdout = data.pop("forget"), data.pop("retain"), data.pop("holdout")
    modality = _modality(model)
    task = _task(model, modality, forget, retain, holdout, seed, extra=data)
    oracle = _unwrap(oracle, None)[0] if isinstance(oracle, UnlearnResult) else oracle
    oracle = make(oracle) if oracle is not None else None
    if oracle is not None and not isinstance(oracle, EvaluationResult):
        oracle = evaluate(oracle, tokenizer, forget=task.forget, retain=task.retain,
                          holdout=task.eval_splits.get("holdout"), suites=suites,
                          options=options, judge=judge, name="oracle", seed=seed,
                          mixed_precision=mixed_precision,
                          **{k: v for k, v in task.eval_splits.items() if k != "holdout"})
    runner = importlib.import_module(f"obliviate.{modality}.runner")
    left_out: dict[str, str] = {}
    if modality == "llm":
        from obliviate.llm.benchmarks.base import suites_for_data

        if suites is None:  # what applies to the data given, as for a recipe's own data
            chosen, defaults, left_out = suites_for_data(task)
            options = {**defaults, **dict(options or {})}
        else:
            chosen = list(suites)
        # each suite's metrics read the oracle's result of that suite, as in a run
        inputs = {"oracle_results": dict(oracle.suites)} if oracle is not None else {}
        with measured_in(mixed_precision):
            (outputs, _), _ = runner.evaluate(
                model, tokenizer, _llm_format(tokenizer, fmt), task, suites=chosen,
                options=options, name=name, seed=seed, inputs=inputs, out_dir=output_dir)
        results = {k: v.result for k, v in outputs.items()}
    else:
        from obliviate.diffusion.evaluation import SUITE, EvaluationConfig

        config = validate(EvaluationConfig, dict(options or {}), source="evaluate(options=...)")
        judge = judge if judge is not None else _train_judge(task, config)
        with measured_in(mixed_precision):
            results = {SUITE: runner.evaluate(
                model, judge, task, config, name=name, seed=seed,
                oracle=oracle.suites.get(SUITE) if oracle is not None else None,
                out_dir=output_dir)[0]}
    result = EvaluationResult(name, results, oracle, seconds=time.perf_counter() - start,
                              modality=modality, left_out=left_out)
    if log_with:
        from obliviate.core.tracking import log_metrics

        log_metrics(result.summary, log_with, logs, run_name=f"evaluate-{name}")
    return result


def attack(model: Any, tokenizer: Any = None, *, forget: Any, retain: Any,
           oracle: Any = None, attacks: Sequence[str] | None = None,
           options: Mapping[str, Mapping[str, Any]] | None = None,
           probe: Mapping[str, Any] | None = None, judge: Any = None, holdout: Any = None,
           name: str = "model", output_dir: str | Path | None = None,
           log_with: str | Sequence[str] | None = None, logging_dir: str | Path | None = None,
           seed: int = 0, mixed_precision: str = "no") -> AttackReport:
    """Try to bring the forgotten data back (relearning, quantization, rephrasing, probes for
    LLMs; embedding, concept-vector and relearning attacks for diffusion).

    Each attack measures the same forget probe on ``model`` and on ``oracle`` (a model that
    never saw the forget data; required for diffusion), so a recovery is "above what the
    oracle shows". Attacks work on copies: ``model`` is never changed. ``options`` maps an
    attack to its settings. ``output_dir`` saves each result's JSON. ``mixed_precision="bf16"``
    runs the attacks' forward passes under bf16 autocast, their optimisation included
    (relearning, optimised prompts), as the recipe's ``attack.mixed_precision``.
    """
    from obliviate.core.registry import ATTACKS
    from obliviate.core.runner import run_attack

    logs = _logging_dir(log_with, logging_dir, output_dir)
    model, tokenizer, fmt = _unwrap(model, tokenizer)
    model, data, make = _pipeline_inputs(
        model, {"forget": forget, "retain": retain, "holdout": holdout})
    oracle = make(_unwrap(oracle, None)[0])
    modality = _modality(model)
    importlib.import_module(f"obliviate.{modality}.attacks")  # registers the attacks
    task = _task(model, modality, data["forget"], data["retain"], data["holdout"], seed)
    options = dict(options or {})
    if modality == "llm":
        from obliviate.llm.attacks.base import AttackContext, AttackTarget, ProbeOptions
        from obliviate.llm.recipe import AttackSettings as AttackConfig

        fmt = _llm_format(tokenizer, fmt)
        chosen = list(attacks or AttackConfig().attacks)
        ctx = AttackContext(
            task=task, target=AttackTarget(name, model, tokenizer, fmt),
            oracle=AttackTarget("oracle", oracle, tokenizer, _llm_format(tokenizer, None))
            if oracle is not None else None,
            probe=validate(ProbeOptions, dict(probe or {}), source="attack(probe=...)"),
            seed=seed)
    else:
        from obliviate.diffusion.attacks import AttackContext
        from obliviate.diffusion.attacks import ProbeOptions as ImageProbe
        from obliviate.diffusion.recipe import AttackSettings as ImageAttackConfig

        if oracle is None:
            raise ConfigError("diffusion attacks compare with the oracle: pass oracle=MODEL")
        chosen = list(attacks or ImageAttackConfig().attacks)
        from obliviate.diffusion.evaluation import EvaluationConfig

        ctx = AttackContext(
            task=task, model=model, model_name=name, oracle=oracle,
            judge=judge if judge is not None else _train_judge(task, EvaluationConfig()),
            probe=validate(ImageProbe, dict(probe or {}), source="attack(probe=...)"),
            seed=seed)
    check_names(list(options), chosen, "attack(options=...)")
    results = {}
    with measured_in(mixed_precision):
        for attack_name in chosen:
            cls = ATTACKS.get(attack_name, modality)
            results[attack_name] = run_attack(
                cls, validate(cls.config_class, dict(options.get(attack_name, {})),
                              source=f"attack {attack_name}"), ctx, seed,
                Path(output_dir) / f"{attack_name}.json" if output_dir is not None else None)
    out = AttackReport(name, results)
    if log_with:
        from obliviate.core.tracking import log_metrics

        log_metrics({f"attack/{r['attack']}/{k}": r[k] for r in out.rows()
                     for k in ("plain", "attacked", "recovery") if r[k] is not None},
                    log_with, logs, run_name=f"attack-{name}")
    return out


def report(results: Mapping[str, Any] | str | Path, attacks: Mapping[str, AttackReport]
           | None = None, output_dir: str | Path | None = None) -> Report:
    """Models side by side.

    ``results`` maps a model's name to its :class:`EvaluationResult` (``attacks`` to its
    :class:`AttackReport`); or it is a run directory the CLI wrote, whose collected report
    (axes, verdict, ranking) is returned. ``output_dir`` writes ``report.json`` (and, for a
    run directory, the HTML report); without it nothing is written.
    """
    from obliviate.core.io import atomic_write_json

    if isinstance(results, (str, Path)):
        return _run_report(Path(results), output_dir)
    table = []
    for model_name, evaluation in results.items():
        row: dict[str, Any] = {"model": model_name, **evaluation.summary}
        for attack_row in (attacks or {}).get(model_name, AttackReport(model_name, {})).rows():
            row[f"attack/{attack_row['attack']}/recovery"] = attack_row["recovery"]
        table.append(row)
    out = Report(table)
    if output_dir is not None:
        atomic_write_json(Path(output_dir) / "report.json", out.to_dict())
    return out


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def _run_report(run_dir: Path, output_dir: str | Path | None) -> Report:
    from obliviate.core.report import collect

    data = collect(run_dir)
    rows = data.get("rows") or data.get("models") or []
    table = [{"model": r.get("name") or r.get("model"), **(r.get("metrics") or {})}
             for r in rows if isinstance(r, Mapping)]
    html = None
    if output_dir is not None:
        from obliviate.core.io import atomic_write_json, atomic_write_text
        from obliviate.core.report_html import render_html
        from obliviate.core.report_plot import pareto_png

        out = Path(output_dir)
        atomic_write_json(out / "report.json", data)
        html = str(atomic_write_text(out / "report.html", render_html(data, pareto_png(data))))
    return Report(table, details=data, html=html)


def _save_unlearned(result: UnlearnResult, path: Path, evaluation: EvaluationResult | None,
                    attacks: AttackReport | None) -> Path:
    """Weights (and tokenizer) at ``path`` itself, then the manifest and the model card; files
    already in ``path`` that obliviate does not write are left alone."""
    import os
    import shutil
    import tempfile

    from obliviate.core.modelcard import write_card
    from obliviate.core.runner import write_manifest

    path.mkdir(parents=True, exist_ok=True)
    if result.modality == "llm":
        result.model.save_pretrained(path)
        if result.tokenizer is not None:
            result.tokenizer.save_pretrained(path)
    else:
        from obliviate.diffusion.models import save_denoiser

        tmp = Path(tempfile.mkdtemp(prefix=".obliviate-", dir=path))
        try:  # a text-to-image model saves as a diffusers pipeline folder (unet/, vae/, ...)
            for file in save_denoiser(result.denoiser or result.model, tmp / "model").iterdir():
                if (path / file.name).is_dir():
                    shutil.rmtree(path / file.name)
                os.replace(file, path / file.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    write_manifest(path, result.method, _method(result.method, result.modality), result.config,
                   result.base_model, result.prompt_format)
    write_card(path, result.card_info(evaluation, attacks))
    return path


def _train_judge(task: UnlearningTask, config: Any) -> Any:
    """A judge classifier trained on forget ∪ retain (seconds on small image sets)."""
    from obliviate.diffusion.data import to_tensor
    from obliviate.diffusion.judge import train_judge

    x, y = to_tensor(task.full.records)
    return train_judge(x, y, task.metadata["num_classes"], config.judge)[0]


def _model_name(model: Any) -> str | None:
    name = getattr(model, "name_or_path", None) or getattr(
        getattr(model, "config", None), "_name_or_path", None)
    return str(name) if name else None


def _logging_dir(log_with: str | Sequence[str] | None, logging_dir: str | Path | None,
                 output_dir: str | Path | None) -> Path | None:
    """Where the trackers write (checked, with the tracker names, before any work)."""
    if not log_with:
        return None
    from obliviate.core.tracking import tracker_names

    tracker_names(log_with)
    if logging_dir is not None:
        return Path(logging_dir)
    if output_dir is not None:
        return Path(output_dir) / "logs"
    raise ConfigError("log_with needs a place for the logs: give logging_dir= or output_dir=")
