"""MUSE's memorisation criteria (Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation
for Language Models", arXiv:2407.06460; reference code ``swj0419/muse_bench`` ``metrics/``).

* **C1 VerbMem** (:func:`verbmem`): the greedy continuation (128 new tokens) of each forget
  excerpt's ``prompt``, scored by ROUGE-L F1 against ``gt`` cut to its first 128 tokens.
* **C2 KnowMem** on the forget QA and **C4** (utility) on the retain QA (:func:`knowmem`): the
  in-context QA pairs ``"Question: {q}\\nAnswer: {a}\\n\\n"`` then ``"Question: {q}\\nAnswer: "``,
  32 greedy new tokens cut at ``"\\n\\n"``, ``"\\nQuestion"`` or ``"Question:"``, ROUGE-L F1
  against the answer.
* **C3 PrivLeak**: Min-K% Prob (k = 0.4) AUC of privleak forget vs holdout relative to the
  retrained model, in MUSE's published convention (:func:`obliviate.llm.evaluation.mia.privleak`);
  :class:`MuseSuite` computes it from the shared scorer's token statistics.

Scores are ROUGE-L **F1** from ``rouge_score`` with ``use_stemmer=False`` (MUSE's scorer;
OpenUnlearning turns the stemmer on), per item and as the mean, both ×100 as MUSE reports them.
Prompts are raw text (MUSE evaluates base models), tokenised with the tokenizer's special tokens
(BOS where it has one), as MUSE's code does; no chat template is applied.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydantic import Field

from obliviate.core.errors import DataError
from obliviate.core.metric import Metric, ResolvedInputs
from obliviate.core.metric import Need as MetricNeed
from obliviate.core.recipe import StrictModel
from obliviate.core.registry import METRICS, SUITES
from obliviate.core.result import MetricResult
from obliviate.llm.data.records import QARecord
from obliviate.llm.evaluation import generation, mia
from obliviate.llm.evaluation.suites import (
    MODALITY,
    EvalSession,
    LLMSuite,
    Need,
    SplitLike,
    SuiteOutput,
    _head,
    _oracle_aucs,
    _provenance,
)

VERBMEM_MAX_NEW_TOKENS = 128
KNOWMEM_MAX_NEW_TOKENS = 32
KNOWMEM_STOP: tuple[str, ...] = ("\n\n", "\nQuestion", "Question:")
"""MUSE ``metrics/knowmem.py``: the output is cut before the first of these."""
SAMPLES = 5
"""How many (prompt, reference, generation) triples each result keeps for the report."""


# ------------------------------------------------------------------------------------------------
# Pure pieces
# ------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _rouge_l() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l_f1(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (``rouge_score``, no stemmer) of ``prediction`` against ``reference``, in
    [0, 1]: the longest common subsequence of the two token lists, LCS/len as precision and
    recall, their harmonic mean."""
    return float(_rouge_l().score(reference, prediction)["rougeL"].fmeasure)


def cut_at_stop(text: str, stops: Sequence[str] = KNOWMEM_STOP) -> str:
    """``text`` before the first occurrence of each stop string, in turn (MUSE's
    ``get_prefix_before_words_occur``)."""
    for stop in stops:
        text = text.split(stop)[0]
    return text


def knowmem_prompt(question: str, icl: Sequence[tuple[str, str]] = ()) -> str:
    """MUSE's KnowMem prompt: each in-context pair, then the question with an open answer."""
    shots = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in icl)
    return f"{shots}Question: {question}\nAnswer: "


