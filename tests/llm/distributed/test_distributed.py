"""Two CPU processes (gloo) run an unlearning method end to end through torchrun."""

from __future__ import annotations

from pathlib import Path

SCRIPT = Path(__file__).with_name("two_process_unlearn.py")


def test_npo_runs_in_two_gloo_processes(tmp_path, torchrun):
    report = torchrun(SCRIPT, str(tmp_path))
    assert report["processes"] == 2 and report["backend"] == "gloo"
    assert report["param_sums"][0] == report["param_sums"][1]  # replicas stayed in sync
    assert report["after"] > report["before"] + 0.5  # NPO raised the forget loss
    assert report["steps"] == 4
    assert (tmp_path / "model.safetensors").is_file()
