"""Sweeps: the grid, resumable cells, executors, and a real LLM sweep on a tiny model
(4 methods × 3 learning rates × 2 seeds) that is killed with SIGKILL and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from obliviate.cli.main import app
from obliviate.core.errors import ConfigError, ObliviateError
from obliviate.core.pareto import dominates
from obliviate.core.sweep import (
    SweepSpec,
    cell_dir,
    expand,
    load_results,
    run_sweep,
    split_sweep,
)

METHODS = ["grad_ascent", "grad_diff", "npo", "simnpo"]
STRENGTHS = [0.0003, 0.003, 0.03]
SEEDS = [0, 1]
TINY_RECIPE = {
    "name": "tiny_sweep", "modality": "llm", "seed": 0,
    "task": {"source": "synthetic", "synthetic": {
        "num_people": 6, "facts_per_person": 2, "forget_people": 2, "holdout_people": 1}},
    "model": {"name_or_path": "tiny", "tiny": {
        "hidden_size": 64, "num_layers": 1, "num_heads": 2, "intermediate_size": 128,
        "vocab_size": 320}},
    "finetune": {"max_steps": 60, "learning_rate": 0.01},
    "unlearn": {"train": {"max_steps": 4}},
    "evaluation": {"options": {"tofu": {"max_new_tokens": 8}}},
    "sweep": {"methods": {m: {} for m in METHODS},
              "grid": {"unlearn.train.learning_rate": STRENGTHS}, "seeds": SEEDS},
}


# -- the grid and the executors, with a fake cell runner -------------------------------------
def spec(**kw) -> SweepSpec:
    return SweepSpec.model_validate({"methods": {"npo": {"beta": [0.1, 0.2]}, "grad_diff": {}},
                                     "grid": {"unlearn.train.learning_rate": [1e-3, 1e-2]},
                                     "seeds": [0, 1], **kw})


class Crash(BaseException):
    """Stands for the process dying (not an error a cell could catch and record)."""


def fake_runner(calls: list[str], crash_after: int | None = None, fail: str | None = None):
    def run_cell(overrides: dict, directory: Path) -> dict[str, float]:
        if crash_after is not None and len(calls) >= crash_after:
            raise Crash
        if fail is not None and directory.name.startswith(fail):
            raise ValueError("diverged")
        calls.append(directory.name)
        lr = overrides["unlearn.train.learning_rate"]
        return {"tofu/forget/prob": 1 - 10 * lr, "tofu/retain/prob": 1.0,
                "tofu/retain/rouge": 1.0 - lr}

    return run_cell


def test_grid_expansion_ids_and_keys():
    cells = expand(spec())
    assert len(cells) == (2 * 2 + 2) * 2  # npo: beta × lr, grad_diff: lr; two seeds each
    npo = [c for c in cells if c["method"] == "npo"]
    assert set(npo[0]["overrides"]) == {"unlearn.methods", "unlearn.method_args.npo.beta",
                                        "unlearn.train.learning_rate", "unlearn.train.seed",
                                        "unlearn.method_args.npo.seed"}
    assert npo[0]["overrides"]["unlearn.methods"] == ["npo"]
    assert npo[0]["config_id"] == npo[1]["config_id"] and npo[0]["seed"] != npo[1]["seed"]
    assert len({c["cell_id"] for c in cells}) == len(cells)
    assert [c["cell_id"] for c in expand(spec())] == [c["cell_id"] for c in cells]  # stable
    assert all(c["cell_id"].startswith(c["method"] + "-") for c in cells)
    listed = SweepSpec.model_validate({"methods": ["a", "b"]})
    assert listed.methods == {"a": {}, "b": {}}


def test_sweep_section_errors_name_the_key():
    with pytest.raises(ConfigError, match="no `sweep:` section"):
        split_sweep({"name": "x"})
    with pytest.raises(ConfigError, match="sweep: grid"):
        split_sweep({"sweep": {"methods": ["npo"], "grid": {"a.b": []}}})
    base, parsed = split_sweep({"name": "x", "sweep": {"methods": ["npo"]}})
    assert base == {"name": "x"} and parsed.seeds == [0]


def test_resume_after_a_crash_skips_finished_cells(tmp_path):
    calls: list[str] = []
    with pytest.raises(Crash):
        run_sweep(spec(), tmp_path, fake_runner(calls, crash_after=5), log=lambda _: None)
    assert len(calls) == 5 and len(load_results(tmp_path)) == 5
    first = {r["cell_id"]: r for r in load_results(tmp_path)}
    again: list[str] = []
    results = run_sweep(spec(), tmp_path, fake_runner(again), log=lambda _: None)
    assert len(again) == len(results) - 5 and not set(again) & set(calls)
    assert [r["status"] for r in results].count("skipped") == 5
    for cell_id, before in first.items():
        assert json.loads((cell_dir(tmp_path, cell_id) / "done").read_text()) == before
    clean: list[str] = []
    reference = run_sweep(spec(), tmp_path / "clean", fake_runner(clean), log=lambda _: None)
    assert [r["metrics"] for r in results] == [r["metrics"] for r in reference]


def test_a_failing_cell_does_not_stop_the_others_and_is_retried(tmp_path):
    calls: list[str] = []
    with pytest.raises(ObliviateError, match="8 of 12 cells failed.*ValueError: diverged"):
        run_sweep(spec(), tmp_path, fake_runner(calls, fail="npo"), log=lambda _: None)
    assert len(calls) == 4 and len(load_results(tmp_path)) == 4  # grad_diff's cells
    failed = sorted(p.parent.name for p in (tmp_path / "sweep").glob("*/failed"))
    assert len(failed) == 8 and all(name.startswith("npo-") for name in failed)
    again: list[str] = []
    run_sweep(spec(), tmp_path, fake_runner(again), log=lambda _: None)
    assert sorted(again) == failed and not list((tmp_path / "sweep").glob("*/failed"))


def test_a_different_base_recipe_is_refused(tmp_path):
    run_sweep(spec(), tmp_path, fake_runner([]), fingerprint="a", log=lambda _: None)
    with pytest.raises(ConfigError, match="different base recipe"):
        run_sweep(spec(), tmp_path, fake_runner([]), fingerprint="b", log=lambda _: None)
    with pytest.raises(ConfigError, match="unknown executor"):
        run_sweep(spec(), tmp_path, fake_runner([]), executor="slurm", log=lambda _: None)


def test_ray_executor_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match="needs Ray"):
        run_sweep(spec(), tmp_path, fake_runner([]), executor="ray", log=lambda _: None)


def test_ray_executor_submits_each_cell_as_a_task(tmp_path, monkeypatch):
    """A stand-in for the ray module: tasks run when submitted; checks the calls made."""
    seen: dict[str, list] = {"options": [], "submitted": []}

    class Ref:
        def __init__(self, value):
            self.value = value

    def remote(**options):
        seen["options"].append(options)

        def wrap(func):
            def submit(*args):
                seen["submitted"].append(args[2])
                return Ref(func(*args))

            return types.SimpleNamespace(remote=submit)

        return wrap

    fake = types.SimpleNamespace(
        is_initialized=lambda: False, init=lambda **kw: seen.setdefault("init", kw),
        remote=remote, get=lambda ref: ref.value,
        wait=lambda refs, num_returns=1: (refs[:num_returns], refs[num_returns:]))
    monkeypatch.setitem(sys.modules, "ray", fake)
    calls: list[str] = []
    results = run_sweep(spec(ray={"num_cpus": 2}), tmp_path, fake_runner(calls),
                        executor="ray", log=lambda _: None)
    assert seen["options"] == [{"num_cpus": 2}] and "init" in seen
    assert len(seen["submitted"]) == len(results) == len(calls) == 12
    assert all((Path(d) / "done").is_file() for d in seen["submitted"])


def test_cli_refuses_bad_sweeps_before_training(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["sweep", "demo", "-o", str(tmp_path / "a")])
    assert result.exit_code != 0 and "no `sweep:` section" in result.stderr
    result = runner.invoke(app, ["sweep", "sweep_demo", "-o", str(tmp_path / "b"),
                                 "sweep.grid={finetune.epochs: [1, 2]}"])
    assert result.exit_code != 0 and "'finetune.epochs' is shared by every cell" in result.stderr
    result = runner.invoke(app, ["sweep", "sweep_demo", "-o", str(tmp_path / "c"),
                                 "sweep.methods={npo: {bta: [0.1]}}"])
    assert result.exit_code != 0 and "bta" in result.stderr
    result = runner.invoke(app, ["sweep", "sweep_demo", "-o", str(tmp_path / "d"),
                                 "sweep.methods=[no_such_method]"])
    assert result.exit_code != 0 and "unknown method" in result.stderr
    assert not any((tmp_path / name).exists() for name in "abcd")


# -- a real LLM sweep on a tiny model ----------------------------------------------------------
@pytest.fixture(scope="module")
def recipe_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "tiny_sweep.yaml"
    path.write_text(yaml.safe_dump(TINY_RECIPE, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def swept(tmp_path_factory, recipe_path) -> Path:
    run = tmp_path_factory.mktemp("sweep") / "run"
    result = CliRunner().invoke(app, ["sweep", str(recipe_path), "-o", str(run)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return run


def semantic(results: list[dict]) -> dict[str, dict[str, float]]:
    """Each cell's metrics without the measured costs (wall time and memory vary)."""
    return {r["cell_id"]: {k: v for k, v in r["metrics"].items() if not k.startswith("cost/")}
            for r in results}


