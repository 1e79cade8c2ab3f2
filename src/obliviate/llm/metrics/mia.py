"""The ``mia`` suite: membership inference on forget (members) vs. holdout (non-members).

One registered metric per attack (:mod:`obliviate.llm.evaluation.mia`): LOSS, ZLib, Min-K% and
Min-K%++ (k = 0.4) on the answer given the question, GradNorm, and Reference when a reference
model is given; the value is the AUC. PrivLeak (MUSE, Shi et al. 2024) compares each AUC with
the oracle's recorded one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from obliviate.core.errors import ConfigError, DataError
from obliviate.core.metric import Metric, Need
from obliviate.core.recipe import StrictModel
from obliviate.core.registry import METRICS, SUITES
from obliviate.core.result import EvalResult, MetricResult
from obliviate.llm.data.formatting import answer_nll
from obliviate.llm.data.records import QARecord
from obliviate.llm.evaluation import mia
from obliviate.llm.evaluation.session import (
    MODALITY,
    EvalSession,
    LLMInputs,
    LLMSuite,
    SplitLike,
    SuiteOutput,
    _head,
)

SUITE = "mia"
ATTACKS: tuple[str, ...] = (*mia.TOKEN_ATTACKS, "gradnorm")


class MiaOptions(StrictModel):
    """Membership inference on forget (members) vs. holdout (non-members)."""

    attacks: list[str] = Field(
        default_factory=lambda: ["loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm"],
        description="reference is added when a reference model is given")
    k: float = Field(default=mia.DEFAULT_K, gt=0.0, le=1.0)
    """fraction of lowest token log-probabilities Min-K% averages"""
    forget_split: str = "forget"
    """the members (data the model trained on and should forget)"""
    holdout_split: str = "holdout"
    """the non-members (data the model never saw)"""
    ds_size: int | None = Field(default=None, ge=1)
    """examples per split (None: all)"""
    privleak_convention: Literal["muse", "relative_auc"] = Field(
        default="muse", description="muse: MUSE's published PrivLeak; relative_auc: pre-0.2")


class MiaAttack(Metric):
    """Base of the per-attack MIA metrics: AUC of the attack's scores, forget vs. holdout.

    ``compute(inputs, split)`` takes the members' split; the non-members are
    ``options.holdout_split``. ``None`` where the attack cannot run (no reference model; no
    parameter requires grad)."""

    suite = SUITE
    attack: str = ""
    options: MiaOptions

    def __init__(self, options: MiaOptions | None = None) -> None:
        super().__init__(options or MiaOptions())

    def _stats(self, kind: str, split: str) -> Need:
        return getattr(Need, kind)(split, limit=self.options.ds_size)

    def needs(self, split: str) -> list[Need]:
        kind = "reference_stats" if self.attack == "reference" else "token_stats"
        pair = (split, self.options.holdout_split)
        return [self._stats("token_stats", s) for s in pair] + (
            [self._stats(kind, s) for s in pair] if kind != "token_stats" else [])

    def compute(self, inputs: Any, split: str) -> MetricResult | None:
        key = (SUITE, split, self.attack, self.options.k)
        memo = getattr(inputs, "memo", {})
        if key not in memo:
            memo[key] = self._compute(inputs, split)
        return memo[key]

    def _compute(self, inputs: Any, split: str) -> MetricResult | None:
        holdout = self.options.holdout_split
        if self.attack == "gradnorm":
            session: EvalSession = inputs.session
            if not any(p.requires_grad for p in session.model.parameters()):
                return None
            f = inputs.records(split, self.options.ds_size)
            h = inputs.records(holdout, self.options.ds_size)
            return mia.mia_result("gradnorm", _gradnorm(session, f), _gradnorm(session, h),
                                  split=split)
        f_ref = h_ref = None
        if self.attack == "reference":
            f_ref = inputs.get(self._stats("reference_stats", split))
            h_ref = inputs.get(self._stats("reference_stats", holdout))
            if f_ref is None:
                return None
        k = self.options.k
        forget = mia.attack_scores(self.attack, inputs.get(self._stats("token_stats", split)),
                                   f_ref, k=k)
        non = mia.attack_scores(self.attack, inputs.get(self._stats("token_stats", holdout)),
                                h_ref, k=k)
        extra = {"k": k} if self.attack in ("min_k", "min_k_plus_plus") else {}
        return mia.mia_result(self.attack, forget, non, split=split, **extra)


def _attack_metric(attack: str, doc: str) -> type[MiaAttack]:
    cls = type(f"Mia_{attack}", (MiaAttack,), {"attack": attack, "__doc__": doc,
                                               "__module__": __name__})
    return METRICS.register(f"mia_{attack}", modality=MODALITY)(cls)


_attack_metric("loss", "LOSS MIA (Yeom et al. 2018): the answer's mean NLL, AUC.")
_attack_metric("zlib", "ZLib MIA (Carlini et al. 2021): NLL over the zlib entropy, AUC.")
_attack_metric("min_k", "Min-K% Prob (Shi et al. 2024): the mean of the lowest k token "
                        "log-probs, AUC.")
_attack_metric("min_k_plus_plus", "Min-K%++ (Zhang et al. 2024): Min-K% of the log-probs "
                                  "standardised by the vocabulary's mean and spread, AUC.")
_attack_metric("reference", "Reference MIA (Carlini et al. 2021): NLL minus the reference "
                            "model's NLL, AUC.")
_attack_metric("gradnorm", "GradNorm MIA (Wang et al. 2024): the gradient norm of each "
                           "answer's NLL, AUC.")


@METRICS.register("privleak", modality=MODALITY)
class PrivLeak(Metric):
    """PrivLeak (Shi et al. 2024, MUSE): the relative gap between each attack's MIA AUC and the
    oracle's recorded one (:func:`obliviate.llm.evaluation.mia.privleak`)."""

    suite = SUITE
    reads_oracle = True
    options: MiaOptions

    def __init__(self, options: MiaOptions | None = None) -> None:
        super().__init__(options or MiaOptions())

    def needs(self, split: str) -> list[Need]:
        return [Need.oracle(SUITE)]

    def compute(self, inputs: Any, split: str) -> list[MetricResult] | None:
        oracle = inputs.get(Need.oracle(SUITE))
        if oracle is None:
            return None
        oracle_auc = _oracle_aucs(oracle)
        out = []
        for attack in ATTACKS:
            metric = METRICS.get(f"mia_{attack}", MODALITY)(self.options)
            mine = metric.compute(inputs, split) if attack in _attacks_run(self.options,
                                                                            inputs) else None
            if mine is None or attack not in oracle_auc:
                continue
            value = mia.privleak(mine.value, oracle_auc[attack],
                                 convention=self.options.privleak_convention)
            out.append(MetricResult(f"privleak_{attack}", value, split=split,
                                    details={"auc": mine.value, "oracle_auc": oracle_auc[attack],
                                             "convention": self.options.privleak_convention}))
        return out


