"""The pipeline's stage functions end to end on a tiny recipe, resumption by skipping, and the
CLI dispatching to this modality."""

from __future__ import annotations

import pytest
import yaml

from obliviate.core.errors import ConfigError
from obliviate.core.recipe import load_recipe
from obliviate.core.result import AttackResult, EvalResult
from obliviate.diffusion import pipeline
from obliviate.diffusion.recipe import DiffusionRecipe

TINY_RECIPE = {
    "name": "tiny-digits",
    "modality": "diffusion",
    "task": {"dataset": "digits", "image_size": 8, "forget_classes": [0], "max_per_class": 40},
    "model": {"channels": [16, 32], "cond_dim": 16, "time_dim": 32, "sample_steps": 5},
    "finetune": {"steps": 12, "batch_size": 16, "checkpoint_every": 5, "log_every": 4},
    "unlearn": {"methods": ["uce", "esd_x"], "train": {"steps": 2},
                "method_args": {"esd_x": {"batch_size": 2, "ddim_steps": 4}}},
    "evaluation": {"samples_per_class": 4, "sample_steps": 4, "grid_per_class": 3,
                   "kid_subset_size": 8, "kid_subsets": 2, "judge": {"epochs": 2}},
    "attack": {"probe": {"samples": 4, "sample_steps": 4},
               "options": {"embedding": {"steps": 2, "images": 4, "batch_size": 4},
                           "relearning": {"steps": 2, "curve": [1], "images": 4,
                                          "batch_size": 4},
                           "concept_vector": {"strengths": [1.0, 3.0]}}},
}


@pytest.fixture
def recipe_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_RECIPE))
    return path


def test_recipe_validation(recipe_file):
    recipe = load_recipe(DiffusionRecipe, recipe_file, ["unlearn.method_args.uce.lamb=0.5"])
    assert recipe.modality == "diffusion" and recipe.unlearn.method_args["uce"]["lamb"] == 0.5
    with pytest.raises(ConfigError, match="task.image_sise"):
        load_recipe(DiffusionRecipe, recipe_file, ["task.image_sise=8"])
    bad = load_recipe(DiffusionRecipe, recipe_file, ["unlearn.method_args.uce.lamb=-1"])
    with pytest.raises(ConfigError, match="unlearn.method_args.uce: lamb"):
        pipeline.method_config(bad, "uce")
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        pipeline.method_config(bad, "nope")


def test_stages_end_to_end(recipe_file, tmp_path):
    recipe = load_recipe(DiffusionRecipe, recipe_file)
    run = pipeline.open_run(recipe, tmp_path / "run", "obliviate test")
    task = pipeline.prepare_task(recipe, run)
    assert task.modality == "diffusion" and (run.root / "task.json").is_file()

    trained = pipeline.finetune_stage(recipe, run, task)
    assert set(trained) == {"target", "oracle", "judge"}
    for role in ("target", "oracle", "judge"):
        assert {"model_path", "final_loss", "seconds"} <= set(trained[role])
    assert trained["oracle"]["split"]["name"] == "retain"
    assert trained["target"]["split"]["n"] == len(task.full)
    assert not run.checkpoints("target").exists()

    unlearned = pipeline.unlearn_stage(recipe, run, task)
    assert set(unlearned) == {"uce", "esd_x"}
    assert unlearned["esd_x"]["steps"] == 2 and unlearned["uce"]["steps"] == 0
    assert all({"output", "steps", "seconds"} <= set(r) for r in unlearned.values())

    summaries = pipeline.evaluate_stage(recipe, run, task)
    assert list(summaries) == ["oracle", "target", "unlearned/esd_x", "unlearned/uce"]
    key = "generation/forget/unlearning_accuracy"
    assert all(key in s for s in summaries.values())
    assert "generation/forget/unlearning_accuracy_oracle_gap" in summaries["target"]
    assert "generation/forget/unlearning_accuracy_oracle_gap" not in summaries["oracle"]
    for name in summaries:
        assert (run.root / "eval" / name / "samples.png").is_file()
    result = EvalResult.load(run.root / "eval" / "target" / "generation.json")
    assert len(result.metrics["forget/forget_accuracy"].per_item) == 4

    attacked = pipeline.attack_stage(recipe, run, task)
    assert set(attacked) == {"target", "unlearned/esd_x", "unlearned/uce"}
    for by_attack in attacked.values():
        assert set(by_attack) == {"embedding", "concept_vector", "relearning"}
        for record in by_attack.values():
            assert {"metric", "plain", "attacked", "oracle_plain", "oracle_attacked",
                    "recovery", "output"} <= set(record)
            assert record["metric"] == "accuracy"
    saved = AttackResult.load(run.root / "attacks" / "unlearned" / "uce" / "relearning.json")
    assert [p["k"] for p in saved.curve] == [1, 2]

    # every stage is recorded and a second pass only reads the records
    stages = run.read_record()["stages"]
    assert all(s["status"] == "done" for s in stages.values())
    assert pipeline.finetune_stage(recipe, run, task)["target"] == trained["target"]
    assert pipeline.unlearn_stage(recipe, run, task) == unlearned
    assert pipeline.evaluate_stage(recipe, run, task) == summaries
    assert pipeline.attack_stage(recipe, run, task) == attacked

    # a different task in the same run directory is refused
    other = load_recipe(DiffusionRecipe, recipe_file, ["task.forget_classes=[1]"])
    with pytest.raises(Exception, match="different data"):
        pipeline.finetune_stage(other, run, pipeline.prepare_task(other, run))


