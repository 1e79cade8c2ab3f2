"""Diffusion sweeps (core/modality_sweep.py on the diffusion pipeline): `obliviate sweep` on the
tiny 8×8 digits model, 2 methods × 2 settings. Target and oracle are trained once in the root
run; every cell unlearns the shared target, is evaluated against the shared oracle, and carries
its cost against the oracle's fine-tuning; the report's front is the brute-force Pareto front."""

from __future__ import annotations

import json

import pytest
import yaml

RECIPE = {
    "name": "tiny-digits-sweep",
    "modality": "diffusion",
    "task": {"dataset": "digits", "image_size": 8, "forget_classes": [3]},
    "model": {"channels": [16, 32], "cond_dim": 16, "time_dim": 32, "sample_steps": 10},
    "finetune": {"steps": 300, "batch_size": 32, "learning_rate": 3e-3, "warmup_steps": 20,
                 "checkpoint_every": 1000, "log_every": 100},
    "unlearn": {"methods": ["uce"]},
    "evaluation": {"samples_per_class": 8, "sample_steps": 10, "grid_per_class": 0,
                   "kid_subset_size": 8, "kid_subsets": 2,
                   "judge": {"epochs": 15, "learning_rate": 5e-3}},
    "sweep": {"methods": {"uce": {"lamb": [0.1, 10.0]},
                          "grad_ascent": {"steps": [2, 20], "learning_rate": [1e-3]}},
              "seeds": [0]},
}
CELLS = 4


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    import torch
    from typer.testing import CliRunner

    from obliviate.cli.main import app

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("diffusion_sweep")
    recipe = root / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    out = root / "run"
    result = CliRunner().invoke(app, ["sweep", str(recipe), "-o", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def test_a_diffusion_sweep_runs_every_cell_against_one_target_and_oracle(swept):
    from obliviate.core.sweep import load_results

    results = load_results(swept)
    assert len(results) == CELLS and {r["method"] for r in results} == {"uce", "grad_ascent"}
    for r in results:
        metrics = r["metrics"]
        assert {"generation/forget/unlearning_accuracy", "generation/retain/retain_accuracy",
                "generation/retain/fid", "cost/seconds_ratio"} <= set(metrics), sorted(metrics)
        assert "generation/retain/retain_accuracy_oracle_gap" in metrics  # the shared oracle
        cell = swept / "sweep" / r["cell_id"]
        assert not (cell / "models" / "target").exists()  # one target, in the root
        assert (cell / "models" / "oracle").is_symlink()

    def by(method, key):
        return {r["params"][f"unlearn.method_args.{method}.{key}"]: r["metrics"]
                for r in results if r["method"] == method}

    # each cell's settings reach its method: 20 ascent steps at lr 1e-3 damage the retained
    # digits far more than 2 do; UCE held 100x closer to W0 (lamb 10) erases less
    ascent, uce = by("grad_ascent", "steps"), by("uce", "lamb")
    assert ascent[20]["generation/retain/retain_accuracy"] < \
        ascent[2]["generation/retain/retain_accuracy"] - 0.3
    assert uce[10.0]["generation/forget/unlearning_accuracy"] <= \
        uce[0.1]["generation/forget/unlearning_accuracy"]

    report = json.loads((swept / "report" / "report.json").read_text())
    configs = report["pareto"]["configurations"]
    assert len(configs) == CELLS

    def scores(c):
        return (c["mean"]["forgetting"], c["mean"]["utility"])

    expected = [c["config_id"] for c in configs if not any(
        all(a >= b for a, b in zip(scores(o), scores(c), strict=True)) and scores(o) != scores(c)
        for o in configs)]
    assert report["pareto"]["front"] == expected and expected
