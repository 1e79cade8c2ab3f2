"""obliviate: machine unlearning for generative AI.

From Python, four verbs take the objects a notebook holds (a Hugging Face model and tokenizer,
an obliviate diffusion model; data as a ``datasets.Dataset``, a list of dicts or a DataFrame)::

    import obliviate
    result = obliviate.unlearn(model, tokenizer, forget=forget, retain=retain, method="npo")
    scores = obliviate.evaluate(result, forget=forget, retain=retain, holdout=holdout)

The shared core (:mod:`obliviate.core`) defines the vocabulary both modalities use: tasks,
registries, results and run directories. The modalities (:mod:`obliviate.llm`,
:mod:`obliviate.diffusion`) plug into it; the CLI assembles them into runs.
"""

__version__ = "0.1.0"

from obliviate.api import (  # noqa: E402  (the version first: the CLI reads only it)
    AttackReport,
    EvaluationResult,
    Report,
    UnlearnResult,
    attack,
    evaluate,
    report,
    unlearn,
)

__all__ = ["AttackReport", "EvaluationResult", "Report", "UnlearnResult", "__version__", "attack",
           "evaluate", "report", "unlearn"]
