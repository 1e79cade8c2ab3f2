"""RMU, task-vector negation, and the two retain-set reference points (retrain, finetune_retain).

Behaviour tests use the ``memorised`` tiny Llama (2 layers, hidden 64); their settings were found
with a small sweep and each bound is stated next to its test. Formula tests use fixed tensors.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from obliviate.core.errors import ConfigError
from obliviate.core.registry import METHODS
from obliviate.llm.methods.base import SelectionConfig, UnlearnTrainConfig
from obliviate.llm.methods.finetune_retain import FinetuneRetain
from obliviate.llm.methods.losses import activation_mse, rmu_loss
from obliviate.llm.methods.retrain import Retrain
from obliviate.llm.methods.rmu import RMU, control_vector
from obliviate.llm.methods.task_vector import (
    TaskVector,
    negate_task_vector,
    scale_lora_adapters,
)
from obliviate.llm.models import LoraSettings, tiny_llama

DOWN_PROJ = {"model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"}


def unlearn(memorised, tmp_path, method, model=None, lora=None, selection=None, **train):
    model = memorised.model() if model is None else model
    ctx = memorised.context(**train)
    if lora is not None:
        ctx = dataclasses.replace(ctx, lora=lora)
    if selection is not None:
        ctx = dataclasses.replace(ctx, selection=selection)
    outcome = method.run(model, memorised.task, tmp_path, ctx=ctx, save=False)
    return outcome, outcome.model.eval()


def changed_keys(before: dict[str, torch.Tensor], model: nn.Module) -> set[str]:
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


# -- RMU -------------------------------------------------------------------------------------------
def test_rmu_loss_hand_value():
    # forget: 2 tokens, D = 2, only the first token counted: ((1-1)² + (0-1)²)/2 = 0.5
    forget = torch.tensor([[[1.0, 0.0], [9.0, 9.0]]])
    control = torch.tensor([1.0, 1.0])
    forget_mask = torch.tensor([[True, False]])
    # retain: token 1 ((2-1)² + 0)/2 = 0.5, token 2 (25 + 25)/2 = 25, mean over tokens 12.75
    retain = torch.tensor([[[2.0, 2.0], [0.0, 0.0]]])
    reference = torch.tensor([[[1.0, 2.0], [5.0, 5.0]]])
    retain_mask = torch.tensor([[True, True]])
    total, forget_term, retain_term = rmu_loss(forget, control, forget_mask, retain, reference,
                                               retain_mask, alpha=2.0)
    assert float(forget_term) == pytest.approx(0.5)
    assert float(retain_term) == pytest.approx(12.75)
    assert float(total) == pytest.approx(0.5 + 2.0 * 12.75)


def test_activation_mse_without_padding_is_the_reference_mse_loss():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 5, 4, generator=gen), torch.randn(3, 5, 4, generator=gen)
    full = torch.ones(3, 5, dtype=torch.bool)
    assert float(activation_mse(a, b, full)) == pytest.approx(
        float(torch.nn.functional.mse_loss(a, b)), rel=1e-6)


def test_control_vector_is_a_seeded_nonnegative_direction_of_norm_c():
    c = control_vector(64, 6.5, seed=3)
    assert float(c.norm()) == pytest.approx(6.5, rel=1e-5)
    assert torch.all(c >= 0)  # uniform on [0, 1), as the reference's torch.rand
    assert torch.equal(c, control_vector(64, 6.5, seed=3))
    assert not torch.equal(c, control_vector(64, 6.5, seed=4))


def test_rmu_defaults_are_the_wmdp_release():
    cfg = RMU().config
    assert (cfg.steering_coeff, cfg.alpha, cfg.layer) == (6.5, 1200.0, 7)
    assert (cfg.coefficient, cfg.adaptive_scale) == ("adaptive", 5.0)  # Dang et al. 2025
    assert RMU.train_defaults == {"learning_rate": 5e-5}  # under a learning rate the recipe sets
    assert cfg.param_names == ["mlp.down_proj.weight"] and cfg.update_layers is None
    assert RMU().resolve_layers(32) == (7, [5, 6, 7])


def test_rmu_validates_layers_against_the_model(memorised, tmp_path):
    # The default layer 7 does not exist in a 2-layer model: a ConfigError naming the field.
    with pytest.raises(ConfigError, match=r"layer=7 is out of range .* 2 decoder layers"):
        unlearn(memorised, tmp_path, RMU(), max_steps=1)
    with pytest.raises(ConfigError, match="update_layers"):
        unlearn(memorised, tmp_path, RMU(layer=0, update_layers=[0, 1]), max_steps=1)
    with pytest.raises(ConfigError, match="param_names"):
        unlearn(memorised, tmp_path, RMU(layer=1, param_names=["mlp.nope.weight"]), max_steps=1)
    assert RMU(layer=-1).resolve_layers(2) == (1, [0, 1])


# Tiny-model settings: steer the last layer's output (layer 1, so layers 0 and 1 are updated),
# a fixed c = 6.5 (WMDP), α = 100, answer tokens, lr 1e-2, 24 steps. Measured: forget NLL
# 0.02 → 2.2, retain 0.02 → 0.60. Bounds: forget up by >= 1.5, retain below 1.0 and rising less
# than half as much as forget.
def test_rmu_forgets_and_changes_only_the_chosen_mlp_weights(memorised, tmp_path):
    model = memorised.model()
    forget_before = memorised.mean_nll(model, "forget")
    retain_before = memorised.mean_nll(model, "retain")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    method = RMU(layer=1, alpha=100.0, tokens="answer", coefficient="fixed")
    outcome, unlearned = unlearn(memorised, tmp_path, method, model=model, max_steps=24,
                                 learning_rate=1e-2)  # set: replaces RMU's paper default 5e-5
    forget_rise = memorised.mean_nll(unlearned, "forget") - forget_before
    retain_after = memorised.mean_nll(unlearned, "retain")
    assert forget_rise >= 1.5, forget_rise
    assert retain_after < 1.0, retain_after
    assert forget_rise > 2 * (retain_after - retain_before), (forget_rise, retain_after)
    assert changed_keys(before, unlearned) == DOWN_PROJ
    assert outcome.trainable_parameters == 2 * 64 * 128
    assert outcome.extra["rmu"]["update_layers"] == [0, 1]
    assert outcome.history[-1]["lr"] == pytest.approx(1e-2)
    assert all(p.requires_grad for p in unlearned.parameters())  # flags restored
    assert method.reference_model is None


def test_rmu_runs_only_the_layers_it_needs(memorised, tmp_path):
    # Steering layer 0: neither the trained model nor the frozen copy may run layer 1.
    model = memorised.model()
    calls = []
    model.model.layers[1].register_forward_hook(lambda *_: calls.append(1))
    method = RMU(layer=0)
    reference_depths = []
    original = method.reference_activations

    def spy(batch):
        reference_depths.append(len(method._reference_layers))
        return original(batch)

    method.reference_activations = spy
    outcome, _ = unlearn(memorised, tmp_path, method, model=model, max_steps=2)
    # three reference passes: the adaptive coefficient's norm over the forget set, then 2 steps
    assert outcome.steps == 2 and calls == [] and reference_depths == [1, 1, 1]
    assert outcome.trainable_parameters == 64 * 128  # layer 0's down_proj only


def test_rmu_with_lora_adapts_only_the_chosen_modules(memorised, tmp_path):
    model = memorised.model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lora = LoraSettings(enabled=True, r=4, alpha=8, dropout=0.0)
    outcome, unlearned = unlearn(memorised, tmp_path, RMU(layer=1), model=model, lora=lora,
                                 max_steps=3, learning_rate=1e-2)
    assert changed_keys(before, unlearned) == DOWN_PROJ
    assert outcome.trainable_parameters == 2 * 4 * (128 + 64)  # A: r×128, B: 64×r per module


# -- task vector ----------------------------------------------------------------------------------
def test_task_vector_arithmetic_on_a_linear_layer_by_hand():
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 1.0], [0.0, -2.0]]))  # θ_ft
        layer.bias.copy_(torch.tensor([1.0, 1.0]))
    original = {"weight": torch.tensor([[1.0, 1.0], [2.0, 0.0]]),  # θ_o
                "bias": torch.tensor([0.0, 2.0])}
    negate_task_vector(layer, original, scaling_coef=0.5)
    # θ_o − 0.5(θ_ft − θ_o): weight [[1−1, 1−0], [2+1, 0+1]], bias [0−0.5, 2+0.5]
    assert torch.equal(layer.weight, torch.tensor([[0.0, 1.0], [3.0, 1.0]]))
    assert torch.equal(layer.bias, torch.tensor([-0.5, 2.5]))


def test_task_vector_lora_negation_by_hand():
    from peft import LoraConfig, get_peft_model

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(2, 2, bias=False)

        def forward(self, x):
            return self.proj(x)

    tiny = Tiny()
    with torch.no_grad():
        tiny.proj.weight.copy_(torch.eye(2))
    model = get_peft_model(tiny, LoraConfig(r=1, lora_alpha=2, target_modules=["proj"]))
    proj = model.base_model.model.proj
    with torch.no_grad():
        proj.lora_A["default"].weight.copy_(torch.tensor([[1.0, 2.0]]))
        proj.lora_B["default"].weight.copy_(torch.tensor([[1.0], [0.5]]))
    # ΔW = (alpha/r)·BA = 2·[[1, 2], [0.5, 1]]; λ = 0.5: W_o − λΔW = I − [[1, 2], [0.5, 1]]
    assert scale_lora_adapters(model, -0.5) == 1
    merged = model.merge_and_unload()
    assert torch.allclose(merged.proj.weight, torch.tensor([[0.0, -2.0], [-0.5, 0.0]]))


def test_task_vector_defaults_and_finetune_overrides():
    assert TaskVector().config.scaling_coef == 1.0
    train = UnlearnTrainConfig(epochs=10, max_steps=7, learning_rate=1e-5)
    assert TaskVector().finetune_config(train) is train
    cfg = TaskVector(finetune_epochs=2, finetune_learning_rate=1e-4).finetune_config(train)
    assert (cfg.epochs, cfg.max_steps, cfg.learning_rate) == (2, None, 1e-4)
    assert TaskVector(finetune_steps=3).finetune_config(train).max_steps == 3


# Fine-tune 6 steps at lr 3e-3 on the forget set, λ = 1. Measured: forget NLL 0.02 → 1.88, retain
# 0.02 → 0.62. Bounds as for the gradient methods (forget +1.5, retain < 1, twice as selective).
def test_task_vector_negation_forgets(memorised, tmp_path):
    model = memorised.model()
    forget_before = memorised.mean_nll(model, "forget")
    retain_before = memorised.mean_nll(model, "retain")
    outcome, unlearned = unlearn(memorised, tmp_path, TaskVector(), model=model, max_steps=6,
                                 learning_rate=3e-3)
    forget_rise = memorised.mean_nll(unlearned, "forget") - forget_before
    retain_after = memorised.mean_nll(unlearned, "retain")
    assert forget_rise >= 1.5, forget_rise
    assert retain_after < 1.0, retain_after
    assert forget_rise > 2 * (retain_after - retain_before), (forget_rise, retain_after)
    assert outcome.history[-1]["forget_nll"] < 0.05  # the fine-tuning phase did fit F


# LoRA (r 8, all linear layers), 8 steps at lr 3e-2. Measured: forget 0.02 → 2.81, retain
# 0.02 → 1.93: negating a LoRA task vector is weakly selective on this model, so the bounds are
# forget +1.0 and rising more than retain.
def test_task_vector_with_lora_merges_the_negated_adapter(memorised, tmp_path):
    model = memorised.model()
    keys = set(model.state_dict())
    forget_before = memorised.mean_nll(model, "forget")
    retain_before = memorised.mean_nll(model, "retain")
    lora = LoraSettings(enabled=True, r=8, alpha=16, dropout=0.0)
    _, unlearned = unlearn(memorised, tmp_path, TaskVector(), model=model, lora=lora,
                           max_steps=8, learning_rate=3e-2)
    assert set(unlearned.state_dict()) == keys  # merged back into a plain model
    forget_rise = memorised.mean_nll(unlearned, "forget") - forget_before
    retain_rise = memorised.mean_nll(unlearned, "retain") - retain_before
    assert forget_rise >= 1.0 and forget_rise > retain_rise, (forget_rise, retain_rise)


# -- retain-set reference points ------------------------------------------------------------------
def test_starts_from_flags_and_registration():
    assert METHODS.get("retrain", "llm") is Retrain and Retrain.starts_from == "base"
    assert METHODS.get("finetune_retain", "llm") is FinetuneRetain
    assert FinetuneRetain.starts_from == "target"
    assert METHODS.get("rmu", "llm").starts_from == "target"
    assert METHODS.get("task_vector", "llm") is TaskVector


def test_retain_methods_train_on_retain_records_only(memorised):
    ctx = memorised.context()
    items = Retrain().build_items(ctx)
    assert len(items) == len(memorised.task.retain)
    assert all(it.forget is None and it.retain is not None for it in items)
    batch = Retrain.collate_fn(memorised.tokenizer.pad_token_id)(items[:3])
    assert set(batch) == {"index", "retain"}


# Continue training the target on the retain set, 24 steps at lr 1e-2 (batch 8). Measured: forget
# NLL 0.02 → 2.53, retain 0.02 → 0.10 (catastrophic forgetting of the unseen person).
def test_finetune_retain_forgets_by_training_on_retain(memorised, tmp_path):
    model = memorised.model()
    forget_before = memorised.mean_nll(model, "forget")
    retain_before = memorised.mean_nll(model, "retain")
    _, tuned = unlearn(memorised, tmp_path, FinetuneRetain(), model=model, max_steps=24,
                       learning_rate=1e-2, batch_size=8)
    forget_rise = memorised.mean_nll(tuned, "forget") - forget_before
    retain_after = memorised.mean_nll(tuned, "retain")
    assert forget_rise >= 1.5, forget_rise
    assert retain_after < 1.0, retain_after
    assert forget_rise > 2 * (retain_after - retain_before), (forget_rise, retain_after)


# The oracle from a fresh seeded init (what the pipeline passes for starts_from = "base"), 60 steps
# at lr 3e-3 (batch 8). Measured: retain NLL 6.0 → 0.78 while forget stays at 3.0 (it was 6.0;
# sentence templates are shared). Bounds: retain falls below 1.5, forget stays above 2.5 and at
# least 1.5 above retain (the memorised target's forget NLL is 0.02).
def test_retrain_learns_retain_and_never_the_forget_set(memorised, tmp_path):
    model = tiny_llama(memorised.tokenizer, memorised.config, seed=0)
    assert memorised.mean_nll(model, "retain") > 5.0
    proxy = SelectionConfig(rule="proxy", every=5)  # ignored: selection would look at F
    outcome, oracle = unlearn(memorised, tmp_path, Retrain(), model=model, selection=proxy,
                              max_steps=60, learning_rate=3e-3, batch_size=8)
    forget_after = memorised.mean_nll(oracle, "forget")
    retain_after = memorised.mean_nll(oracle, "retain")
    assert retain_after < 1.5, retain_after
    assert forget_after > 2.5 and forget_after > retain_after + 1.5, (forget_after, retain_after)
    assert outcome.steps == 60 and outcome.selection["rule"] == "last"
