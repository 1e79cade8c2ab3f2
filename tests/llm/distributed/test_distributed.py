"""Two CPU processes (gloo) run an unlearning method end to end through torchrun."""

from __future__ import annotations

from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("two_process_unlearn.py")
SHARDED = Path(__file__).with_name("two_process_fsdp_scoring.py")


def test_npo_runs_in_two_gloo_processes(tmp_path, torchrun):
    report = torchrun(SCRIPT, str(tmp_path))
    assert report["processes"] == 2 and report["backend"] == "gloo"
    assert report["param_sums"][0] == report["param_sums"][1]  # replicas stayed in sync
    assert report["after"] > report["before"] + 0.5  # NPO raised the forget loss
    assert report["steps"] == 4
    assert (tmp_path / "model.safetensors").is_file()


def test_scoring_and_generation_of_an_fsdp_sharded_model_equal_the_whole_models(torchrun):
    """The scorer runs the body and the LM head apart only for a model that is not sharded: a
    sharded one goes through its own forward, which gathers its weights."""
    import torch.distributed.fsdp as fsdp

    if not hasattr(fsdp, "fully_shard"):
        pytest.skip("FSDP2's fully_shard needs torch >= 2.6")
    report = torchrun(SHARDED)
    assert report["processes"] == 2
    assert report["split_whole"] and not report["split_sharded"]
    assert report["scores"] > 6 and report["max_score_difference"] < 1e-4
    assert report["same_answers"] and any(report["answers"])
