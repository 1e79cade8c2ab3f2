"""LLM stages run by the CLI: build the task, fine-tune target and oracle, evaluate.

Each stage records itself in the run directory's ``run.json``; a stage already marked done
(with its outputs present) is skipped, so re-running a command resumes where it stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from obliviate.core import stages
from obliviate.core.benchmark import headline
from obliviate.core.integrity import model_digest, recorded, verify_model
from obliviate.core.precision import measured_in, precision_input
from obliviate.core.recipe import defining, offset_seed
from obliviate.core.record import relative_to_run
from obliviate.core.rundir import RunDir, environment_info
from obliviate.core.safety import output_name
from obliviate.core.stages import open_run  # noqa: F401  (every pipeline offers it)
from obliviate.core.task import Role, UnlearningTask
from obliviate.llm import MODALITY
from obliviate.llm.data.jsonl import load_jsonl as load_request_file  # noqa: F401
from obliviate.llm.finetune import finetune
from obliviate.llm.recipe import LLMRecipe
from obliviate.llm.runner import evaluation_splits, weights_sha256  # noqa: F401  (re-exported)
from obliviate.llm.task import build_task

_log = logging.getLogger(__name__)
# (label, summary key) of the numbers a table of LLM results shows first: every registered
# benchmark's headline declaration (llm/benchmarks/), in one list; tables show the present keys
HEADLINE = headline(MODALITY)


def prepare_task(recipe: LLMRecipe, run: RunDir) -> UnlearningTask:
    return stages.record_task(run, build_task(recipe.task, seed=recipe.seed))


def finetune_stage(recipe: LLMRecipe, run: RunDir, task: UnlearningTask,
                   roles: tuple[Role, ...] = ("target", "oracle")) -> dict[str, Any]:
    """Fine-tune each role unless it is already done; return the stage records."""
    from obliviate.llm.finetune import training_split

    train = offset_seed(recipe.finetune, recipe.seed)
    # before e5d7328 an LLM fine-tuning ignored the recipe's seed: a run at another seed names
    # the seed it trained with, so such an older run's models are not taken as this one's
    moved = {"finetune_seed": train.seed} if recipe.seed else None
    return stages.finetune_loop(
        recipe, run, roles, lambda role: training_split(task, role).sha256,
        lambda role: finetune(role, recipe.model, train, task, run, seed=recipe.seed), moved)


def _train_keys(cls: Any, args: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``unlearn.method_args.<m>`` that set a shared training setting for this
    method alone (e.g. ``learning_rate``), not one of its hyperparameters."""
    from obliviate.llm.methods.base import UnlearnTrainConfig

    return {k: v for k, v in args.items()
            if k in UnlearnTrainConfig.model_fields and k not in cls.config_class.model_fields}


def method_config(recipe: LLMRecipe, name: str) -> tuple[Any, Any]:
    """Method ``name``'s class and its config from ``unlearn.method_args.<name>`` (errors name
    the method), as in every modality (:func:`obliviate.core.precedence.method_config`); the
    training settings among them are left to :func:`method_train`."""
    from obliviate.core import precedence
    from obliviate.core.registry import METHODS

    args = recipe.unlearn.method_args.get(name, {})
    train = _train_keys(METHODS.get(name, MODALITY), args)
    cls, config = precedence.method_config(name, MODALITY,
                                           {k: v for k, v in args.items() if k not in train})
    return cls, offset_seed(config, recipe.seed)


def method_train(recipe: LLMRecipe, name: str, cls: Any) -> tuple[Any, dict[str, str]]:
    """The training settings method ``name`` runs with and where each came from: its paper's
    ``train_defaults`` < ``unlearn.train`` as the recipe sets it < ``unlearn.method_args.<name>``
    (:mod:`obliviate.core.precedence`)."""
    from obliviate.core.precedence import resolve

    args = recipe.unlearn.method_args.get(name, {})
    train, sources = resolve(recipe.unlearn.train, name, paper=cls.train_defaults,
                             own=_train_keys(cls, args))
    return offset_seed(train, recipe.seed), sources


