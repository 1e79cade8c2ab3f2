"""The LLM modality: data, models, fine-tuning, unlearning methods and evaluation for causal LMs.

Importing this package registers its methods, evaluation suites and attacks in the core
registries.
"""

MODALITY = "llm"
