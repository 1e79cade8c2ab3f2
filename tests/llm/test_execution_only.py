"""Keys that change how an LLM runs, never what it computes, do not define the run."""

from __future__ import annotations

import json

import pytest
import torch

from obliviate.core.recipe import load_recipe
from obliviate.llm import pipeline
from obliviate.llm.recipe import LLMRecipe

torch.set_num_threads(1)

TINY = ["model.tiny.hidden_size=32", "model.tiny.num_layers=1", "model.tiny.num_heads=2",
        "model.tiny.intermediate_size=64", "finetune.epochs=1", "task.synthetic.num_people=6",
        "task.synthetic.forget_people=1", "task.synthetic.holdout_people=1"]


def test_gradient_checkpointing_reuses_the_llm_run_as_it_is(tmp_path, monkeypatch):
    """A run made before the key existed (its recorded recipe lacks it) reopens with
    ``model.gradient_checkpointing`` on, and its fine-tuned target is reused, not trained
    again; a key that defines the model still refuses the run."""
    recipe = load_recipe(LLMRecipe, None, TINY, base={"name": "ckpt", "modality": "llm"})
    run = pipeline.open_run(recipe, tmp_path / "run", "obliviate test")
    pipeline.finetune_stage(recipe, run, pipeline.prepare_task(recipe, run), roles=("target",))
    record = json.loads((run.root / "run.json").read_text())
    del record["recipe"]["model"]["gradient_checkpointing"]  # as an older run recorded it
    (run.root / "run.json").write_text(json.dumps(record))

    def no_training(*args, **kwargs):
        raise AssertionError("the target was trained again")

    monkeypatch.setattr(pipeline, "finetune", no_training)
    on = load_recipe(LLMRecipe, None, [*TINY, "model.gradient_checkpointing=true"],
                     base={"name": "ckpt", "modality": "llm"})
    again = pipeline.open_run(on, tmp_path / "run", "obliviate test")
    trained = pipeline.finetune_stage(on, again, pipeline.prepare_task(on, again),
                                      roles=("target",))
    assert trained["target"]["status"] == "done"
    other = load_recipe(LLMRecipe, None, [*TINY, "model.max_length=64"],
                        base={"name": "ckpt", "modality": "llm"})
    with pytest.raises(Exception, match="another recipe"):
        pipeline.open_run(other, tmp_path / "run", "obliviate test")
