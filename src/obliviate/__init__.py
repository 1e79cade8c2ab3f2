"""obliviate: machine unlearning for generative AI.

The shared core (:mod:`obliviate.core`) defines the vocabulary both modalities use:
tasks, method/suite/attack registries, results and run directories. The modalities
(:mod:`obliviate.llm`, later :mod:`obliviate.diffusion`) plug into it; the CLI assembles them.
"""

__version__ = "0.1.0"
