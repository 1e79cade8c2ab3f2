"""Text-to-image: a tiny random Stable-Diffusion-layout pipeline (UNet2DConditionModel,
AutoencoderKL, CLIPTextModel and a CLIP tokenizer whose vocabulary the test writes) loads as one
model; every method erases a prompt through its text conditioning and keeps another; the
unlearned model saves as a pipeline folder that ``DiffusionPipeline.from_pretrained`` loads and
generates with.

The session fixture ``text2image`` first fine-tunes the UNet on the two prompt → images pairs
(``tuned_pipeline``, 400 steps). Without it the random UNet does not tell the prompts apart, so
every method moved both prompts alike; the VAE's scaling factor is also set so that the latents
have unit variance (a random VAE's have std ~0.05, and a denoiser of such latents predicts
ε ≈ x_t whatever the prompt).

The tokenizer holds the prompts' words as whole tokens (``church</w>``), as CLIP's vocabulary
does. With letters only, the one-layer random encoder read "church" and "tench" as bags of
shared letters (the states of their 'c' and 'h</w>' had cosine >= 0.99), masking the attention
on all of "church"'s letters raised its loss by only +0.58%, and Forget-Me-Not's re-steering
moved both prompts alike (+0.3% vs +0.2%; +1.0% vs +0.7% at lr 1e-2). With whole words the
prompt counts for more (the other prompt's loss on a class's images: +8.5% and +4.8%; masking
the word "church": +2.2%) and re-steering separates them (+2.3% vs +0.2%; seeds 1, 2:
+2.3/+0.2, +2.2/+0.2).

Bound: each prompt's denoising loss on its own images, same timesteps and noise before and
after. The erased prompt's loss rises by more than ``MIN_RISE`` and by at least ``RATIO`` times
the kept prompt's rise, and the kept prompt's rises by less than ``MAX_KEPT``. The fine-tuned
pipeline reads its prompt weakly, so the smallest rises are small: Concept Ablation maps the
erased prompt onto ∅ and can raise its loss only by what the prompt adds (+1.6% measured).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import obliviate.diffusion.methods  # noqa: F401  (registers the catalogue)
from obliviate.core.registry import METHODS
from obliviate.diffusion.data import to_tensor
from obliviate.diffusion.models import ModelConfig, build_denoiser, load_denoiser
from obliviate.diffusion.task import TaskConfig, build_task
from obliviate.diffusion.training import TrainConfig, ddpm_loss, train_denoiser

PROMPTS = ["a photo of a church", "a photo of a tench"]
RATIO, MIN_RISE, MAX_KEPT = 3.0, 0.005, 0.15
FAST = {
    "esd_x": {"steps": 40, "learning_rate": 5e-3, "batch_size": 2, "ddim_steps": 4},
    # batch 2 gave +5.5% vs +2.1% (seed 0); batch 4, seeds 0-2: +5.9/+1.6, +4.3/+0.7, +5.6/+1.0
    "esd_u": {"steps": 40, "learning_rate": 5e-4, "batch_size": 4, "ddim_steps": 4},
    "uce": {},
    "salun": {"steps": 30, "learning_rate": 2e-3, "batch_size": 4, "alpha": 1.0},
    "concept_ablation": {"steps": 40, "learning_rate": 1e-2, "batch_size": 8},
    "forget_me_not": {"steps": 20, "learning_rate": 1e-2, "batch_size": 4, "parameters": "kv"},
    # Selective Amnesia and EraseDiff re-swept on an AVX-512 CPU, whose float rounding left the
    # earlier batch 4 below the bounds there (+17% vs +6.5%; +630% vs +21%), before the tests
    # pinned AVX2 rounding everywhere (conftest.py); these settings hold under the pin too
    "selective_amnesia": {"steps": 100, "learning_rate": 5e-4, "batch_size": 16,
                          "fisher_samples": 4, "fisher_timesteps": 20, "replay_per_class": 32,
                          "sample_steps": 10},
    "erasediff": {"steps": 45, "learning_rate": 2e-3, "batch_size": 8},
}


WORDS = ["a", "photo", "of", "church", "tench"]


def write_tokenizer(folder):
    """A CLIP BPE vocabulary of letters plus ``WORDS`` as whole tokens (``church</w>``, as in
    CLIP's vocabulary); any other word splits into its letters."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    merges, joined = [], []
    for word in WORDS:
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            merges.append(f"{parts[0]} {parts[1]}")
            parts = [parts[0] + parts[1], *parts[2:]]
            joined.append(parts[0])
    vocab = ["<|startoftext|>", "<|endoftext|>", *letters, *[f"{c}</w>" for c in letters]]
    vocab += [t for t in dict.fromkeys(joined) if t not in vocab]
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("\n".join(["#version: 0.2", *dict.fromkeys(merges)])
                                       + "\n")
    from transformers import CLIPTokenizer

    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                         model_max_length=24)