def test_cli_dispatches_to_diffusion(recipe_file, tmp_path):
    from typer.testing import CliRunner

    from obliviate.cli.main import app

    out = str(tmp_path / "cli")
    runner = CliRunner()
    result = runner.invoke(app, ["finetune", str(recipe_file), "-o", out, "--role", "target"])
    assert result.exit_code == 0, result.output
    assert "target:" in result.output and "judge:" in result.output
    result = runner.invoke(app, ["unlearn", str(recipe_file), "-o", out, "-m", "uce"])
    assert result.exit_code == 0, result.output
    assert "uce:" in result.output
    result = runner.invoke(app, ["eval", "run", str(recipe_file), "-o", out])
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split()[:3] == ["model", "UA", "retain"]  # the diffusion columns
    target = next(r for r in rows if r.startswith("target")).split()[1:]
    assert len(target) == 5 and all(float(v) >= 0 for v in target)  # numbers, not dashes
    listed = runner.invoke(app, ["methods"])
    assert "diffusion" in listed.output and "esd_x" in listed.output


def test_the_modality_never_imports_llm():
    import subprocess
    import sys

    code = ("import sys, obliviate.diffusion.pipeline, obliviate.diffusion.methods, "
            "obliviate.diffusion.attacks, obliviate.diffusion.recipe\n"
            "bad = [m for m in sys.modules if m.startswith('obliviate.llm')]\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_several_methods_load_the_target_once_with_the_same_weights(recipe_file, tmp_path,
                                                                    monkeypatch):
    """One `obliviate unlearn` of two methods reads the target from disk once and gives each
    method its own copy: the saved weights equal those of a separate command per method."""
    import torch
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from obliviate.cli.main import app
    from obliviate.core import pristine

    runner = CliRunner()

    def invoke(*args):
        result = runner.invoke(app, [*args], catch_exceptions=False)
        assert result.exit_code == 0, result.output

    invoke("finetune", str(recipe_file), "-o", str(tmp_path / "ft"), "--role", "target")
    target = f"unlearn.target={tmp_path / 'ft' / 'models' / 'target'}"
    loads = []
    real = pipeline.load_target
    monkeypatch.setattr(pipeline, "load_target", lambda *a: loads.append(a[-1]) or real(*a))
    pristine.forget()
    invoke("unlearn", str(recipe_file), target, "-m", "uce", "-m", "esd_x",
           "-o", str(tmp_path / "both"))
    assert len(loads) == 1
    for method in ("uce", "esd_x"):
        pristine.forget()
        invoke("unlearn", str(recipe_file), target, "-m", method, "-o", str(tmp_path / method))
        folder = f"models/unlearned/{method}"
        together = sorted((tmp_path / "both" / folder).rglob("*.safetensors"))
        alone = sorted((tmp_path / method / folder).rglob("*.safetensors"))
        assert together and [p.name for p in together] == [p.name for p in alone]
        for a, b in zip(together, alone, strict=True):
            sa, sb = load_file(a), load_file(b)
            assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert len(loads) == 3
    pristine.forget()