def unlearn_stage(recipe: LLMRecipe, run: RunDir, task: UnlearningTask,
                  methods: list[str] | None = None, log_with: list[str] | None = None
                  ) -> dict[str, Any]:
    """Run each method on the target (skipping finished ones) and record cost and config;
    ``log_with`` sends each training curve live to those trackers (``RUN_DIR/logs``)."""
    import obliviate.llm.methods  # noqa: F401  (registers the catalogue)
    from obliviate.core.pristine import pristine_copy
    from obliviate.llm import runner
    from obliviate.llm.artifacts import load_model_for_eval
    from obliviate.llm.finetune import base_model
    from obliviate.llm.methods.base import UnlearnContext

    cfg = recipe.unlearn
    names = methods or cfg.methods
    resolved = {name: method_config(recipe, name) for name in names}
    trains = {name: method_train(recipe, name, cls) for name, (cls, _) in resolved.items()}
    target = Path(cfg.target) if cfg.target else run.model("target")
    refusals = recipe.task.bench.refusals(recipe.task.settings)

    def unlearn_one(name: str, cls: Any, config: Any, out_dir: Path, depends: dict[str, Any]
                    ) -> dict[str, Any]:
        train, sources = trains[name]
        model, tokenizer, fmt = pristine_copy(  # read from disk once for every method
            ("llm", str(target.resolve()), depends["target"], recipe.model.model_dump_json()),
            lambda: load_model_for_eval(target, recipe.model))
        if cls.starts_from == "base":
            model = base_model(recipe.model, tokenizer, recipe.seed)
        model.train()
        ctx = UnlearnContext(tokenizer=tokenizer, fmt=fmt, task=task, train=train,
                             lora=cfg.lora, selection=cfg.selection,
                             max_length=recipe.model.max_length, refusals=refusals)
        return runner.unlearn(
            name, cls, config, model, task, ctx, seed=recipe.seed, out_dir=out_dir, run=run,
            base_model=relative_to_run(target, run.root), log_with=log_with,
            logging_dir=run.root / "logs",
            record={"details": {"train_sources": sources},  # which layer set each value
                    "target": str(target), "target_weights_sha256": weights_sha256(target)})[1]

    return stages.unlearn_loop(run, task, resolved, target, unlearn_one, recipe.seed,
                        verify_target=not cfg.target,
                        depends={"train": defining(cfg.train), "lora": cfg.lora,
                                 "selection": cfg.selection})


def resolve_eval_model(run: RunDir, name: str) -> Path | str:
    """A model of the run (``target``, ``oracle``, ``unlearned/npo``), else a path or hub id
    (``smollm2`` included) evaluated as it is."""
    inside = run.model(name)
    if inside.exists():
        return inside
    if name in ("target", "oracle") or name.startswith("unlearned/"):  # a typo, not a hub id
        from obliviate.core.errors import ObliviateError

        known = ", ".join(stages.available_models(run)) or "none yet"
        raise ObliviateError(f"{run.root}: no model {name!r} in this run (models: {known})")
    return name


