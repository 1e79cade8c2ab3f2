"""Deletion requests over time for diffusion (core/requests.py on the diffusion pipeline): three
requests, one digit class each, on the tiny 8×8 digits model. After request i the judge no
longer recognises the digits of requests 1..i in the unlearned model's samples, while the
classes still to be requested stay as the target drew them; every request has its oracle."""

from __future__ import annotations

import json

import pytest
import yaml

FORGET = [0, 4, 6]
RECIPE = {
    "name": "tiny-digits-requests",
    "modality": "diffusion",
    "task": {"dataset": "digits", "image_size": 8, "forget_classes": FORGET},
    "model": {"channels": [16, 32], "cond_dim": 16, "time_dim": 32, "sample_steps": 10},
    "finetune": {"steps": 400, "batch_size": 32, "learning_rate": 3e-3, "warmup_steps": 20,
                 "checkpoint_every": 1000, "log_every": 100},
    "unlearn": {"methods": ["uce"], "requests": {"count": 3}},
    "evaluation": {"samples_per_class": 12, "sample_steps": 10, "grid_per_class": 0,
                   "kid_subset_size": 8, "kid_subsets": 2,
                   "judge": {"epochs": 15, "learning_rate": 5e-3}},
}
ACCURACY = "generation/classes/accuracy_{}"


def _invoke(*args: str) -> None:
    from typer.testing import CliRunner

    from obliviate.cli.main import app

    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("diffusion_requests")
    recipe = root / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    out = root / "run"
    _invoke("finetune", str(recipe), "-o", str(out))
    _invoke("eval", "run", str(recipe), "-o", str(out), "-m", "target")
    _invoke("unlearn", str(recipe), "-o", str(out))
    return out


def test_each_request_forgets_its_class_and_earlier_ones_stay_forgotten(run):
    stages = json.loads((run / "run.json").read_text())["stages"]
    before = stages["eval_target"]["summary"]
    known = [c for c in FORGET if before[ACCURACY.format(c)] >= 0.6]
    assert len(known) >= 2, f"the tiny target must draw the forget digits: {before}"
    from obliviate.core.recipe import RequestsConfig
    from obliviate.core.requests import request_parts
    from obliviate.diffusion.recipe import DiffusionRecipe
    from obliviate.diffusion.task import build_task, forget_classes

    # one class per request: a class is deleted whole, and each request forgets its own
    task = build_task(DiffusionRecipe.model_validate(RECIPE).task)
    parts = request_parts(task, RequestsConfig(count=3))
    per_request = [sorted({r.label for r in part}) for part in parts]
    assert sorted(c for classes in per_request for c in classes) == FORGET
    assert all(len(classes) == 1 for classes in per_request), per_request
    order = [classes[0] for classes in per_request]
    summary = json.loads((run / "requests" / "requests.json").read_text())
    for i in (1, 2, 3):
        recorded = json.loads((run / "requests" / f"r{i}" / "task.json").read_text())
        assert recorded["metadata"]["request"] == i
        sub = json.loads((run / "requests" / f"r{i}" / "run.json").read_text())["stages"]
        assert sub["finetune_oracle"]["status"] == "done"  # this request's oracle
        assert sub["unlearn_uce"]["target"].endswith(
            "models/target" if i == 1 else f"r{i - 1}/models/unlearned/uce")
        assert summary["requests"][i - 1]["n"] == len(parts[i - 1])
    from obliviate.core.requests import request_task

    assert forget_classes(request_task(task, parts, 2)) == [order[1]]
    assert [s["request"] for s in summary["after"]] == [1, 2, 3]
    for i, step in enumerate(summary["after"], 1):
        after = step["models"]["unlearned/uce"]
        for j, c in enumerate(order, 1):
            if c not in known:
                continue
            acc = after[ACCURACY.format(c)]
            if j <= i:  # requested by now: forgotten, and kept forgotten
                assert acc <= before[ACCURACY.format(c)] - 0.4, (i, c, acc, before)
            else:  # still to come: drawn as before
                assert acc >= before[ACCURACY.format(c)] - 0.3, (i, c, acc, before)
        assert "oracle" in step["models"]
    assert (run / "requests" / "requests.png").is_file()
