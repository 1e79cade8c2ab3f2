"""The demo's seeds: each weight-changing method unlearns, is evaluated and attacked again with
unlearning seeds 1 and 2, so the report's headline numbers are mean ± std over 3 seeds.

The target and the oracle are trained once (seed 0); the extra seeds vary only the unlearning
(``unlearn.train.seed``: data order and dropout, and the method's own seed). They run as sweep
cells of the demo's run directory (``sweep/<cell>/``, see :mod:`obliviate.core.sweep`): one
per method and seed, resumable, each against the run's target and oracle; the report counts the
run's own seed-0 model as the first seed of its method's configuration. Prompt-only methods
change no weights and have nothing to reseed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

EXTRA_SEEDS = (1, 2)


def run_seeds(config: Any, run: Any, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Run the extra seeds of every weight-changing method of ``config`` in ``run``."""
    from obliviate.core.modality_sweep import CellRunner
    from obliviate.core.registry import METHODS
    from obliviate.core.sweep import SweepSpec, run_sweep

    hooks = importlib.import_module(f"obliviate.{config.modality}.sweep").SWEEP
    importlib.import_module(f"obliviate.{config.modality}.methods")  # registers the methods
    methods = [m for m in config.unlearn.methods
               if getattr(METHODS.get(m, config.modality), "changes_weights", True)]
    if not methods:
        return []
    if not (run.root / "cost.json").is_file():
        hooks.write_costs(run.root)
    spec = SweepSpec(methods={m: {} for m in methods}, seeds=list(EXTRA_SEEDS),
                     attacks=list(config.attack.attacks))
    runner = CellRunner(hooks, base=config.model_dump(mode="json"),
                        root=str(run.root.resolve()), attacks=list(spec.attacks))
    return run_sweep(spec, run.root, runner, log=log)
