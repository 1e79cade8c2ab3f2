"""Attacks as evaluation: does the forgetting survive relearning, quantization, rephrasing and
white-box probing? Each attack is one module registered in ``ATTACKS`` (modality ``llm``); every
attack measures the same forget probe on the unlearned model and on the oracle."""

from obliviate.llm.attacks import (  # noqa: F401  (registers them)
    probes,
    quantization,
    relearning,
    rephrasing,
)
from obliviate.llm.attacks.base import AttackContext, AttackTarget, LLMAttack, forget_probe

__all__ = ["AttackContext", "AttackTarget", "LLMAttack", "forget_probe"]