def first_tokens(tokenizer: Any, text: str, n: int) -> str:
    """``text`` cut to its first ``n`` tokens (no special tokens), decoded back."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:n]
    return tokenizer.decode(ids, skip_special_tokens=True)


def generate_raw(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int,
                 stop: Sequence[str] = (), batch_size: int = 16) -> list[str]:
    """Greedy continuations of raw-text ``prompts`` (special tokens added as the tokenizer
    does, the continuation decoded without them), each cut before its first stop string."""
    encoded = [list(tokenizer(p, add_special_tokens=True)["input_ids"]) for p in prompts]
    fallback = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else (
        tokenizer.eos_token_id)
    if any(not ids for ids in encoded):
        if fallback is None:
            raise DataError("an empty prompt needs a tokenizer with a BOS or EOS token")
        encoded = [ids or [fallback] for ids in encoded]
    kwargs: dict[str, Any] = {}
    if stop and "stop_strings" in inspect.signature(generation.greedy_generate_ids).parameters:
        kwargs = {"stop_strings": list(stop), "tokenizer": tokenizer}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else fallback
    ids = generation.greedy_generate_ids(
        model, encoded, max_new_tokens, batch_size=batch_size, pad_token_id=pad or 0,
        eos_ids=generation.eos_token_ids(model, tokenizer), **kwargs)
    return [cut_at_stop(tokenizer.decode(x, skip_special_tokens=True), stop) for x in ids]


def rouge_result(name: str, predictions: Sequence[str], references: Sequence[str],
                 prompts: Sequence[str], split: str | None, **details: Any) -> MetricResult:
    """Per-item ROUGE-L F1 ×100 and its mean, with a few samples for the report."""
    scores = [100.0 * rouge_l_f1(p, r) for p, r in zip(predictions, references, strict=True)]
    samples = [{"prompt": q[-300:], "reference": r, "generation": p}
               for q, r, p in list(zip(prompts, references, predictions, strict=True))[:SAMPLES]]
    return MetricResult.from_items(name, scores, split=split, higher_is_better=None,
                                   details={"score": "ROUGE-L F1 x100 (rouge_score, no stemmer)",
                                            "n": len(scores), "samples": samples, **details})


@dataclass(frozen=True)
class Continuations:
    """What a ROUGE metric of MUSE reads for one split: each prompt, its reference and the
    model's greedy continuation, plus the details its result records."""

    prompts: list[str]
    references: list[str]
    generations: list[str]
    details: dict[str, Any] = field(default_factory=dict)


def verbmem(model: Any, tokenizer: Any, records: Sequence[QARecord],
            max_new_tokens: int = VERBMEM_MAX_NEW_TOKENS, batch_size: int = 16,
            split: str | None = "verbmem_forget") -> MetricResult:
    """C1 VerbMem: ROUGE-L F1 ×100 of the greedy continuation of each ``question`` (the
    excerpt's prompt) against its ``answer`` (``gt``) cut to ``max_new_tokens`` tokens."""
    prompts = [r.question for r in records]
    outputs = generate_raw(model, tokenizer, prompts, max_new_tokens, batch_size=batch_size)
    refs = [first_tokens(tokenizer, r.answer, max_new_tokens) for r in records]
    metric = VerbMem(MuseOptions(verbmem_max_new_tokens=max_new_tokens))
    return metric.score(split, Continuations(prompts, refs, outputs,
                                             {"max_new_tokens": max_new_tokens}))


def knowmem(model: Any, tokenizer: Any, records: Sequence[QARecord],
            icl: Sequence[QARecord] = (), max_new_tokens: int = KNOWMEM_MAX_NEW_TOKENS,
            batch_size: int = 16, split: str | None = "knowmem_forget_qa") -> MetricResult:
    """C2/C4 KnowMem: ROUGE-L F1 ×100 of the greedy answer after MUSE's in-context pairs."""
    pairs = [(r.question, r.answer) for r in icl]
    prompts = [knowmem_prompt(r.question, pairs) for r in records]
    outputs = generate_raw(model, tokenizer, prompts, max_new_tokens, KNOWMEM_STOP, batch_size)
    metric = KnowMem(MuseOptions(knowmem_max_new_tokens=max_new_tokens))
    return metric.score(split, Continuations(prompts, [r.answer for r in records], outputs,
                                             {"max_new_tokens": max_new_tokens,
                                              "n_icl": len(pairs)}))


def excerpts(tokenizer: Any, documents: Sequence[QARecord], prompt_tokens: int = 32,
             gt_tokens: int = VERBMEM_MAX_NEW_TOKENS) -> list[QARecord]:
    """VerbMem items cut from plain-text documents: the first ``prompt_tokens`` tokens as the
    prompt, the next ``gt_tokens`` as ``gt`` (documents too short for both are left out)."""
    out = []
    for doc in documents:
        ids = tokenizer(doc.answer, add_special_tokens=False)["input_ids"]
        if len(ids) <= prompt_tokens:
            continue
        out.append(QARecord(question=tokenizer.decode(ids[:prompt_tokens]),
                            answer=tokenizer.decode(ids[prompt_tokens:prompt_tokens + gt_tokens])))
    return out


def _oracle_result(given: Any, inputs: Mapping[str, Any]) -> Any:
    """The oracle's MUSE result: given directly, in ``oracle_results`` or in the resolved
    inputs' oracle results (what :func:`~obliviate.llm.evaluation.suites.evaluate` passes)."""
    if given is not None:
        return given
    results = inputs.get("oracle_results") or getattr(inputs.get("resolved"), "oracle", None)
    return (results or {}).get("muse")