def _attacks_run(opts: MiaOptions, inputs: Any) -> list[str]:
    """The attacks the suite runs: the asked token attacks, reference when a reference model is
    there, gradnorm when asked."""
    token = [a for a in opts.attacks if a in mia.TOKEN_ATTACKS and a != "reference"]
    ref = ["reference"] if getattr(inputs, "reference", None) is not None else []
    return token + ref + (["gradnorm"] if "gradnorm" in opts.attacks else [])


@SUITES.register(SUITE, modality=MODALITY)
class MiaSuite(LLMSuite):
    """Membership inference: forget (members) vs. holdout (non-members), AUC per attack.

    Runs the registered ``mia_<attack>`` metric of each of ``attacks`` (Reference when
    ``run`` gets ``reference_model`` or ``reference_session``) and, given the oracle's MIA
    result (``oracle_mia``: an :class:`EvalResult`/:class:`SuiteOutput` or ``{attack: AUC}``;
    or the evaluation's ``oracle_results["mia"]``), PrivLeak per attack.
    """

    name = SUITE
    options_class = MiaOptions
    options: MiaOptions

    def _split(self, splits: Mapping[str, SplitLike], key: str) -> list[QARecord]:
        name = getattr(self.options, key)
        if name not in splits:
            raise DataError(f"mia: no split {name!r} (mia.{key}); given: {', '.join(splits)}")
        return _head(splits[name], self.options.ds_size)

    def needs(self, splits: Mapping[str, SplitLike], **inputs: Any) -> list[Need]:
        for key in ("forget_split", "holdout_split"):
            self._split(splits, key)
        forget = self.options.forget_split
        asked = [*self.options.attacks, "reference"]
        metrics = [METRICS.get(f"mia_{a}", MODALITY)(self.options) for a in ATTACKS if a in asked]
        return [n for m in [*metrics, PrivLeak(self.options)] for n in m.needs(forget)]

    def run(self, session: EvalSession, splits: Mapping[str, SplitLike],
            reference_model: Any = None, reference_session: EvalSession | None = None,
            oracle_mia: Any = None, resolved: LLMInputs | None = None,
            **inputs: Any) -> SuiteOutput:
        start = time.perf_counter()
        opts = self.options
        unknown = set(opts.attacks) - set(ATTACKS)
        if unknown:
            raise ConfigError(f"mia.attacks: unknown attack(s) {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(ATTACKS)}")
        self._split(splits, "forget_split")
        self._split(splits, "holdout_split")
        resolved = resolved or LLMInputs(session, splits)
        if reference_session is None and reference_model is not None:
            reference_session = EvalSession(reference_model, session.tokenizer, session.fmt,
                                            session.engine, name="reference")
        if reference_session is not None:
            resolved.reference = reference_session
        if oracle_mia is not None:
            resolved.oracle = {**resolved.oracle, SUITE: oracle_mia}
        result = self._result(session, splits, [opts.forget_split, opts.holdout_split])
        skipped: dict[str, str] = {}
        if resolved.reference is None and "reference" in opts.attacks:
            skipped["reference"] = "no reference model given"
        for attack in _attacks_run(opts, resolved):
            value = METRICS.get(f"mia_{attack}", MODALITY)(opts).compute(resolved,
                                                                        opts.forget_split)
            if value is None:
                skipped[attack] = "no parameter of the model requires grad"
            else:
                result.add(value)
        oracle = resolved.get(Need.oracle(SUITE))
        if oracle is None:
            skipped["privleak"] = "no oracle MIA result given"
        else:
            aucs = _oracle_aucs(oracle)
            for metric in result.metrics.copy().values():
                attack = metric.details.get("attack")
                if attack not in aucs:
                    skipped[f"privleak_{attack}"] = f"the oracle result has no {attack} AUC"
            for value in PrivLeak(opts).compute(resolved, opts.forget_split) or []:
                result.add(value)
        result.provenance["skipped"] = skipped
        result.provenance["session"] = session.provenance()
        result.seconds = time.perf_counter() - start
        return SuiteOutput(result)


