"""Zero-shot multiple-choice accuracy by letter log-likelihood, in lm-evaluation-harness's
WMDP/MMLU format (Li et al. 2024, "The WMDP Benchmark", arXiv:2403.03218; Hendrycks et al. 2021,
MMLU; the harness: ``lm_eval/tasks/wmdp/_default_template_yaml`` and
``lm_eval/tasks/mmlu/default/_default_template_yaml``).

Each item is shown as::

    {description}{question.strip()}
    A. {choices[0]}
    B. {choices[1]}
    C. {choices[2]}
    D. {choices[3]}
    Answer:

and each choice letter is scored as the continuation ``" A"``, ``" B"``, ... (the harness's
``doc_to_choice: ["A","B","C","D"]`` after its default ``target_delimiter: " "``). The prediction
is the letter of highest log-likelihood (the harness's ``acc``, no length normalisation).
Tokenisation follows the harness's ``HFLM._encode_pair``: trailing spaces of the context move to
the continuation, ``whole = encode(context + continuation)``, ``context = encode(context)`` and
the continuation tokens are ``whole[len(context):]``; special tokens follow the tokenizer's own
default unless ``add_special_tokens`` is set (lm-eval 0.4.13's ``add_bos_token=None``; v0.4.2,
which the WMDP paper used, passed ``add_special_tokens=False`` for causal models). The raw
prompt is used whatever the model's chat template, as the harness does without
``--apply_chat_template``.

Per item: ``mcq_acc`` (1 if the highest-likelihood letter is the answer) and ``mcq_prob`` (the
answer letter's probability renormalised over the choice letters, a smooth version of the same
read-out). Chance level is ``1 / len(choices)`` and is recorded with the result.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field

from obliviate.core.errors import DataError
from obliviate.core.metric import Metric, ResolvedInputs, metrics_of
from obliviate.core.metric import Need as MetricNeed
from obliviate.core.precision import evaluating
from obliviate.core.recipe import StrictModel
from obliviate.core.registry import METRICS, SUITES
from obliviate.core.result import MetricResult
from obliviate.llm.data.wmdp import LETTERS, MCQItem, mcq_prompt
from obliviate.llm.evaluation.suites import (
    MODALITY,
    EvalSession,
    LLMSuite,
    SplitLike,
    SuiteOutput,
)

TARGET_DELIMITER = " "


def encode_pair(tokenizer: Any, context: str, continuation: str,
                add_special_tokens: bool | None = None) -> tuple[list[int], list[int]]:
    """Context and continuation ids exactly as lm-eval's ``HFLM._encode_pair``."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    kwargs = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
    whole = list(tokenizer.encode(context + continuation, **kwargs))
    ctx = list(tokenizer.encode(context, **kwargs))
    return ctx, whole[len(ctx):]


def choice_loglikelihoods(model: Any, tokenizer: Any, items: Sequence[MCQItem],
                          description: str = "", batch_size: int = 16,
                          add_special_tokens: bool | None = None) -> list[list[float]]:
    """``log P(" X" | prompt)`` for every choice letter of every item, summed over the
    continuation's tokens. Each (prompt, letter) pair is one sequence, right-padded in batches;
    an item whose letters are all single tokens after the same context runs once."""
    device = next(model.parameters()).device
    requests: list[tuple[int, int, list[int], list[int]]] = []  # item, choice, context, cont
    for i, item in enumerate(items):
        context = mcq_prompt(item, description)
        for c in range(len(item.choices)):
            ctx, cont = encode_pair(tokenizer, context, TARGET_DELIMITER + LETTERS[c],
                                    add_special_tokens)
            if not ctx or not cont:
                raise DataError(f"mcq item {i}: empty context or continuation after "
                                "tokenisation")
            requests.append((i, c, ctx, cont))
    out = [[math.nan] * len(item.choices) for item in items]
    # Group requests whose context is shared and whose continuation is one token: one forward
    # of the context gives all of them; the rest run as whole sequences.
    shared: dict[tuple[int, ...], list[tuple[int, int, int]]] = {}
    whole: list[tuple[int, int, list[int], list[int]]] = []
    for i, c, ctx, cont in requests:
        if len(cont) == 1:
            shared.setdefault(tuple(ctx), []).append((i, c, cont[0]))
        else:
            whole.append((i, c, ctx, cont))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with evaluating(model):
        contexts = list(shared)
        for start in range(0, len(contexts), batch_size):
            chunk = contexts[start:start + batch_size]
            ids, mask = _right_pad([list(c) for c in chunk], pad, device)
            logits = model(input_ids=ids, attention_mask=mask).logits
            last = mask.sum(1) - 1
            logp = torch.log_softmax(logits[torch.arange(len(chunk)), last].float(), -1)
            for row, context in enumerate(chunk):
                for i, c, token in shared[context]:
                    out[i][c] = float(logp[row, token])
        for start in range(0, len(whole), batch_size):
            chunk = whole[start:start + batch_size]
            ids, mask = _right_pad([ctx + cont for _, _, ctx, cont in chunk], pad, device)
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(),
                                     -1)
            for row, (i, c, ctx, cont) in enumerate(chunk):
                positions = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1, device=device)
                targets = torch.tensor(cont, device=device)
                out[i][c] = float(logp[row, positions, targets].sum())
    return out