# ------------------------------------------------------------------------------------------------
# The suite
# ------------------------------------------------------------------------------------------------
class MuseOptions(StrictModel):
    """MUSE's evaluation (defaults: its constants and its split names, see ``llm.data.muse``).

    A split that is not given is skipped, with the reason in ``provenance["skipped"]``. Where
    the task has no ``verbmem_forget`` split but its forget set is plain text, VerbMem runs on
    excerpts cut from the forget documents (``excerpt_prompt_tokens`` + 128 tokens); where it
    has no privleak splits, PrivLeak reads ``forget`` vs ``holdout``.
    """

    verbmem_split: str = "verbmem_forget"
    """split of VerbMem's excerpts"""
    knowmem_forget_split: str = "knowmem_forget_qa"
    """split of KnowMem's forget questions"""
    knowmem_forget_icl: str = "knowmem_forget_qa_icl"
    """split of in-context examples for KnowMem on the forget set"""
    knowmem_retain_split: str = "knowmem_retain_qa"
    """split of KnowMem's retain questions"""
    knowmem_retain_icl: str = "knowmem_retain_qa_icl"
    """split of in-context examples for KnowMem on the retain set"""
    privleak_forget_split: str = "privleak_forget"
    """split PrivLeak's membership inference treats as members"""
    privleak_holdout_split: str = "privleak_holdout"
    """split PrivLeak treats as non-members"""
    verbmem_max_new_tokens: int = Field(default=VERBMEM_MAX_NEW_TOKENS, ge=1)
    """tokens generated per VerbMem continuation"""
    knowmem_max_new_tokens: int = Field(default=KNOWMEM_MAX_NEW_TOKENS, ge=1)
    """tokens generated per KnowMem answer"""
    excerpt_prompt_tokens: int = Field(default=32, ge=1)
    """tokens of each excerpt given as the VerbMem prompt (the model continues it)"""
    k: float = Field(default=mia.DEFAULT_K, gt=0.0, le=1.0, description="Min-K% Prob's k")
    ds_size: int | None = Field(default=None, ge=1, description="first N items per split")
    oracle_auc: float | None = Field(
        default=None, gt=0.0, lt=1.0,
        description="the retrained model's Min-K% AUC (forget = members) where no oracle is "
                    "evaluated; MUSE's published retrained models: News 1-0.4772, Books 1-0.5393")


class _RougeMetric(Metric):
    """ROUGE-L F1 ×100 of the greedy continuations of a split against their references."""

    suite = "muse"
    higher_is_better = None
    options: MuseOptions

    def __init__(self, options: MuseOptions | None = None) -> None:
        super().__init__(options or MuseOptions())

    def compute(self, inputs: Any, split: str | None) -> MetricResult:
        found: Continuations = inputs.get(self.needs(split)[0])
        return rouge_result(self.name, found.generations, found.references, found.prompts,
                            split, **found.details)

    def score(self, split: str | None, found: Continuations) -> MetricResult:
        """The metric on continuations generated here (what the suite does)."""
        return self.compute(ResolvedInputs({self.needs(split)[0]: found}), split)


@METRICS.register("verbmem", modality=MODALITY)
class VerbMem(_RougeMetric):
    """C1 VerbMem (Shi et al. 2024, MUSE): ROUGE-L F1 ×100 of the greedy continuation of each
    forget excerpt's prompt against its true continuation cut to the generation budget."""

    def needs(self, split: str | None) -> list[MetricNeed]:
        return [MetricNeed.generations(split or "", self.options.verbmem_max_new_tokens,
                                       limit=self.options.ds_size)]


@METRICS.register("knowmem", modality=MODALITY)
class KnowMem(_RougeMetric):
    """C2/C4 KnowMem (Shi et al. 2024, MUSE): ROUGE-L F1 ×100 of the greedy answer after MUSE's
    in-context QA pairs, cut at its stop strings, against the answer."""

    def needs(self, split: str | None) -> list[MetricNeed]:
        return [MetricNeed.generations(split or "", self.options.knowmem_max_new_tokens,
                                       stop=KNOWMEM_STOP, limit=self.options.ds_size)]


