"""AltPO, alternate preference optimization (Mekala et al. 2025, "Alternate Preference
Optimization for Unlearning Factual Knowledge in Large Language Models", COLING 2025,
arXiv:2409.13474): negative feedback on the forget answer combined with positive feedback on a
plausible *alternate* answer to the same question that the target model itself writes.

loss = γ·(−(2/β)·E_F[log σ(β·[(log π_θ(ỹ) − log π_ref(ỹ)) − (log π_θ(y) − log π_ref(y))])])
       + α·NLL(R),   ỹ = an alternate answer to the forget question

The loss is DPO with ỹ preferred over the true answer, as OpenUnlearning runs AltPO (its ``DPO``
trainer on a forget set with an ``alternate`` field, ``community/methods/AltPO``): β = 0.1,
γ = 1, α = 1 (``configs/trainer/DPO.yaml``; its search grid: β ∈ {0.05, 0.1, 0.5}, lr ∈ {1e-5,
2e-5, 5e-5}, α ∈ {1, 2, 5}, 2 epochs). As in IdkDPO the frozen target's log-probs of both answers
are computed once (no reference model in memory).

The alternates: before training, the frozen target answers each forget question's "write another
version of the answer with alternate plausible facts" instruction (the Llama-2 prompt of
``generate.py``: ``Question: {q}\\nAnswer: {a}\\n<instruction>`` then ``Alternate Answer:``).
Differences, stated: the paper samples 5 alternates (temperature 1) and averages over them; here
one greedy alternate per question, so runs are deterministic. An alternate that comes back empty
or equal to the true answer is replaced by one of the record's perturbed answers when it has some,
else by a refusal; the count of each kind is recorded. ``alternates = "perturbed"`` skips
generation and uses the perturbed answers directly (cheaper, but TOFU's truth ratio scores those
same answers, so it then no longer measures forgetting independently).
"""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import Field

from obliviate.core.errors import ConfigError
from obliviate.core.method import MethodConfig
from obliviate.core.registry import METHODS
from obliviate.core.task import UnlearningTask
from obliviate.llm.data.formatting import PromptFormat, encode_prompt
from obliviate.llm.data.records import QARecord
from obliviate.llm.evaluation.generation import eos_token_ids, greedy_generate_ids
from obliviate.llm.methods.base import LLMMethodOutcome, UnlearnContext
from obliviate.llm.methods.idk_dpo import IdkDPO
from obliviate.llm.training import default_device

INSTRUCTION = ("Now write another version of the answer with some alternate plausible facts "
               "that change answer details.")


class AltPOConfig(MethodConfig):
    """OpenUnlearning's AltPO run: β = 0.1, γ = 1, α = 1; one generated alternate per question."""

    beta: float = Field(default=0.1, gt=0)
    """inverse temperature of the preference loss"""
    gamma: float = Field(default=1.0, ge=0, description="weight of the preference term")
    alpha: float = Field(default=1.0, ge=0, description="weight of the retain NLL term")
    alternates: Literal["generate", "perturbed"] = Field(
        default="generate", description="where ỹ comes from: the target's own answer to the "
                                        "alternate-facts prompt, or the records' perturbed answers")
    max_new_tokens: int = Field(default=64, ge=1, description="length cap of a generated ỹ")


def alternate_prompt(tokenizer: Any, fmt: PromptFormat, record: QARecord) -> list[int]:
    """Prompt ids asking for an alternate answer (chat template when the format is chat)."""
    request = f"Question: {record.question}\nAnswer: {record.answer}\n{INSTRUCTION}"
    if fmt.style == "chat":
        return encode_prompt(tokenizer, PromptFormat(style="chat"), request)
    return encode_prompt(tokenizer, PromptFormat(style="base", question_prefix="",
                                                 answer_prefix="\nAlternate Answer:"), request)


@METHODS.register("altpo", modality="llm")
class AltPO(IdkDPO):
    """Prefer the target's own alternate answer over the true one on forget questions (DPO)."""

    config_class = AltPOConfig
    paper = "Mekala et al. 2025, arXiv:2409.13474"

    def __init__(self, config: MethodConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.alternates: list[str] = []
        self.sources: dict[str, int] = {}

    def _fallback(self, record: QARecord, index: int, ctx: UnlearnContext) -> tuple[str, str]:
        rng = random.Random(f"{self.config.seed}/{index}")
        if record.perturbed_answers:
            return rng.choice(record.perturbed_answers), "perturbed"
        return rng.choice(ctx.refusals), "refusal"

    def make_alternates(self, model: Any, ctx: UnlearnContext) -> None:
        records = list(ctx.task.forget.records)
        if any(r.is_text for r in records):
            raise ConfigError("altpo: the forget set must be question-answer records (plain text "
                              "has no question to answer differently)")
        generated: list[str | None] = [None] * len(records)
        if self.config.alternates == "generate":
            tok = ctx.tokenizer
            prompts = [alternate_prompt(tok, ctx.fmt, r) for r in records]
            pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
            ids = greedy_generate_ids(model, prompts, self.config.max_new_tokens,
                                      pad_token_id=pad or 0, eos_ids=eos_token_ids(model, tok))
            generated = [tok.decode(x, skip_special_tokens=True).strip() for x in ids]
        self.alternates, self.sources = [], {}
        for i, (record, text) in enumerate(zip(records, generated, strict=True)):
            source = "generated"
            if not text or " ".join(text.split()) == " ".join(record.answer.split()):
                text, source = self._fallback(record, i, ctx)
            self.alternates.append(text)
            self.sources[source] = self.sources.get(source, 0) + 1

    def alternative_answer(self, record: QARecord, index: int, ctx: UnlearnContext) -> str:
        return self.alternates[index]

    def run(self, model: Any, task: UnlearningTask, out_dir: Any = None,
            ctx: UnlearnContext | None = None, save: bool = True, *,
            tokenizer: Any = None) -> LLMMethodOutcome:
        ctx = self.resolve_context(task, ctx, tokenizer)
        home = next(model.parameters()).device
        model.to(default_device())  # generate where training runs
        self.make_alternates(model, ctx)
        model.to(home)
        outcome = super().run(model, task, out_dir, ctx=ctx, save=save)
        outcome.extra["altpo"] = {"alternate_sources": dict(self.sources),
                                  "alternates": list(self.alternates)}
        return outcome
