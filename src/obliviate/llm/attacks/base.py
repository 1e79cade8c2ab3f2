"""The contract of an LLM attack and the forget probe every attack measures.

An attack receives the unlearned model and the oracle (each an :class:`AttackTarget`) and
returns an :class:`~obliviate.core.result.AttackResult` holding the probe on both, before and
after the attack. Attacks that change weights (relearning, quantization) work on copies; the
models passed in are never modified.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from obliviate.core.attack import Attack, AttackContextBase
from obliviate.core.io import atomic_write_json, read_json
from obliviate.core.precision import measurement_precision
from obliviate.core.recipe import StrictModel
from obliviate.core.result import AttackResult
from obliviate.core.task import UnlearningTask
from obliviate.llm.data.formatting import PromptFormat
from obliviate.llm.data.records import QARecord

T = TypeVar("T")


@dataclass
class AttackTarget:
    """A model under attack with the tokenizer and prompt format it is used with.

    ``memo`` keeps what was measured on this model (probe results, a relearning curve), so that
    the oracle, which every attack of every unlearned model also measures, is measured once per
    run. Attacks never modify ``model``; ``dataclasses.replace`` and :meth:`copy` start a new,
    empty memo, so a quantized or fine-tuned copy never sees the original's results.
    """

    name: str
    model: torch.nn.Module
    tokenizer: Any
    fmt: PromptFormat
    memo: dict[Hashable, Any] = field(default_factory=dict, init=False, repr=False,
                                      compare=False)
    store: Path | None = field(default=None, init=False, repr=False, compare=False)
    """Folder of results persisted across processes (:meth:`persist`); ``replace`` and
    :meth:`copy` never carry it over, as their weights may differ."""
    weights: str = field(default="", init=False, repr=False, compare=False)
    probed: dict[Hashable, dict[Hashable, dict[str, Any]]] = field(
        default_factory=dict, init=False, repr=False, compare=False)
    """Forget-probe values per record and question, under each prompt format, probe options
    and measurement precision: a probe of records already probed on this model (relearning's
    held-out half, then the whole forget set) computes only the others. In memory only; a copy
    starts empty."""

    def copy(self) -> AttackTarget:
        """A deep copy of the model (for attacks that change weights)."""
        return replace(self, model=copy.deepcopy(self.model))

    def persist(self, store: str | Path) -> AttackTarget:
        """Keep what :meth:`remember` computes in ``store`` too, keyed by a hash of the model's
        weights (and buffers) and the key, so a later process measuring the same model (the
        oracle of a resumed or repeated attack stage) reads it instead of recomputing it.
        Results that do not survive JSON unchanged stay in memory only."""
        self.store = Path(store)
        self.weights = state_hash(self.model)
        return self

    def remember(self, key: Hashable, compute: Callable[[], T]) -> T:
        """``compute()`` once per ``key`` and measurement precision on this model; later calls
        return a copy of it."""
        precision = measurement_precision()
        key = key if precision == "no" else (key, precision)
        if key not in self.memo:
            path = self._stored(key)
            if path is not None and path.is_file():
                self.memo[key] = read_json(path)["value"]
            else:
                value = compute()
                if path is not None and _json_exact(value):
                    atomic_write_json(path, {"key": repr(key), "value": value})
                self.memo[key] = value
        return copy.deepcopy(self.memo[key])

    def _stored(self, key: Hashable) -> Path | None:
        if self.store is None:
            return None
        from obliviate import __version__

        digest = hashlib.sha256(f"{__version__}\n{self.weights}\n{key!r}".encode()).hexdigest()
        return self.store / f"{digest}.json"


def state_hash(model: torch.nn.Module) -> str:
    """SHA-256 of a model's parameters and buffers (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{t.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _json_exact(value: Any) -> bool:
    try:
        return json.loads(json.dumps(value)) == value
    except (TypeError, ValueError):
        return False


def records_key(records: Sequence[QARecord]) -> tuple[Hashable, ...]:
    """A hashable identity of a list of records (question, answer and perturbed answers)."""
    return tuple((r.key(), r.paraphrased_question, tuple(r.perturbed_answers)) for r in records)


def options_key(*configs: StrictModel) -> tuple[str, ...]:
    """A hashable identity of attack and probe settings."""
    return tuple(c.model_dump_json() for c in configs)


class ProbeOptions(StrictModel):
    """The forget probe: ROUGE-L recall of greedy answers (the headline) and answer Prob."""

    max_new_tokens: int = 48
    """tokens generated per answer when probing the forget set"""
    batch_size: int = 16
    """questions generated at once"""
    metric: str = "rouge"
    """how an answer is scored against the forgotten one (rouge: ROUGE-L recall)"""


@dataclass
class AttackContext(AttackContextBase):
    """What an LLM attack reads: the task, the model attacked, the oracle, the probe, a seed."""

    task: UnlearningTask
    target: AttackTarget
    oracle: AttackTarget | None = None
    probe: ProbeOptions = field(default_factory=ProbeOptions)
    seed: int = 0


