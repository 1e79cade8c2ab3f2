"""Crash safety: kill -9 during fine-tuning and unlearning, run again, get the same weights.

Each kill test starts the real CLI in a subprocess with a tiny recipe that checkpoints every 5
steps, waits until a checkpoint exists, lets training run on a little (so the kill lands between
checkpoints and work is lost), sends SIGKILL, then runs the same command again to completion. The
second run must say it resumed (``resumed_from`` > 0 in its stage record) and produce weights
identical, tensor for tensor and bit for bit, to an uninterrupted run with the same seed. The
writes behind run.json, evaluation and attack results and saved models must be atomic: a write
that fails midway leaves the previous file intact and no temporary file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from obliviate.cli.main import app

TINY = [
    "task.synthetic.num_people=5", "task.synthetic.facts_per_person=2",
    "task.synthetic.forget_people=1", "task.synthetic.holdout_people=1",
    "model.tiny.hidden_size=32", "model.tiny.num_layers=1", "model.tiny.num_heads=2",
    "model.tiny.intermediate_size=64", "model.tiny.vocab_size=320",
]
# Long enough to be killed mid-way, short enough to finish in about a second once resumed.
FINETUNE = ["finetune.max_steps=150", "finetune.batch_size=3", "finetune.checkpoint_every=5",
            "finetune.log_every=10"]
UNLEARN = ["unlearn.train.max_steps=150", "unlearn.train.batch_size=1",
           "unlearn.train.checkpoint_every=5", "unlearn.train.log_every=10",
           "unlearn.method_args.npo.beta=0.5"]
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")


def invoke(*args: str) -> None:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.stderr


def kill_during(args: list[str], checkpoints: Path, log: Path, timeout: float = 180) -> int:
    """Run ``obliviate ARGS`` in a subprocess and SIGKILL it once it has checkpointed; return
    the step of the newest checkpoint seen before the kill."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "obliviate.cli.main", *args],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and proc.poll() is None:
                found = list(checkpoints.glob("step-*"))
                if found:
                    time.sleep(0.05)  # let it train past the checkpoint: the kill loses work
                    step = max(int(p.name.split("-")[1]) for p in checkpoints.glob("step-*"))
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return step
                time.sleep(0.01)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    pytest.fail(f"no checkpoint appeared under {checkpoints} before the command ended:\n"
                + log.read_text(errors="replace")[-2000:])


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = load_file(str(a)), load_file(str(b))
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), f"{name} differs after resuming"


