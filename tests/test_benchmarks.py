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


def test_workers_split_the_models_and_the_threads(tmp_path, monkeypatch):
    import argparse
    import json

    common = load("common.py")
    script = tmp_path / "worker.py"
    script.write_text(
        "import json, os, sys\n"
        "args = sys.argv[1:]\n"
        "models = args[args.index('--models') + 1]\n"
        "with open(os.path.join(os.path.dirname(__file__), models + '.json'), 'w') as f:\n"
        "    json.dump({'argv': args, 'threads': os.environ['OMP_NUM_THREADS']}, f)\n"
        "sys.exit(3 if 'broken' in models else 0)\n")
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    args = argparse.Namespace(workers=2, output="runs/x", overrides=["seed=1"])
    common.run_in_workers(str(script), args, "evaluate", ["oracle", "a", "b"])
    first = json.loads((tmp_path / "oracle,b.json").read_text())
    second = json.loads((tmp_path / "a.json").read_text())
    assert first["argv"] == ["--output", "runs/x", "--stages", "evaluate", "--models",
                             "oracle,b", "seed=1"]
    assert first["threads"] == second["threads"] == "2"
    with pytest.raises(SystemExit, match="the worker on broken failed"):
        common.run_in_workers(str(script), args, "attack", ["broken", "c"])
    assert (tmp_path / "c.json").is_file()  # the other worker ran to its end
