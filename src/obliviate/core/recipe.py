"""YAML recipes with ``key.sub=value`` overrides, validated by a pydantic model.

One YAML file describes one experiment. The CLI applies overrides such as
``finetune.epochs=3 model.lora.enabled=true`` (values parsed as YAML scalars) and validates the
result against the modality's recipe schema; every error names the offending key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from obliviate.core.errors import ConfigError

MixedPrecision = Literal["no", "fp16", "bf16"]
"""Autocast precision of a section's forward passes (accelerate's ``mixed_precision``)."""

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every config: unknown keys are errors, assignments are validated.

    A field's meaning (what ``obliviate recipe show`` prints) is its ``description``, or the
    docstring under it; a subclass that only changes a field's default (a paper's value) keeps
    the meaning its base gave it."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(),
                              allow_inf_nan=False, use_attribute_docstrings=True)

    implicit_defaults: ClassVar[dict[str, Any]] = {}
    """Keys added after runs were recorded without them, each with the value that does what
    those runs did: at that value a key is left out of what defines a run and a stage's inputs
    (:func:`defining`), so such a run reopens and reuses its stages; any other value is another
    run."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for name, info in cls.model_fields.items():
            if info.description:
                continue
            for base in cls.__mro__[1:]:
                inherited = getattr(base, "__pydantic_fields__", {}).get(name)
                if inherited is not None and inherited.description:
                    info.description = inherited.description
                    break


class RequestsConfig(StrictModel):
    """``unlearn.requests``: deletion requests that arrive one after another
    (:mod:`obliviate.core.requests`). Exactly one of ``count``, ``splits``, ``files``."""

    count: int | None = Field(default=None, ge=1, description="split the forget set into k")
    splits: list[str] = Field(default_factory=list,
                              description="task splits, one per request (sust_forget_1, ...)")
    files: list[str] = Field(default_factory=list, description="one data file per request")
    oracles: bool = Field(default=True, description="train an oracle per request")

    @model_validator(mode="after")
    def _one_source(self) -> RequestsConfig:
        given = [n for n, v in (("count", self.count), ("splits", self.splits),
                                ("files", self.files)) if v]
        if len(given) != 1:
            raise ValueError("give exactly one of count, splits or files "
                             f"(given: {', '.join(given) or 'none'})")
        return self


class ScalingConfig(StrictModel):
    """``unlearn.scaling``: the forget set grown in steps (MUSE's scalability, C5), each size
    unlearned from the target with its own oracle (:func:`obliviate.core.requests.run_scaling`).
    """

    sizes: list[float] = Field(min_length=1, description="fractions (<= 1; 1 is all) of the "
                               "forget set's entities, or counts of entities (> 1)")
    oracles: bool = Field(default=True, description="train an oracle per size")

    @model_validator(mode="after")
    def _positive(self) -> ScalingConfig:
        if any(s <= 0 for s in self.sizes):
            raise ValueError("sizes must be positive fractions or counts")
        return self


class ModelSection(StrictModel):
    """The ``model`` section, in every modality: which network is trained and unlearned (an
    LLM's hub id or tiny config; a denoiser's architecture, noise schedule and sampler). Each
    modality's ``ModelConfig`` subclasses it."""

    execution_only: ClassVar[frozenset[str]] = frozenset()
    """Keys that change how the model is run, never what it computes (gradient checkpointing):
    left out of what defines a run and a stage's inputs (:func:`defining`), so turning one on
    reuses the run as it is."""


def offset_seed(section: M, seed: int) -> M:
    """``section`` with its ``seed`` moved by the recipe's ``seed`` (unchanged at 0): the seeds
    of ``finetune``, ``unlearn.train``, a method's config and the judge are relative to the
    recipe's, so one top-level key re-draws every data order and every training's noise."""
    if not seed:
        return section
    return section.model_copy(update={"seed": section.seed + seed})  # type: ignore[attr-defined]


def defining(section: Any) -> Any:
    """``section`` as a run's record compares it (``section`` itself when nothing is left out);
    a recorded section (a dict) is compared as its class would: :func:`defining_keys`."""
    cls = type(section)
    if not getattr(cls, "execution_only", None) and not getattr(cls, "implicit_defaults", None):
        return section
    return defining_keys(cls, section.model_dump())


