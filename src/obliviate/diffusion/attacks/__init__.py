"""Attacks on an unlearned denoiser: can the forgotten class still be generated?

The probe every attack measures is the attack success rate: the fraction of samples drawn under
the forget condition (or the attacker's condition) that the judge classifies as the forgotten
class. Each attack runs on the unlearned model and on the oracle with the same settings and
seed, so ``recovery = attacked − oracle_attacked`` is recovery beyond what a model that never
saw the class reaches under the same attack. Models passed in are never modified.

Each attack is one module registered in ``ATTACKS`` (modality ``diffusion``), on the shared
context, probe and result of :mod:`~obliviate.diffusion.attacks.base`:

``embedding``          UnlearnDiffAtk-style optimisation of the condition tensor (ECCV 2024)
``concept_vector``     Ring-A-Bell-style concept vector added to the condition (ICLR 2024)
``relearning``         a few fine-tuning steps on a few forget images
``unlearndiffatk``     hard prompt tokens prepended to the concept's prompt (text-to-image)
``concept_inversion``  a textual-inversion word for the erased concept (text-to-image)

The two prompt attacks share :mod:`~obliviate.diffusion.attacks.tokens` and need a
text-to-image model (``model.architecture=text_pipeline``).
"""

from obliviate.diffusion.attacks import (  # noqa: F401  (registers them)
    concept_inversion,
    concept_vector,
    embedding,
    relearning,
    unlearndiffatk,
)
from obliviate.diffusion.attacks.base import (
    METRIC,
    AttackContext,
    DiffusionAttack,
    ProbeOptions,
    mean,
    probe,
)

__all__ = ["METRIC", "AttackContext", "DiffusionAttack", "ProbeOptions", "mean", "probe"]
