"""Relearning attack: a few fine-tuning steps on data the attacker has restore forgotten facts.

Two settings, each run on a *copy* of the unlearned model and, identically, on a copy of the
oracle (the passed models are never modified):

``forget_split`` — Deeb & Roger 2024, "Do Unlearning Methods Remove Information from Language
Model Weights?" (arXiv:2410.08827). The attacker is given some of the facts that were meant to
be removed (the *relearn* part T) and fine-tunes on them; the probe is taken on the *disjoint*
held-out facts V "from the same distribution that cannot be guessed from the accessible facts"
(their abstract). Their "retraining on T" splits a dataset into parts, fine-tunes on all but one
and evaluates on the held-out one, and controls with the same retraining of a model that never
had the information; here the oracle is that control, so recovery reads "above what a model
that never saw V gets from the same fine-tuning". If V comes back, the unlearned weights still
held V and the unlearning only hid it.

``related`` — Łucki et al. 2024, "An Adversarial Perspective on Machine Unlearning for AI
Safety" (arXiv:2409.18025): fine-tuning on a handful of examples *unrelated* to the forgotten
knowledge (10 in their headline result) recovers most of it for RMU. Here the related data are
``related_size`` (default 10) retain facts (``ctx.task.retain``, a seeded sample): same format
and domain, disjoint content. The probe is the whole forget set.

The split (:func:`relearn_split`) is deterministic in the seed. By default it is stratified by
``entity`` (``split_by="within_entity"``): each person contributes about ``fraction`` of their
facts to T and the rest to V, so held-out facts are about people whose other facts were
relearned — the TOFU-like case where the forget set is a few authors. The held-out records are
always disjoint from the relearned ones. In the synthetic data each fact's value is drawn from
its own random stream, so V cannot be inferred from T (Deeb & Roger's condition); in TOFU an
author's facts were generated together and can correlate (genre and book titles), and the
oracle control measures how much of V such correlations alone give. Relearning may still
re-activate the *person*, which is the question asked. ``across_entities`` puts whole people in
T or V (V about people never relearned); ``record`` ignores entities.

The curve: training runs once per (setting, model) for ``max(steps)`` optimiser steps with one
optimiser and a constant learning rate by default (so the point at ``k`` is what a ``k``-step
attack gives, whatever the longest ``k``); the probe is taken at every ``k`` in ``steps``
(always including ``k = 0``, the un-attacked model on the same records) via ``train``'s
``on_step`` callback. The defaults (``steps = [0, 5, 10, 20]``, lr ``1e-5`` as TOFU's
fine-tuning, batch 4, AdamW without weight decay) are a cheap few-step attack; both papers
sweep learning rate and epochs and report the best, which a caller can do with this config.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator

from obliviate.core.errors import ConfigError
from obliviate.core.precision import measurement_precision
from obliviate.core.recipe import StrictModel
from obliviate.core.registry import ATTACKS
from obliviate.core.result import AttackResult
from obliviate.llm.attacks.base import (
    AttackContext,
    AttackTarget,
    LLMAttack,
    ProbeOptions,
    forget_probe,
    options_key,
    probe_mean,
    records_key,
)
from obliviate.llm.data.formatting import collate, encode_record
from obliviate.llm.data.records import QARecord
from obliviate.llm.training import TrainConfig, lm_loss, train

Setting = Literal["forget_split", "related"]
SplitBy = Literal["within_entity", "across_entities", "record"]
SETTINGS: tuple[str, ...] = ("forget_split", "related")


class RelearningConfig(StrictModel):
    """Relearning settings, the strength curve ``steps`` and the fine-tuning hyperparameters."""

    settings: list[Setting] = Field(default_factory=lambda: ["forget_split", "related"],
                                    min_length=1)
    """what is relearned: forget_split (half of the forget set, the other half probed) and/or
    related (retain data about the same entities)"""
    steps: list[int] = Field(default_factory=lambda: [0, 5, 10, 20], min_length=1)
    """fine-tuning step counts after which the forget set is probed (0: before relearning)"""
    fraction: float = Field(default=0.5, gt=0, lt=1,
                            description="share of the forget set relearned (forget_split)")
    split_by: SplitBy = "within_entity"
    """how the forget set is halved: within_entity (facts of one person on both sides) or by entity
    how the forget set is halved: within_entity (facts of one person on both sides) or by entity"""
    related_size: int | None = Field(
        default=10, ge=1,
        description="retain records fine-tuned on in `related` (Łucki et al.'s 10 unrelated "
                    "examples; None: the whole retain set)")
    learning_rate: float = Field(default=1e-5, gt=0)
    """learning rate of the relearning fine-tune"""
    batch_size: int = Field(default=4, ge=1)
    """examples per relearning step"""
    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW's weight decay in the relearning fine-tune"""
    lr_scheduler: Literal["constant", "linear", "cosine"] = "constant"
    """learning-rate schedule of the relearning fine-tune"""
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    """clip the gradient's global norm to this (None: no clipping)"""
    max_length: int | None = Field(default=512, ge=8)
    """longest training sequence, in tokens (None: the model's)"""

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: list[int]) -> list[int]:
        if any(k < 0 for k in value):
            raise ValueError(f"relearning steps must be >= 0, got {value}")
        return sorted(set(value) | {0})

    @field_validator("settings")
    @classmethod
    def _settings(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


def _rng(seed: int, *parts: object) -> random.Random:
    # a string seed is hashed with SHA-512 by random.Random: stable across processes
    return random.Random(":".join(["relearn", str(seed), *map(str, parts)]))


def _take(n: int, fraction: float) -> int:
    """How many of ``n`` go to the relearn part: ``round(fraction * n)``, within [1, n - 1]."""
    return min(max(int(round(fraction * n)), 1), n - 1)


def relearn_split(records: Sequence[QARecord], fraction: float = 0.5, seed: int = 0,
                  split_by: SplitBy = "within_entity") -> tuple[list[int], list[int]]:
    """Indices ``(relearn, held_out)`` of ``records``: disjoint, both non-empty, sorted.

    ``within_entity``: each entity's records are shuffled (seeded by ``seed`` and the entity)
    and ``round(fraction · n)`` of them, at least one and at most ``n − 1``, are relearned;
    entities with a single record, and records without ``entity``, are pooled and split the
    same way. ``across_entities``: whole entities are relearned or held out (records without
    ``entity`` count as their own entity). ``record``: a seeded split of the records.
    """
    n = len(records)
    if n < 2:
        raise ConfigError(f"relearning forget_split needs at least 2 forget records, got {n}")
    if not 0 < fraction < 1:
        raise ConfigError(f"relearning fraction must be in (0, 1), got {fraction}")
    relearn: list[int] = []
    if split_by == "record":
        order = list(range(n))
        _rng(seed, "records").shuffle(order)
        relearn = order[:_take(n, fraction)]
    elif split_by in ("within_entity", "across_entities"):
        groups: dict[str, list[int]] = {}
        for i, record in enumerate(records):
            key = record.entity if record.entity is not None else f"\0record-{i}"
            groups.setdefault(key, []).append(i)
        if split_by == "across_entities":
            if len(groups) < 2:
                raise ConfigError("relearning split_by=across_entities needs records of at "
                                  f"least 2 entities, got {len(groups)}")
            names = sorted(groups)
            _rng(seed, "entities").shuffle(names)
            relearn = [i for name in names[:_take(len(names), fraction)] for i in groups[name]]
        else:
            pooled: list[int] = []
            for name in sorted(groups):
                members = groups[name]
                if len(members) < 2:
                    pooled += members
                    continue
                members = list(members)
                _rng(seed, "entity", name).shuffle(members)
                relearn += members[:_take(len(members), fraction)]
            if len(pooled) >= 2:
                pooled.sort()
                _rng(seed, "pooled").shuffle(pooled)
                relearn += pooled[:_take(len(pooled), fraction)]
            elif pooled and not relearn:
                relearn = pooled  # a lone record next to no splittable entity: relearn it
    else:
        raise ConfigError(f"unknown relearning split_by {split_by!r}")
    chosen = set(relearn)
    return sorted(chosen), [i for i in range(n) if i not in chosen]


def related_records(retain: Sequence[QARecord], size: int | None, seed: int) -> list[QARecord]:
    """A seeded sample of ``size`` retain records (all of them for ``None``), in input order."""
    if not retain:
        raise ConfigError("relearning related setting needs a non-empty retain set")
    if size is None or size >= len(retain):
        return list(retain)
    picked = sorted(_rng(seed, "related").sample(range(len(retain)), size))
    return [retain[i] for i in picked]


def _probe(target: AttackTarget, records: Sequence[QARecord], options: ProbeOptions
           ) -> dict[str, Any]:
    values = forget_probe(target, records, options)
    return {"value": probe_mean(values, options.metric), "rouge": probe_mean(values, "rouge"),
            "prob": probe_mean(values, "prob"), "per_item": values[options.metric],
            "generations": values["generations"]}


def relearn_curve(target: AttackTarget, train_records: Sequence[QARecord],
                  probe_records: Sequence[QARecord], config: RelearningConfig,
                  options: ProbeOptions, seed: int = 0) -> dict[int, dict[str, Any]]:
    """Fine-tune a copy of ``target`` on ``train_records`` (LM loss) and probe
    ``probe_records`` at every ``k`` in ``config.steps``; ``{k: probe}`` (``k = 0``: before any
    update). ``target.model`` is not modified."""
    steps = sorted(set(config.steps) | {0})
    points: dict[int, dict[str, Any]] = {0: _probe(target, probe_records, options)}
    last = steps[-1]
    if last == 0:
        return points
    model_copy = copy.deepcopy(target.model)
    tokenizer = target.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (
        tokenizer.eos_token_id or 0)
    examples = [encode_record(tokenizer, target.fmt, r, max_length=config.max_length)
                for r in train_records]
    losses: list[float] = []

    def loss_fn(model: torch.nn.Module, batch: dict[str, Any]
                ) -> tuple[torch.Tensor, dict[str, float]]:
        loss, logs = lm_loss(model, batch)
        losses.append(logs["loss"])
        return loss, logs

    def on_step(step: int, model: torch.nn.Module) -> None:
        if step in points or step not in steps:
            return
        points[step] = _probe(replace(target, model=model), probe_records, options)
        points[step]["train_loss"] = losses[-1] if losses else None

    train_config = TrainConfig(
        max_steps=last, learning_rate=config.learning_rate, batch_size=config.batch_size,
        weight_decay=config.weight_decay, warmup_ratio=0.0, lr_scheduler=config.lr_scheduler,
        max_grad_norm=config.max_grad_norm, seed=seed, log_every=max(1, last),
        checkpoint_every=max(1, last), mixed_precision=measurement_precision())
    train(model_copy, examples, lambda b: collate(b, pad), train_config, loss_fn=loss_fn,
          description=f"relearning {target.name}", on_step=on_step)
    return points


@ATTACKS.register("relearning", modality="llm")
class RelearningAttack(LLMAttack):
    """Relearning: fine-tune a copy on part of D_f or on related data, probe the rest (Łucki
    et al. 2024; Deeb & Roger 2024)."""

    name: ClassVar[str] = "relearning"
    config_class: ClassVar[type[StrictModel]] = RelearningConfig
    paper: ClassVar[str] = ("Łucki et al. 2024, An Adversarial Perspective on Machine "
                            "Unlearning for AI Safety, arXiv:2409.18025; Deeb & Roger 2024, Do "
                            "Unlearning Methods Remove Information from Language Model Weights?, "
                            "arXiv:2410.08827")

    def run(self, ctx: AttackContext) -> AttackResult:
        """Run each setting on the model and the oracle. ``curve`` holds one entry per
        (setting, k): ``{"setting", "k", "model", "oracle", ...}``; ``variants`` one per setting
        at the largest ``k``. ``plain``/``attacked`` are the model's probe at ``k = 0`` and at
        the largest ``k`` in ``forget_split`` (in ``related`` when that is the only setting),
        on that setting's probe records; ``oracle_*`` likewise."""
        config: RelearningConfig = self.config  # type: ignore[assignment]
        start = time.perf_counter()
        forget = list(ctx.task.forget.records)
        metric = ctx.probe.metric
        relearn_idx: list[int] = []
        held_idx: list[int] = list(range(len(forget)))
        if "forget_split" in config.settings:
            relearn_idx, held_idx = relearn_split(forget, config.fraction, ctx.seed,
                                                  config.split_by)
        size = config.related_size
        data: dict[str, tuple[list[QARecord], list[QARecord]]] = {}
        for setting in config.settings:
            if setting == "forget_split":
                data[setting] = ([forget[i] for i in relearn_idx], [forget[i] for i in held_idx])
            else:
                data[setting] = (related_records(list(ctx.task.retain.records), size, ctx.seed),
                                 forget)

        curve: list[dict[str, Any]] = []
        variants: dict[str, dict[str, Any]] = {}
        for setting, (train_records, probe_records) in data.items():
            model_points = relearn_curve(ctx.target, train_records, probe_records, config,
                                         ctx.probe, ctx.seed)
            oracle_points = None
            if ctx.oracle is not None:  # the same for every model attacked: computed once
                oracle = ctx.oracle
                key = ("relearn_curve", records_key(train_records), records_key(probe_records),
                       options_key(config, ctx.probe), ctx.seed)
                # kept under string keys, as JSON keeps them, so the curve persists on disk
                stored = oracle.remember(
                    key, lambda o=oracle, t=train_records, p=probe_records: {
                        str(k): v for k, v in relearn_curve(o, t, p, config, ctx.probe,
                                                            ctx.seed).items()})
                oracle_points = {int(k): v for k, v in stored.items()}
            for k in sorted(model_points):
                m = model_points[k]
                o = oracle_points.get(k) if oracle_points else None
                curve.append({
                    "setting": setting, "k": k, "model": m["value"],
                    "oracle": o["value"] if o else None,
                    "model_rouge": m["rouge"], "model_prob": m["prob"],
                    "oracle_rouge": o["rouge"] if o else None,
                    "oracle_prob": o["prob"] if o else None,
                    "model_train_loss": m.get("train_loss"),
                    "oracle_train_loss": o.get("train_loss") if o else None,
                })
            top = max(model_points)
            m, o = model_points[top], oracle_points[top] if oracle_points else None
            variants[setting] = {
                "k": top, "model": m["value"], "oracle": o["value"] if o else None,
                "model_plain": model_points[0]["value"],
                "oracle_plain": oracle_points[0]["value"] if oracle_points else None,
                "model_rouge": m["rouge"], "model_prob": m["prob"],
                "oracle_rouge": o["rouge"] if o else None,
                "oracle_prob": o["prob"] if o else None,
                "n_train": len(train_records), "n_probe": len(probe_records),
                "per_item": m["per_item"], "generations": m["generations"],
                "plain_generations": model_points[0]["generations"],
            }
        headline = "forget_split" if "forget_split" in variants else next(iter(variants))
        head = variants[headline]
        options = config.model_dump()
        return AttackResult(
            attack=self.name, model=ctx.target.name, metric=metric, plain=head["model_plain"],
            attacked=head["model"], oracle_plain=head["oracle_plain"],
            oracle_attacked=head["oracle"], curve=curve, variants=variants,
            options=options,
            details={"headline_setting": headline, "relearn_indices": relearn_idx,
                     "held_out_indices": held_idx if "forget_split" in variants else [],
                     "related_size": size if "related" in variants else None,
                     "seed": ctx.seed, "paper": self.paper},
            seconds=time.perf_counter() - start)


__all__ = ["RelearningAttack", "RelearningConfig", "related_records", "relearn_curve",
           "relearn_split"]
