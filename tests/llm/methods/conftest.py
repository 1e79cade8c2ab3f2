"""A tiny Llama that has memorised a small synthetic set, shared by the method tests."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from obliviate.core.task import DataSplit, UnlearningTask
from obliviate.llm.data.formatting import PromptFormat, collate, encode_record, resolve_format
from obliviate.llm.data.synthetic import SyntheticFactsConfig, generate_synthetic_facts
from obliviate.llm.methods.base import UnlearnContext, UnlearnTrainConfig
from obliviate.llm.models import TinyModelConfig, tiny_llama, train_tokenizer
from obliviate.llm.task import task_texts
from obliviate.llm.training import TrainConfig, train


@dataclass
class Memorised:
    task: UnlearningTask
    tokenizer: Any
    fmt: PromptFormat
    state: dict[str, torch.Tensor]
    config: TinyModelConfig

    def model(self) -> torch.nn.Module:
        model = tiny_llama(self.tokenizer, self.config)
        model.load_state_dict(copy.deepcopy(self.state))
        return model.eval()

    def context(self, **train_overrides: Any) -> UnlearnContext:
        settings = {"max_steps": 12, "learning_rate": 2e-3, "batch_size": 4, "warmup_ratio": 0.0,
                    "checkpoint_every": 1000, "log_every": 4, **train_overrides}
        return UnlearnContext(tokenizer=self.tokenizer, fmt=self.fmt, task=self.task,
                              train=UnlearnTrainConfig(**settings), max_length=96)

    def unlearn_and_check(self, method: Any, model: torch.nn.Module, out_dir: Any = None,
                          **train_overrides: Any) -> Any:
        """Run ``method`` on ``model`` and assert "forgetting happened, utility held" as the
        method tests state it here: the forget NLL up by >= 1.5 nats, the retain NLL below
        1.0 and rising less than half as much (the tiny model shares sentence templates between
        people, so forgetting one costs some retain likelihood). Returns the outcome."""
        forget_before = self.mean_nll(model, "forget")
        retain_before = self.mean_nll(model, "retain")
        outcome = method.run(model, self.task, out_dir, ctx=self.context(**train_overrides))
        unlearned = outcome.model.eval()
        forget_rise = self.mean_nll(unlearned, "forget") - forget_before
        retain_after = self.mean_nll(unlearned, "retain")
        name = type(method).__name__
        assert forget_rise >= 1.5, (name, forget_rise)
        assert retain_after < 1.0, (name, retain_after)
        assert forget_rise > 2 * (retain_after - retain_before), (name, forget_rise,
                                                                  retain_after)
        return outcome

    @torch.no_grad()
    def mean_nll(self, model: torch.nn.Module, split: str) -> float:
        """Mean per-question answer NLL (length-normalised), as TOFU's avg_gt_loss."""
        from obliviate.llm.data.formatting import answer_nll

        records = self.task.split(split).records
        batch = collate([encode_record(self.tokenizer, self.fmt, r) for r in records],
                        self.tokenizer.pad_token_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return float(answer_nll(logits, batch["labels"]).mean())


@pytest.fixture(scope="session")
def memorised() -> Memorised:
    facts = generate_synthetic_facts(SyntheticFactsConfig(
        num_people=6, facts_per_person=4, forget_people=1, holdout_people=1, seed=0))
    task = UnlearningTask("methods", "llm", DataSplit("forget", facts["forget"]),
                          DataSplit("retain", facts["retain"]),
                          eval_splits={"holdout": DataSplit("holdout", facts["holdout"])})
    tokenizer = train_tokenizer(task_texts(task), vocab_size=400)
    fmt = resolve_format(tokenizer, "base")
    config = TinyModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                             vocab_size=400)
    model = tiny_llama(tokenizer, config, seed=0)
    examples = [encode_record(tokenizer, fmt, r) for r in task.full.records]
    train(model, examples, lambda b: collate(b, tokenizer.pad_token_id),
          TrainConfig(epochs=100, learning_rate=3e-3, batch_size=8, warmup_ratio=0.05,
                      weight_decay=0.0, lr_scheduler="cosine"))
    return Memorised(task, tokenizer, fmt, copy.deepcopy(model.state_dict()), config)