def evaluate_stage(recipe: LLMRecipe, run: RunDir, task: UnlearningTask,
                   models: list[str] | None = None, force: bool = False) -> dict[str, Any]:
    """Evaluate each model with the recipe's suites; the oracle's results are the yardstick.

    Results go to ``eval/<model>/<suite>.json`` (plus TOFU's legacy log); a model whose
    evaluation is recorded as done is skipped unless ``force``.
    """
    from obliviate.core.metric import load_oracle_results
    from obliviate.llm import runner
    from obliviate.llm.artifacts import load_model_for_eval
    from obliviate.llm.evaluation.suites import get_suite

    cfg, left_out = recipe.evaluation.for_task(recipe.task.bench, task)  # suites: the data's
    for suite, why in left_out.items():
        _log.warning("evaluation: suite %s not run: %s", suite, why)
    assert cfg.suites is not None
    for suite in cfg.suites:  # an unknown suite fails before any model loads
        get_suite(suite, cfg.options.get(suite))
    names = models or stages.available_models(run)
    if not names:
        from obliviate.core.errors import ObliviateError

        raise ObliviateError(f"{run.root}: no models to evaluate (run `obliviate finetune`)")
    names = stages.oracle_first(names)
    oracle_dir = run.root / "eval" / "oracle"
    summaries = {}
    for name in names:
        stage = f"eval_{output_name(name)}"
        out_dir = run.eval_dir(name)
        depends = {"suites": cfg.suites, "options": cfg.options, "seed": recipe.seed,
                   "model": model_digest(run, resolve_eval_model(run, name)),
                   "oracle": None if name == "oracle" else model_digest(run, oracle_dir),
                   **precision_input(cfg.mixed_precision)}
        if not force and run.stage_done(stage, depends):
            summaries[name] = recorded(run, stage)["summary"]
            continue
        inputs: dict[str, Any] = {}
        if name != "oracle":  # each suite's metrics read the oracle's result of that suite
            inputs["oracle_results"] = load_oracle_results(oracle_dir, cfg.suites)
        path = resolve_eval_model(run, name)
        verify_model(run, name)
        model, tokenizer, fmt = load_model_for_eval(path, recipe.model)
        with measured_in(cfg.mixed_precision):
            (outputs, _), _ = runner.evaluate(
                model, tokenizer, fmt, task, suites=cfg.suites, options=cfg.options, name=name,
                seed=recipe.seed, inputs=inputs, out_dir=out_dir, run=run, stage=stage,
                provenance={"model": str(path), "model_name": name, "seed": recipe.seed,
                            # oracle logs are artefacts reused by later runs
                            "obliviate": environment_info()["obliviate"], "task": task.name,
                            **precision_input(cfg.mixed_precision)},
                record={"model": str(path), "weights_sha256": weights_sha256(path),
                        **({"left_out": left_out} if left_out else {})})
        summaries[name] = runner.summary(outputs)
    return summaries


def attack_stage(recipe: LLMRecipe, run: RunDir, task: UnlearningTask,
                 models: list[str] | None = None, attacks: list[str] | None = None,
                 force: bool = False) -> dict[str, dict[str, Any]]:
    """Run each attack against each model and the oracle; ``attacks/<model>/<attack>.json``.

    One oracle :class:`AttackTarget` serves every model, so what attacks measure on the oracle
    is measured once (see :meth:`AttackTarget.remember`)."""
    import obliviate.llm.attacks  # noqa: F401  (registers the attacks)
    from obliviate.core.runner import run_attack
    from obliviate.llm.artifacts import load_model_for_eval
    from obliviate.llm.attacks.base import AttackContext, AttackTarget

    cfg = recipe.attack
    resolved = stages.resolve_attacks(attacks or cfg.attacks, cfg.options, "llm")
    targets = stages.attack_targets(run, models, cfg.models)

    def load(name: str) -> AttackTarget:
        model, tokenizer, fmt = load_model_for_eval(run.model(name), recipe.model)
        target = AttackTarget(name, model, tokenizer, fmt)
        # what the attacks measure on the oracle is kept on disk inside the run, keyed by its
        # weights: a resumed or repeated attack stage reads it instead of measuring it again
        return target.persist(run.root / "cache" / "attack_probes") if name == "oracle" \
            else target

    target = stages.ResidentModels(load)  # the oracle stays, with what the attacks measured on it

    def attack_one(name: str, cls: Any, config: Any) -> Any:
        ctx = AttackContext(task=task, target=target(name), oracle=target("oracle"),
                            probe=cfg.probe, seed=recipe.seed)
        with measured_in(cfg.mixed_precision):
            return run_attack(cls, config, ctx, recipe.seed)

    return stages.attack_loop(run, targets, resolved, attack_one, force=force,
                              depends={"probe": cfg.probe, "seed": recipe.seed,
                                       **precision_input(cfg.mixed_precision)})
