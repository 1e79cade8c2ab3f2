"""Shared fixtures: one torch thread, tiny tokenizers and models, the TOFU folder if present.

The same float rounding on every x86-64 CPU: many tests train a tiny model for hundreds of
steps and bound what an unlearning method then does to it, and the rounding of the CPU's
kernels decides the trained model. AVX-512 kernels (PyTorch's own, MKL's, oneDNN's) sum in
another order than AVX2 ones, and on AVX-512 machines tests set on an AVX2 box fell on the other
side of their bounds (an RMU retain accuracy of 0.80 on an AMD EPYC; a Forget-Me-Not loss rise
of +0.13% there against +2.3% on the AVX2 box). So the tests run every kernel at AVX2, which
every x86-64 CPU of the last decade has: PyTorch's CPU dispatch (``ATEN_CPU_CAPABILITY``), MKL's
conditional numerical reproducibility (``MKL_CBWR``) and oneDNN's instruction set
(``ONEDNN_MAX_CPU_ISA``). They are read when torch loads, hence before the import below; a
value set outside wins.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

PINNED_NUMERICS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2",
                   "ONEDNN_MAX_CPU_ISA": "AVX2"}
if platform.machine() in ("x86_64", "AMD64"):
    for _key, _value in PINNED_NUMERICS.items():
        os.environ.setdefault(_key, _value)

import pytest  # noqa: E402
import torch  # noqa: E402

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
