"""Shared fixtures: one torch thread, tiny tokenizers and models, the TOFU folder if present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tofu_root() -> Path:
    root = SHARED_DATA / "tofu"
    if not (root / "full.json").is_file():
        pytest.skip(f"TOFU is not present at {root} (see README: getting TOFU)")
    return root


@pytest.fixture(scope="session")
def facts():
    from obliviate.llm.data.synthetic import SyntheticFactsConfig, generate_synthetic_facts

    return generate_synthetic_facts(SyntheticFactsConfig(
        num_people=6, facts_per_person=3, forget_people=1, holdout_people=1, seed=0))


@pytest.fixture(scope="session")
def tiny_tokenizer(facts):
    from obliviate.llm.models import train_tokenizer

    texts = [t for split in facts.values() for r in split
             for t in (r.question, r.answer, r.paraphrased_answer or "", *r.perturbed_answers)]
    return train_tokenizer(texts, vocab_size=400)


@pytest.fixture(scope="session")
def torchrun():
    """``torchrun(script, *args)``: run ``script`` in two CPU processes (gloo) and return the one
    JSON line its main process prints (only the main process may print one)."""
    import json
    import subprocess
    import sys

    def run(script: Path, *args: str) -> dict:
        launcher = Path(sys.executable).with_name("torchrun")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.run([str(launcher), "--standalone", "--nproc_per_node", "2",
                               str(script), *args],
                              capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        assert len(lines) == 1, proc.stdout[-2000:]  # only the main process reports
        return json.loads(lines[0])

    return run
