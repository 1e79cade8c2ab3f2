"""The diffusion method catalogue; importing this package registers every method.

=====================  ==============================================================
``esd_x``, ``esd_u``   ESD: negative-guidance fine-tuning (Gandikota et al. 2023)
``uce``                closed-form edit of the condition maps (Gandikota et al. 2024)
``salun``              saliency-masked random-label unlearning (Fan et al. 2024)
``concept_ablation``   map the concept onto an anchor (Kumari et al. 2023)
``selective_amnesia``  noise surrogate + generative replay + EWC (Heng & Soh 2023)
``erasediff``          bilevel retain/forget-deviation objective (Wu et al. 2024)
``forget_me_not``      cross-attention re-steering (Zhang et al. 2024)
``grad_ascent``        baseline: ascend the forget loss
``retain_finetune``    baseline: fine-tune on the retain set
=====================  ==============================================================
"""

from obliviate.diffusion.methods import (  # noqa: F401  (registration)
    baselines,
    concept_ablation,
    erasediff,
    esd,
    forget_me_not,
    salun,
    selective_amnesia,
    uce,
)
from obliviate.diffusion.methods.base import (
    DiffusionMethodConfig,
    DiffusionUnlearningMethod,
    UnlearnContext,
)

__all__ = ["DiffusionMethodConfig", "DiffusionUnlearningMethod", "UnlearnContext"]
