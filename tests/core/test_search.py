"""Multi-objective search, the results store and Ray for real: hypervolume by hand, the space a
typed config declares, a study killed with SIGKILL and finished without repeating a finished
trial, 4 trials on a real local Ray runtime equal to the local executor's, and a seeded
12-trial search on a tiny model against a 12-cell grid over the same space."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import obliviate.llm.methods  # noqa: F401  (registers the catalogue the space derives from)
from obliviate.cli.main import app
from obliviate.core.errors import ConfigError
from obliviate.core.hypervolume import front_indices, hypervolume, hypervolume_curve
from obliviate.core.report import write_report
from obliviate.core.search import SearchSpec, derived_space, method_space, run_search
from obliviate.core.store import ResultsStore, ingest_run, open_many, store_path
from obliviate.core.sweep import SweepSpec, load_results, run_sweep

LR = "unlearn.train.learning_rate"


# -- hypervolume, by hand --------------------------------------------------------------------
def test_hypervolume_matches_hand_computed_areas_and_volumes():
    # two boxes [0,1]x[0,2] and [0,2]x[0,1] overlap in [0,1]^2: 2 + 2 - 1
    assert hypervolume([(1, 2), (2, 1)], (0, 0)) == pytest.approx(3.0)
    # a dominated point and a point below the reference add nothing
    assert hypervolume([(1, 2), (2, 1), (0.5, 0.5), (3, -1)], (0, 0)) == pytest.approx(3.0)
    assert hypervolume([(0.5, 0.5)], (0.5, 0)) == 0.0
    # 3-D: unit cube, then two 2x1x1 / 1x2x1 boxes sharing the unit cube: 2 + 2 - 1
    assert hypervolume([(1, 1, 1)], (0, 0, 0)) == pytest.approx(1.0)
    assert hypervolume([(2, 1, 1), (1, 2, 1)], (0, 0, 0)) == pytest.approx(3.0)
    # a reference point other than the origin shifts every box
    assert hypervolume([(3, 3)], (1, 2)) == pytest.approx(2.0)
    assert hypervolume_curve([(1, 1), (2, 0.5), (0.5, 0.5)], (0, 0)) == pytest.approx(
        [1.0, 1.5, 1.5])
    assert front_indices([(1, 1), (2, 0.5), (0.5, 0.5), (1, 1)]) == [0, 1, 3]


# -- the results store -------------------------------------------------------------------------
def test_store_rows_are_queryable_exportable_and_merged_across_runs(tmp_path):
    for run, lr in (("a", 0.001), ("b", 0.01)):
        with ResultsStore(store_path(tmp_path / run)) as store:
            for seed in (0, 1):
                store.write({"run_dir": str(tmp_path / run), "kind": "cell",
                             "name": f"npo-{seed}", "method": "npo", "seed": seed,
                             "params": {LR: lr}, "metrics": {"tofu/forget/prob": lr * 10 + seed},
                             "seconds": 1.5})
            # writing the same key again replaces the row
            store.write({"run_dir": str(tmp_path / run), "kind": "cell", "name": "npo-1",
                         "method": "npo", "seed": 1, "params": {LR: lr},
                         "metrics": {"tofu/forget/prob": lr * 10 + 1}})
    merged = open_many([tmp_path / "a", tmp_path / "b"])
    rows = merged.query(
        "SELECT run_dir, AVG(json_extract(metrics, '$.\"tofu/forget/prob\"')) AS p, COUNT(*) "
        "AS n FROM results GROUP BY run_dir ORDER BY run_dir")
    assert [(Path(r["run_dir"]).name, r["n"]) for r in rows] == [("a", 2), ("b", 2)]
    assert [r["p"] for r in rows] == pytest.approx([0.51, 0.6])
    assert merged.rows("cell")[0]["params"] == {LR: 0.001}  # JSON columns come back decoded
    csv = pd.read_csv(merged.export(tmp_path / "all.csv"))
    parquet = pd.read_parquet(merged.export(tmp_path / "all.parquet"))
    assert len(csv) == len(parquet) == 4
    assert sorted(parquet["metric:tofu/forget/prob"]) == pytest.approx([0.01, 0.1, 1.01, 1.1])
    with pytest.raises(ConfigError, match=".csv or .parquet"):
        merged.export(tmp_path / "all.xlsx")
    cli = CliRunner().invoke(app, ["results", str(tmp_path / "a"), str(tmp_path / "b"),
                                   "--sql", "SELECT name, seed FROM results ORDER BY seed",
                                   "--export", str(tmp_path / "cli.csv")])
    assert cli.exit_code == 0, cli.stderr
    assert len(pd.read_csv(tmp_path / "cli.csv")) == 4 and "npo-1" in cli.stdout
    with pytest.raises(ConfigError, match="unknown column"):
        merged.write({"run_dir": "x", "kind": "cell", "name": "y", "colour": "red"})


def test_a_finished_run_directory_is_ingested_from_its_record(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"seed": 3, "stages": {
        "eval_oracle": {"status": "done", "summary": {"tofu/forget/prob": 0.2, "note": "x"},
                        "weights_sha256": "ab"},
        "eval_unlearned/npo": {"status": "done", "summary": {"tofu/forget/prob": 0.3}},
        "eval_unlearned/kl": {"status": "running"}}}))
    store = ingest_run(run)
    rows = {r["name"]: r for r in store.rows("model")}
    assert set(rows) == {"oracle", "unlearned/npo"}
    assert rows["unlearned/npo"]["method"] == "npo" and rows["oracle"]["seed"] == 3
    assert rows["oracle"]["metrics"] == {"tofu/forget/prob": 0.2}
    assert rows["oracle"]["hashes"] == {"weights_sha256": "ab"}
    ingest_run(run)  # idempotent
    assert len(ResultsStore(store_path(run)).rows()) == 2


# -- the space a typed config declares ----------------------------------------------------------
def test_the_space_comes_from_the_methods_typed_config_and_the_recipe():
    from obliviate.core.registry import METHODS

    npo = METHODS.get("npo", "llm").config_class
    space = derived_space(npo)
    beta = npo.model_fields["beta"].default
    assert space["beta"].log and space["beta"].low == pytest.approx(beta / 10)
    assert space["beta"].high == pytest.approx(beta * 10)
    assert "seed" not in space
    spec = SearchSpec.model_validate({"methods": {"npo": {"beta": [0.05, 0.1]}},
                                      "shared": {LR: {"low": 1e-4, "high": 1e-2, "log": True}}})
    full = method_space(spec, "npo", "llm")
    assert full["unlearn.method_args.npo.beta"] == [0.05, 0.1] and full[LR].high == 1e-2
    with pytest.raises(ValueError, match="below high"):
        SearchSpec.model_validate({"methods": ["npo"], "shared": {LR: {"low": 1, "high": 1}}})
    with pytest.raises(ConfigError, match="unknown method 'nop'"):
        method_space(SearchSpec.model_validate({"methods": ["nop"]}), "nop", "llm")


# -- a deterministic stand-in for a trial's metrics -------------------------------------------
def toy_metrics(overrides: dict) -> dict[str, float]:
    lr = overrides[LR]
    return {"forgetting": 1 - math.exp(-300 * lr), "utility": math.exp(-80 * lr)}


def toy_objective(metrics):
    return {"forgetting": metrics.get("forgetting"), "utility": metrics.get("utility")}


def toy_runner(overrides: dict, directory: Path) -> dict[str, float]:
    return toy_metrics(overrides)


TOY = {"methods": {"npo": {}}, "shared": {LR: {"low": 1e-4, "high": 3e-2, "log": True}},
       "trials": 6, "methods_key": "unlearn.methods"}


def test_every_cell_and_trial_writes_its_row_as_it_finishes(tmp_path):
    run_sweep(SweepSpec.model_validate({"methods": ["npo"], "grid": {LR: [1e-3, 1e-2]}}),
              tmp_path, toy_runner, log=lambda _: None)
    spec = SearchSpec.model_validate({**TOY, "objectives": ["forgetting", "utility"]})
    summaries = run_search(spec, tmp_path, toy_runner, "llm", toy_objective,
                           log=lambda _: None)
    rows = ResultsStore(store_path(tmp_path)).rows()
    assert sorted(r["kind"] for r in rows) == ["cell"] * 2 + ["trial"] * 6
    trial_rows = {r["name"]: r for r in rows if r["kind"] == "trial"}
    for trial in summaries["npo"]["trials"]:
        row = trial_rows[trial["cell_ids"][0]]
        assert row["params"] == trial["params"]
        assert [row["metrics"]["forgetting"], row["metrics"]["utility"]] == trial["values"]
    curve = summaries["npo"]["hypervolume_curve"]
    assert len(curve) == 6 and curve == sorted(curve)  # a front never loses volume
    assert summaries["npo"]["reference_point"] == [0.0, 0.0]


KILLED_SCRIPT = """
import math, os, signal, sys
from pathlib import Path
import obliviate.llm.methods  # registers the catalogue the space is derived from
from obliviate.core.search import SearchSpec, run_search

