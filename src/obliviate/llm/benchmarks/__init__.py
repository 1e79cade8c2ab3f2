"""The LLM benchmarks, each one file registered in
:data:`obliviate.core.registry.BENCHMARKS`: importing this package registers them all."""

from obliviate.llm.benchmarks import jsonl, muse, synthetic, tofu  # noqa: F401  (registers them)
