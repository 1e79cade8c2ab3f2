"""Run NPO on a tiny memorised model in every process of an ``accelerate launch`` job.

Used by ``test_distributed.py``; prints one JSON line from the main process.
"""

from __future__ import annotations

import json
import sys
import tempfile

import torch
from accelerate import PartialState

from obliviate.core.task import DataSplit, UnlearningTask
from obliviate.llm.data.formatting import answer_nll, collate, encode_record, resolve_format
from obliviate.llm.data.synthetic import SyntheticFactsConfig, generate_synthetic_facts
from obliviate.llm.methods.base import UnlearnContext, UnlearnTrainConfig
from obliviate.llm.methods.npo import NPO
from obliviate.llm.models import TinyModelConfig, tiny_llama, train_tokenizer
from obliviate.llm.task import task_texts
from obliviate.llm.training import TrainConfig, has_accelerator, train

torch.set_num_threads(1)
state = PartialState(cpu=not has_accelerator())
facts = generate_synthetic_facts(SyntheticFactsConfig(num_people=4, facts_per_person=3,
                                                      forget_people=1, holdout_people=0))
task = UnlearningTask("dist", "llm", DataSplit("forget", facts["forget"]),
                      DataSplit("retain", facts["retain"]))
tokenizer = train_tokenizer(task_texts(task), vocab_size=350)
fmt = resolve_format(tokenizer, "base")
config = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                         vocab_size=350)
model = tiny_llama(tokenizer, config, seed=0)
examples = [encode_record(tokenizer, fmt, r) for r in task.full.records]
pad = tokenizer.pad_token_id
train(model, examples, lambda b: collate(b, pad),
      TrainConfig(epochs=40, learning_rate=5e-3, batch_size=4, weight_decay=0.0))


def forget_nll(m: torch.nn.Module) -> float:
    batch = collate([encode_record(tokenizer, fmt, r) for r in task.forget.records], pad)
    with torch.no_grad():
        logits = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return float(answer_nll(logits, batch["labels"]).mean())


before = forget_nll(model)
out_dir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
ctx = UnlearnContext(tokenizer=tokenizer, fmt=fmt, task=task,
                     train=UnlearnTrainConfig(max_steps=4, learning_rate=3e-3, batch_size=1,
                                              warmup_ratio=0.0))
outcome = NPO().run(model, task, out_dir, ctx=ctx, save=state.is_main_process)
after = forget_nll(outcome.model)
# every process must hold the same weights after DDP
total = torch.tensor([sum(float(p.detach().sum()) for p in model.parameters())])
gathered = [torch.zeros(1) for _ in range(state.num_processes)]
torch.distributed.all_gather(gathered, total) if state.num_processes > 1 else None
if state.is_main_process:
    print(json.dumps({"processes": state.num_processes, "backend": str(state.backend),
                      "before": before, "after": after, "steps": outcome.steps,
                      "param_sums": [float(g) for g in gathered]}))
