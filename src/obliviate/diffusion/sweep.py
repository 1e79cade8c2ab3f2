"""Diffusion sweeps and searches: :class:`obliviate.core.modality_sweep.ModalitySweep` on the
diffusion pipeline. Each cell's cost is its unlearning stage's recorded cost (wall time, peak
memory, steps) against the oracle's fine-tuning, as the single-run tables report it."""

from __future__ import annotations

from typing import Any

from obliviate.core.modality_sweep import ModalitySweep
from obliviate.diffusion.recipe import DiffusionRecipe


class DiffusionSweep(ModalitySweep):
    """The diffusion pipeline for the shared sweep and search."""

    modality = "diffusion"
    recipe_class = DiffusionRecipe

    def pipeline(self) -> Any:
        from obliviate.diffusion import pipeline

        return pipeline


SWEEP = DiffusionSweep()
sweep = SWEEP.sweep
search = SWEEP.search
