"""The CLIP score against a hand computation on fixed embeddings."""

from __future__ import annotations

import pytest
import torch

from obliviate.diffusion.clip_score import clip_score


def test_clip_score_matches_a_hand_computation():
    image = torch.tensor([[3.0, 4.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    text = torch.tensor([[4.0, 3.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    # cos: (12 + 12) / (5 · 5) = 0.96; −1 (clamped to 0); 1
    assert clip_score(image, text).tolist() == pytest.approx([96.0, 0.0, 100.0])
    assert clip_score(image, text, weight=2.5).tolist() == pytest.approx([2.4, 0.0, 2.5])
