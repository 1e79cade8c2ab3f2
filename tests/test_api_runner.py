"""The verbs and the CLI run one code path: the stage runners (``obliviate.<modality>.runner``)
write and record only when given a folder or a run directory; the training curve reaches the
trackers while the model trains, not after."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import obliviate
from obliviate.core.errors import TrainingDivergedError
from obliviate.llm.models import TinyModelConfig, tiny_llama

TINY = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                       max_position_embeddings=128)


def rows(facts, split):
    return [r.to_dict() for r in facts[split]]


def diverging_after(monkeypatch, cls, calls: int) -> None:
    """``cls.loss`` as it is for ``calls`` batches, then a loss far past the divergence
    threshold (the loop stops with :class:`TrainingDivergedError`)."""
    original, seen = cls.loss, []

    def loss(self, model, batch):
        value, logs = original(self, model, batch)
        seen.append(1)
        return (value * 0 + 1e9 if len(seen) > calls else value), logs

    monkeypatch.setattr(cls, "loss", loss)


def test_training_curve_reaches_tensorboard_while_training(facts, tiny_tokenizer, tmp_path,
                                                           monkeypatch):
    """A run that diverges at step 5 has already sent steps 2 and 4 to TensorBoard: the curve
    is logged as the loop logs it (a log written after training would hold nothing)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from obliviate.llm.methods.grad_ascent import GradAscent

    diverging_after(monkeypatch, GradAscent, calls=4)  # batch_size 1 below: one call a step
    model = tiny_llama(tiny_tokenizer, TINY)
    with pytest.raises(TrainingDivergedError, match="step 4"):
        obliviate.unlearn(model, tiny_tokenizer, forget=rows(facts, "forget"),
                          retain=rows(facts, "retain"), method="grad_ascent", max_steps=8,
                          batch_size=1, log_every=2, divergence_threshold=1e6,
                          log_with="tensorboard", logging_dir=tmp_path / "logs")
    events = EventAccumulator(str(tmp_path / "logs" / "unlearn-grad_ascent"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4]
    assert all(e.value < 1e6 for e in events.Scalars("train/loss"))
    assert [e.step for e in events.Scalars("train/lr")] == [2, 4]
    assert "cost/steps" not in events.Tags()["scalars"]  # the run never finished


def test_one_runner_records_in_a_run_directory_and_writes_nothing_without(
        facts, tiny_tokenizer, tmp_path, monkeypatch):
    """The runner the verbs call writes the model, manifest and ``run.json`` stage record when
    the CLI gives it a run directory; the verb itself writes nothing (empty working
    directory), and a failure is recorded as failed, not left "running"."""
    from obliviate.core.integrity import MANIFEST
    from obliviate.core.io import sha256_dir
    from obliviate.core.rundir import RunDir
    from obliviate.llm import runner
    from obliviate.llm.methods.base import UnlearnTrainConfig
    from obliviate.llm.methods.grad_ascent import GradAscent, GradAscentConfig

    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    result = obliviate.unlearn(tiny_llama(tiny_tokenizer, TINY), tiny_tokenizer,
                               forget=rows(facts, "forget"), retain=rows(facts, "retain"),
                               method="grad_ascent", max_steps=2)
    assert list((tmp_path / "cwd").iterdir()) == [] and result.steps == 2

    run = RunDir(tmp_path / "run").create()
    task = obliviate.api._task(None, "llm", rows(facts, "forget"), rows(facts, "retain"))
    config = GradAscentConfig()
    ctx = GradAscent(config).context(task, tiny_tokenizer,
                                     train=UnlearnTrainConfig(max_steps=2, log_every=1,
                                                             divergence_threshold=1e6))
    out = run.model("unlearned/grad_ascent")
    outcome, record = runner.unlearn("grad_ascent", GradAscent, config,
                                     tiny_llama(tiny_tokenizer, TINY), task, ctx,
                                     out_dir=out, run=run, base_model="target")
    stage = json.loads((run.root / "run.json").read_text())["stages"]["unlearn_grad_ascent"]
    assert stage["status"] == "done" and stage == record
    assert stage["steps"] == outcome.steps == 2
    assert [e["step"] for e in stage["history"]] == [1, 2]
    assert stage["weights_sha256"] == sha256_dir(out, ("*.safetensors",))
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["method"] == "grad_ascent" and manifest["base_model"] == "target"

    diverging_after(monkeypatch, GradAscent, calls=0)
    with pytest.raises(TrainingDivergedError):
        runner.unlearn("grad_ascent", GradAscent, config, tiny_llama(tiny_tokenizer, TINY),
                       task, ctx, run=run)
    stage = json.loads((run.root / "run.json").read_text())["stages"]["unlearn_grad_ascent"]
    assert stage["status"] == "failed" and "diverged" in stage["error"]


def tiny_pipeline(folder):
    """The random Stable-Diffusion-layout pipeline of the text-to-image tests (8×8 latents of
    16×16 RGB images), as the object ``StableDiffusionPipeline.from_pretrained`` gives."""
    from diffusers import StableDiffusionPipeline

    from tests.diffusion.test_text2image import build_pipeline

    return StableDiffusionPipeline.from_pretrained(str(build_pipeline(folder)),
                                                   safety_checker=None,
                                                   requires_safety_checker=False)


def prompt_rows(prompt: str, colour: tuple[int, int, int], n: int = 6) -> list[dict]:
    rng = np.random.default_rng(len(prompt))
    out = []
    for i in range(n):
        image = rng.integers(0, 40, (16, 16, 3)).astype(np.float32)
        image[i % 4::4] = colour
        out.append({"image": image / 255.0, "prompt": prompt})
    return out


def test_a_diffusers_pipeline_in_and_out(tmp_path):
    """``unlearn`` takes a StableDiffusionPipeline and rows with prompts, edits the pipeline's
    own UNet (ESD-x: cross-attention only) and returns the pipeline, which still generates;
    ``evaluate`` takes it back; the saved folder loads with ``DiffusionPipeline``."""
    from diffusers import DiffusionPipeline

    pipe = tiny_pipeline(tmp_path)
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    forget = prompt_rows("a photo of a church", (220, 80, 40))
    retain = prompt_rows("a photo of a tench", (40, 90, 220))
    result = obliviate.unlearn(pipe, forget=forget, retain=retain, method="esd_x", steps=2,
                               batch_size=2, ddim_steps=2, learning_rate=1e-2)
    assert result.model is pipe and result.modality == "diffusion" and result.steps == 2
    after = pipe.unet.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".attn2." in k for k in changed)

    images = pipe("a photo of a church", num_inference_steps=2, height=16, width=16,
                  output_type="np").images
    assert images.shape == (1, 16, 16, 3) and np.isfinite(images).all()

    scores = obliviate.evaluate(result, forget=forget, retain=retain, options={
        "samples_per_class": 2, "sample_steps": 2, "grid_per_class": 0, "kid_subsets": 1,
        "kid_subset_size": 2, "judge": {"epochs": 1}})
    assert 0 <= scores["generation/forget/forget_accuracy"] <= 1

    folder = result.save_pretrained(tmp_path / "erased")
    loaded = DiffusionPipeline.from_pretrained(str(folder))
    assert all(torch.equal(v, after[k]) for k, v in loaded.unet.state_dict().items())


def test_a_pipeline_needs_prompts_in_its_rows(tmp_path):
    from obliviate.core.errors import DataError

    with pytest.raises(DataError, match=r"forget\[0\]: .*'prompt'"):
        obliviate.unlearn(tiny_pipeline(tmp_path), forget=[{"image": np.zeros((16, 16, 3)),
                                                             "label": 0}],
                          retain=prompt_rows("a tench", (0, 0, 0)), method="esd_x")
