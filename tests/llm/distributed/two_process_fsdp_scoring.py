"""Score answers and generate greedily with a tiny Llama sharded by FSDP2 across two processes.

Used by ``test_distributed.py``: the scorer and the generator must run the sharded model through
its own forward (which gathers the weights) and give what the whole model gives. Prints one
JSON line from the main process.
"""

from __future__ import annotations

import copy
import json

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

from obliviate.llm.data.formatting import resolve_format
from obliviate.llm.data.synthetic import SyntheticFactsConfig, generate_synthetic_facts
from obliviate.llm.evaluation.generation import greedy_generate
from obliviate.llm.evaluation.prompt_cache import body_and_head
from obliviate.llm.evaluation.scorer import AnswerScorer, answer_lists
from obliviate.llm.models import TinyModelConfig, tiny_llama, train_tokenizer

torch.set_num_threads(1)
dist.init_process_group("gloo")
data = generate_synthetic_facts(SyntheticFactsConfig(
    num_people=6, facts_per_person=3, forget_people=1, holdout_people=1, num_perturbed=2, seed=0))
tokenizer = train_tokenizer([t for split in data.values() for r in split
                             for t in (r.question, r.answer)], vocab_size=300)
model = tiny_llama(tokenizer, TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2,
                                              intermediate_size=64), seed=0).eval()
records = list(data["forget"][:3]) + list(data["retain"][:3])
fmt = resolve_format(tokenizer)


def scores(m: torch.nn.Module) -> list[float]:
    return [s.nll_sum for row in AnswerScorer(m, tokenizer, fmt).score(
        records, answer_lists(records)) for s in row]


whole_scores = scores(model)
whole_answers = greedy_generate(model, tokenizer, fmt, records, max_new_tokens=6)
sharded = copy.deepcopy(model)
for layer in sharded.model.layers:
    fully_shard(layer)
fully_shard(sharded)
sharded_scores = scores(sharded)
sharded_answers = greedy_generate(sharded, tokenizer, fmt, records, max_new_tokens=6)
if dist.get_rank() == 0:
    print(json.dumps({
        "processes": dist.get_world_size(), "split_whole": body_and_head(model) is not None,
        "split_sharded": body_and_head(sharded) is not None, "scores": len(whole_scores),
        "max_score_difference": max(abs(a - b) for a, b in zip(whole_scores, sharded_scores,
                                                                strict=True)),
        "same_answers": whole_answers == sharded_answers, "answers": whole_answers}))
dist.destroy_process_group()
