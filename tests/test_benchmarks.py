"""The benchmark scripts stay runnable: they import, parse their arguments, and build their
tables from a run's records (the runs themselves are measured, never timed in tests)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = ["tofu/run.py", "mnist/run.py", "bench_scorer.py", "bench_npo.py", "bench_train_step.py",
           "bench_vocab_chunks.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help(script):
    out = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout


def load(script: str):
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(script.replace("/", "_"), BENCHMARKS / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # what a dataclass of the script looks its module up in
    spec.loader.exec_module(module)
    return module


def test_tofu_tables(tmp_path):
    from obliviate.core.io import atomic_write_json
    from obliviate.core.rundir import RunDir

    bench = load("tofu/run.py")
    run = RunDir(tmp_path / "run").create()
    summaries = {"target": {"tofu/forget/prob": 0.9, "tofu/model_utility": 0.5},
                 "unlearned/npo": {"tofu/forget/prob": 0.2, "tofu/model_utility": 0.45},
                 "oracle": {"tofu/forget/prob": 0.1, "tofu/model_utility": 0.5,
                            "mia/forget/privleak_min_k": -1.25}}
    record = {"finetune_oracle": {"seconds": 100.0}, "unlearn_npo": {"seconds": 12.0}}
    lines = bench.metrics_table(summaries, record, bench.METRICS).splitlines()
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["**oracle**", "target", "npo"]
    oracle = [c.strip() for c in lines[2].split("|")[1:-1]]
    assert oracle[1] == "0.100" and oracle[9] == "-1.2" and oracle[-1] == "100"
    assert lines[4].split("|")[-2].strip() == "12"

    attack = {"relearning": {"plain": 0.1, "attacked": 0.6, "oracle_plain": 0.2,
                             "oracle_attacked": 0.3},
              "quantization": {"plain": 0.2, "attacked": 0.25, "oracle_plain": 0.15,
                               "oracle_attacked": 0.16},
              "rephrasing": {"plain": 0.2, "attacked": 0.4, "oracle_attacked": 0.35}}
    atomic_write_json(run.root / "attacks" / "unlearned" / "npo" / "rephrasing.json",
                      {"details": {"best_variant": "answer_prefix"}})
    table = bench.attack_table({"unlearned/npo": attack}, run).splitlines()
    assert [c.strip() for c in table[2].split("|")[1:-1]] == [
        "**oracle**", "0.150", "0.160", "(in each row)", "", "0.200 → 0.300"]
    assert [c.strip() for c in table[3].split("|")[1:-1]] == [
        "npo", "0.200", "0.250", "0.400 (0.350)", "answer_prefix", "0.100 → 0.600 (0.300)"]


WORKER = """\
import json, os, signal, sys, time
sys.path.insert(0, {benchmarks!r})
from common import take_jobs
args = sys.argv[1:]

def run(job):
    started = time.time()
    if job.name == "broken":
        sys.exit(3)
    if job.name == "killed":  # no exception, no marker: as the out-of-memory killer does it
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.6 if job.name == "slow" else 0.05)
    out = os.path.join(os.path.dirname(__file__), job.key.replace("/", "_") + ".json")
    with open(out, "x") as f:  # "x": each job once
        json.dump({{"argv": args, "threads": os.environ["OMP_NUM_THREADS"], "pid": os.getpid(),
                   "started": started, "ended": time.time()}}, f)