def defining_keys(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` of a ``cls`` section without its :attr:`~ModelSection.execution_only` keys
    and the :attr:`~StrictModel.implicit_defaults` keys at their implicit value."""
    skip = getattr(cls, "execution_only", frozenset())
    implicit = getattr(cls, "implicit_defaults", {})
    return {k: v for k, v in values.items()
            if k not in skip and not (k in implicit and v == implicit[k])}


class TrainSection(StrictModel):
    """Settings of the one training loop (:mod:`obliviate.core.training`) that every modality
    shares: the ``finetune`` section and the training of the methods. Each modality's
    ``TrainConfig`` adds how long to train (epochs or steps) and sets its own defaults."""

    implicit_defaults: ClassVar[dict[str, Any]] = {"master_weights": "float32"}

    learning_rate: float = Field(default=1e-3, gt=0)
    """peak learning rate of the optimiser (AdamW)"""
    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW's decoupled weight decay"""
    batch_size: int = Field(default=8, ge=1)
    """examples per optimiser step (per process)"""
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    """micro-batches summed into one optimiser step (effective batch = batch_size x this)"""
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"
    """learning-rate schedule after warm-up: constant, linear decay to 0, or cosine decay to 0"""
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    """clip the gradient's global norm to this (None: no clipping)"""
    seed: int = 0
    """seed of the data order and of the training noise (added to the recipe's seed)"""
    checkpoint_every: int = Field(default=100, ge=1)
    """save a resumable checkpoint every this many steps"""
    log_every: int = Field(default=10, ge=1)
    """record the loss (training curve, trackers) every this many steps"""
    mixed_precision: MixedPrecision = "no"
    """autocast precision: no (fp32), bf16 (CPU or GPU) or fp16 (GPU); weights stay fp32"""
    master_weights: Literal["float32", "model"] = "float32"
    """for weights stored in bf16 or fp16 (model.dtype): float32 trains a float32 copy of the
    trained weights under autocast to their dtype and casts it back at the end, so no update is
    lost to bf16 rounding (Micikevicius et al. 2018); model updates them in their own dtype (as
    OpenUnlearning trains bf16 models)"""


class EvaluationSection(StrictModel):
    """The ``evaluation`` section, in every modality: how each model is evaluated (an LLM's
    suites and their options; a denoiser's samples and judge). Each modality's
    ``EvaluationConfig`` subclasses it."""

    implicit_defaults: ClassVar[dict[str, Any]] = {"mixed_precision": "no"}

    mixed_precision: MixedPrecision = "no"
    """autocast precision of the models' forward passes while they are measured: no (the
    weights' dtype), bf16 (CPU or GPU) or fp16 (GPU); the weights stay as they are
    (obliviate.core.precision)"""


class UnlearnSection(StrictModel):
    """The ``unlearn`` section's shared part: which methods, their hyperparameters, the target.

    ``method_args`` maps a method name to its hyperparameters (validated by that method's
    config class, whose defaults are the paper's); ``target`` is the model to unlearn, a path,
    or ``None`` for this run's fine-tuned target. Modalities set the default ``methods``.
    ``requests`` turns one unlearning into a sequence of deletion requests; ``scaling`` into one
    unlearning per forget-set size.
    """

    methods: list[str] = Field(min_length=1)
    """the unlearning methods to run, by registered name (`obliviate methods` lists them)"""
    method_args: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """each method's hyperparameters, keyed by its name (unlearn.method_args.<name>.<key>; paper
    defaults, see its section below)"""
    target: str | None = None
    """the model to unlearn from: a folder (default: the run's fine-tuned target)"""
    requests: RequestsConfig | None = None
    """deletion requests arriving over time (unlearn.requests): each request unlearned in turn and
    evaluated after it"""
    scaling: ScalingConfig | None = None
    """forget-set sizes to unlearn in turn, each against its own oracle (unlearn.scaling)"""


class AttackSection(StrictModel):
    """The ``attack`` section's shared part: which attacks run against which models, with
    which options. Modalities set the default ``attacks`` and add their forget probe."""

    implicit_defaults: ClassVar[dict[str, Any]] = {"mixed_precision": "no"}

    attacks: list[str] = Field(min_length=1)
    """the attacks to run, by registered name (`obliviate attack --attack` picks from them)"""
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """each attack's own settings, keyed by its name (attack.options.<name>.<key>; see its section
    below)"""
    models: list[str] | None = Field(
        default=None, description="models to attack, e.g. [unlearned/npo]; default: all but the "
                                  "oracle")
    mixed_precision: MixedPrecision = "no"
    """autocast precision of the attacks' forward passes, their optimisation (relearning,
    optimised prompts) included: no, bf16 or fp16 (GPU); the weights stay as they are
    (obliviate.core.precision)"""


TaskT = TypeVar("TaskT", bound=StrictModel)
ModelT = TypeVar("ModelT", bound=ModelSection)
TrainT = TypeVar("TrainT", bound=TrainSection)
UnlearnT = TypeVar("UnlearnT", bound=UnlearnSection)
EvaluationT = TypeVar("EvaluationT", bound=EvaluationSection)
AttackT = TypeVar("AttackT", bound=AttackSection)


def _section() -> Any:
    """A recipe section's field: absent from the YAML, it is its class's defaults (validated
    from ``{}``, so a modality's section class alone decides them)."""
    return Field(default_factory=dict, validate_default=True)


class RecipeBase(StrictModel, Generic[TaskT, ModelT, TrainT, UnlearnT, EvaluationT, AttackT]):
    """What every modality's recipe has: its name, seed and output folder, and the six sections,
    which each modality types with its own section classes and the ``modality`` it selects::

        class LLMRecipe(RecipeBase[TaskConfig, ModelConfig, TrainConfig, UnlearnConfig,
                                   EvaluationConfig, AttackSettings]):
            modality: Literal["llm"] = "llm"
    """

    name: str = "experiment"
    """the experiment's name: the run directory is runs/<name> unless output_dir says otherwise"""
    seed: int = 0
    """the experiment's seed: data splits, model initialisation and every stage's randomness"""
    output_dir: str | None = Field(default=None, description="default: runs/<name>")
    modality: str
    """the modality, which selects the recipe's type (llm, diffusion)"""
    task: TaskT = _section()
    """the benchmark and its data: task.benchmark, then the benchmark's own keys (what to forget)"""
    model: ModelT = _section()
    """the network: an LLM with its tokenizer and prompt format, or a denoiser and its schedule"""
    finetune: TrainT = _section()
    """training of the target (forget and retain) and the oracle (retain only)"""
    unlearn: UnlearnT = _section()
    """the unlearning methods and their settings"""
    evaluation: EvaluationT = _section()
    """how each model is evaluated: an LLM's suites; a denoiser's samples, judge and FID/KID"""
    attack: AttackT = _section()
    """attacks on the unlearned models, each compared with the oracle"""


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections, "
                          f"got {type(data).__name__}")
    return data


class NestedKeyError(ValueError):
    """A validator's error about a key below the field it validates (a task section's
    benchmark config): :func:`validate` names it as ``field.key``."""

    def __init__(self, key: str, msg: str) -> None:
        super().__init__(f"{key}: {msg}" if key else msg)
        self.key, self.msg = key, msg


def validate(schema: type[M], data: dict[str, Any], source: str = "recipe") -> M:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        msg = str(err["msg"]).removeprefix("Value error, ")  # pydantic's prefix says nothing
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, NestedKeyError):
            loc, msg = ".".join(p for p in (loc, inner.key) if p), inner.msg
        loc = loc or "(root)"
        raise ConfigError(f"{source}: {loc}: {msg}{more}") from None


def load_recipe(schema: type[M], path: str | Path | None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> M:
    """Load ``path`` (or ``base``, which is left as it is), apply ``overrides`` and validate
    against ``schema``."""
    data = read_yaml(path) if path is not None else copy.deepcopy(base or {})
    data = apply_overrides(data, list(overrides or []))
    return validate(schema, data, source=str(path) if path else "recipe")


def dump_recipe(recipe: BaseModel) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
