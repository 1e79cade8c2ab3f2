"""Text-to-image: a tiny random Stable-Diffusion-layout pipeline (UNet2DConditionModel,
AutoencoderKL, CLIPTextModel and a CLIP tokenizer whose vocabulary the test writes) loads as one
model; methods erase a prompt through its text conditioning and keep another; the unlearned model
saves as a pipeline folder that ``DiffusionPipeline.from_pretrained`` loads and generates with.

Bound: the erased prompt's noise prediction moves (relative squared change ``d_f``) at least
``RATIO`` times as much as the kept prompt's (``d_r``), and ``d_r`` stays under ``MAX_KEPT``.
On the random pipeline only UCE's closed form separates the two prompts so far: the
training-based methods move both prompts alike there (a random UNet barely reads its prompt),
so they are run through the text conditioning (``test_method_runs_through_text``) without the
bound until the fixture fine-tunes the pipeline first.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import obliviate.diffusion.methods  # noqa: F401  (registers the catalogue)
from obliviate.core.registry import METHODS
from obliviate.diffusion.models import ModelConfig, build_denoiser, load_denoiser
from obliviate.diffusion.task import TaskConfig, build_task

PROMPTS = ["a photo of a church", "a photo of a tench"]
RATIO, MAX_KEPT = 1.5, 0.5
FAST = {
    "esd_x": {"steps": 12, "learning_rate": 3e-3, "batch_size": 2, "ddim_steps": 4},
    "esd_u": {"steps": 12, "learning_rate": 1e-3, "batch_size": 2, "ddim_steps": 4},
    "uce": {},
    "salun": {"steps": 12, "learning_rate": 1e-3, "batch_size": 4, "alpha": 1.0},
    "concept_ablation": {"steps": 12, "learning_rate": 3e-3, "batch_size": 4},
    "forget_me_not": {"steps": 12, "learning_rate": 3e-3, "batch_size": 4},
    "selective_amnesia": {"steps": 8, "learning_rate": 1e-3, "batch_size": 4,
                          "fisher_samples": 4, "fisher_timesteps": 20, "replay_per_class": 2,
                          "sample_steps": 3},
    "erasediff": {"steps": 12, "learning_rate": 1e-3, "batch_size": 4},
}


def write_tokenizer(folder):
    """A character-level CLIP BPE vocabulary: every word splits into its letters."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = ["<|startoftext|>", "<|endoftext|>", *letters, *[f"{c}</w>" for c in letters]]
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    from transformers import CLIPTokenizer

    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                         model_max_length=24)


def build_pipeline(root):
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
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              clip_sample=False, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(root / "pipeline"))
    return root / "pipeline"


def write_images(root):
    """Two classes of 16×16 RGB images: warm stripes (church), cool blobs (tench)."""
    rng = np.random.default_rng(0)
    for name, colour in (("church", (220, 80, 40)), ("tench", (40, 90, 220))):
        (root / name).mkdir(parents=True)
        for i in range(8):
            img = rng.integers(0, 40, (16, 16, 3)).astype(np.uint8)
            img[i % 4::4] = colour
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("t2i")
    pipeline = build_pipeline(root)
    task = build_task(TaskConfig(dataset="folder", path=str(write_images(root / "images")),
                                 image_size=16, channels=3, forget_classes=["church"],
                                 holdout_fraction=0.0))
    config = ModelConfig(architecture="text_pipeline", pretrained=str(pipeline),
                         prompts=PROMPTS, sample_steps=3, guidance_scale=2.0)
    model = build_denoiser(config, 2, 16, 3)
    return task, model


def shifts(before, after, model) -> tuple[float, float]:
    """Relative squared change of ε under the erased (0) and the kept (1) prompt."""
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(8, 4, 8, 8, generator=gen)
    t = torch.randint(0, 1000, (8,), generator=gen)
    xt = model.schedule.q_sample(x0, t, torch.randn(x0.shape, generator=gen))
    out = []
    with torch.no_grad():
        for label in (0, 1):
            y = torch.full((8,), label)
            a, b = before.eps(xt, t, y), after.eps(xt, t, y)
            out.append(float((b - a).pow(2).mean() / a.pow(2).mean()))
    return out[0], out[1]


def test_the_pipeline_loads_as_one_text_conditioned_model(setup):
    task, model = setup
    assert model.architecture == "text_pipeline" and model.codec is not None
    assert model.config.schedule == "scaled_linear"  # from the pipeline's scheduler
    assert model.embed(torch.tensor([0, 1, 2])).shape == (3, 24, 16)
    assert model.concept_positions(0) == list(range(1, 16))  # the letters of the prompt
    assert all(n.startswith("unet.") for n, _ in model.parameter_group("full"))
    assert not any("text" in n for n, _ in model.named_parameters())


@pytest.mark.parametrize("name", ["uce"])
def test_method_erases_a_prompt_and_keeps_another(name, setup, tmp_path):
    task, model = setup
    unlearned = copy.deepcopy(model)
    METHODS.get(name, "diffusion")(**FAST[name]).run(unlearned, task, tmp_path, save=False)
    d_forget, d_keep = shifts(model, unlearned, model)
    print(f"{name}: erased prompt moved {d_forget:.4f}, kept prompt {d_keep:.4f}")
    assert d_forget > RATIO * d_keep and d_keep < MAX_KEPT


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
    state, saved = unlearned.unet.state_dict(), again.unet.state_dict()
    assert all(torch.equal(state[k], saved[k]) for k in state)
    assert not torch.equal(state[next(k for k in state if "attn2.to_k" in k)],
                           model.unet.state_dict()[next(k for k in state if "attn2.to_k" in k)])


@pytest.mark.parametrize("name", sorted(set(FAST) - {"uce"}))
def test_method_runs_through_text(name, setup, tmp_path):
    """Each training-based method trains the UNet through the prompts' text states: the UNet's
    weights move, the text encoder and the prompt states do not."""
    task, model = setup
    unlearned = copy.deepcopy(model)
    states = model.prompt_states.clone()
    encoder = {k: v.clone() for k, v in model.text.encoder.state_dict().items()}
    outcome = METHODS.get(name, "diffusion")(**FAST[name]).run(unlearned, task, tmp_path,
                                                               save=False)
    assert outcome.steps == FAST[name]["steps"]
    moved = [k for k, v in unlearned.unet.state_dict().items()
             if not torch.equal(v, model.unet.state_dict()[k])]
    assert moved
    assert torch.equal(unlearned.prompt_states, states)
    assert all(torch.equal(v, encoder[k]) for k, v in unlearned.text.encoder.state_dict().items())