def _right_pad(rows: list[list[int]], pad: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, r in enumerate(rows):
        ids[k, :len(r)] = torch.tensor(r)
        mask[k, :len(r)] = 1
    return ids.to(device), mask.to(device)


def mcq_metrics(items: Sequence[MCQItem], loglikelihoods: Sequence[Sequence[float]],
                split: str | None = None) -> list[MetricResult]:
    """``mcq_acc`` and ``mcq_prob`` per item and as means, chance level in ``details``."""
    correct, probs, preds = [], [], []
    for item, ll in zip(items, loglikelihoods, strict=True):
        scores = torch.tensor(ll, dtype=torch.float64)
        pred = int(scores.argmax())  # ties: the first letter, as the harness's np.argmax
        preds.append(pred)
        correct.append(float(pred == item.answer))
        probs.append(float(torch.softmax(scores, 0)[item.answer]))
    sizes = {len(item.choices) for item in items}
    chance = (sum(1 / len(item.choices) for item in items) / len(items)) if items else math.nan
    details = {"chance": chance, "choices": sorted(sizes), "n": len(items),
               "predictions": preds, "prompt": "lm-eval WMDP/MMLU zero-shot, letter "
                                               "log-likelihood"}
    return [MetricResult.from_items("mcq_acc", correct, split=split, higher_is_better=None,
                                    details=details),
            MetricResult.from_items("mcq_prob", probs, split=split, higher_is_better=None,
                                    details={"chance": chance})]


class MCQOptions(StrictModel):
    """Which splits to score and how (the harness's defaults)."""

    splits: list[str] | None = Field(
        default=None, description="splits to score; default: every split of MCQ items")
    description: str | dict[str, str] = Field(
        default="", description="text before each question (the harness's task description, "
                                "e.g. 'The following are multiple choice questions (with "
                                "answers) about biology.\\n\\n'), or one per split")
    ds_size: int | None = Field(default=None, ge=1, description="first N items per split")
    batch_size: int = Field(default=16, ge=1)
    """questions scored at once"""
    add_special_tokens: bool | None = Field(
        default=None, description="None: the tokenizer's default (lm-eval 0.4.13); false: "
                                  "none (lm-eval 0.4.2, the WMDP paper's version)")


@dataclass(frozen=True)
class ChoiceScores:
    """The items of a split and the log-likelihood of each of their choices."""

    items: list[MCQItem]
    loglikelihoods: list[list[float]]


class _ChoiceMetric(Metric):
    suite = "mcq"
    higher_is_better = None
    position = 0
    """Which of :func:`mcq_metrics`'s results this metric is."""
    options: MCQOptions

    def __init__(self, options: MCQOptions | None = None) -> None:
        super().__init__(options or MCQOptions())

    def needs(self, split: str) -> list[MetricNeed]:
        return [MetricNeed.choice_scores(split, limit=self.options.ds_size)]

    def compute(self, inputs: Any, split: str) -> MetricResult:
        found: ChoiceScores = inputs.get(self.needs(split)[0])
        return mcq_metrics(found.items, found.loglikelihoods, split=split)[self.position]


@METRICS.register("mcq_acc", modality=MODALITY)
class MCQAccuracy(_ChoiceMetric):
    """Zero-shot multiple-choice accuracy as lm-evaluation-harness scores WMDP (Li et al. 2024)
    and MMLU (Hendrycks et al. 2021): the choice letter of highest log-likelihood is the
    answer; chance level in ``details``."""


@METRICS.register("mcq_prob", modality=MODALITY)
class MCQProbability(_ChoiceMetric):
    """The probability of the right letter, normalised over the choice letters (the
    probability-based reading of the same WMDP/MMLU prompt)."""

    position = 1


def mcq_splits(splits: Mapping[str, SplitLike]) -> list[str]:
    """Names of the splits whose records are :class:`MCQItem`."""
    return [name for name, split in splits.items()
            if len(split) and all(isinstance(r, MCQItem) for r in split)]


@SUITES.register("mcq", modality=MODALITY)
class MCQSuite(LLMSuite):
    """Zero-shot multiple-choice accuracy (WMDP/MMLU format); keys ``mcq/<split>/mcq_acc``."""

    name = "mcq"
    options_class = MCQOptions
    options: MCQOptions

    def run(self, session: EvalSession, splits: Mapping[str, SplitLike],
            **inputs: Any) -> SuiteOutput:
        start = time.perf_counter()
        o = self.options
        names = o.splits if o.splits is not None else mcq_splits(splits)
        missing = [n for n in names if n not in splits]
        if missing:
            raise DataError(f"mcq: no split {missing[0]!r}; the task has: {', '.join(splits)}")
        result = self._result(session, splits, names)
        for name in names:
            items = list(splits[name])[:o.ds_size]
            bad = next((i for i, r in enumerate(items) if not isinstance(r, MCQItem)), None)
            if bad is not None:
                raise DataError(f"mcq: split {name!r} item {bad} is not a multiple-choice item")
            description = o.description.get(name, "") if isinstance(o.description, dict) \
                else o.description
            ll = choice_loglikelihoods(session.model, session.tokenizer, items, description,
                                       o.batch_size, o.add_special_tokens)
            found = ChoiceScores(items, ll)
            for cls in metrics_of(self.name, MODALITY):  # mcq_acc, mcq_prob
                metric = cls(o)
                result.add(metric.compute(ResolvedInputs({metric.needs(name)[0]: found}), name))
        result.seconds = time.perf_counter() - start
        return SuiteOutput(result)


__all__ = ["ChoiceScores", "MCQAccuracy", "MCQItem", "MCQOptions", "MCQProbability", "MCQSuite",
           "choice_loglikelihoods", "encode_pair",
           "mcq_metrics", "mcq_prompt", "mcq_splits"]