def _gradnorm(session: EvalSession, records: Sequence[QARecord]) -> np.ndarray:
    """GradNorm scores: the gradient of each answer's mean NLL (after its question)."""
    model = session.model
    items = [session.scorer.encode(r.question, r.answer) for r in records]
    device = next(model.parameters()).device

    def loss_fn(m: Any, item: tuple[tuple[int, ...], tuple[int, ...]]) -> torch.Tensor:
        prompt, answer = item
        ids = torch.tensor([list(prompt + answer)], device=device)
        labels = torch.tensor([[-100] * len(prompt) + list(answer)], device=device)
        return answer_nll(m(input_ids=ids).logits, labels)[0]

    was_training = model.training
    model.eval()
    try:
        return mia.gradnorm_scores(model, items, loss_fn)
    finally:
        model.train(was_training)


def _oracle_aucs(oracle: Any) -> dict[str, float]:
    if isinstance(oracle, SuiteOutput):
        oracle = oracle.result
    if isinstance(oracle, EvalResult):
        return {m.details["attack"]: m.value for m in oracle.metrics.values()
                if m.name.startswith("mia_") and "attack" in m.details}
    if isinstance(oracle, Mapping):
        return {str(k).removeprefix("mia_"): float(v) for k, v in oracle.items()}
    raise ConfigError(f"mia: cannot read oracle AUCs from a {type(oracle).__name__}")
