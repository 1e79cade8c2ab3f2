"""Keys that change how a model runs, never what it computes (``model.gradient_checkpointing``),
do not define the run, in either modality."""

from __future__ import annotations

import json

import pytest
import torch

from obliviate.core.recipe import load_recipe
from tests.diffusion.test_pipeline import TINY_RECIPE

torch.set_num_threads(1)

LLM_TINY = {"name": "ckpt", "modality": "llm", "finetune": {"epochs": 1},
            "model": {"tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                               "intermediate_size": 64}},
            "task": {"synthetic": {"num_people": 6, "forget_people": 1, "holdout_people": 1}}}


def _modality(name: str):
    """``(recipe class, recipe data, pipeline, (module, trainer attribute) to stub)``."""
    if name == "llm":
        from obliviate.llm import pipeline
        from obliviate.llm.recipe import LLMRecipe

        return LLMRecipe, LLM_TINY, pipeline, (pipeline, "finetune")
    from obliviate.diffusion import pipeline, training
    from obliviate.diffusion.recipe import DiffusionRecipe

    return DiffusionRecipe, TINY_RECIPE, pipeline, (training, "train_denoiser")


@pytest.mark.parametrize(("modality", "defining"),
                         [("llm", "model.max_length=64"), ("diffusion", "model.time_dim=16")])
def test_gradient_checkpointing_reuses_the_run_as_it_is(modality, defining, tmp_path,
                                                         monkeypatch):
    """A run made before the key existed (its recorded recipe lacks it) reopens with it on,
    and its fine-tuned target is reused, not trained again; a key that defines the model still
    refuses the run."""
    schema, data, pipeline, (module, trainer) = _modality(modality)
    recipe = load_recipe(schema, None, base=data)
    run = pipeline.open_run(recipe, tmp_path / "run", "obliviate test")
    pipeline.finetune_stage(recipe, run, pipeline.prepare_task(recipe, run), roles=("target",))
    record = json.loads((run.root / "run.json").read_text())
    del record["recipe"]["model"]["gradient_checkpointing"]  # as an older run recorded it
    (run.root / "run.json").write_text(json.dumps(record))

    def no_training(*args, **kwargs):
        raise AssertionError("the target was trained again")

    monkeypatch.setattr(module, trainer, no_training)
    on = load_recipe(schema, None, ["model.gradient_checkpointing=true"], base=data)
    again = pipeline.open_run(on, tmp_path / "run", "obliviate test")
    trained = pipeline.finetune_stage(on, again, pipeline.prepare_task(on, again),
                                      roles=("target",))
    assert trained["target"]["status"] == "done"
    other = load_recipe(schema, None, [defining], base=data)
    with pytest.raises(Exception, match="another recipe"):
        pipeline.open_run(other, tmp_path / "run", "obliviate test")


def test_keys_added_later_at_their_implicit_value_reuse_the_run(tmp_path, monkeypatch):
    """``model.dtype`` and ``finetune.master_weights`` came after runs were recorded without
    them: at float32 such a run reopens and its target is reused (what defines the run and the
    stage's inputs leaves them out); another dtype is another run, other master weights
    another fine-tuning."""
    schema, data, pipeline, (module, trainer) = _modality("llm")
    recipe = load_recipe(schema, None, base=data)
    run = pipeline.open_run(recipe, tmp_path / "run", "obliviate test")
    pipeline.finetune_stage(recipe, run, pipeline.prepare_task(recipe, run), roles=("target",))
    record = json.loads((run.root / "run.json").read_text())
    inputs = record["stages"]["finetune_target"]["inputs"]
    assert "master_weights" not in inputs["finetune"] and "dtype" not in inputs["model"]
    del record["recipe"]["model"]["dtype"], record["recipe"]["finetune"]["master_weights"]
    (run.root / "run.json").write_text(json.dumps(record))  # as an older run recorded it

    calls = []
    monkeypatch.setattr(module, trainer, lambda *a, **k: calls.append(1) or {"status": "done"})
    again = pipeline.open_run(recipe, tmp_path / "run", "obliviate test")
    pipeline.finetune_stage(recipe, again, pipeline.prepare_task(recipe, again), roles=("target",))
    assert calls == []  # reused, not trained again
    masters = load_recipe(schema, None, ["finetune.master_weights=model"], base=data)
    pipeline.finetune_stage(masters, pipeline.open_run(masters, tmp_path / "run", "obliviate"),
                            pipeline.prepare_task(masters, again), roles=("target",))
    assert calls == [1]  # what the stage computes changed: it runs again
    bf16 = load_recipe(schema, None, ["model.dtype=bfloat16"], base=data)
    with pytest.raises(Exception, match="another recipe"):
        pipeline.open_run(bf16, tmp_path / "run", "obliviate test")
