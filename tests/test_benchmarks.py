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


def test_workers_take_each_name_once_and_split_the_threads(tmp_path, monkeypatch):
    import argparse
    import json

    common = load("common.py")
    script = tmp_path / "worker.py"
    script.write_text(
        "import json, os, sys\n"
        f"sys.path.insert(0, {str(BENCHMARKS)!r})\n"
        "from common import claimed\n"
        "args = sys.argv[1:]\n"
        "names = args[args.index('--models') + 1].split(',')\n"
        "for name in claimed(names, args[args.index('--claims') + 1]):\n"
        "    out = os.path.join(os.path.dirname(__file__), name.replace('/', '_') + '.json')\n"
        "    with open(out, 'x') as f:\n"
        "        json.dump({'argv': args, 'threads': os.environ['OMP_NUM_THREADS'],\n"
        "                   'pid': os.getpid()}, f)\n"
        "    if name == 'broken':\n"
        "        sys.exit(3)\n")
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    args = argparse.Namespace(workers=2, output="runs/x", overrides=["seed=1"])
    common.run_in_workers(str(script), args, "evaluate", ["oracle", "unlearned/a", "b"])
    runs = {n: json.loads((tmp_path / f"{n}.json").read_text())  # "x": each name once
            for n in ("oracle", "unlearned_a", "b")}
    argv = runs["oracle"]["argv"]
    assert argv[:6] == ["--output", "runs/x", "--stages", "evaluate", "--models",
                        "oracle,unlearned/a,b"]
    assert argv[6] == "--claims" and argv[8:] == ["seed=1"]
    assert not Path(argv[7]).exists()  # the claims folder goes with the stage
    assert {r["threads"] for r in runs.values()} == {"2"}
    with pytest.raises(SystemExit, match="1 of 2 workers failed"):
        common.run_in_workers(str(script), args, "attack", ["broken", "c"])
    assert (tmp_path / "c.json").is_file()  # the other worker took the next name


def test_claimed_gives_each_name_to_the_first_worker_reaching_it(tmp_path):
    common = load("common.py")
    first = common.claimed(["a", "unlearned/b", "c"], tmp_path)
    second = common.claimed(["a", "unlearned/b", "c"], tmp_path)
    assert next(first) == "a"
    assert next(second) == "unlearned/b"  # "a" is taken: the next free name
    assert list(first) == ["c"]
    assert list(second) == []
