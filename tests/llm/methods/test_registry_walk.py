"""Every registered LLM method is covered: a forgetting-and-utility test names it, and it
resumes from its checkpoint to the weights of an uninterrupted run. A method registered without
either fails here."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

import obliviate.llm.methods  # noqa: F401  (registers the catalogue)
from obliviate.core.registry import METHODS

HERE = Path(__file__).parent

# test functions parametrized over method names (the first parameter) ...
PARAMETRIZED = [
    ("test_gradient_methods.py", "test_method_forgets_and_keeps_utility"),
    ("test_preference_methods.py", "test_method_forgets_and_keeps_utility"),
    ("test_new_methods.py", "test_new_method_forgets_and_keeps_utility"),
]
# ... and methods whose forgetting is shown by a test of their own
DEDICATED = {
    "rmu": ("test_other_methods.py", "test_rmu_forgets_and_changes_only_the_chosen_mlp_weights"),
    "task_vector": ("test_other_methods.py", "test_task_vector_negation_forgets"),
    "finetune_retain": ("test_other_methods.py",
                        "test_finetune_retain_forgets_by_training_on_retain"),
    "retrain": ("test_other_methods.py", "test_retrain_learns_retain_and_never_the_forget_set"),
    "guardrail": ("test_prompt_baselines.py",
                  "test_guardrail_names_every_forget_entity_and_changes_no_weight"),
    "icul": ("test_prompt_baselines.py",
             "test_icul_context_lowers_the_tiny_models_forget_likelihood"),
}


def _test_function(filename: str, name: str):
    spec = importlib.util.spec_from_file_location(f"_walk_{Path(filename).stem}", HERE / filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def covered() -> set[str]:
    names: set[str] = set()
    for filename, test in PARAMETRIZED:
        for mark in getattr(_test_function(filename, test), "pytestmark", []):
            if mark.name == "parametrize":
                names |= {row[0] if isinstance(row, tuple) else row for row in mark.args[1]}
    for name, (filename, test) in DEDICATED.items():
        assert callable(_test_function(filename, test)), (name, test)
        names.add(name)
    return names


def test_every_registered_method_has_a_forgetting_and_utility_test():
    missing = sorted(set(METHODS.names("llm")) - covered())
    assert not missing, f"registered LLM methods without a forgetting-and-utility test: {missing}"


class Interrupted(Exception):
    pass


TRAINED = [e.name for e in METHODS.entries("llm") if e.obj.changes_weights]
OPTIONS = {"rmu": {"layer": 1}}  # the tiny model has two decoder layers


@pytest.mark.parametrize("name", TRAINED)
def test_every_trained_method_resumes_to_the_uninterrupted_weights(memorised, tmp_path, name):
    cls = METHODS.get(name, "llm")
    settings = {"max_steps": 3, "checkpoint_every": 1, "learning_rate": 1e-3, "log_every": 1}
    straight = cls(**OPTIONS.get(name, {})).run(memorised.model(), memorised.task, tmp_path / "a",
                         ctx=memorised.context(**settings), save=False).model

    method, calls = cls(**OPTIONS.get(name, {})), []
    loss = method.loss

    def stop_at_the_third_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise Interrupted
        return loss(*args, **kwargs)

    method.loss = stop_at_the_third_step
    with pytest.raises(Interrupted):
        method.run(memorised.model(), memorised.task, tmp_path / "b",
                   ctx=memorised.context(**settings), save=False)
    outcome = cls(**OPTIONS.get(name, {})).run(memorised.model(), memorised.task, tmp_path / "b",
                        ctx=memorised.context(**settings), save=False)
    assert outcome.resumed_from == 2 and outcome.steps == 3
    for (key, a), (_, b) in zip(straight.state_dict().items(),
                                outcome.model.state_dict().items(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), (name, key)


@pytest.mark.parametrize("name", TRAINED)
def test_every_trained_method_trains_bfloat16_weights(memorised, name):
    """``model.dtype: bfloat16``: every method trains float32 masters of the bf16 weights under
    bf16 autocast (its reference caches, teachers and losses included) and hands back bf16
    weights that moved."""
    model = memorised.model().to(torch.bfloat16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    outcome = METHODS.get(name, "llm")(**OPTIONS.get(name, {})).run(
        model, memorised.task, ctx=memorised.context(max_steps=2, learning_rate=1e-3),
        save=False)
    after = outcome.model.state_dict()
    assert {v.dtype for v in after.values() if v.is_floating_point()} == {torch.bfloat16}
    assert any(not torch.equal(before[k], after[k]) for k in before), name
    assert all(math.isfinite(h["loss"]) for h in outcome.history), name
