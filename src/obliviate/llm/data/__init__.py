"""LLM data: question–answer records, TOFU, synthetic fictitious facts, JSONL sets, formatting."""

from obliviate.llm.data.records import QARecord, records_from_dicts

__all__ = ["QARecord", "records_from_dicts"]
