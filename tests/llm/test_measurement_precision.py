"""``evaluation.mixed_precision``: a run's evaluation in bf16 autocast is its own stage input
(never mixed with the fp32 evaluation's record), close to fp32, with the weights unchanged."""

from __future__ import annotations

import math

import torch

from obliviate.core.recipe import load_recipe
from obliviate.llm import pipeline
from obliviate.llm.recipe import LLMRecipe

torch.set_num_threads(1)

TINY = {"name": "mp", "modality": "llm", "finetune": {"epochs": 2, "learning_rate": 3e-3},
        "model": {"tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                           "intermediate_size": 64}},
        "task": {"synthetic": {"num_people": 6, "forget_people": 1, "holdout_people": 1}},
        "evaluation": {"suites": ["tofu"], "options": {"tofu": {"max_new_tokens": 8}}}}


def test_a_bf16_evaluation_reruns_the_stage_and_stays_close_to_fp32(tmp_path, monkeypatch):
    from obliviate.llm import runner

    recipe = load_recipe(LLMRecipe, None, base=TINY)
    run = pipeline.open_run(recipe, tmp_path / "run", "obliviate test")
    task = pipeline.prepare_task(recipe, run)
    pipeline.finetune_stage(recipe, run, task, roles=("oracle",))
    fp32 = pipeline.evaluate_stage(recipe, run, task, models=["oracle"])["oracle"]

    evaluated: list[str] = []
    real = runner.evaluate
    monkeypatch.setattr(runner, "evaluate",
                        lambda *a, **k: evaluated.append(k["name"]) or real(*a, **k))
    assert pipeline.evaluate_stage(recipe, run, task, models=["oracle"])["oracle"] == fp32
    assert evaluated == []  # the default precision reuses the recorded evaluation

    bf16 = load_recipe(LLMRecipe, None, ["evaluation.mixed_precision=bf16"], base=TINY)
    low = pipeline.evaluate_stage(bf16, run, task, models=["oracle"])["oracle"]
    assert evaluated == ["oracle"]
    record = run.read_record()["stages"]["eval_oracle"]
    assert record["inputs"]["mixed_precision"] == "bf16"
    assert "mixed_precision" in record["rerun_reason"]
    keys = [k for k in fp32 if k.endswith(("/prob", "/gt_loss")) and math.isfinite(fp32[k])]
    assert keys and any(low[k] != fp32[k] for k in keys)
    for k in keys:
        assert math.isclose(low[k], fp32[k], rel_tol=0.05), k