@SUITES.register("muse", modality=MODALITY)
class MuseSuite(LLMSuite):
    """MUSE (Shi et al. 2024): VerbMem (C1), KnowMem forget (C2) and retain (C4), PrivLeak (C3).

    Keys: ``muse/verbmem_forget/verbmem``, ``muse/knowmem_forget_qa/knowmem``,
    ``muse/knowmem_retain_qa/knowmem``, ``muse/privleak_forget/mia_min_k`` (AUC, forget =
    members) and, given the oracle's MUSE result (``oracle_muse``, or ``oracle_results["muse"]``)
    or ``oracle_auc``, ``.../privleak`` in MUSE's convention.
    """

    name = "muse"
    options_class = MuseOptions
    options: MuseOptions

    def _privleak_splits(self, splits: Mapping[str, SplitLike]) -> tuple[str, str] | None:
        o = self.options
        for pair in ((o.privleak_forget_split, o.privleak_holdout_split), ("forget", "holdout")):
            if all(s in splits for s in pair):
                return pair
        return None

    def needs(self, splits: Mapping[str, SplitLike], **inputs: Any) -> list[Need]:
        pair = self._privleak_splits(splits)
        if pair is None:
            return []
        return [Need(_head(splits[s], self.options.ds_size), token_stats=True) for s in pair]

    def run(self, session: EvalSession, splits: Mapping[str, SplitLike],
            oracle_muse: Any = None, **inputs: Any) -> SuiteOutput:
        start = time.perf_counter()
        o = self.options
        model, tok = session.model, session.tokenizer
        batch = session.engine.generation_batch_size
        used: list[str] = []
        skipped: dict[str, str] = {}
        result = self._result(session, splits, [])

        def head(name: str) -> list[QARecord]:
            used.append(name)
            return _head(splits[name], o.ds_size)

        gen_start = time.perf_counter()
        if o.verbmem_split in splits:
            result.add(verbmem(model, tok, head(o.verbmem_split), o.verbmem_max_new_tokens,
                               batch, split=o.verbmem_split))
        elif "forget" in splits and all(r.is_text for r in splits["forget"]):
            items = excerpts(tok, head("forget"), o.excerpt_prompt_tokens,
                             o.verbmem_max_new_tokens)
            if items:
                # named as MUSE's excerpts of the forget documents are, for tables and axes
                metric = verbmem(model, tok, items, o.verbmem_max_new_tokens, batch,
                                 split=o.verbmem_split)
                metric.details["items"] = (f"excerpts of the forget documents: "
                                           f"{o.excerpt_prompt_tokens} prompt tokens")
                result.add(metric)
            else:
                skipped["verbmem"] = (f"no forget document is longer than "
                                      f"{o.excerpt_prompt_tokens} tokens")
        else:
            skipped["verbmem"] = f"no split {o.verbmem_split!r} and the forget set is not text"
        for qa, icl in ((o.knowmem_forget_split, o.knowmem_forget_icl),
                        (o.knowmem_retain_split, o.knowmem_retain_icl)):
            if qa not in splits:
                skipped[f"knowmem_{qa}"] = f"no split {qa!r}"
                continue
            shots = head(icl) if icl in splits else []
            result.add(knowmem(model, tok, head(qa), shots, o.knowmem_max_new_tokens, batch,
                               split=qa))
        session.generation_seconds += time.perf_counter() - gen_start
        pair = self._privleak_splits(splits)
        if pair is None:
            skipped["privleak"] = (f"no splits {o.privleak_forget_split!r}/"
                                   f"{o.privleak_holdout_split!r} nor forget/holdout")
        else:
            f_stats, h_stats = ([s.token_stats for s in session.answer_scores(head(n), True)]
                                for n in pair)
            # named as MUSE's privleak split is, whichever pair was read
            split = o.privleak_forget_split
            auc = mia.run_mia(["min_k"], f_stats, h_stats, k=o.k, split=split)["min_k"]
            result.add(auc)
            oracle = _oracle_result(oracle_muse, inputs)
            oracle_auc = _oracle_aucs(oracle).get("min_k") if oracle else o.oracle_auc
            if oracle_auc is None:
                skipped["privleak"] = "no oracle MUSE result given (nor muse.oracle_auc)"
            else:
                result.add(MetricResult(
                    "privleak", mia.privleak(auc.value, oracle_auc), split=split,
                    details={"auc": auc.value, "oracle_auc": oracle_auc, "convention": "muse",
                             "attack": f"Min-{round(o.k * 100)}% Prob"}))
        result.provenance["splits"] = {n: _provenance(splits[n], n) for n in dict.fromkeys(used)}
        result.provenance["skipped"] = skipped
        result.provenance["session"] = session.provenance()
        result.seconds = time.perf_counter() - start
        return SuiteOutput(result)


__all__ = [
    "KNOWMEM_MAX_NEW_TOKENS",
    "KNOWMEM_STOP",
    "VERBMEM_MAX_NEW_TOKENS",
    "Continuations",
    "KnowMem",
    "MuseOptions",
    "MuseSuite",
    "cut_at_stop",
    "excerpts",
    "first_tokens",
    "generate_raw",
    "knowmem",
    "knowmem_prompt",
    "rouge_l_f1",
    "verbmem",
    "VerbMem",
]