def assert_no_temporary_files(root: Path) -> None:
    left = [str(p.relative_to(root)) for p in root.rglob("*")
            if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert not left, f"temporary files left behind: {left}"


def stage(run: Path, name: str) -> dict:
    return json.loads((run / "run.json").read_text())["stages"][name]


def test_kill_during_finetuning_resumes_to_the_same_weights(tmp_path):
    args = ["finetune", "demo", "--role", "target", *TINY, *FINETUNE]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    invoke(*args, "-o", str(reference))

    step = kill_during([*args, "-o", str(killed)], killed / "checkpoints" / "target",
                       tmp_path / "killed.log")
    assert 0 < step < 150
    assert stage(killed, "finetune_target")["status"] == "running"
    assert not (killed / "models" / "target").exists()  # nothing half-saved claims to be a model

    invoke(*args, "-o", str(killed))  # the same command again
    resumed = stage(killed, "finetune_target")
    assert resumed["status"] == "done" and resumed["resumed_from"] >= step > 0
    assert stage(reference, "finetune_target")["resumed_from"] is None
    assert_same_weights(reference / "models" / "target" / "model.safetensors",
                        killed / "models" / "target" / "model.safetensors")
    assert resumed["history"] == stage(reference, "finetune_target")["history"]
    assert resumed["weights_sha256"] == stage(reference, "finetune_target")["weights_sha256"]
    assert not (killed / "checkpoints" / "target").exists()
    assert_no_temporary_files(killed)


def test_kill_during_unlearning_resumes_to_the_same_weights(tmp_path):
    base = tmp_path / "base"
    invoke("finetune", "demo", "--role", "target", *TINY, "finetune.max_steps=6", "-o", str(base))
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    shutil.copytree(base, reference)
    shutil.copytree(base, killed)
    args = ["unlearn", "demo", "-m", "npo", *TINY, *UNLEARN]
    invoke(*args, "-o", str(reference))

    out_dir = killed / "models" / "unlearned" / "npo"
    step = kill_during([*args, "-o", str(killed)], out_dir / "checkpoints",
                       tmp_path / "killed.log")
    assert 0 < step < 150
    assert stage(killed, "unlearn_npo")["status"] == "running"
    assert not any((out_dir / f).exists() for f in ("model.safetensors", "unlearned.json"))

    invoke(*args, "-o", str(killed))
    resumed = stage(killed, "unlearn_npo")
    assert resumed["status"] == "done" and resumed["resumed_from"] >= step > 0
    assert_same_weights(reference / "models" / "unlearned" / "npo" / "model.safetensors",
                        out_dir / "model.safetensors")
    assert resumed["history"] == stage(reference, "unlearn_npo")["history"]
    assert resumed["weights_sha256"] == stage(reference, "unlearn_npo")["weights_sha256"]
    assert not (out_dir / "checkpoints").exists()
    assert_no_temporary_files(killed)


# -- atomic writes ------------------------------------------------------------------------------
def fail_midway(monkeypatch) -> None:
    """Make the next atomic write die after writing half of its bytes (a crash or full disk)."""
    import obliviate.core.io as io

    real = io.os.fdopen

    class HalfWriter:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[:len(data) // 2])
            self.handle.flush()
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "fdopen", lambda fd, mode: HalfWriter(real(fd, mode)))


def write_run_record(run_dir: Path, value: int) -> Path:
    from obliviate.core.rundir import RunDir

    RunDir(run_dir).create().record_stage("eval_target", status="done", summary={"x": value})
    return run_dir / "run.json"


def write_eval_result(run_dir: Path, value: int) -> Path:
    from obliviate.core.result import EvalResult, MetricResult

    result = EvalResult("tofu", "target", {"forget/prob": MetricResult("prob", float(value))})
    return result.save(run_dir / "eval" / "target" / "tofu.json")


def write_attack_result(run_dir: Path, value: int) -> Path:
    from obliviate.core.result import AttackResult

    result = AttackResult("relearning", "unlearned/npo", "prob", 0.1, float(value), 0.1, 0.2)
    return result.save(run_dir / "attacks" / "unlearned" / "npo" / "relearning.json")


@pytest.mark.parametrize("write", [write_run_record, write_eval_result, write_attack_result])
def test_a_write_that_fails_midway_keeps_the_old_file(tmp_path, monkeypatch, write):
    path = write(tmp_path, 1)
    before = path.read_bytes()
    fail_midway(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        write(tmp_path, 2)
    assert path.read_bytes() == before
    json.loads(before)
    assert_no_temporary_files(tmp_path)


def test_a_model_save_that_fails_midway_keeps_the_old_model(tmp_path, tiny_tokenizer):
    from obliviate.llm.models import TinyModelConfig, save_model, tiny_llama

    config = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    path = save_model(tiny_llama(tiny_tokenizer, config, seed=0), tiny_tokenizer,
                      tmp_path / "target")
    before = {p.name: p.read_bytes() for p in path.iterdir()}

    class Crashing(torch.nn.Module):
        def save_pretrained(self, folder, **kwargs):
            (Path(folder) / "model.safetensors").write_bytes(b"half a model")
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        save_model(Crashing(), tiny_tokenizer, path)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert_no_temporary_files(tmp_path)


def test_a_checkpoint_that_fails_midway_keeps_the_previous_one(tmp_path, monkeypatch,
                                                               tiny_tokenizer):
    from obliviate.core import training
    from obliviate.llm.models import TinyModelConfig, tiny_llama

    model = tiny_llama(tiny_tokenizer, TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2,
                                                       intermediate_size=64), seed=0)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    first = training.save_checkpoint(tmp_path, 5, list(model.named_parameters()), optimizer,
                                     scheduler, [])

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(training.torch, "save", crash)
    with pytest.raises(OSError, match="No space left"):
        training.save_checkpoint(tmp_path, 10, list(model.named_parameters()), optimizer,
                                 scheduler, [])
    assert training.latest_checkpoint(tmp_path) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-5"]
