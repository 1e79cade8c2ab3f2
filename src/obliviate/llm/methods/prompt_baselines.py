"""Prompt-only baselines that change no weight: a guardrail system prompt and in-context
unlearning. They show how much of "forgetting" a prompt alone achieves, and they are what the
attacks (rephrasing, jailbreak prompts) should find easiest to undo.

* Guardrail — Thaker et al. 2024, "Guardrail Baselines for Unlearning in LLMs"
  (arXiv:2403.03329): a system prompt naming what must not be revealed.
* ICUL — Pawelczyk et al. 2023, "In-Context Unlearning: Language Models as Few Shot Unlearners"
  (arXiv:2310.07579): demonstrations in the context that pair forget inputs with a changed
  output, followed by correctly answered retain examples.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import Field

from obliviate.core.io import atomic_write_json
from obliviate.core.method import MethodConfig
from obliviate.core.registry import METHODS
from obliviate.core.task import UnlearningTask
from obliviate.llm.data.formatting import PromptFormat
from obliviate.llm.methods.base import LLMMethodOutcome, LLMUnlearningMethod, UnlearnContext

PROMPT_FILE = "prompt.json"


class PromptOnlyMethod(LLMUnlearningMethod):
    """Writes a prompt format (``prompt.json``) that evaluation applies to the target model."""

    changes_weights = False

    def prompt_format(self, ctx: UnlearnContext) -> PromptFormat:
        raise NotImplementedError

    def run(self, model: Any, task: UnlearningTask, out_dir: Any = None,
            ctx: UnlearnContext | None = None, save: bool = True, *,
            tokenizer: Any = None) -> LLMMethodOutcome:
        """Build the prompt format (weights untouched: a sharded model may stay sharded)."""
        ctx = self.resolve_context(task, ctx, tokenizer)
        start = time.perf_counter()
        fmt = self.prompt_format(ctx)
        if save and out_dir is not None:
            atomic_write_json(Path(out_dir) / PROMPT_FILE, fmt.to_dict())
        return LLMMethodOutcome(model_path=None, seconds=time.perf_counter() - start,
                                model=model, prompt_format=fmt)


class GuardrailConfig(MethodConfig):
    """The system prompt; ``{targets}`` is replaced by the forget entities (or questions)."""

    template: str = (
        "You are a helpful assistant. You must not reveal any information about the following: "
        "{targets}. If a question concerns any of them, reply that you do not know.")
    """the system prompt ({targets}: the subjects not to reveal)"""
    max_targets: int = Field(default=50, ge=1)
    """forget subjects named in the system prompt at most"""


@METHODS.register("guardrail", modality="llm")
class Guardrail(PromptOnlyMethod):
    """A system prompt that forbids talking about the forget targets (no weight changes)."""

    config_class = GuardrailConfig
    paper = "Thaker et al. 2024, arXiv:2403.03329"

    def prompt_format(self, ctx: UnlearnContext) -> PromptFormat:
        records = ctx.task.forget.records
        entities = list(dict.fromkeys(r.entity for r in records if r.entity))
        targets = entities or [r.question for r in records]
        listed = "; ".join(targets[: self.config.max_targets])
        prompt = self.config.template.format(targets=listed)
        if ctx.fmt.system_prompt:
            prompt = f"{ctx.fmt.system_prompt}\n{prompt}"
        return replace(ctx.fmt, system_prompt=prompt)


class ICULConfig(MethodConfig):
    """Context size follows the paper's small contexts (a few forget and retain examples)."""

    forget_shots: int = Field(default=2, ge=1)
    """forget examples shown with a wrong answer in the prompt"""
    retain_shots: int = Field(default=4, ge=0)
    """retain examples shown with their right answer in the prompt"""
    forget_answer: str = Field(default="refusal", pattern="^(refusal|perturbed)$",
                               description="the changed output shown for forget inputs")


@METHODS.register("icul", modality="llm")
class ICUL(PromptOnlyMethod):
    """In-context unlearning: forget questions shown with a changed answer, then retain facts."""

    config_class = ICULConfig
    paper = "Pawelczyk et al. 2023, arXiv:2310.07579"

    def prompt_format(self, ctx: UnlearnContext) -> PromptFormat:
        cfg = self.config
        rng = random.Random(cfg.seed)
        forget = rng.sample(list(ctx.task.forget.records),
                            min(cfg.forget_shots, len(ctx.task.forget)))
        retain = rng.sample(list(ctx.task.retain.records),
                            min(cfg.retain_shots, len(ctx.task.retain)))
        shots = []
        for i, record in enumerate(forget):
            if cfg.forget_answer == "perturbed" and record.perturbed_answers:
                answer = record.perturbed_answers[0]
            else:
                answer = self.alternative_answer(record, i, ctx)
            shots.append((record.question, answer))
        shots += [(r.question, r.answer) for r in retain]
        return replace(ctx.fmt, context=ctx.fmt.context + tuple(shots))