log_file, root, kill_at = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
LR = "unlearn.train.learning_rate"

def runner(overrides, directory):
    with log_file.open("a") as f:
        f.write(directory.name + "\\n")
    if len(log_file.read_text().split()) == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)  # the process dies in the middle of a trial
    lr = overrides[LR]
    return {"forgetting": 1 - math.exp(-300 * lr), "utility": math.exp(-80 * lr)}

spec = SearchSpec.model_validate({SPEC})
run_search(spec, root, runner, "llm",
           lambda m: {"forgetting": m["forgetting"], "utility": m["utility"]},
           log=lambda _: None)
"""


def test_a_killed_study_finishes_on_rerun_without_repeating_a_finished_trial(tmp_path):
    script = tmp_path / "search.py"
    script.write_text(textwrap.dedent(KILLED_SCRIPT).replace("{SPEC}", repr(TOY)))
    log = tmp_path / "calls.txt"
    root = tmp_path / "run"
    killed = subprocess.run([sys.executable, str(script), str(log), str(root), "4"],
                            capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    before = log.read_text().split()
    finished = {p.parent.name for p in (root / "sweep").glob("*/done")}
    assert len(before) == 4 and len(finished) == 3 and before[-1] not in finished

    again = subprocess.run([sys.executable, str(script), str(log), str(root), "0"],
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    after = log.read_text().split()[4:]
    assert not finished & set(after), "a finished trial ran again"
    assert after[0] == before[-1]  # the interrupted trial's setting is run again first
    summary = json.loads((root / "search" / "npo" / "tpe-seed0.json").read_text())
    assert len(summary["trials"]) == TOY["trials"]
    assert len({t["cell_ids"][0] for t in summary["trials"]}) == TOY["trials"]


# -- Ray, for real ------------------------------------------------------------------------------
def test_four_trials_on_a_real_local_ray_runtime_equal_the_local_executors(tmp_path):
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack tests/ on path
    spec = SearchSpec.model_validate({**TOY, "trials": 4, "parallel": 2})
    try:
        remote = run_search(spec, tmp_path / "ray", toy_runner, "llm", toy_objective,
                            executor="ray", num_cpus=2, log=lambda _: None)
        assert ray.is_initialized() and ray.available_resources().get("CPU", 0) <= 2
    finally:
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    local = run_search(spec, tmp_path / "local", toy_runner, "llm", toy_objective,
                       log=lambda _: None)

    def trials(summary):
        return sorted((t["cell_ids"][0], t["values"]) for t in summary["npo"]["trials"])

    assert len(trials(remote)) == 4 and trials(remote) == trials(local)
    assert remote["npo"]["hypervolume"] == local["npo"]["hypervolume"]


# -- a seeded search on a tiny model against a grid over the same space -----------------------
BETAS = [0.02, 0.2, 2.0]
LRS = [3e-4, 3e-4 * 100 ** (1 / 3), 3e-4 * 100 ** (2 / 3), 3e-2]
TINY = {
    "name": "tiny_search", "modality": "llm", "seed": 0,
    "task": {"source": "synthetic", "synthetic": {
        "num_people": 6, "facts_per_person": 2, "forget_people": 2, "holdout_people": 1}},
    "model": {"name_or_path": "tiny", "tiny": {
        "hidden_size": 64, "num_layers": 1, "num_heads": 2, "intermediate_size": 128,
        "vocab_size": 320}},
    "finetune": {"max_steps": 60, "learning_rate": 0.01},
    "unlearn": {"train": {"max_steps": 4}},
    "evaluation": {"suites": ["tofu"], "options": {"tofu": {"max_new_tokens": 8}}},
    "sweep": {"methods": {"npo": {"beta": BETAS}}, "grid": {LR: LRS}},
    "search": {"methods": {"npo": {"beta": {"low": 0.02, "high": 2.0, "log": True}}},
               "shared": {LR: {"low": 3e-4, "high": 3e-2, "log": True}},
               "trials": 12, "seed": 0},
}


def test_a_seeded_search_reaches_at_least_the_grids_hypervolume(tmp_path):
    """Seed 0, 12 trials (TPE, 4 random startup trials) against the 3 × 4 grid: the numbers
    are printed, and recorded in BENCHMARKS.md's search table."""
    from obliviate.core.axes import AxisMap
    from obliviate.core.modality_sweep import root_references
    from obliviate.core.search import split_search
    from obliviate.core.sweep import split_sweep
    from obliviate.llm import sweep as llm_sweep

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY, sort_keys=False))
    data = yaml.safe_load(recipe.read_text())
    root = tmp_path / "run"
    base, grid = split_sweep({k: v for k, v in data.items() if k != "search"})
    llm_sweep.sweep(base, grid, root, log=lambda _: None)
    base, spec = split_search({k: v for k, v in data.items() if k != "sweep"})
    run, summaries = llm_sweep.search(base, spec, root, log=lambda _: None)

    axes, refs = AxisMap.for_modality("llm"), root_references(run)
    grid_points = [[axes.score(r["metrics"], refs)[0][o] for o in spec.objectives]
                   for r in load_results(root) if r.get("kind", "cell") == "cell"]
    assert len(grid_points) == 12
    grid_hv = hypervolume(grid_points, spec.reference())
    search_hv = summaries["npo"]["hypervolume"]
    print(f"hypervolume: search {search_hv:.4f} vs grid {grid_hv:.4f} (seed {spec.seed})")
    assert len(summaries["npo"]["trials"]) == 12
    assert search_hv >= grid_hv > 0
    rows = ResultsStore(store_path(root)).rows()
    assert sum(r["kind"] == "trial" for r in rows) == 12
    assert run.read_record()["stages"]["search"]["status"] == "done"
    assert os.path.isfile(root / "search" / "study.db")

    # the report shows the search beside the grid, and a report across runs merges them
    html, data_path = write_report(root)
    data = json.loads(data_path.read_text())
    assert data["search"]["grid"]["npo"]["hypervolume"] == pytest.approx(grid_hv)
    assert data["search"]["studies"][0]["hypervolume"] == pytest.approx(search_hv)
    assert "Search: hypervolume against trials" in html.read_text()
    assert len(data["pareto"]["configurations"]) == 24  # the grid's 12 and the search's 12
    shutil.copytree(root, tmp_path / "copy", symlinks=True)
    across = CliRunner().invoke(app, ["report", str(root), str(tmp_path / "copy"), "-o",
                                      str(tmp_path / "across")])
    assert across.exit_code == 0, across.stderr
    merged = json.loads((tmp_path / "across" / "report.json").read_text())
    assert [r["name"] for r in merged["runs"]] == ["run", "copy"]
    assert [r["trials"] for r in merged["runs"]] == [12, 12]
    assert len(merged["pareto"]["configurations"]) == 48
    assert len(merged["leaderboard"]) == 2 * len(data["ranking"])
    # every cell and trial, and the target and oracle evaluations from each run's record
    assert len(pd.read_csv(tmp_path / "across" / "results.csv")) == 2 * (12 + 12 + 2)
