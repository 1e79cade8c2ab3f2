"""A diffusion method in two CPU processes (gloo) through torchrun: the replicas end equal."""

from __future__ import annotations

from pathlib import Path

SCRIPT = Path(__file__).with_name("two_process_esd.py")


def test_esd_runs_in_two_gloo_processes_and_replicas_end_equal(tmp_path, torchrun):
    report = torchrun(SCRIPT, str(tmp_path))
    assert report["processes"] == 2 and report["backend"] == "gloo"
    assert report["steps"] == 3
    # each process drew its own batches; the averaged updates kept the replicas equal
    assert report["param_sums"][0] == report["param_sums"][1]
    assert report["first_losses"][0] != report["first_losses"][1]
    assert report["moved"] > 0
    assert (Path(report["model_path"]) / "model.safetensors").is_file()
    assert not (tmp_path / "checkpoints").exists()