def test_llm_sweep_runs_every_cell_and_reports_a_correct_front(swept):
    results = load_results(swept)
    assert len(results) == len(METHODS) * len(STRENGTHS) * len(SEEDS)
    assert {r["method"] for r in results} == set(METHODS)
    one = results[0]["metrics"]
    assert {"tofu/forget/prob", "tofu/retain/rouge", "cost/flops", "cost/flops_ratio",
            "cost/seconds_ratio", "cost/trainable_parameters_ratio"} <= set(one)
    assert one["cost/flops"] == pytest.approx(6 * one["cost/total_parameters"]
                                              * one["cost/tokens"])
    cell = swept / "sweep" / results[0]["cell_id"]
    assert (swept / "models" / "target").is_dir() and not (cell / "models" / "target").exists()

    report = json.loads((swept / "report" / "report.json").read_text())
    configs = report["pareto"]["configurations"]
    assert len(configs) == len(METHODS) * len(STRENGTHS)
    assert all(c["n"] == len(SEEDS) and c["std"]["forgetting"] is not None for c in configs)

    # brute force: a configuration is on the front iff no other one is >= everywhere, > once
    def scores(c):
        return (c["mean"]["forgetting"], c["mean"]["utility"])

    expected = [c["config_id"] for c in configs if not any(
        all(a >= b for a, b in zip(scores(o), scores(c), strict=True)) and scores(o) != scores(c)
        for o in configs)]
    assert report["pareto"]["front"] == expected and expected
    assert report["selection_rule"]["uses_oracle"] is False
    assert set(report["reported"]) == set(METHODS)
    front = {c["config_id"]: c for c in configs if c["config_id"] in expected}
    for a in front.values():  # the front is an antichain under the library's dominance
        for b in front.values():
            ca, cb = (types.SimpleNamespace(value=lambda x, c=c: c["mean"][x]) for c in (a, b))
            assert not dominates(ca, cb, ("forgetting", "utility"))
    assert (swept / "report" / "report.html").is_file()
    assert "| rank |" in (swept / "report" / "leaderboard.md").read_text()


