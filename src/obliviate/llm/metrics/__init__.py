"""The LLM metrics, each registered in :data:`obliviate.core.registry.METRICS` with the suite
that reports it: ``tofu`` (:mod:`.tofu`), ``mia`` (:mod:`.mia`), ``memorization``
(:mod:`.memorization`). A new metric is one class with ``suite = "<suite>"`` in a file here
plus its import below; its suite then computes it."""

# the suites first: they import these modules, and the metrics registered in
# obliviate.llm.evaluation (MUSE's, multiple choice, lm-eval) are the modality's metrics too
import obliviate.llm.evaluation  # noqa: F401
from obliviate.llm.metrics import memorization, mia, tofu  # noqa: F401  (registers them)
