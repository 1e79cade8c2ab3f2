"""Measurement precision: ``measured_in`` chooses the autocast that ``evaluating`` applies to a
model's forward passes; weights keep their dtype and each is cast once per block."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from obliviate.core.errors import ConfigError
from obliviate.core.precision import (
    evaluating,
    measured_in,
    measurement_precision,
    measuring,
    precision_input,
)

torch.set_num_threads(1)


def test_evaluating_runs_the_blocks_precision_and_restores_the_model():
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 32).train()
    x = torch.randn(8, 64)
    with evaluating(layer):
        plain = layer(x)
        assert not layer.training and not plain.requires_grad
    assert layer.training and plain.dtype == torch.float32
    assert torch.equal(plain, torch.nn.functional.linear(x, layer.weight, layer.bias).detach())

    with measured_in("bf16"):
        assert measurement_precision() == "bf16"
        with evaluating(layer):
            low = layer(x)
    assert measurement_precision() == "no"
    assert low.dtype == torch.bfloat16 and layer.weight.dtype == torch.float32
    expected = torch.nn.functional.linear(x.bfloat16(), layer.weight.bfloat16(),
                                          layer.bias.bfloat16())
    assert torch.equal(low, expected)
    assert not torch.equal(low.float(), plain)  # bf16 arithmetic, not fp32 rounded afterwards


def test_each_weight_is_cast_once_per_block():
    """Autocast keeps one bf16 copy of a weight for the whole block (it would recast it at every
    call under ``inference_mode``), so a greedy decode does not pay a weight cast per step."""
    layer = torch.nn.Linear(48, 40, bias=False)
    x = torch.randn(3, 48)
    with measured_in("bf16"), profile(activities=[ProfilerActivity.CPU],
                                      record_shapes=True) as prof, evaluating(layer):
        for _ in range(6):
            layer(x)
    weight_casts = [e for e in prof.events()
                    if e.name == "aten::_to_copy" and e.input_shapes
                    and list(e.input_shapes[0]) == [40, 48]]
    assert len(weight_casts) == 1


def test_bad_precision_is_refused_in_one_line(monkeypatch):
    with pytest.raises(ConfigError, match="mixed_precision: 'bf8'"), measured_in("bf8"):
        pass
    monkeypatch.setattr("obliviate.core.precision.has_accelerator", lambda: False)
    with pytest.raises(ConfigError, match="fp16 needs a GPU"), measured_in("fp16"):
        pass


def test_only_a_precision_other_than_no_is_a_stage_input():
    assert precision_input("no") == {}
    assert precision_input("bf16") == {"mixed_precision": "bf16"}


def test_measuring_keeps_gradients_and_leaves_an_outer_autocast_alone():
    """``measuring`` is the autocast alone (attacks optimise through it); at ``"no"`` it adds
    nothing, so a training loop's own autocast around it still applies."""
    layer = torch.nn.Linear(16, 8)
    x = torch.randn(4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16), measuring(layer):
        assert layer(x).dtype == torch.bfloat16
    with measuring(layer):
        assert layer(x).dtype == torch.float32
    with measured_in("bf16"), measuring(layer):
        out = layer(x)
    assert out.dtype == torch.bfloat16 and out.requires_grad
    out.float().sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.dtype == torch.float32
