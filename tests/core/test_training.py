"""The core training loop: gradient accumulation, mixed precision, EMA and exact resume."""

from __future__ import annotations

import pytest
import torch

from obliviate.core.training import EpochBatches, LoopSettings, StepBatches, train_loop


def _linear() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(3, 1)


DATA = [(torch.tensor([float(i), 1.0, -float(i)]), torch.tensor([0.5 * i])) for i in range(8)]


def _collate(items):
    return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


def _mse(model, batch):
    x, y = batch
    loss = torch.nn.functional.mse_loss(model(x), y)
    return loss, {"loss": float(loss.detach())}


def test_two_accumulated_micro_batches_equal_one_batch_of_twice_the_size():
    weights = []
    for batch_size, accumulation in ((4, 1), (2, 2)):
        model = _linear()
        settings = LoopSettings(total_steps=6, learning_rate=0.05, optimizer="adam",
                                gradient_accumulation_steps=accumulation, max_grad_norm=None)
        train_loop(model, _mse, EpochBatches(DATA, batch_size, _collate, seed=3,
                                             gradient_accumulation_steps=accumulation),
                   settings)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(weights[0], weights[1], atol=1e-6)
    assert not torch.allclose(weights[0], torch.cat([p.detach().flatten()
                                                     for p in _linear().parameters()]))


def _drawn_loss(fail_at: int | None = None):
    def loss_fn(model, batch):
        step, gen = batch
        if fail_at is not None and step == fail_at:
            raise KeyboardInterrupt("killed")
        x = torch.randn(4, 3, generator=gen)
        return ((model(x) - x.sum(1, keepdim=True)) ** 2).mean(), {}
    return loss_fn


def test_a_killed_run_with_accumulation_and_ema_resumes_to_the_same_weights(tmp_path):
    settings = LoopSettings(total_steps=6, learning_rate=0.05, gradient_accumulation_steps=2,
                            ema_decay=0.9, checkpoint_every=2, log_every=1,
                            lr_scheduler="cosine", warmup_steps=2)
    reference = _linear()
    whole = train_loop(reference, _drawn_loss(), StepBatches(seed=1, gradient_accumulation_steps=2),
                       settings, checkpoint_dir=tmp_path / "a")
    resumed = _linear()
    with pytest.raises(KeyboardInterrupt):
        train_loop(resumed, _drawn_loss(fail_at=3), StepBatches(1, 2), settings,
                   checkpoint_dir=tmp_path / "b")
    again = train_loop(resumed, _drawn_loss(), StepBatches(1, 2), settings,
                       checkpoint_dir=tmp_path / "b")
    assert again.resumed_from == 2
    for a, b in zip(reference.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    assert again.history == whole.history


def test_bf16_mixed_precision_runs_the_loss_under_autocast():
    seen = []

    def loss_fn(model, batch):
        seen.append(torch.is_autocast_enabled("cpu"))
        _, gen = batch
        x = torch.randn(4, 3, generator=gen)
        return model(x).float().pow(2).mean(), {}

    model = _linear()
    out = train_loop(model, loss_fn, StepBatches(0),
                     LoopSettings(total_steps=2, learning_rate=0.01, mixed_precision="bf16"))
    assert seen == [True, True] and out.steps == 2
    assert model.weight.dtype == torch.float32  # the weights stay fp32
    plain = []
    train_loop(_linear(), lambda m, b: (plain.append(torch.is_autocast_enabled("cpu"))
                                        or m(torch.ones(1, 3)).pow(2).mean(), {}),
               StepBatches(0), LoopSettings(total_steps=1, learning_rate=0.01))
    assert plain == [False]


@pytest.mark.parametrize("master_weights", ["float32", "model"])
def test_bf16_weights_keep_float32_masters_so_small_updates_add_up(master_weights):
    """A bf16 weight of 1.0 sits on a grid of 2**-7; Adam moves it by the learning rate (1e-4)
    a step, always down here (the loss is the weight itself). In bf16 each step rounds back to
    1.0 and 40 steps change nothing; a float32 master goes to 1 - 40e-4 = 0.996, which casts
    back to the nearest bf16 value, 1 - 2**-8. The weight is bf16 again after the loop, and
    the steps and ``on_step`` run under bf16 autocast."""
    model = torch.nn.Linear(1, 1, bias=False).to(torch.bfloat16)
    with torch.no_grad():
        model.weight.fill_(1.0)
    seen = []

    def loss_fn(m, batch):
        seen.append((torch.is_autocast_enabled("cpu"), m.weight.dtype))
        return m.weight.float().sum(), {}

    probed = []
    train_loop(model, loss_fn, StepBatches(0),
               LoopSettings(total_steps=40, learning_rate=1e-4, max_grad_norm=None,
                            master_weights=master_weights),
               on_step=lambda step, m: probed.append(torch.is_autocast_enabled("cpu")))
    assert model.weight.dtype == torch.bfloat16
    masters = master_weights == "float32"
    if masters:
        assert float(model.weight.detach()) == 1 - 2 ** -8
        assert set(seen) == {(True, torch.float32)}
    else:
        assert float(model.weight.detach()) == 1.0  # every update lost to rounding
        assert set(seen) == {(False, torch.bfloat16)}
    assert set(probed) == {masters}  # a step's probe computes as the loop does


def test_checkpoints_only_at_the_interval_never_at_the_last_step(tmp_path, monkeypatch):
    """The last step is the caller's final save: a checkpoint there wrote the weights twice.
    Without it the weights are bit-identical to a run that writes no checkpoint at all, and a
    run killed after its last step resumes from the interval's checkpoint to the same weights."""
    from obliviate.core import training

    written = []
    real = training.save_checkpoint
    monkeypatch.setattr(training, "save_checkpoint", lambda ckpt, step, *a, **k: (
        written.append(step) or real(ckpt, step, *a, **k)))
    settings = LoopSettings(total_steps=6, learning_rate=0.05, checkpoint_every=3, log_every=1)
    plain, checkpointed = _linear(), _linear()
    train_loop(plain, _drawn_loss(), StepBatches(seed=2), settings)
    train_loop(checkpointed, _drawn_loss(), StepBatches(seed=2), settings,
               checkpoint_dir=tmp_path)
    assert written == [3]
    assert [p.name for p in tmp_path.iterdir()] == ["step-3"]
    for a, b in zip(plain.parameters(), checkpointed.parameters(), strict=True):
        assert torch.equal(a, b)
    again = _linear()  # killed before its save: the next run redoes steps 4-6 from step-3
    out = train_loop(again, _drawn_loss(), StepBatches(seed=2), settings, checkpoint_dir=tmp_path)
    assert out.resumed_from == 3 and written == [3]
    for a, b in zip(plain.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)
    every = LoopSettings(total_steps=2, learning_rate=0.05, checkpoint_every=5)
    train_loop(_linear(), _drawn_loss(), StepBatches(seed=2), every, checkpoint_dir=tmp_path / "x")
    assert written == [3] and not list((tmp_path / "x").glob("step-*"))