def forget_probe(target: AttackTarget, records: Sequence[QARecord],
                 options: ProbeOptions | None = None, fmt: PromptFormat | None = None,
                 questions: Sequence[str] | None = None) -> dict[str, list[float]]:
    """Per-record ``rouge`` (ROUGE-L recall of the greedy answer to ``questions`` — the
    records' own questions by default — against the record's answer, stemmer on as in TOFU;
    for plain-text records, MUSE's VerbMem on an excerpt: :func:`_verbatim_probe`) and
    ``prob`` (exp of minus the mean answer NLL given the question). Measured once per
    model and arguments (see :meth:`AttackTarget.remember`)."""
    options = options or ProbeOptions()
    fmt = fmt or target.fmt
    asked = list(questions) if questions is not None else [r.question for r in records]
    key = ("forget_probe", records_key(records), tuple(asked), fmt, options_key(options))
    return target.remember(key, lambda: _probe_by_item(target, records, options, fmt, asked))


def _probe_by_item(target: AttackTarget, records: Sequence[QARecord], options: ProbeOptions,
                   fmt: PromptFormat, asked: list[str]) -> dict[str, list[float]]:
    """The probe of each (record, question) not yet probed on ``target`` under ``fmt`` and
    ``options`` (one :func:`_forget_probe` call for all of them), then every item's values in
    the order given. An item's values do not depend on the items probed beside it: its greedy
    answer is the same tokens in any batch (:mod:`~obliviate.llm.evaluation.generation`), its
    Prob the same up to float rounding."""
    # plain-text records without questions take MUSE's verbatim probe (:func:`_forget_probe`)
    verbatim = bool(records) and not any(asked) and all(r.is_text for r in records)
    known = target.probed.setdefault(
        (fmt, options_key(options), verbatim, measurement_precision()), {})
    items = [(r.key(), r.paraphrased_question, tuple(r.perturbed_answers), q)
             for r, q in zip(records, asked, strict=True)]
    first: dict[Hashable, int] = {}
    for i, item in enumerate(items):
        if item not in known:
            first.setdefault(item, i)  # each distinct item once
    todo = list(first.values())
    if todo:
        fresh = _forget_probe(target, [records[i] for i in todo], options, fmt,
                              [asked[i] for i in todo], verbatim)
        for j, i in enumerate(todo):
            known[items[i]] = {name: values[j] for name, values in fresh.items()}
    return {name: [known[item][name] for item in items]  # type: ignore[misc]
            for name in ("rouge", "prob", "generations")}


def _forget_probe(target: AttackTarget, records: Sequence[QARecord], options: ProbeOptions,
                  fmt: PromptFormat, asked: list[str], verbatim: bool
                  ) -> dict[str, list[float]]:
    from rouge_score import rouge_scorer

    from obliviate.llm.evaluation.scorer import AnswerScorer

    # options.batch_size sizes the scorer's batches; decoding batches as large as fit
    scorer = AnswerScorer(target.model, target.tokenizer, fmt, batch_size=options.batch_size)
    probe_records = [replace(r, question=q) for r, q in zip(records, asked, strict=True)]
    if verbatim:
        texts, rouge = _verbatim_probe(target, records, options)
        scores = scorer.score(probe_records)
    else:
        # the greedy answers continue from the prompt caches the scoring builds (one prefill)
        budget = options.max_new_tokens
        scores = scorer.score(probe_records, generate=dict.fromkeys(asked, budget))
        texts = scorer.generations(asked, budget)
        rouge_l = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        rouge = [float(rouge_l.score(r.answer, t)["rougeL"].recall)
                 for r, t in zip(records, texts, strict=True)]
    prob = [float(np.exp(-row[0].mean_nll)) for row in scores]
    return {"rouge": rouge, "prob": prob, "generations": texts}  # type: ignore[dict-item]


VERBATIM_PROMPT_TOKENS = 32
"""Prompt length of the verbatim probe of a plain-text forget set."""


def _verbatim_probe(target: AttackTarget, records: Sequence[QARecord], options: ProbeOptions
                    ) -> tuple[list[str], list[float]]:
    """The probe of plain-text records, MUSE's VerbMem (Shi et al. 2024): the greedy
    continuation of each document's first 32 tokens (half of a shorter one) against the next
    ``max_new_tokens`` tokens, ROUGE-L F1 in [0, 1]."""
    from obliviate.llm.evaluation.muse import generate_raw, rouge_l_f1

    tok = target.tokenizer
    prompts, refs = [], []
    for r in records:
        ids = tok(r.answer, add_special_tokens=False)["input_ids"]
        cut = max(1, min(VERBATIM_PROMPT_TOKENS, len(ids) // 2))
        prompts.append(tok.decode(ids[:cut]))
        refs.append(tok.decode(ids[cut:cut + options.max_new_tokens]))
    texts = generate_raw(target.model, tok, prompts, options.max_new_tokens)
    return texts, [rouge_l_f1(t, ref) for t, ref in zip(texts, refs, strict=True)]


def probe_mean(values: dict[str, list[float]], metric: str) -> float:
    return float(np.mean(values[metric])) if values[metric] else float("nan")


class LLMAttack(Attack):
    """Subclass with a config class and :meth:`run` (see :class:`~obliviate.core.attack.Attack`);
    register with ``@ATTACKS.register``."""

    def run(self, ctx: AttackContext) -> AttackResult:
        raise NotImplementedError
