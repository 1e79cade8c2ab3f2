"""Fine-tuning: loss falls, facts are memorised, and an interrupted run resumes exactly."""

from __future__ import annotations

import pytest
import torch

from obliviate.core.errors import TrainingDivergedError
from obliviate.core.rundir import RunDir
from obliviate.core.task import DataSplit, UnlearningTask
from obliviate.llm.data.formatting import IGNORE_INDEX, collate, encode_record, resolve_format
from obliviate.llm.finetune import finetune
from obliviate.llm.models import ModelConfig, TinyModelConfig, load_pretrained, tiny_llama
from obliviate.llm.training import TrainConfig, lm_loss, train

SMALL = TinyModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                        vocab_size=400)


def argmax_accuracy(model, tokenizer, records) -> float:
    """Fraction of answer tokens the model predicts exactly (teacher forcing)."""
    fmt = resolve_format(tokenizer, "base")
    batch = collate([encode_record(tokenizer, fmt, r) for r in records], tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    pred, labels = logits[:, :-1].argmax(-1), batch["labels"][:, 1:]
    mask = labels != IGNORE_INDEX
    return float((pred[mask] == labels[mask]).float().mean())


def test_finetune_memorises_a_handful_of_facts(tmp_path, facts):
    records = facts["retain"][:6] + facts["forget"][:2]
    task = UnlearningTask("t", "llm", DataSplit("forget", records[6:]),
                          DataSplit("retain", records[:6])).validate()
    run = RunDir(tmp_path).create()
    config = TrainConfig(epochs=80, learning_rate=3e-3, batch_size=8, warmup_ratio=0.05,
                         weight_decay=0.0, log_every=10)
    stage = finetune("target", ModelConfig(tiny=SMALL), config, task, run)
    history = stage["history"]
    assert history[-1]["loss"] < 0.1 * history[0]["loss"]
    model, tokenizer = load_pretrained(stage["model_path"])
    assert argmax_accuracy(model, tokenizer, records) > 0.95
    assert run.stage_done("finetune_target")
    assert not run.checkpoints("target").exists()  # cleaned once the stage is done


def _dataset(tokenizer, facts):
    fmt = resolve_format(tokenizer, "base")
    return [encode_record(tokenizer, fmt, r) for r in facts["retain"][:8]]


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, tiny_tokenizer, facts):
    data = _dataset(tiny_tokenizer, facts)
    collate_fn = lambda b: collate(b, tiny_tokenizer.pad_token_id)  # noqa: E731
    config = TrainConfig(max_steps=12, learning_rate=1e-3, batch_size=3, checkpoint_every=4)

    reference = tiny_llama(tiny_tokenizer, SMALL, seed=0)
    train(reference, data, collate_fn, config, checkpoint_dir=tmp_path / "a")

    calls = {"n": 0}

    def crashing_loss(model, batch):
        calls["n"] += 1
        if calls["n"] == 7:  # crash in the middle of the second checkpoint interval
            raise KeyboardInterrupt
        return lm_loss(model, batch)

    interrupted = tiny_llama(tiny_tokenizer, SMALL, seed=0)
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, data, collate_fn, config, checkpoint_dir=tmp_path / "b",
              loss_fn=crashing_loss)
    resumed = tiny_llama(tiny_tokenizer, SMALL, seed=0)
    outcome = train(resumed, data, collate_fn, config, checkpoint_dir=tmp_path / "b")
    assert outcome.resumed_from == 4
    for (name, a), (_, b) in zip(reference.named_parameters(), resumed.named_parameters(),
                                 strict=True):
        assert torch.equal(a, b), name


def test_nan_loss_stops_with_a_clear_error(tmp_path, tiny_tokenizer, facts):
    data = _dataset(tiny_tokenizer, facts)
    model = tiny_llama(tiny_tokenizer, SMALL, seed=0)

    def nan_loss(model, batch):
        loss, logs = lm_loss(model, batch)
        return loss * float("nan"), logs

    with pytest.raises(TrainingDivergedError, match="loss diverged at step 0"):
        train(model, data, lambda b: collate(b, tiny_tokenizer.pad_token_id),
              TrainConfig(max_steps=3, batch_size=4), checkpoint_dir=tmp_path, loss_fn=nan_loss)
