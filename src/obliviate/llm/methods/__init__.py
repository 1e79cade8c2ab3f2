"""The LLM unlearning catalogue: one module per method, each registered in ``METHODS``.

To add a method: write ``my_method.py`` with a config class (paper defaults) and a subclass of
:class:`~obliviate.llm.methods.base.LLMUnlearningMethod` decorated with
``@METHODS.register("my_method", modality="llm")``, then import it below.
"""

from obliviate.llm.methods import (  # noqa: F401  (importing registers the methods)
    altpo,
    ce_u,
    finetune_retain,
    grad_ascent,
    grad_diff,
    idk_dpo,
    idk_nll,
    kl,
    npo,
    pdu,
    prompt_baselines,
    retrain,
    rmu,
    satimp,
    simnpo,
    task_vector,
    undial,
    wga,
)
from obliviate.llm.methods.base import LLMUnlearningMethod, UnlearnContext, UnlearnTrainConfig

__all__ = ["LLMUnlearningMethod", "UnlearnContext", "UnlearnTrainConfig"]
