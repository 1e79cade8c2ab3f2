"""Guardrail and in-context unlearning: their prompts, and that no weight changes."""

from __future__ import annotations

import json

import torch

from obliviate.core.registry import METHODS
from obliviate.llm.data.formatting import PromptFormat, encode_record, prompt_text


def test_guardrail_names_every_forget_entity_and_changes_no_weight(memorised, tmp_path):
    model = memorised.model()
    before = {n: p.clone() for n, p in model.state_dict().items()}
    outcome = METHODS.get("guardrail", "llm")().run(model, memorised.task, tmp_path,
                                                   ctx=memorised.context())
    fmt = outcome.prompt_format
    forget_people = {r.entity for r in memorised.task.forget.records}
    retain_people = {r.entity for r in memorised.task.retain.records}
    assert all(person in fmt.system_prompt for person in forget_people)
    assert not any(person in fmt.system_prompt for person in retain_people)
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())
    saved = PromptFormat.from_dict(json.loads((tmp_path / "prompt.json").read_text()))
    assert saved == fmt
    question = memorised.task.forget.records[0].question
    text = prompt_text(memorised.tokenizer, fmt, question)
    assert text.startswith(fmt.system_prompt) and text.endswith(f"{question}\nAnswer:")


def test_icul_context_shows_forget_questions_with_changed_answers(memorised, tmp_path):
    method = METHODS.get("icul", "llm")(forget_shots=2, retain_shots=3)
    outcome = method.run(memorised.model(), memorised.task, tmp_path, ctx=memorised.context())
    context = outcome.prompt_format.context
    assert len(context) == 5
    forget = {r.question: r.answer for r in memorised.task.forget.records}
    retain = {r.question: r.answer for r in memorised.task.retain.records}
    shown_forget = [(q, a) for q, a in context if q in forget]
    assert len(shown_forget) == 2 and all(a != forget[q] for q, a in shown_forget)
    assert all(retain[q] == a for q, a in context if q in retain)


def test_icul_context_lowers_the_tiny_models_forget_likelihood(memorised, tmp_path):
    """On the memorised tiny model, the context itself shifts the output distribution: the
    forget answers become less likely than without it (a measurable output effect, not
    knowledge removal — which is what the attacks later show)."""
    from obliviate.llm.data.formatting import answer_nll, collate

    method = METHODS.get("icul", "llm")(forget_shots=1, retain_shots=0,
                                        forget_answer="perturbed")
    fmt = method.run(memorised.model(), memorised.task, tmp_path,
                     ctx=memorised.context()).prompt_format
    model = memorised.model()

    def forget_nll(f: PromptFormat) -> float:
        batch = collate([encode_record(memorised.tokenizer, f, r)
                         for r in memorised.task.forget.records], memorised.tokenizer.pad_token_id)
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"],
                           attention_mask=batch["attention_mask"]).logits
        return float(answer_nll(logits, batch["labels"]).mean())

    with_context, plain = forget_nll(fmt), forget_nll(memorised.fmt)
    assert with_context > plain + 0.3  # measured: 0.77 vs 0.02
