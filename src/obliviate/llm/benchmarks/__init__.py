"""The LLM benchmarks, each one file registered in
:data:`obliviate.core.registry.BENCHMARKS`: importing this package registers them all."""

from obliviate.llm.benchmarks import (  # noqa: F401  (registers them)
    jsonl,
    muse,
    synthetic,
    tofu,
    wmdp,
)
