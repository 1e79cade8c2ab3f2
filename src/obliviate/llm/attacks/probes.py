"""White-box probes: is the forgotten fact still readable from the hidden states?

Patil, Hase & Bansal 2023, "Can Sensitive Information Be Deleted From LLMs? Objectives for
Defending Against Extraction Attacks" (arXiv:2309.17410) show that facts "deleted" from the
output can still be read from intermediate layers. Neither probe changes weights.

* ``logit_lens`` — the logit lens (nostalgebraist 2020): each layer's hidden state at the
  position that predicts an answer token (teacher-forced) is projected through the final norm
  and the LM head. Patil et al.'s Head Projection attack counts an attack as successful when the
  answer is among the top-``k`` tokens of any attacked layer (the union is the candidate set, of
  size ``B <= k * layers``; their code's default is ``k = 4``, and its README example attacks 5
  layers: ``B = 20``). ``attacked`` is that fraction of forget records; ``plain`` the same with
  the final layer only, i.e. what the output itself shows. Patil et al. use single-token
  answers; for sentence answers the token that carries the fact is found as the first token in
  which the paraphrased answer differs from every perturbed answer (``target="divergent"``, the
  default), or the answer's first token is used (``target="first"``), which in TOFU-style
  answers is mostly the subject's name, copied from the question: a model that never saw the
  fact predicts it as well.
* ``linear_probe`` — a logistic-regression probe on hidden states (mean over the answer tokens at
  a middle layer by default) trained on RETAIN facts to tell the true answer from the perturbed
  ones, then tested on FORGET facts. The true answer is the paraphrased answer by default, since
  the perturbed answers of TOFU (and of the synthetic facts) are edits of the paraphrase: a probe
  comparing the original answer with them could just detect the template. The metric is
  pairwise accuracy: the fraction of (true, perturbed) pairs of a forget fact in which the probe
  prefers the true answer (averaged per fact; 0.5 is chance). ``plain`` is the model's own
  output preference, the same pairwise accuracy with ``-mean answer NLL`` as the score. The
  oracle is probed the same way (its own probe, trained on its own hidden states).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import suppress
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from obliviate.core.errors import ConfigError
from obliviate.core.precision import evaluating
from obliviate.core.recipe import StrictModel
from obliviate.core.registry import ATTACKS
from obliviate.core.result import AttackResult
from obliviate.llm.attacks.base import (
    AttackContext,
    AttackTarget,
    LLMAttack,
    options_key,
    records_key,
)
from obliviate.llm.data.formatting import (
    IGNORE_INDEX,
    collate,
    encode_answer,
    encode_prompt,
    encode_record,
)
from obliviate.llm.data.records import QARecord
from obliviate.llm.evaluation.prompt_cache import sharded

_NORM_NAMES = ("norm", "final_layer_norm", "final_layernorm", "ln_f")


# -- model access -------------------------------------------------------------------------------
def final_norm(model: Any) -> torch.nn.Module:
    """The norm applied before the LM head (``model.model.norm`` for Llama), found on the
    decoder (``get_decoder()``), ``model.model`` or ``model.transformer``."""
    owners = []
    get_decoder = getattr(model, "get_decoder", None)
    if get_decoder is not None:
        with suppress(AttributeError, NotImplementedError, ValueError):
            owners.append(get_decoder())
    owners += [getattr(model, "model", None), getattr(model, "transformer", None)]
    for owner in owners:
        if owner is None or owner is model:
            continue
        for name in _NORM_NAMES:
            module = getattr(owner, name, None)
            if isinstance(module, torch.nn.Module):
                return module
    raise ConfigError(f"logit lens: cannot find the final norm of {type(model).__name__} "
                      f"(looked for {', '.join(_NORM_NAMES)} on its decoder)")


def _head(model: Any) -> torch.nn.Module:
    if sharded(model):  # the lens applies the norm and the head outside the model's forward
        raise ConfigError(f"logit lens: {type(model).__name__} is sharded by FSDP; probe the "
                          "saved model loaded whole in one process")
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        raise ConfigError(f"logit lens: {type(model).__name__} has no output embeddings")
    return head


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _resolve_layer(layer: int, num_layers: int, what: str) -> int:
    resolved = layer + num_layers + 1 if layer < 0 else layer
    if not 0 <= resolved <= num_layers:
        raise ConfigError(f"{what}: layer {layer} is out of range for a model with "
                          f"{num_layers} layers (use 0..{num_layers} or negative indices)")
    return resolved


# -- logit lens ---------------------------------------------------------------------------------
LensTarget = Literal["first", "divergent"]


def lens_query(tokenizer: Any, fmt: Any, record: QARecord, target: LensTarget = "divergent"
               ) -> tuple[list[int], int]:
    """The teacher-forced input and the answer token its last position should predict.

    ``first``: the prompt, and the answer's first token. ``divergent``: the prompt plus the
    paraphrased answer (the answer if there is none) up to the first token in which it differs
    from every perturbed answer, and that token — the token that carries the fact, as the
    single-token targets of Patil et al. do. Perturbed answers are edits of the paraphrased
    answer in TOFU and in the synthetic facts, so their shared prefix is template, not fact.
    Records without perturbed answers fall back to ``first``.
    """
    prompt = encode_prompt(tokenizer, fmt, record.question)
    if target == "first" or not record.perturbed_answers:
        return prompt, encode_answer(tokenizer, fmt, record.answer, record.question)[0]
    if target != "divergent":
        raise ConfigError(f"unknown logit lens target {target!r}; use first or divergent")
    true = encode_answer(tokenizer, fmt, record.paraphrased_answer or record.answer,
                         record.question)
    shared = 0
    for text in record.perturbed_answers:
        other = encode_answer(tokenizer, fmt, text, record.question)
        n = 0
        while n < min(len(true), len(other)) and true[n] == other[n]:
            n += 1
        shared = max(shared, n)
    shared = min(shared, len(true) - 1)  # a perturbed answer extending the true one
    return prompt + true[:shared], true[shared]


def logit_lens_ranks(model: Any, tokenizer: Any, fmt: Any, records: Sequence[QARecord],
                     batch_size: int = 16, target: LensTarget = "divergent") -> np.ndarray:
    """Rank (0 = top-1) of each record's answer token (:func:`lens_query`) at every layer.

    Shape ``[records, layers]``; column ``l - 1`` is decoder layer ``l``. Intermediate layers
    are read through the final norm and the LM head; the last layer is the model's own output
    logits (HF's last hidden state already has the final norm applied).
    """
    if batch_size < 1:
        raise ConfigError(f"logit lens batch_size must be positive, got {batch_size}")
    if any(not r.question for r in records):
        raise ConfigError("logit lens needs a question (a non-empty prompt) for every record")
    queries = [lens_query(tokenizer, fmt, r, target) for r in records]
    prompts = [q[0] for q in queries]
    targets = [q[1] for q in queries]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    norm, head, device = final_norm(model), _head(model), _device(model)
    rows: list[torch.Tensor] = []
    with evaluating(model):
        for start in range(0, len(records), batch_size):
            batch = prompts[start:start + batch_size]
            width = max(len(p) for p in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, prompt in enumerate(batch):  # right padding: positions start at 0
                ids[row, :len(prompt)] = torch.tensor(prompt)
                mask[row, :len(prompt)] = 1
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                        output_hidden_states=True)
            index = torch.arange(len(batch), device=device)
            last = mask.sum(dim=1).to(device) - 1
            wanted = torch.tensor(targets[start:start + batch_size], device=device)
            hidden = out.hidden_states
            ranks = []
            for layer in range(1, len(hidden)):
                if layer == len(hidden) - 1:
                    logits = out.logits[index, last]
                else:
                    logits = head(norm(hidden[layer][index, last]))
                logits = logits.float()
                true = logits.gather(1, wanted[:, None])
                ranks.append((logits > true).sum(dim=1))
            rows.append(torch.stack(ranks, dim=1).cpu())
    return torch.cat(rows).numpy()


class LogitLensConfig(StrictModel):
    """Top-``k`` per layer (Patil et al.'s Head Projection default ``k = 4``) over ``layers``
    (1-based decoder layers, negative from the end; all layers by default), at the answer
    token chosen by ``target`` (:func:`lens_query`)."""

    k: int = Field(default=4, ge=1)
    """an answer token counts as recovered when it is in a layer's top k"""
    layers: list[int] | None = None
    """the layers read through the unembedding (None: every layer)"""
    target: LensTarget = "divergent"
    """which answer tokens are read: divergent (where the answer differs from the perturbed ones) or
    all"""
    batch_size: int = Field(default=16, ge=1)
    """sequences run at once"""


@ATTACKS.register("logit_lens", modality="llm")
class LogitLensAttack(LLMAttack):
    """Logit lens on every layer: is the fact's answer token in some layer's top-k?"""

    name: ClassVar[str] = "logit_lens"
    config_class: ClassVar[type[StrictModel]] = LogitLensConfig
    paper: ClassVar[str] = ("Patil et al. 2023, Can Sensitive Information Be Deleted From LLMs?, "
                            "arXiv:2309.17410; logit lens: nostalgebraist 2020")

    def run(self, ctx: AttackContext) -> AttackResult:
        config: LogitLensConfig = self.config  # type: ignore[assignment]
        start = time.perf_counter()
        records = [r for r in ctx.task.forget.records if r.question]
        if not records:
            raise ConfigError("logit_lens needs forget records with questions")

        def measure(target: AttackTarget) -> dict[str, Any]:
            ranks = logit_lens_ranks(target.model, target.tokenizer, target.fmt, records,
                                     config.batch_size, config.target)
            num_layers = ranks.shape[1]
            chosen = sorted({_resolve_layer(layer, num_layers, "logit_lens")
                             for layer in (config.layers or range(1, num_layers + 1))})
            if 0 in chosen:
                raise ConfigError("logit_lens layers are 1-based decoder layers; 0 is the "
                                  "embedding output")
            hit = ranks < config.k
            return {
                "any": float(hit[:, [layer - 1 for layer in chosen]].any(axis=1).mean()),
                "final": float(hit[:, -1].mean()),
                "per_layer": hit.mean(axis=0).tolist(),
                "top1": (ranks == 0).mean(axis=0).tolist(),
                "ranks": ranks.tolist(), "layers": chosen,
            }

        def remembered(target: AttackTarget) -> dict[str, Any]:
            key = ("logit_lens", records_key(records), options_key(config))
            return target.remember(key, lambda: measure(target))

        model = remembered(ctx.target)
        oracle = remembered(ctx.oracle) if ctx.oracle is not None else None
        curve = []
        for i, value in enumerate(model["per_layer"]):
            curve.append({"layer": i + 1, "model": value,
                          "oracle": oracle["per_layer"][i] if oracle else None,
                          "model_top1": model["top1"][i],
                          "oracle_top1": oracle["top1"][i] if oracle else None})
        return AttackResult(
            attack=self.name, model=ctx.target.name, metric=f"top{config.k}_any_layer",
            plain=model["final"], attacked=model["any"],
            oracle_plain=oracle["final"] if oracle else None,
            oracle_attacked=oracle["any"] if oracle else None,
            curve=curve, options=config.model_dump(),
            details={"layers": model["layers"], "budget": config.k * len(model["layers"]),
                     "ranks": model["ranks"], "oracle_ranks": oracle["ranks"] if oracle else None,
                     "paper": self.paper},
            seconds=time.perf_counter() - start)


# -- linear probe -------------------------------------------------------------------------------
def answer_features(model: Any, tokenizer: Any, fmt: Any,
                    items: Sequence[tuple[QARecord, str]], layer: int | None = None,
                    batch_size: int = 16, max_length: int = 512) -> np.ndarray:
    """Mean hidden state over the answer tokens of each ``(record, answer)`` after the record's
    question, at ``layer`` (0 = embeddings, ``L`` = last, negative from the end; default
    ``L // 2``). Shape ``[items, hidden]``, float64."""
    if batch_size < 1:
        raise ConfigError(f"linear probe batch_size must be positive, got {batch_size}")
    examples = [encode_record(tokenizer, fmt, record, answer=text, max_length=max_length)
                for record, text in items]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = _device(model)
    feats: list[torch.Tensor] = []
    with evaluating(model):
        for start in range(0, len(examples), batch_size):
            batch = collate(examples[start:start + batch_size], pad)
            out = model(input_ids=batch["input_ids"].to(device),
                        attention_mask=batch["attention_mask"].to(device),
                        output_hidden_states=True)
            num_layers = len(out.hidden_states) - 1
            index = (num_layers // 2 if layer is None
                     else _resolve_layer(layer, num_layers, "linear_probe"))
            hidden = out.hidden_states[index].float()
            answer = (batch["labels"] != IGNORE_INDEX).to(device)
            summed = (hidden * answer[..., None]).sum(dim=1)
            feats.append((summed / answer.sum(dim=1, keepdim=True).clamp_min(1)).cpu())
    return torch.cat(feats).double().numpy()


def _pairwise(true_scores: Sequence[float], perturbed_scores: Sequence[Sequence[float]]
              ) -> list[float]:
    """Per fact: the fraction of perturbed answers scored below the true one (ties count 1/2)."""
    return [float(np.mean([1.0 if t > p else 0.5 if t == p else 0.0 for p in row]))
            for t, row in zip(true_scores, perturbed_scores, strict=True)]


class LinearProbeConfig(StrictModel):
    """Where and how the probe reads the hidden states.

    ``layer``: 0 = embeddings, ``L`` = last, negative from the end; default the middle one
    (``L // 2``). ``mode``: ``contrast`` trains on contrast pairs ``h(true) - h(perturbed)``
    (label 1) and their negations (label 0), without intercept, as Burns et al. 2022 contrast
    pairs, so the per-question part of the state cancels; ``pointwise`` trains on single answers
    (true 1, perturbed 0, classes balanced) and compares the two decision values. ``C`` is the
    logistic regression's inverse regularisation (features standardised first).
    """

    layer: int | None = None
    """the layer whose hidden states are probed (None: the middle layer)"""
    mode: Literal["contrast", "pointwise"] = "contrast"
    """contrast (true against perturbed answer of one question) or pointwise (each answer on its
    own)"""
    true_answer: Literal["paraphrased", "answer"] = "paraphrased"
    """the correct answer the probe reads: the paraphrased answer or the answer itself"""
    C: float = Field(default=1.0, gt=0)
    """inverse L2 strength of the logistic-regression probe"""
    batch_size: int = Field(default=16, ge=1)
    """sequences run at once to read hidden states"""
    max_length: int = Field(default=512, ge=8)
    """longest sequence read, in tokens"""


@ATTACKS.register("linear_probe", modality="llm")
class LinearProbeAttack(LLMAttack):
    """Linear probe on hidden states trained on retain facts: does it still tell forget facts'
    true answers from perturbed ones?"""

    name: ClassVar[str] = "linear_probe"
    config_class: ClassVar[type[StrictModel]] = LinearProbeConfig
    paper: ClassVar[str] = ("Patil et al. 2023, Can Sensitive Information Be Deleted From LLMs?, "
                            "arXiv:2309.17410")

    def _true(self, record: QARecord) -> str:
        config: LinearProbeConfig = self.config  # type: ignore[assignment]
        if config.true_answer == "paraphrased" and record.paraphrased_answer:
            return record.paraphrased_answer
        return record.answer

    def _features(self, target: AttackTarget, records: Sequence[QARecord]
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per record: the true answer's feature vector and its perturbed answers' rows."""
        config: LinearProbeConfig = self.config  # type: ignore[assignment]
        items = []
        for record in records:
            items.append((record, self._true(record)))
            items += [(record, p) for p in record.perturbed_answers]
        x = answer_features(target.model, target.tokenizer, target.fmt, items, config.layer,
                            config.batch_size, config.max_length)
        out, row = [], 0
        for record in records:
            n = len(record.perturbed_answers)
            out.append((x[row], x[row + 1:row + 1 + n]))
            row += 1 + n
        return out

    def measure(self, target: AttackTarget, retain: Sequence[QARecord],
                forget: Sequence[QARecord], seed: int = 0) -> dict[str, Any]:
        """Train the probe on ``retain`` facts and test it on ``forget`` facts (pairwise
        accuracy); also the model's output preference on the forget pairs."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        from obliviate.llm.evaluation.scorer import AnswerScorer

        config: LinearProbeConfig = self.config  # type: ignore[assignment]
        train, test = self._features(target, retain), self._features(target, forget)
        contrast = config.mode == "contrast"
        probe = make_pipeline(StandardScaler(), LogisticRegression(
            C=config.C, max_iter=5000, random_state=seed, fit_intercept=not contrast,
            class_weight=None if contrast else "balanced"))
        if contrast:
            diffs = np.concatenate([t[None] - ps for t, ps in train])
            probe.fit(np.concatenate([diffs, -diffs]),
                      np.r_[np.ones(len(diffs)), np.zeros(len(diffs))])

            def pairs(facts: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
                return _pairwise([0.0] * len(facts),
                                 [-probe.decision_function(t[None] - ps) for t, ps in facts])
        else:
            probe.fit(np.concatenate([np.concatenate([t[None], ps]) for t, ps in train]),
                      np.concatenate([np.r_[1, np.zeros(len(ps))] for _, ps in train]))

            def pairs(facts: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
                return _pairwise([float(probe.decision_function(t[None])[0]) for t, _ in facts],
                                 [probe.decision_function(ps) for _, ps in facts])

        train_pairs, test_pairs = pairs(train), pairs(test)
        scorer = AnswerScorer(target.model, target.tokenizer, target.fmt,
                              batch_size=config.batch_size, max_length=config.max_length)
        rows = scorer.score(forget, [[self._true(r), *r.perturbed_answers] for r in forget])
        scores = [[-s.mean_nll for s in row] for row in rows]
        output_pairs = _pairwise([row[0] for row in scores], [row[1:] for row in scores])
        return {"probe": float(np.mean(test_pairs)), "output": float(np.mean(output_pairs)),
                "probe_per_item": test_pairs, "output_per_item": output_pairs,
                "train_pairwise": float(np.mean(train_pairs))}

    def run(self, ctx: AttackContext) -> AttackResult:
        """``attacked`` = the probe's pairwise accuracy on forget facts; ``plain`` = the
        model's output preference (true answer NLL below the perturbed one) on the same pairs."""
        config: LinearProbeConfig = self.config  # type: ignore[assignment]
        start = time.perf_counter()

        def usable(records: Sequence[QARecord], split: str) -> list[QARecord]:
            kept = [r for r in records if r.question and r.perturbed_answers]
            if not kept:
                raise ConfigError(f"linear_probe needs {split} records with a question and "
                                  "perturbed answers")
            return kept

        retain = usable(ctx.task.retain.records, "retain")
        forget = usable(ctx.task.forget.records, "forget")
        def remembered(target: AttackTarget) -> dict[str, Any]:
            key = ("linear_probe", records_key(retain), records_key(forget),
                   options_key(self.config), ctx.seed)
            return target.remember(key, lambda: self.measure(target, retain, forget, ctx.seed))

        model = remembered(ctx.target)
        oracle = remembered(ctx.oracle) if ctx.oracle is not None else None
        return AttackResult(
            attack=self.name, model=ctx.target.name, metric="pairwise_accuracy",
            plain=model["output"], attacked=model["probe"],
            oracle_plain=oracle["output"] if oracle else None,
            oracle_attacked=oracle["probe"] if oracle else None,
            options=config.model_dump(),
            details={"model": model, "oracle": oracle, "retain_facts": len(retain),
                     "forget_facts": len(forget), "paper": self.paper},
            seconds=time.perf_counter() - start)


__all__ = ["LinearProbeAttack", "LinearProbeConfig", "LogitLensAttack", "LogitLensConfig",
           "answer_features", "final_norm", "logit_lens_ranks"]
