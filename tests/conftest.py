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