take_jobs(args[args.index("--jobs") + 1], run, poll=0.05)
"""


def test_workers_take_each_job_once_after_its_prerequisites(tmp_path, monkeypatch):
    import argparse
    import json

    common = load("common.py")
    Job = common.Job
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(benchmarks=str(BENCHMARKS)))
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    args = argparse.Namespace(workers=2, output="runs/x", overrides=["seed=1"])
    jobs = [Job("finetune", "slow"), Job("evaluate", "unlearned/a", ("finetune:slow",)),
            Job("evaluate", "b"), Job("evaluate", "c", ("evaluate:b", "elsewhere:d"))]
    common.run_in_workers(str(script), args, jobs)
    runs = {j.key: json.loads((tmp_path / f"{j.key.replace('/', '_')}.json").read_text())
            for j in jobs}
    slow, after_slow = runs["finetune:slow"], runs["evaluate:unlearned/a"]
    assert after_slow["started"] >= slow["ended"]  # waited for its prerequisite
    assert runs["evaluate:c"]["started"] >= runs["evaluate:b"]["ended"]
    argv = slow["argv"]
    assert argv[:3] == ["--output", "runs/x", "--jobs"] and argv[4:] == ["seed=1"]
    assert not Path(argv[3]).exists()  # the plan's folder goes with the call
    assert {r["threads"] for r in runs.values()} == {"2"}


@pytest.mark.parametrize("how", ["broken", "killed"])
def test_a_failed_job_stops_the_workers_waiting_for_it(tmp_path, how):
    import argparse

    common = load("common.py")
    Job = common.Job
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(benchmarks=str(BENCHMARKS)))
    args = argparse.Namespace(workers=2, output="runs/x", overrides=[])
    jobs = [Job("unlearn", how), Job("evaluate", f"unlearned/{how}", (f"unlearn:{how}",))]
    with pytest.raises(SystemExit, match="1 of 2 workers failed"):
        common.run_in_workers(str(script), args, jobs)  # the waiting worker quits, no hang
    assert not list(tmp_path.glob("evaluate*"))


def test_take_jobs_runs_the_first_ready_job_in_plan_order(tmp_path):
    import json

    common = load("common.py")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps([["evaluate", "a", ["finetune:c"]], ["unlearn", "b", []],
                                ["finetune", "c", []]]))
    order: list[str] = []
    taken = common.take_jobs(plan, lambda job: order.append(job.key), poll=0.01)
    assert order == ["unlearn:b", "finetune:c", "evaluate:a"]
    assert [job.key for job in taken] == order
    assert common.take_jobs(plan, lambda job: order.append(job.key)) == []  # all taken


def test_tofu_plan_chains_each_model_to_the_job_that_makes_it(tmp_path):
    from obliviate.core.recipe import load_recipe
    from obliviate.core.rundir import RunDir
    from obliviate.llm.recipe import LLMRecipe

    bench = load("tofu/run.py")
    recipe = load_recipe(LLMRecipe, bench.RECIPES / "tofu_smollm2.yaml",
                         ["unlearn.methods=[npo,rmu]"])
    run = RunDir(tmp_path / "run").create()
    jobs = [(j.key, j.after) for j in bench.plan(recipe, run, ["finetune", "unlearn",
                                                               "evaluate"])]
    assert jobs == [
        ("finetune:target", ()), ("finetune:oracle", ()),
        ("evaluate:oracle", ("finetune:oracle",)),
        ("unlearn:npo", ("finetune:target",)), ("unlearn:rmu", ("finetune:target",)),
        ("evaluate:target", ("evaluate:oracle", "finetune:target")),
        ("evaluate:unlearned/npo", ("evaluate:oracle", "unlearn:npo")),
        ("evaluate:unlearned/rmu", ("evaluate:oracle", "unlearn:rmu"))]
    # the evaluation alone: the models the run holds, each after the oracle's evaluation only
    (run.model("oracle") / "config.json").parent.mkdir(parents=True)
    (run.model("oracle") / "config.json").write_text("{}")
    (run.model("target") / "config.json").parent.mkdir(parents=True)
    (run.model("target") / "config.json").write_text("{}")
    assert [(j.key, j.after) for j in bench.plan(recipe, run, ["evaluate"])] == [
        ("evaluate:oracle", ()), ("evaluate:target", ("evaluate:oracle",))]
    # a run without an oracle: no oracle evaluation to wait for (evaluated without it, as
    # --workers 1 does)
    (run.model("oracle") / "config.json").unlink()
    assert [(j.key, j.after) for j in bench.plan(recipe, run, ["evaluate"])] == [
        ("evaluate:target", ("evaluate:oracle",))]
