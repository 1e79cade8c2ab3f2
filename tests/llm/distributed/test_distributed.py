"""Two CPU processes (gloo) run an unlearning method end to end through torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("two_process_unlearn.py")


def test_npo_runs_in_two_gloo_processes(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(SCRIPT), str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, proc.stdout[-2000:]  # only the main process reports
    report = json.loads(lines[0])
    assert report["processes"] == 2 and report["backend"] == "gloo"
    assert report["param_sums"][0] == report["param_sums"][1]  # replicas stayed in sync
    assert report["after"] > report["before"] + 0.5  # NPO raised the forget loss
    assert report["steps"] == 4
    assert (tmp_path / "model.safetensors").is_file()