def test_killed_sweep_resumes_and_ends_with_the_same_results(swept, recipe_path, tmp_path):
    import torch

    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-m", "obliviate.cli.main", "sweep",
                             str(recipe_path), "-o", str(run), "--no-report"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    total = len(METHODS) * len(STRENGTHS) * len(SEEDS)
    deadline = time.monotonic() + 120
    try:
        while not list((run / "sweep").glob("*/done")):
            assert proc.poll() is None, "the sweep ended before the first cell finished"
            assert time.monotonic() < deadline, "no cell finished in time"
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in (run / "sweep").glob("*/done")}
    assert 0 < len(finished) < total

    result = CliRunner().invoke(app, ["sweep", str(recipe_path), "-o", str(run)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert f"{len(finished)} already done" in result.stdout
    results = load_results(run)
    statuses = {r["cell_id"]: r for r in results}
    assert len(results) == total
    for cell_id, mtime in finished.items():  # finished cells were skipped, not rerun
        assert (run / "sweep" / cell_id / "done").stat().st_mtime_ns == mtime
        assert cell_id in statuses
    skipped = [line for line in result.stdout.splitlines() if " skipped" in line]
    assert len(skipped) == len(finished) * 2  # progress line + table row per skipped cell
    assert semantic(results) == semantic(load_results(swept))


def test_a_cells_oracle_copy_cut_short_by_a_kill_is_rewritten(tmp_path):
    """A sweep killed while a cell copied the oracle's results left an empty ``tofu.json`` that
    the resume took as copied; the copy is now atomic and any copy that differs is rewritten."""
    from obliviate.core.modality_sweep import share_oracle
    from obliviate.core.rundir import RunDir

    root, cell = RunDir(tmp_path / "root").create(), RunDir(tmp_path / "cell").create()
    (root.root / "eval" / "oracle").mkdir(parents=True)
    (root.root / "eval" / "oracle" / "tofu.json").write_text('{"suite": "tofu"}')
    (cell.root / "eval" / "oracle").mkdir(parents=True)
    (cell.root / "eval" / "oracle" / "tofu.json").write_text("")  # what the kill left
    share_oracle(root, cell)
    assert json.loads((cell.root / "eval" / "oracle" / "tofu.json").read_text()) == {
        "suite": "tofu"}
