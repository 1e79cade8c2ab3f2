"""The recipe's top-level ``seed`` moves every training's seed in both modalities: the
fine-tuning's data order, ``unlearn.train``'s and each method's own draws, and the judge's; so a
run at ``seed=1`` re-draws them all, and ``seed=0`` leaves every section's seed as written."""

from __future__ import annotations

import pytest
import torch

from obliviate.core.recipe import load_recipe
from obliviate.diffusion import pipeline as diffusion_pipeline
from obliviate.diffusion.recipe import DiffusionRecipe
from obliviate.llm import pipeline as llm_pipeline
from obliviate.llm.recipe import LLMRecipe

torch.set_num_threads(1)

LLM = {"name": "seeds", "modality": "llm",
       "finetune": {"epochs": 1, "learning_rate": 3e-3, "batch_size": 4},
       "model": {"tiny": {"hidden_size": 16, "num_layers": 1, "num_heads": 2,
                          "intermediate_size": 32}},
       "task": {"synthetic": {"num_people": 4, "forget_people": 1, "holdout_people": 1}},
       "unlearn": {"methods": ["grad_diff"], "train": {"epochs": 1, "batch_size": 4}}}
DIFFUSION = {"name": "seeds", "modality": "diffusion",
             "task": {"dataset": "digits", "image_size": 8, "forget_classes": [0]},
             "unlearn": {"methods": ["esd_x"]}}


@pytest.mark.parametrize("seed, overrides, expected", [
    (0, [], 0), (3, [], 3),
    (3, ["unlearn.train.seed=2", "unlearn.method_args.grad_diff.seed=2"], 5)])
def test_an_llm_methods_training_and_own_draws_follow_the_recipe_seed(seed, overrides, expected):
    recipe = load_recipe(LLMRecipe, None, [f"seed={seed}", *overrides], base=LLM)
    cls, config = llm_pipeline.method_config(recipe, "grad_diff")
    train, _ = llm_pipeline.method_train(recipe, "grad_diff", cls)
    assert (config.seed, train.seed) == (expected, expected)
    assert recipe.unlearn.train.seed == expected - seed  # the recipe itself is not changed


@pytest.mark.parametrize("seed, overrides, expected", [
    (0, [], 0), (4, [], 4), (4, ["unlearn.method_args.esd_x.seed=1"], 5)])
def test_a_diffusion_methods_seed_follows_the_recipe_seed(seed, overrides, expected):
    recipe = load_recipe(DiffusionRecipe, None, [f"seed={seed}", *overrides], base=DIFFUSION)
    _, config = diffusion_pipeline.method_config(recipe, "esd_x")
    assert config.seed == expected


def test_the_fine_tuning_and_unlearning_record_the_seed_they_trained_with(tmp_path):
    recipe = load_recipe(LLMRecipe, None, ["seed=2", "finetune.seed=1"], base=LLM)
    run = llm_pipeline.open_run(recipe, tmp_path / "run", "obliviate test")
    task = llm_pipeline.prepare_task(recipe, run)
    llm_pipeline.finetune_stage(recipe, run, task, roles=("target",))
    llm_pipeline.unlearn_stage(recipe, run, task)
    stages = run.read_record()["stages"]
    assert stages["finetune_target"]["config"]["train"]["seed"] == 3
    # a run at another seed names the seed it trained with, so an older run's target (trained
    # before the offset) is not taken as this one's; at seed 0 the inputs stay as they were
    assert stages["finetune_target"]["inputs"]["finetune_seed"] == 3
    assert stages["unlearn_grad_diff"]["train"]["seed"] == 2
    assert stages["unlearn_grad_diff"]["config"]["seed"] == 2



def test_loading_a_recipe_with_overrides_leaves_the_callers_base_as_it_was():
    base = {"unlearn": {"train": {"epochs": 1}}}
    recipe = load_recipe(LLMRecipe, None, ["unlearn.train.seed=7"], base=base)
    assert recipe.unlearn.train.seed == 7
    assert base == {"unlearn": {"train": {"epochs": 1}}}


def test_a_seed_0_fine_tuning_records_the_inputs_it_always_did(tmp_path):
    recipe = load_recipe(LLMRecipe, None, base=LLM)
    run = llm_pipeline.open_run(recipe, tmp_path / "run", "obliviate test")
    task = llm_pipeline.prepare_task(recipe, run)
    llm_pipeline.finetune_stage(recipe, run, task, roles=("oracle",))
    inputs = run.read_record()["stages"]["finetune_oracle"]["inputs"]
    assert set(inputs) == {"model", "finetune", "seed", "data"}