def build_pipeline(root, images=None):
    """The random pipeline; with an image folder, its VAE's ``scaling_factor`` gives those
    images' latents unit variance (Stable Diffusion's 0.18215 was set the same way): a random
    VAE's latents have std ~0.05, so a denoiser would learn ε ≈ x_t and ignore its prompt."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    tokenizer = write_tokenizer(root / "vocab")
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=24, bos_token_id=0, eos_token_id=1,
        pad_token_id=1))
    with torch.no_grad():  # words, not positions, should dominate the states of a random encoder
        text.get_input_embeddings().weight.normal_(0, 1.0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=1,
        cross_attention_dim=16, attention_head_dim=8, norm_num_groups=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 16),
                        down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4,
                        norm_num_groups=8, sample_size=16)
    if images is not None:
        pixels = torch.stack([torch.from_numpy(np.asarray(Image.open(f), dtype=np.float32))
                              for f in sorted(Path(images).rglob("*.png"))])
        with torch.no_grad():
            latents = vae.encode(pixels.permute(0, 3, 1, 2) / 127.5 - 1).latent_dist.mean
        vae.register_to_config(scaling_factor=float(1 / latents.std()))
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              clip_sample=False, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(root / "pipeline"))
    return root / "pipeline"


def write_images(root):
    """Two classes of 16×16 RGB images: warm horizontal stripes (church), cool vertical ones
    (tench)."""
    rng = np.random.default_rng(0)
    for name, colour in (("church", (220, 80, 40)), ("tench", (40, 90, 220))):
        (root / name).mkdir(parents=True)
        for i in range(8):
            img = rng.integers(0, 40, (16, 16, 3)).astype(np.uint8)
            if name == "church":
                img[i % 4::4] = colour
            else:
                img[:, i % 4::4] = colour
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


FINETUNE = TrainConfig(steps=400, batch_size=8, learning_rate=1e-2, warmup_steps=10,
                       lr_scheduler="constant", ema_decay=None, checkpoint_every=10**6,
                       log_every=10**6)


def tuned_pipeline(root, steps: int = FINETUNE.steps):
    """The pipeline with its UNet fine-tuned on the two prompt → images pairs, so that it
    tells the prompts apart before anything is erased (the random UNet does not)."""
    images = write_images(root / "images")
    pipeline = build_pipeline(root, images)
    task = build_task(TaskConfig(dataset="folder", path=str(images), image_size=16, channels=3,
                                 forget_classes=["church"], holdout_fraction=0.0))
    config = ModelConfig(architecture="text_pipeline", pretrained=str(pipeline),
                         prompts=PROMPTS, sample_steps=10, guidance_scale=3.0)
    model = build_denoiser(config, 2, 16, 3)
    x, y = to_tensor(task.full.records)
    train_denoiser(model, x, y, FINETUNE.model_copy(update={"steps": steps}))
    return SimpleNamespace(task=task, model=model.eval(), pipeline=pipeline)


@pytest.fixture(scope="module")
def setup(text2image):
    return text2image.task, text2image.model


def concept_losses(model, task) -> tuple[float, float]:
    """Each prompt's denoising loss on its own images (the erased 0, the kept 1), with the
    same timesteps and noise before and after unlearning."""
    x, y = to_tensor(task.full.records)
    z = model.encode(x)
    out = []
    with torch.no_grad():
        for label in (0, 1):
            mine = z[y == label].repeat(8, 1, 1, 1)
            out.append(float(ddpm_loss(model, mine, torch.full((len(mine),), label),
                                       torch.Generator().manual_seed(5))))
    return out[0], out[1]


def test_the_pipeline_loads_as_one_text_conditioned_model(setup):
    task, model = setup
    assert model.architecture == "text_pipeline" and model.codec is not None
    assert model.config.schedule == "scaled_linear"  # from the pipeline's scheduler
    assert model.embed(torch.tensor([0, 1, 2])).shape == (3, 24, 16)
    assert model.concept_positions(0) == [5]  # "church", not "a photo of a"
    assert model.concept_vectors(0).shape == (5, 16)  # every word of the prompt
    assert all(n.startswith("unet.") for n, _ in model.parameter_group("full"))
    assert not any("text" in n for n, _ in model.named_parameters())


@pytest.mark.parametrize("name", sorted(FAST))
def test_method_erases_a_prompt_and_keeps_another(name, setup):
    """Through the text conditioning only: the UNet changes, the text encoder and the prompt
    states do not."""
    task, model = setup
    unlearned = copy.deepcopy(model)
    states = model.prompt_states.clone()
    encoder = {k: v.clone() for k, v in model.text.encoder.state_dict().items()}
    METHODS.get(name, "diffusion")(**FAST[name]).run(unlearned, task, None, save=False)
    (forget0, keep0), (forget1, keep1) = concept_losses(model, task), concept_losses(unlearned,
                                                                                   task)
    rise_forget, rise_keep = forget1 / forget0 - 1, keep1 / keep0 - 1
    print(f"{name}: erased prompt's loss {forget0:.4f} -> {forget1:.4f} ({rise_forget:+.1%}), "
          f"kept prompt's {keep0:.4f} -> {keep1:.4f} ({rise_keep:+.1%})")
    assert rise_forget > MIN_RISE and rise_forget > RATIO * max(rise_keep, 0.0)
    assert rise_keep < MAX_KEPT
    assert torch.equal(unlearned.prompt_states, states)
    assert all(torch.equal(v, encoder[k]) for k, v in unlearned.text.encoder.state_dict().items())


def test_the_unlearned_model_saves_as_a_pipeline_that_diffusers_loads(setup, tmp_path):
    from diffusers import DiffusionPipeline

    task, model = setup
    unlearned = copy.deepcopy(model)
    outcome = METHODS.get("uce", "diffusion")().run(unlearned, task, tmp_path / "out")
    folder = outcome.model_path
    pipe = DiffusionPipeline.from_pretrained(folder)
    gen = torch.Generator().manual_seed(0)
    images = pipe(PROMPTS[0], num_inference_steps=2, height=16, width=16, generator=gen,
                  output_type="np").images
    assert images.shape == (1, 16, 16, 3) and np.isfinite(images).all()
    assert "Unlearning method: UCE" in (Path(folder) / "README.md").read_text()
    again = load_denoiser(folder)  # obliviate reads it back as the same model
    # ... also in a process that has not imported obliviate.diffusion.text
    fresh = subprocess.run(
        [sys.executable, "-c", "import sys; from obliviate.diffusion.denoisers import "
         "load_denoiser; print(type(load_denoiser(sys.argv[1])).__name__)", str(folder)],
        capture_output=True, text=True, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert fresh.returncode == 0 and fresh.stdout.split() == ["TextDenoiser"], fresh.stderr
    state, saved = unlearned.unet.state_dict(), again.unet.state_dict()
    assert all(torch.equal(state[k], saved[k]) for k in state)
    assert not torch.equal(state[next(k for k in state if "attn2.to_k" in k)],
                           model.unet.state_dict()[next(k for k in state if "attn2.to_k" in k)])
