"""``obliviate recipe show``: every key of a recipe, walked from its typed configs, with the
methods' and attacks' own settings."""

from __future__ import annotations

from pydantic import BaseModel
from typer.testing import CliRunner

from obliviate.cli.common import load_any_recipe
from obliviate.cli.main import app
from obliviate.core.benchmark import TaskSection


def keys(config: BaseModel, prefix: str = "") -> list[str]:
    out = []
    for name in type(config).model_fields:
        value = getattr(config, name)
        if isinstance(config, TaskSection) and name == "settings":  # set as task.<key>
            out += keys(value, prefix)
            continue
        out += keys(value, f"{prefix}{name}.") if isinstance(value, BaseModel) \
            else [f"{prefix}{name}"]
    return out


def test_recipe_show_lists_every_key_with_type_value_and_default():
    result = CliRunner().invoke(app, ["recipe", "show", "mnist", "task.image_size=8"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:] if line.strip()}
    for key in keys(load_any_recipe("mnist", [])):
        assert key in lines, key
    assert lines["task.image_size"].split()[1:4] == ["int", "8", "16"]  # type, value, default
    assert "side of the square images" in lines["task.image_size"]  # the field's description
    assert "a registered benchmark" in lines["task.benchmark"]
    assert lines["unlearn.method_args.esd_x.ddim_steps"].split()[2] == "25"
    assert "unlearn.method_args.uce.seed" in lines
    assert "attack.options.relearning.steps" in lines


def test_a_methods_own_training_setting_is_shown_as_a_run_resolves_it():
    """wmdp's recipe gives RMU its own learning rate in ``unlearn.method_args.rmu``: a training
    setting for RMU alone, not an RMU hyperparameter, so `recipe show` lists RMU's settings
    without refusing the key."""
    result = CliRunner().invoke(app, ["recipe", "show", "wmdp"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:] if line.strip()}
    assert "unlearn.method_args.rmu.steering_coeff" in lines
    assert "unlearn.method_args.rmu.learning_rate" not in lines


def _shown(*args: str) -> dict[str, str]:
    result = CliRunner().invoke(app, ["recipe", "show", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return {line.split()[0]: line for line in result.stdout.splitlines()[1:] if line.strip()}


def test_a_sweep_or_search_recipe_shows_its_sections_keys_too():
    """The sweep and search sections are read by `obliviate sweep` / `search`, beside the
    recipe they vary; `recipe show` lists both, overrides applied."""
    lines = _shown("search_demo", "search.trials=5")
    assert lines["search.trials"].split()[1:3] == ["int", "5"]
    assert "'tpe'" in lines["search.sampler"]
    assert "sweep.seeds" in lines and "sweep.grid" in lines
    assert "unlearn.method_args.npo.alpha" in lines  # the recipe itself, as a run reads it
    lines = _shown("sweep_demo")
    assert "sweep.rule" in lines and not any(key.startswith("search.") for key in lines)
    lines = _shown("sweep_demo", "sweep=null")  # the recipe the sweep varies, alone
    assert "unlearn.methods" in lines and not any(key.startswith("sweep.") for key in lines)


def test_a_benchmark_scripts_own_recipe_is_shown_with_its_schema():
    """styles_objects.yaml is run by benchmarks/styles_objects/run.py with the benchmark's own
    schema (two tasks, a text model, a judge), not the diffusion commands' recipe."""
    lines = _shown("styles_objects", "model.text_width=16")
    assert lines["model.text_width"].split()[1:3] == ["int", "16"]
    assert "judge.epochs" in lines and "tasks" in lines
    assert lines["unlearn.method_args.esd_x.ddim_steps"].split()[2] == "10"
