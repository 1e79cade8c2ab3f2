"""The shared answer log-likelihood engine: every answer scored once, its prompt computed once.

TOFU (Maini et al. 2024) scores, per question, the ground-truth answer, the paraphrased answer and
five perturbed answers, each after the *original* question (``evaluate_util.py``:
``question_key`` is ``question`` for all three data loaders). A naive implementation runs seven
sequences that repeat the same prompt. :class:`AnswerScorer` computes each prompt once, in one of
two ways (:data:`ScoreMode`):

``prefix`` (default)
    The prompts of a chunk of questions run once into a KV cache (the prefix they all share, such
    as a chat template's system prompt, runs once per chunk); then all answers, sorted by length
    into batches, attend to their own prompt's cached keys and values. Attention costs only
    answer x (prompt + answer).
``packed``
    One question's prompt and all of its answers form **one** sequence; a 4-D additive mask lets
    every answer attend to the prompt and causally to itself, never to the other answers, and
    position ids restart at ``len(prompt)`` for every answer. Short questions share a row
    (first-fit decreasing). One forward pass, no cache, but the masked attention is dense.

In both, batches are cut from length-sorted rows by a small dynamic programme under a token
budget (padding is a few percent), and the language-model head (for SmolLM2 a fifth of the
parameters) runs only on positions that predict answer tokens. Results equal scoring each answer
in its own sequence up to float rounding: the tests check every mode against ``naive`` and
against the training loss. Scores are cached per ``(prompt ids, answer ids)``, so metrics that
need the same answer (Prob., truth ratio, MIA, memorisation) share one computation. The cache
belongs to one model state: call :meth:`AnswerScorer.clear_cache` after the weights change.

Models whose attention takes no custom 4-D mask (flash-attention-2, flex) or that use a sliding
window shorter than ``max_length`` are scored in ``batched`` mode; models whose logits are not a
plain linear head of the last hidden state (soft-capping, scaling) get full logits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from obliviate.core.errors import ConfigError
from obliviate.core.precision import evaluating
from obliviate.llm.data.formatting import (
    IGNORE_INDEX,
    PromptFormat,
    build_example,
    encode_answer,
    encode_prompt,
)
from obliviate.llm.data.records import QARecord
from obliviate.llm.evaluation.generation import (
    DEFAULT_BATCH_SIZE,
    GenerationStats,
    decode,
    decode_rows,
    decode_texts,
    eos_token_ids,
    greedy_generate_ids,
)
from obliviate.llm.evaluation.prompt_cache import (
    PrefixCache,
    PromptStates,
    body_and_head,
    float_dtype,
    length_batches,
    make_cache,
    merge_states,
    prefill,
    prefix_mask,
    run_body,
    takes_custom_masks,
)
from obliviate.llm.evaluation.vocab_chunks import head_token_logprobs

if TYPE_CHECKING:
    from obliviate.llm.evaluation.mia import TokenStats

ScoreMode = Literal["prefix", "packed", "batched", "naive"]
"""``prefix``: prompts once into a KV cache, then batches of answers attending to it (default).
``packed``: prompt once, all answers of a question in one masked sequence.
``batched``: one sequence per answer (prompt repeated), sorted by length, right-padded.
``naive``: one sequence per answer, one at a time (the reference and benchmark baseline)."""

MODES: tuple[str, ...] = ("prefix", "packed", "batched", "naive")
TREE_TOKENS = 512
"""``prefix`` mode: most fed answer tokens in one answer tree (one row)."""
_KV_BUDGET_FACTOR = 4
"""``prefix`` mode: the cache copies of one answer batch hold at most 4 x batch_tokens tokens."""

Key = tuple[tuple[int, ...], tuple[int, ...]]


@dataclass(frozen=True)
class AnswerScore:
    """The log-likelihood of one answer after its prompt.

    ``nll_sum`` is the summed negative log-likelihood of the scored answer tokens (TOFU's
    ``gt_loss``), ``num_tokens`` their number (``num_token_gt``; the eos token counts, as in
    TOFU). ``token_stats`` holds per-token values for MIA and memorisation when requested.
    """

    nll_sum: float
    num_tokens: int
    token_stats: TokenStats | None = None

    @property
    def mean_nll(self) -> float:
        """Length-normalised loss (TOFU's ``avg_gt_loss``); NaN with no scored token."""
        return self.nll_sum / self.num_tokens if self.num_tokens else float("nan")

    @property
    def prob(self) -> float:
        """``exp(-mean_nll)``, TOFU's per-question probability."""
        return math.exp(-self.mean_nll) if self.num_tokens else float("nan")


@dataclass(frozen=True)
class RecordScores:
    """The TOFU answers of one record: ground truth, paraphrased (if any), perturbed (if any)."""

    gt: AnswerScore
    paraphrased: AnswerScore | None
    perturbed: tuple[AnswerScore, ...]


@dataclass
class ScorerStats:
    """What the scorer computed: for throughput and FLOP accounting."""

    forward_tokens: int = 0
    """Tokens that went through the transformer body, padding included."""
    padding_tokens: int = 0
    head_tokens: int = 0
    """Positions that went through the language-model head."""
    answers_computed: int = 0
    cache_hits: int = 0
    forward_calls: int = 0
    sequences: int = 0
    """Rows run through the model (a packed row may hold several questions)."""
    seconds: float = 0.0

    @property
    def real_tokens(self) -> int:
        return self.forward_tokens - self.padding_tokens


@dataclass
class _Request:
    key: Key
    text: str
    prompt: tuple[int, ...]
    answer: tuple[int, ...]
    scored: list[int] = field(default_factory=list)
    """Answer tokens that are predicted (all but the first when the prompt is empty)."""
    stats: bool = False
    """Whether per-token :class:`TokenStats` are wanted."""


def _scored_labels(prompt: Sequence[int], answer: Sequence[int]) -> list[int]:
    return list(answer) if prompt else list(answer[1:])


class AnswerTree:
    """The answers after one prompt as a token tree: the tokens several answers start with are
    one path. Each answer feeds all its tokens but the last (which predicts nothing).

    ``tokens[n]`` and ``depths[n]`` are node ``n``'s token and its index in its answers;
    ``paths[a]`` lists answer ``a``'s nodes in order; ``ancestors[n, j]`` marks the nodes ``n``
    sees (its path from the root, itself included).
    """

    def __init__(self, answers: Sequence[Sequence[int]]) -> None:
        self.tokens: list[int] = []
        self.depths: list[int] = []
        parents: list[int] = []
        node_of: dict[tuple[int, int], int] = {}
        self.paths: list[list[int]] = []
        for answer in answers:
            node, path = -1, []
            for depth, token in enumerate(answer[:-1]):
                child = node_of.get((node, token))
                if child is None:
                    child = node_of[(node, token)] = len(self.tokens)
                    self.tokens.append(token)
                    self.depths.append(depth)
                    parents.append(node)
                node = child
                path.append(node)
            self.paths.append(path)
        n = len(self.tokens)
        self.ancestors = torch.zeros((n, n), dtype=torch.bool)
        for child, parent in enumerate(parents):  # a parent precedes its children
            if parent >= 0:
                self.ancestors[child] = self.ancestors[parent]
            self.ancestors[child, child] = True

    def __len__(self) -> int:
        return len(self.tokens)


def _tree_groups(requests: list[_Request]) -> list[list[_Request]]:
    """One prompt's answers in groups of at most :data:`TREE_TOKENS` fed tokens (a group is one
    tree, and a tree's attention is dense over its nodes); an answer longer than that alone."""
    groups: list[list[_Request]] = []
    fed = 0
    for req in requests:
        n = len(req.answer) - 1
        if not groups or fed + n > TREE_TOKENS:
            groups.append([])
            fed = 0
        groups[-1].append(req)
        fed += n
    return groups


class AnswerScorer:
    """Log-likelihood of candidate answers to questions, batched, prefix-shared and cached.

    Args:
        model: a causal LM (``transformers`` model, optionally peft-wrapped). Its device and
            dtype are used as they are; it is put in eval mode while scoring.
        tokenizer: its tokenizer.
        fmt: the prompt format (:func:`obliviate.llm.data.formatting.resolve_format`).
        batch_size: most rows (packed questions, or sequences) per forward pass; ``prefix``
            mode is bounded by ``batch_tokens`` only.
        max_length: most tokens of prompt + one answer, truncated as in training
            (:func:`~obliviate.llm.data.formatting.build_example`).
        batch_tokens: most tokens (rows x longest row, padding included) per forward pass.
        row_tokens: most tokens in one packed row; a question whose answers exceed it is split
            over several rows, each with its own copy of the prompt.
        mode: ``prefix`` (default), ``packed``, ``batched`` or ``naive``; see :data:`ScoreMode`.
            Models whose attention takes no custom 4-D mask (e.g. flash-attention-2) fall back
            to ``batched``.
        head_chunk: most positions whose full-vocabulary logits exist at once.
        progress: show a tqdm progress bar.
        cache: keep scores per ``(prompt, answer)`` for later calls.
    """

    def __init__(self, model: Any, tokenizer: Any, fmt: PromptFormat, batch_size: int = 16,
                 max_length: int = 512, batch_tokens: int = 4096, row_tokens: int = 1024,
                 mode: ScoreMode = "prefix", head_chunk: int = 1024, progress: bool = False,
                 cache: bool = True) -> None:
        if mode not in MODES:
            raise ConfigError(f"unknown scorer mode {mode!r}; use one of {', '.join(MODES)}")
        for name, value in (("batch_size", batch_size), ("max_length", max_length),
                            ("batch_tokens", batch_tokens), ("row_tokens", row_tokens),
                            ("head_chunk", head_chunk)):
            if value < 1:
                raise ConfigError(f"scorer {name} must be positive, got {value}")
        self.model = model
        self.tokenizer = tokenizer
        self.fmt = fmt
        self.batch_size = batch_size
        self.max_length = max_length
        self.batch_tokens = batch_tokens
        self.row_tokens = max(row_tokens, max_length)
        self.head_chunk = head_chunk
        self.progress = progress
        self.use_cache = cache
        # custom 4-D masks need eager or sdpa attention, and they replace a sliding window:
        # otherwise fall back to plain batching
        packable = takes_custom_masks(model, max_length)
        self.mode: ScoreMode = ("batched" if mode in ("packed", "prefix") and not packable
                                else mode)
        self.stats = ScorerStats()
        self._cache: dict[Key, AnswerScore] = {}
        self.generation_batch_size = DEFAULT_BATCH_SIZE
        self.generation_stats = GenerationStats()
        self._generated: dict[tuple[tuple[int, ...], int], list[int]] = {}
        self._wanted: dict[tuple[int, ...], int] = {}
        self._queue: list[tuple[list[tuple[int, ...]], PromptStates]] = []
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (
            tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0)

    # -- public API ----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def clear_cache(self) -> None:
        """Forget cached scores and generations (call after the model's weights change)."""
        self._cache.clear()
        self._generated.clear()

    def generate(self, questions: Sequence[str], max_new_tokens: int) -> list[list[int]]:
        """Greedy continuations (token ids, no end token) of each question's prompt.

        Questions generated by an earlier :meth:`score` call (``generate=``) come from this
        scorer's cache; the others are generated now
        (:func:`~obliviate.llm.evaluation.generation.greedy_generate_ids`) and cached.
        """
        prompts = [tuple(encode_prompt(self.tokenizer, self.fmt, q)) for q in questions]
        todo = list(dict.fromkeys(p for p in prompts if (p, max_new_tokens) not in self._generated))
        if todo:
            ids = greedy_generate_ids(self.model, todo, max_new_tokens,
                                      self.generation_batch_size, pad_token_id=self._pad_id,
                                      eos_ids=self._eos_ids(), progress=self.progress,
                                      stats=self.generation_stats)
            for prompt, x in zip(todo, ids, strict=True):
                self._store_generation(prompt, max_new_tokens, x)
        return [list(self._generated[(p, max_new_tokens)]) for p in prompts]

    def generations(self, questions: Sequence[str], max_new_tokens: int) -> list[str]:
        """:meth:`generate`, decoded as TOFU decodes (special tokens skipped, stripped)."""
        return decode_texts(self.tokenizer, self.generate(questions, max_new_tokens))

    def encode(self, question: str, answer: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(prompt ids, answer ids)`` after truncation to ``max_length``."""
        return self._encode_cached({}, question, answer)

    def score(self, records: Sequence[QARecord], answers: Sequence[Sequence[str]] | None = None,
              token_stats: bool | Sequence[bool] = False, desc: str = "scoring",
              generate: Mapping[str, int] | None = None) -> list[list[AnswerScore]]:
        """Score, for each record, each of its candidate answers after the record's question.

        ``answers[i]`` lists the answers for ``records[i]`` (default: ``[records[i].answer]``).
        With ``token_stats`` every score carries per-token :class:`TokenStats` (one flag per
        record: only those records' answers do). Returns one list of :class:`AnswerScore` per
        record, in the order given.

        ``generate`` maps questions to a greedy budget (``max_new_tokens``): in ``prefix``
        mode their continuations start from the KV cache this call builds for their prompts
        (one prefill for scoring and generation); questions whose prompt this call does not
        run are generated after it. Read them with :meth:`generate` or :meth:`generations`.
        """
        self._wanted = {}
        for question, budget in (generate or {}).items():
            prompt = tuple(encode_prompt(self.tokenizer, self.fmt, question))
            if (prompt, budget) not in self._generated:
                self._wanted[prompt] = max(budget, self._wanted.get(prompt, 0))
        try:
            out = self._score(records, answers, token_stats, desc)
        finally:
            self._wanted, self._queue = {}, []
        by_budget: dict[int, list[str]] = {}
        for question, budget in (generate or {}).items():
            by_budget.setdefault(budget, []).append(question)
        for budget, questions in by_budget.items():
            self.generate(questions, budget)  # those this call's prompt caches did not hold
        return out

    def _score(self, records: Sequence[QARecord], answers: Sequence[Sequence[str]] | None,
               token_stats: bool | Sequence[bool], desc: str) -> list[list[AnswerScore]]:
        if answers is None:
            answers = [[r.answer] for r in records]
        if len(answers) != len(records):
            raise ConfigError(f"score: {len(records)} records but {len(answers)} answer lists")
        flags = [token_stats] * len(records) if isinstance(token_stats, bool) else list(token_stats)
        if len(flags) != len(records):
            raise ConfigError(f"score: {len(records)} records but {len(flags)} token_stats flags")
        prompts: dict[str, tuple[int, ...]] = {}
        keys: list[list[Key]] = []
        todo: dict[Key, _Request] = {}
        for record, candidates, stats in zip(records, answers, flags, strict=True):
            row = []
            for text in candidates:
                prompt, answer = self._encode_cached(prompts, record.question, text)
                key = (prompt, answer)
                row.append(key)
                if key in todo:
                    todo[key].stats |= stats
                    continue
                cached = self._cache.get(key)
                if cached is not None and (cached.token_stats is not None or not stats):
                    self.stats.cache_hits += 1
                    continue
                todo[key] = _Request(key, text, prompt, answer, _scored_labels(prompt, answer),
                                     stats=stats)
            keys.append(row)
        results: dict[Key, AnswerScore] = {}
        if todo:
            start = time.perf_counter()
            results = self._compute(list(todo.values()), desc)
            self.stats.seconds += time.perf_counter() - start
            self.stats.answers_computed += len(results)
            if self.use_cache:
                self._cache.update(results)
        lookup = {**self._cache, **results} if not self.use_cache else self._cache
        return [[lookup[key] for key in row] for row in keys]

    def score_records(self, records: Sequence[QARecord], token_stats: bool = False,
                      desc: str = "scoring") -> list[RecordScores]:
        """Score each record's answer, paraphrased answer and perturbed answers in one pass.

        All three are scored after the original question, as TOFU does.
        """
        scores = self.score(records, answer_lists(records), token_stats=token_stats, desc=desc)
        out = []
        for record, row in zip(records, scores, strict=True):
            has_para = record.paraphrased_answer is not None
            out.append(RecordScores(gt=row[0], paraphrased=row[1] if has_para else None,
                                    perturbed=tuple(row[2 if has_para else 1:])))
        return out

    # -- internals -----------------------------------------------------------------------------
    def _encode_cached(self, prompts: dict[str, tuple[int, ...]], question: str, answer: str
                       ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if question not in prompts:
            prompts[question] = tuple(encode_prompt(self.tokenizer, self.fmt, question))
        prompt = prompts[question]
        answer_ids = encode_answer(self.tokenizer, self.fmt, answer, question)
        example = build_example(list(prompt), answer_ids, self.max_length)
        n_prompt = len(example.input_ids) - sum(lb != IGNORE_INDEX for lb in example.labels)
        return tuple(example.input_ids[:n_prompt]), tuple(example.input_ids[n_prompt:])

    def _compute(self, requests: list[_Request], desc: str
                 ) -> dict[Key, AnswerScore]:
        with evaluating(self.model):
            if self.mode == "packed":
                return self._run_packed(requests, desc)
            if self.mode == "prefix":
                return self._run_prefix(requests, desc)
            if self.mode == "batched":
                return self._run_batched(requests, desc)
            return self._run_naive(requests, desc)

    def _blocks(self, requests: list[_Request]) -> list[tuple[tuple[int, ...], list[_Request]]]:
        """One block per prompt: the prompt and its answers (split when over ``row_tokens``)."""
        by_prompt: dict[tuple[int, ...], list[_Request]] = {}
        for req in requests:
            by_prompt.setdefault(req.prompt, []).append(req)
        blocks = []
        for prompt, reqs in by_prompt.items():
            current: list[_Request] = []
            length = len(prompt)
            for req in reqs:
                if current and length + len(req.answer) > self.row_tokens:
                    blocks.append((prompt, current))
                    current, length = [], len(prompt)
                current.append(req)
                length += len(req.answer)
            blocks.append((prompt, current))
        return blocks

    @staticmethod
    def _pack_rows(lengths: list[int]) -> list[list[int]]:
        """First-fit-decreasing: blocks into rows no longer than the longest block."""
        capacity = max(lengths)
        rows: list[list[int]] = []
        room: list[int] = []
        for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
            for r, free in enumerate(room):
                if lengths[i] <= free:
                    rows[r].append(i)
                    room[r] -= lengths[i]
                    break
            else:
                rows.append([i])
                room.append(capacity - lengths[i])
        return rows

    def _batches(self, lengths: list[int], max_rows: int | None = None) -> list[list[int]]:
        """Row indices grouped into batches, longest first, under the row and token budgets."""
        return length_batches(lengths, max_rows or self.batch_size, self.batch_tokens)

    def _progress(self, total: int, desc: str) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="ans", disable=not self.progress, leave=False)

    def _run_packed(self, requests: list[_Request], desc: str
                    ) -> dict[Key, AnswerScore]:
        blocks = self._blocks(requests)
        block_len = [len(p) + sum(len(r.answer) for r in reqs) for p, reqs in blocks]
        rows = self._pack_rows(block_len)
        lengths = [sum(block_len[b] for b in row) for row in rows]
        device = self.device
        dtype = float_dtype(self.model)
        out: dict[Key, AnswerScore] = {}
        bar = self._progress(len(requests), desc)
        for batch in self._batches(lengths):
            width = lengths[batch[0]]
            n = len(batch)
            ids = torch.full((n, width), self._pad_id, dtype=torch.long)
            pos = torch.zeros((n, width), dtype=torch.long)
            block_id = torch.full((n, width), -1, dtype=torch.long)
            seg = torch.zeros((n, width), dtype=torch.long)
            # (row, predicting position) and label of every scored answer token
            sel_rows: list[int] = []
            sel_pos: list[int] = []
            labels: list[int] = []
            spans: list[tuple[_Request, int, int]] = []
            for r, index in enumerate(batch):
                start = 0
                for b in rows[index]:
                    prompt, reqs = blocks[b]
                    p = len(prompt)
                    block_id[r, start:start + block_len[b]] = b
                    ids[r, start:start + p] = torch.tensor(prompt, dtype=torch.long)
                    pos[r, start:start + p] = torch.arange(p)
                    prompt_end, start = start + p, start + p
                    for k, req in enumerate(reqs, start=1):
                        a = len(req.answer)
                        ids[r, start:start + a] = torch.tensor(req.answer, dtype=torch.long)
                        pos[r, start:start + a] = torch.arange(p, p + a)
                        seg[r, start:start + a] = k
                        first = len(sel_pos)
                        if p:
                            sel_pos.append(prompt_end - 1)
                        sel_pos.extend(range(start, start + a - 1))
                        sel_rows.extend([r] * (len(sel_pos) - first))
                        labels.extend(req.scored)
                        spans.append((req, first, len(sel_pos)))
                        start += a
            mask = _packed_mask(block_id.to(device), seg.to(device), dtype)
            self._account(n * width, n * width - sum(lengths[i] for i in batch), len(labels), n)
            hidden, head = self._hidden(ids.to(device), mask, pos.to(device))
            selected = hidden[torch.tensor(sel_rows, dtype=torch.long, device=device),
                              torch.tensor(sel_pos, dtype=torch.long, device=device)]
            out.update(self._score_spans(selected, head, labels, spans))
            bar.update(len(spans))
        bar.close()
        return out

    def _run_prefix(self, requests: list[_Request], desc: str
                    ) -> dict[Key, AnswerScore]:
        """Prompts once into a KV cache, then every answer attends to its prompt's cache.

        Per chunk of prompts (sorted by length, bounded by ``batch_tokens``): (0) the prefix all
        of them share (a chat template's system prompt) is run once; (1) the rest of each prompt,
        left-padded, attends to it; (2) each prompt's answers, as one token tree in which the
        tokens several answers start with run once (:class:`AnswerTree`; TOFU's perturbed
        answers share about a quarter of their tokens), attend to their own prompt's cached
        keys and values, rows sorted by tree size and right-padded.
        """
        body_head = body_and_head(self.model)
        if body_head is None:
            return self._run_packed(requests, desc)
        body, head = body_head
        out = self._run_packed([r for r in requests if not r.prompt], desc) if any(
            not r.prompt for r in requests) else {}
        by_prompt: dict[tuple[int, ...], list[_Request]] = {}
        for req in requests:
            if req.prompt:
                by_prompt.setdefault(req.prompt, []).append(req)
        blocks = list(by_prompt.items())
        device = self.device
        dtype = float_dtype(self.model)
        bar = self._progress(len(requests), desc)
        prefixes = PrefixCache()
        # a chunk of prompts is bounded by batch_tokens only, so its answers sort well by length
        for chunk in self._batches([len(p) for p, _ in blocks], max_rows=len(blocks)):
            prompts = [blocks[b][0] for b in chunk]
            # (0) the prefix they share, once per call; (1) the rest of each prompt
            states = prefill(body, prompts, self._pad_id, self.batch_tokens, dtype, prefixes,
                             self._account)
            kv, kv_valid, last = states.kv, states.valid, states.last
            # (2) each prompt's answers as one token tree attending to the prompt's cache
            units = [(r, group, AnswerTree([req.answer for req in group]))
                     for r, b in enumerate(chunk) for group in _tree_groups(blocks[b][1])]
            sizes = [len(tree) for _, _, tree in units]
            # rows are bounded by tree tokens (batch_tokens) and by their copies of the cache
            kv_rows = max(1, _KV_BUDGET_FACTOR * self.batch_tokens // kv_valid.shape[1])
            for batch in self._batches(sizes, max_rows=kv_rows):
                m = len(batch)
                src = torch.tensor([units[u][0] for u in batch], dtype=torch.long, device=device)
                pieces = [last.index_select(0, src)]
                width = max(sizes[u] for u in batch)
                rows = [(i, req, path) for i, u in enumerate(batch)
                        for req, path in zip(units[u][1], units[u][2].paths, strict=True)]
                self._account(0, 0, sum(len(req.answer) for _, req, _ in rows), 0)
                if width > 0:
                    t_ids = torch.full((m, width), self._pad_id, dtype=torch.long)
                    t_valid = torch.zeros((m, width), dtype=torch.bool)
                    t_pos = torch.zeros((m, width), dtype=torch.long)
                    t_seen = torch.zeros((m, width, width), dtype=torch.bool)
                    for i, u in enumerate(batch):
                        r, _, tree = units[u]
                        k = sizes[u]
                        t_ids[i, :k] = torch.tensor(tree.tokens, dtype=torch.long)
                        t_valid[i, :k] = True
                        t_pos[i, :k] = len(prompts[r]) + torch.tensor(tree.depths)
                        t_seen[i, :k, :k] = tree.ancestors
                    t_valid = t_valid.to(device)
                    self._account(m * width, int((~t_valid).sum()), 0, m)
                    past_rows = [(k.index_select(0, src), v.index_select(0, src)) for k, v in kv]
                    mask = prefix_mask(kv_valid[src], t_valid, dtype, tree=t_seen.to(device))
                    hidden, _ = run_body(body, t_ids.to(device), t_pos.to(device), mask=mask,
                                         cache=make_cache(past_rows))
                    pieces.append(hidden.reshape(m * width, -1))
                # per answer: the prompt's last state predicts token 0, its tree path the rest
                index: list[int] = []
                labels: list[int] = []
                spans: list[tuple[_Request, int, int]] = []
                for i, req, path in rows:
                    begin = len(index)
                    index.append(i)
                    index.extend(m + i * width + node for node in path)
                    labels.extend(req.answer)
                    spans.append((req, begin, len(index)))
                selected = torch.cat(pieces).index_select(
                    0, torch.tensor(index, dtype=torch.long, device=device))
                out.update(self._score_spans(selected, head, labels, spans))
                bar.update(len(rows))
            self._generate_from(body, head, prompts, states)
        self._generate_from(body, head, [], None)
        bar.close()
        return out

    def _generate_from(self, body: Any, head: Any, prompts: list[tuple[int, ...]],
                       states: PromptStates | None) -> None:
        """Queue the wanted prompts among ``prompts`` with their cache rows; decode the queue
        once it fills a decoding batch, or when ``states`` is ``None`` (the end of a call).

        Decoding waits for many rows because a decoding step's cost is mostly the weights'
        matrix multiplies, which run efficiently only with many rows."""
        if states is not None:
            rows = [r for r, p in enumerate(prompts) if p in self._wanted]
            if rows:
                self._queue.append(([prompts[r] for r in rows], states.select(rows)))
        queued = sum(len(q) for q, _ in self._queue)
        if not queued:
            return
        widest = max(s.valid.shape[1] for _, s in self._queue)
        rows_cap = decode_rows(self.model, self.generation_batch_size,
                               widest + max(self._wanted.values()))
        if states is not None and queued < rows_cap:
            return
        start = time.perf_counter()
        merged = merge_states([s for _, s in self._queue])
        queue = [p for q, _ in self._queue for p in q]
        self._queue = []
        for begin in range(0, len(queue), rows_cap):
            group = list(range(begin, min(begin + rows_cap, len(queue))))
            budgets = [self._wanted[queue[r]] for r in group]
            part = merged.select(group) if len(group) < len(queue) else merged
            ids = decode(body, head, part, budgets, self._eos_ids(),
                         stats=self.generation_stats)
            for r, budget, x in zip(group, budgets, ids, strict=True):
                self._store_generation(queue[r], budget, x)
                del self._wanted[queue[r]]
        self.generation_stats.seconds += time.perf_counter() - start

    def _store_generation(self, prompt: tuple[int, ...], budget: int, ids: list[int]) -> None:
        self._generated[(prompt, budget)] = ids

    def _eos_ids(self) -> list[int]:
        return eos_token_ids(self.model, self.tokenizer)

    def _run_batched(self, requests: list[_Request], desc: str
                     ) -> dict[Key, AnswerScore]:
        lengths = [len(r.prompt) + len(r.answer) for r in requests]
        device = self.device
        out: dict[Key, AnswerScore] = {}
        bar = self._progress(len(requests), desc)
        for batch in self._batches(lengths):
            width = lengths[batch[0]]
            n = len(batch)
            ids = torch.full((n, width), self._pad_id, dtype=torch.long)
            attn = torch.zeros((n, width), dtype=torch.long)
            sel_rows, sel_pos, labels, spans = [], [], [], []
            for r, index in enumerate(batch):
                req = requests[index]
                seq = req.prompt + req.answer
                ids[r, :len(seq)] = torch.tensor(seq, dtype=torch.long)
                attn[r, :len(seq)] = 1
                first = len(sel_pos)
                begin = max(len(req.prompt), 1)
                sel_pos.extend(range(begin - 1, len(seq) - 1))
                sel_rows.extend([r] * (len(sel_pos) - first))
                labels.extend(req.scored)
                spans.append((req, first, len(sel_pos)))
            self._account(n * width, n * width - sum(lengths[i] for i in batch), n * width, n)
            logits = self.model(input_ids=ids.to(device), attention_mask=attn.to(device),
                                use_cache=False).logits
            selected = logits[torch.tensor(sel_rows, dtype=torch.long, device=device),
                              torch.tensor(sel_pos, dtype=torch.long, device=device)]
            out.update(self._score_spans(selected, None, labels, spans))
            bar.update(n)
        bar.close()
        return out

    def _run_naive(self, requests: list[_Request], desc: str
                   ) -> dict[Key, AnswerScore]:
        device = self.device
        out: dict[Key, AnswerScore] = {}
        bar = self._progress(len(requests), desc)
        for req in requests:
            seq = req.prompt + req.answer
            self._account(len(seq), 0, len(seq))
            logits = self.model(input_ids=torch.tensor([seq], device=device),
                                use_cache=False).logits[0]
            begin = max(len(req.prompt), 1)
            selected = logits[begin - 1:len(seq) - 1]
            out.update(self._score_spans(selected, None, req.scored,
                                         [(req, 0, len(req.scored))]))
            bar.update(1)
        bar.close()
        return out

    def _account(self, forward: int, padding: int, head: int, rows: int = 1) -> None:
        self.stats.sequences += rows
        self.stats.forward_tokens += forward
        self.stats.padding_tokens += padding
        self.stats.head_tokens += head
        self.stats.forward_calls += 1 if forward else 0

    def _hidden(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor
                ) -> tuple[torch.Tensor, Any]:
        """Final hidden states and the LM head; or full logits and ``None`` when the model's
        head cannot be applied separately."""
        split = body_and_head(self.model)
        if split is None:
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                use_cache=False).logits
            return logits, None
        body, head = split
        hidden = body(input_ids=ids, attention_mask=mask, position_ids=pos,
                      use_cache=False).last_hidden_state
        return hidden, head

    def _score_spans(self, selected: torch.Tensor, head: Any, label_ids: Sequence[int],
                     spans: list[tuple[_Request, int, int]]) -> dict[Key, AnswerScore]:
        """Score answers whose predicting hidden states (``head`` given) or logits are the rows
        ``selected[first:end]``; the head runs in chunks of whole answers. The answers that want
        :class:`TokenStats` get them from one pass over their chunk's logits."""
        labels = torch.tensor(list(label_ids), dtype=torch.long, device=selected.device)
        out: dict[Key, AnswerScore] = {}
        i = 0
        while i < len(spans):
            j, begin = i, spans[i][1]
            while j < len(spans) and (j == i or spans[j][2] - begin <= self.head_chunk):
                j += 1
            end = spans[j - 1][2]
            token_lp, stats = _chunk_scores(selected[begin:end], head, labels[begin:end],
                                            [(req, first - begin, last - begin)
                                             for req, first, last in spans[i:j]])
            for req, first, last in spans[i:j]:
                a, b = first - begin, last - begin
                out[req.key] = AnswerScore(nll_sum=float(-token_lp[a:b].sum()),
                                           num_tokens=b - a, token_stats=stats.get(req.key))
            i = j
        return out


def _chunk_scores(chunk: torch.Tensor, head: Any, labels: torch.Tensor,
                  spans: list[tuple[_Request, int, int]]
                  ) -> tuple[torch.Tensor, dict[Key, TokenStats]]:
    """Per-row log-probabilities of ``labels`` (float64, CPU) for the rows of ``chunk`` (hidden
    states with ``head``, else logits), and the :class:`TokenStats` of the spans that want them.
    Only those spans' rows get full-vocabulary logits; the others go through the head a slice
    of the vocabulary at a time (:func:`head_token_logprobs`)."""
    n = chunk.shape[0]
    wanted = [span for span in spans if span[0].stats]
    if head is None:  # ``chunk`` holds the logits already
        full = torch.arange(n)
    else:
        full = torch.cat([torch.arange(a, b) for _, a, b in wanted] or [torch.arange(0)])
    token_lp = torch.empty(n, dtype=torch.float64)
    stats: dict[Key, TokenStats] = {}
    if full.numel() or wanted:
        at = full.to(chunk.device)
        logits = chunk.index_select(0, at)
        logits = (head(logits) if head is not None else logits).float()
        full_labels = labels.index_select(0, at)
        logprobs = torch.log_softmax(logits, dim=-1)
        token_lp[full] = logprobs.gather(-1, full_labels[:, None]).squeeze(-1).double().cpu()
        moved, row = wanted, 0
        if head is not None:  # ``logits`` holds the wanted spans' rows only, in order
            moved = []
            for req, a, b in wanted:
                moved.append((req, row, row + b - a))
                row += b - a
        stats = _chunk_token_stats(logits, full_labels, moved)
    rest = torch.ones(n, dtype=torch.bool)
    rest[full] = False
    if bool(rest.any()):
        at = rest.nonzero().squeeze(-1).to(chunk.device)
        token_lp[rest] = head_token_logprobs(chunk.index_select(0, at), head,
                                             labels.index_select(0, at)).double().cpu()
    return token_lp, stats


def _chunk_token_stats(logits: torch.Tensor, labels: torch.Tensor,
                       spans: list[tuple[_Request, int, int]]) -> dict[Key, TokenStats]:
    """:class:`TokenStats` of each answer ``logits[a:b]`` in ``spans``, computed in one call."""
    if not spans:
        return {}
    from obliviate.llm.evaluation.mia import TokenStats, token_stats_from_logits

    rows = torch.cat([torch.arange(a, b, device=logits.device) for _, a, b in spans])
    joint = token_stats_from_logits(logits.index_select(0, rows), labels.index_select(0, rows))
    out: dict[Key, TokenStats] = {}
    at = 0
    for req, a, b in spans:
        part = slice(at, at + b - a)
        out[req.key] = TokenStats(logprobs=joint.logprobs[part], mu=joint.mu[part],
                                  sigma=joint.sigma[part], is_argmax=joint.is_argmax[part],
                                  text=req.text)
        at += b - a
    return out


def _packed_mask(block: torch.Tensor, seg: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive ``[batch, 1, T, T]`` mask for packed rows.

    ``block`` numbers the question blocks of a row (-1 for padding); ``seg`` is 0 on a block's
    prompt and ``k`` on its ``k``-th answer. Query ``i`` sees key ``j <= i`` of its own block when
    ``j`` is in the prompt or in ``i``'s own answer; padding sees only itself (no row is fully
    masked, so no NaN).
    """
    width = seg.shape[1]
    idx = torch.arange(width, device=seg.device)
    causal = idx[None, :] <= idx[:, None]
    seg_q, seg_k = seg[:, :, None], seg[:, None, :]
    allowed = causal & (block[:, :, None] == block[:, None, :]) & (block[:, :, None] >= 0)
    allowed &= (seg_k == 0) | (seg_k == seg_q)
    allowed |= torch.eye(width, dtype=torch.bool, device=seg.device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=seg.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def answer_lists(records: Iterable[QARecord]) -> list[list[str]]:
    """Each record's answer, paraphrased answer (if any) and perturbed answers, in that order."""
    return [[r.answer, *([r.paraphrased_answer] if r.paraphrased_answer is not None else []),
             *r.perturbed_answers] for r in records]


__all__ = ["MODES", "AnswerScore", "AnswerScorer", "AnswerTree", "RecordScores", "ScoreMode",
           "ScorerStats", "answer_lists"]
