"""The styles × objects benchmark (a small UnlearnCanvas) at a tiny size: the task builds from
real MNIST digits, the two-head judge tells styles and digits apart on held-out images, the
packaged recipe loads, and the prompt attack reports rates without touching the model.

Bound: the judge beats chance by a wide margin on held-out digits (style > 0.6 against 0.25,
digit > 0.3 against 0.1). Erasure itself is measured by the benchmark (BENCHMARKS.md): a model
trained within this file's budget (300 steps) does not follow its style prompts well enough for
a judged erase-and-keep bound (ESD-x moved UA 0.43 -> 0.47 there).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import obliviate.diffusion.methods  # noqa: F401  (registers the catalogue)
from obliviate.core.errors import ConfigError
from obliviate.core.recipe import load_recipe
from obliviate.core.registry import BENCHMARKS, METHODS
from obliviate.diffusion.benchmarks.styles_objects import (
    STYLES,
    PromptAttackConfig,
    StylesObjectsConfig,
    StylesObjectsRecipe,
    TextModelConfig,
    build_text_model,
    grid_task,
    invert,
    prompt_attack,
    slant,
    stylise,
    thicken,
    train_grid_judge,
)
from obliviate.diffusion.judge import JudgeConfig

STYLE_TASK = StylesObjectsConfig(erase="style", target="inverted", per_object=30,
                                 image_size=12)


@pytest.fixture(scope="module")
def task():
    return grid_task(STYLE_TASK, seed=0)


@pytest.fixture(scope="module")
def judge(task):
    return train_grid_judge(task, JudgeConfig(epochs=10, batch_size=32))


def test_transforms_by_hand():
    x = np.zeros((1, 5, 5), np.uint8)
    x[0, 2, 2] = 200
    assert (thicken(x)[0, 1:4, 1:4] == 200).all() and thicken(x).sum() == 9 * 200
    assert (invert(x)[0] == 255 - x[0]).all()
    bar = np.zeros((1, 4, 4), np.uint8)
    bar[0, :, 1] = 100  # a vertical bar leans: the top row moves right, the bottom row left
    leaned = slant(bar, shear=1.0)  # row r moves by round(1.0 * (2 - r)): +2, +1, 0, -1
    assert [int(leaned[0, r].argmax()) for r in range(4)] == [3, 2, 1, 0]
    out = stylise(np.full((2, 28, 28), 10, np.uint8), "striped", 8)
    assert out.shape == (2, 1, 8, 8) and out.dtype == np.uint8
    assert (out[0, 0, :2] == 10).all() and (out[0, 0, 2:4] < 10).all()  # 2 rows kept, 2 dimmed


def test_the_task_builds(task):
    meta = task.metadata
    assert meta["num_classes"] == 4 * 10 and len(meta["prompts"]) == 40
    assert meta["prompts"][2 * 10 + 7] == "a digit seven, inverted"
    assert meta["forget_classes"] == list(range(20, 30))  # every prompt naming "inverted"
    assert {r.label for r in task.forget.records} == set(range(20, 30))
    assert not {r.label for r in task.retain.records} & set(range(20, 30))
    hold = task.eval_splits["holdout"].records
    assert len(hold) == 40 * 3 and len(task.full) == 40 * 27
    # a held-out digit is held out in every style: no source image on both sides
    source = lambda r: r.source.rsplit("/", 1)[0]  # noqa: E731
    assert not {source(r) for r in hold} & {source(r) for r in task.full.records}
    digit = grid_task(STYLE_TASK.model_copy(update={"erase": "object", "target": "seven"}))
    assert digit.metadata["forget_classes"] == [7, 17, 27, 37]
    hashes = [sorted(r.sha256 for r in t.full.records) for t in (digit, task)]
    assert hashes[0] == hashes[1]  # both tasks train on the same images
    with pytest.raises(ConfigError, match="task.target"):
        grid_task(STYLE_TASK.model_copy(update={"target": "bold"}))
    assert BENCHMARKS.get("styles_objects", "diffusion")().load(STYLE_TASK).name == task.name


def test_the_packaged_recipe_loads():
    from obliviate.cli.common import packaged_recipe

    recipe = load_recipe(StylesObjectsRecipe, packaged_recipe("styles_objects"),
                         ["unlearn.method_args.uce.lamb=0.2"])
    assert [t.erase for t in recipe.tasks] == ["style", "object"]
    assert set(recipe.data.styles) == set(STYLES)
    assert all(METHODS.get(m, "diffusion") for m in recipe.unlearn.methods)
    assert recipe.unlearn.method_args["uce"]["lamb"] == 0.2


def test_the_judge_tells_style_and_digit_apart(judge):
    _, info = judge
    assert info["holdout_size"] == 120
    assert info["holdout_style_accuracy"] > 0.6  # chance 0.25
    assert info["holdout_object_accuracy"] > 0.3  # chance 0.1


def test_the_prompt_attack_leaves_the_model_alone(task, judge, tmp_path):
    net, _ = judge
    model = build_text_model(task.metadata["prompts"], 12,
                             TextModelConfig(channels=[8, 16], sample_steps=2), tmp_path / "tok")
    assert model.text.tokenizer.tokenize("a digit seven, inverted") == [
        "a</w>", "digit</w>", "seven</w>", ",</w>", "inverted</w>"]  # one token a word
    weights = [p.detach().clone() for p in model.parameters()]
    result = prompt_attack(model, net, task, PromptAttackConfig(prompts=2, steps=2, images=4,
                                                                batch_size=2, samples=2))
    assert result["prompts"] == [20, 25]  # evenly spread over the 10 "inverted" prompts
    assert 0 <= result["plain"] <= 1 and 0 <= result["attacked"] <= 1
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters(), strict=True))


PIPELINE = {"name": "canvas", "modality": "diffusion",
            "task": {"benchmark": "styles_objects", "per_object": 6, "image_size": 8,
                     "erase": "object", "target": "7"},
            "model": {"architecture": "prompt_unet", "channels": [8, 16], "sample_steps": 3},
            "finetune": {"steps": 6, "batch_size": 16},
            "unlearn": {"methods": ["uce"]},
            "evaluation": {"samples_per_class": 3, "sample_steps": 3, "batch_size": 64,
                           "judge": {"epochs": 2}}}


def test_a_pipeline_run_scores_unlearncanvas_accuracies_with_a_two_head_judge(tmp_path):
    """The CLI's path: the judge gets a style head and a digit head, and the evaluation's UA /
    IRA / CRA equal what the benchmark script's grid evaluation computes on the same samples."""
    from obliviate.diffusion import pipeline
    from obliviate.diffusion.benchmarks.styles_objects import GridEvalConfig, evaluate_grid
    from obliviate.diffusion.recipe import DiffusionRecipe

    recipe = load_recipe(DiffusionRecipe, None, base=PIPELINE)
    run = pipeline.open_run(recipe, tmp_path / "run", "obliviate test")
    task = pipeline.prepare_task(recipe, run)
    pipeline.finetune_stage(recipe, run, task, roles=("target",))
    judge, _ = pipeline.ensure_judge(recipe, run, task)
    assert judge.factors == (4, 10)
    summary = pipeline.evaluate_stage(recipe, run, task, models=["target"])["target"]
    stages = run.read_record()["stages"]
    for stage in ("finetune_judge", "eval_target"):  # a run before the two heads re-runs these
        assert stages[stage]["inputs"]["factors"] == [4, 10], stage
    model = pipeline.load_target(recipe, run, task, run.model("target"))
    cfg = recipe.evaluation
    grid = evaluate_grid(model, judge, task, GridEvalConfig(
        samples_per_prompt=cfg.samples_per_class, sample_steps=cfg.sample_steps,
        guidance_scale=cfg.guidance_scale, batch_size=cfg.batch_size, seed=cfg.seed))
    for name in ("ua", "ira", "cra"):
        assert summary[f"generation/classes/{name}"] == pytest.approx(grid[name]), name
    assert summary["generation/retain/fid"] == pytest.approx(grid["fid"], rel=1e-6)
    assert len({round(grid[n], 6) for n in ("ua", "ira", "cra")}) > 1  # not one constant


