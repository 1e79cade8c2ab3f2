"""The method contract from Python (issue 14.6): ``Method(config).run(model, task)`` with no
hand-built context and no output folder, a typed outcome holding the model, ``starts_from`` on
the base class, and hyperparameter typos caught with a suggestion."""

from __future__ import annotations

import os

import pytest
import torch

import obliviate.diffusion.methods  # noqa: F401  (registers the catalogue)
import obliviate.llm.methods  # noqa: F401
from obliviate.core.errors import ConfigError
from obliviate.core.method import MethodOutcome, UnlearningMethod
from obliviate.core.registry import METHODS
from obliviate.core.task import DataSplit, UnlearningTask
from obliviate.llm.models import TinyModelConfig, tiny_llama

TINY = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                       max_position_embeddings=128)


def test_llm_method_runs_without_context_or_output_folder(facts, tiny_tokenizer, tmp_path,
                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    task = UnlearningTask("t", "llm", DataSplit("forget", facts["forget"]),
                          DataSplit("retain", facts["retain"]))
    model = tiny_llama(tiny_tokenizer, TINY)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    npo = METHODS.get("npo", "llm")(beta=0.2)
    outcome = npo.run(model, task, tokenizer=tiny_tokenizer)
    assert isinstance(outcome, MethodOutcome) and outcome.model is model
    assert outcome.model_path is None and outcome.steps > 0
    assert "model" not in outcome.extra
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert changed and next(model.parameters()).device.type == "cpu"
    assert os.listdir(tmp_path) == []  # nothing written: no weights, no checkpoints


def test_llm_method_without_tokenizer_says_what_it_needs(facts, tiny_tokenizer):
    task = UnlearningTask("t", "llm", DataSplit("forget", facts["forget"]),
                          DataSplit("retain", facts["retain"]))
    with pytest.raises(ConfigError, match="needs the model's tokenizer"):
        METHODS.get("grad_ascent", "llm")().run(tiny_llama(tiny_tokenizer, TINY), task)


def test_proxy_selection_keeps_the_best_weights_in_memory(facts, tiny_tokenizer, tmp_path,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    task = UnlearningTask("t", "llm", DataSplit("forget", facts["forget"]),
                          DataSplit("retain", facts["retain"]))
    method = METHODS.get("grad_ascent", "llm")()
    ctx = method.context(task, tiny_tokenizer)
    ctx.selection = ctx.selection.model_copy(update={"rule": "proxy", "every": 2})
    ctx.train = ctx.train.model_copy(update={"max_steps": 6, "learning_rate": 1e-3})
    outcome = method.run(tiny_llama(tiny_tokenizer, TINY), task, ctx=ctx)
    assert outcome.selection["selected"]["step"] in (2, 4, 6)
    assert os.listdir(tmp_path) == []


def test_starts_from_is_declared_on_the_base_class():
    assert UnlearningMethod.starts_from == "target"
    for entry in METHODS.entries():
        assert entry.obj.starts_from in ("target", "base"), entry.name
    assert METHODS.get("retrain", "llm").starts_from == "base"


def test_unknown_hyperparameter_lists_the_valid_names_and_a_close_match():
    with pytest.raises(ConfigError) as err:
        METHODS.get("npo", "llm")(betta=0.2)
    message = str(err.value)
    assert "\n" not in message and "'betta'" in message and "did you mean 'beta'" in message
    assert "valid: " in message and "gamma" in message


def test_diffusion_method_runs_without_output_folder(tmp_path, monkeypatch):
    from obliviate.diffusion.models import ModelConfig, build_denoiser
    from obliviate.diffusion.task import TaskConfig, build_task

    monkeypatch.chdir(tmp_path)
    task = build_task(TaskConfig(dataset="digits", image_size=8, forget_classes=[0],
                                 max_per_class=8))
    model = build_denoiser(ModelConfig(channels=[8, 16], cond_dim=8, time_dim=16), 10, 8, 1)
    method = METHODS.get("grad_ascent", "diffusion")(steps=2, batch_size=4)
    outcome = method.run(model, task)
    assert outcome.model is model and outcome.model_path is None and outcome.steps == 2
    assert os.listdir(tmp_path) == []


def test_a_sharded_model_is_refused_with_the_reason_unless_the_method_changes_no_weight(
        facts, tiny_tokenizer):
    task = UnlearningTask("t", "llm", DataSplit("forget", facts["forget"]),
                          DataSplit("retain", facts["retain"]))
    model = tiny_llama(tiny_tokenizer, TINY)
    model.hf_device_map = {"model.layers.0": 0, "lm_head": 1}  # as device_map="auto" leaves it
    with pytest.raises(ConfigError, match="sharded over 2 devices"):
        METHODS.get("npo", "llm")().run(model, task, tokenizer=tiny_tokenizer)
    outcome = METHODS.get("guardrail", "llm")().run(model, task, tokenizer=tiny_tokenizer)
    assert outcome.model is model and outcome.prompt_format.system_prompt