def test_the_cli_points_the_multi_task_recipe_to_its_script(tmp_path):
    from typer.testing import CliRunner

    from obliviate.cli.main import app

    out = CliRunner().invoke(app, ["finetune", "styles_objects", "--output", str(tmp_path)])
    assert out.exit_code != 0
    assert "benchmarks/styles_objects/run.py" in out.output
    assert "task.benchmark: styles_objects" in out.output
    assert not any(tmp_path.iterdir())  # nothing was written


def _fixed_judge(style: int, digit: int):
    """A two-head judge that calls every image style ``style`` and digit ``digit``."""
    from obliviate.diffusion.judge import JudgeNet

    net = JudgeNet(1, 40, 12, factors=(4, 10))
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.zero_()
        net.head.bias[style] = 5.0
        net.head.bias[4 + digit] = 5.0
    return net.eval()


@pytest.mark.parametrize(("erase", "target", "style", "digit", "expected"), [
    ("style", "inverted", 2, 0, 1.0),   # the style head sees "inverted" in every image
    ("style", "inverted", 1, 0, 0.0),   # it sees "slanted": the style stays erased
    ("object", "7", 0, 7, 1.0),         # the digit head sees a seven, whatever the style
    ("object", "7", 2, 3, 0.0)])
def test_an_attack_succeeds_when_the_erased_domains_head_sees_the_target(
        erase, target, style, digit, expected):
    """UnlearnCanvas's attack success: the erased concept's head alone decides, so the whole
    (style, digit) class need not be right; the joint judge would count 1 in 10 or 1 in 4."""
    from obliviate.diffusion.attacks.base import AttackContext
    from obliviate.diffusion.judge import predict

    task = grid_task(STYLE_TASK.model_copy(update={"erase": erase, "target": target,
                                                   "per_object": 10}))
    judge = _fixed_judge(style, digit)
    ctx = AttackContext(task=task, model=None, model_name="m", oracle=None, judge=judge)
    labels = torch.tensor(task.metadata["forget_classes"])
    images = torch.zeros(len(labels), 1, 12, 12)
    assert ctx.hits(images, labels).tolist() == [expected] * len(labels)
    joint = (predict(judge, images) == labels).float().mean()
    assert joint <= 0.25 + 1e-6  # the whole-class verdict would be another number


def test_the_report_keeps_both_retain_accuracies_on_its_utility_axis():
    """UnlearnCanvas's utility is IRA and CRA: a method that keeps the other styles but loses
    the digits must not score as if it kept everything."""
    from obliviate.core.axes import AxisMap, References

    def summary(ua, ira, cra):
        return {"generation/classes/ua": ua, "generation/classes/ira": ira,
                "generation/classes/cra": cra}

    axes = AxisMap.for_benchmark("diffusion", "styles_objects")
    refs = References(oracle=summary(1.0, 1.0, 0.8), target=summary(0.0, 1.0, 0.8))
    scores, used = axes.score(summary(0.9, 1.0, 0.4), refs)
    assert scores["utility"] == pytest.approx((1.0 + 0.4 / 0.8) / 2)
    assert "*cra" in used["utility"]
    raw = AxisMap.for_benchmark("diffusion", "styles_objects", {"utility": "raw"})
    assert raw.score(summary(0.9, 1.0, 0.4), refs)[0]["utility"] == pytest.approx(0.7)
