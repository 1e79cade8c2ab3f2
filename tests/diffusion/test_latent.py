"""Latent diffusion: a diffusers pipeline folder (``unet/`` + ``vae/``, laid out as Stable
Diffusion ships) runs through the same stages as the pixel models — the UNet denoises the VAE's
latents, images are encoded where they enter and samples decoded before the judge sees them.

The VAE and UNet are tiny and random (a VAE halving 8×8 digits to 2×4×4 latents), so these tests
check the plumbing — shapes, spaces, storage, errors — not the quality of the images.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from obliviate.core.errors import ConfigError, ModelLoadError
from obliviate.core.recipe import load_recipe
from obliviate.diffusion import pipeline
from obliviate.diffusion.data import to_tensor
from obliviate.diffusion.models import LatentCodec, ModelConfig, build_denoiser, load_denoiser
from obliviate.diffusion.recipe import DiffusionRecipe
from obliviate.diffusion.sampling import ddim_step, sample


def save_pipeline(root, image_size: int = 8, latent_channels: int = 2):
    """A Stable-Diffusion-shaped folder: model_index.json, unet/ and vae/ (diffusers' own
    save_pretrained, safetensors)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=1, out_channels=1, latent_channels=latent_channels,
                        block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=4,
                        down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, sample_size=image_size)
    unet = UNet2DConditionModel(
        sample_size=image_size // 2, in_channels=latent_channels, out_channels=latent_channels,
        block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=1,
        cross_attention_dim=16, attention_head_dim=8, norm_num_groups=8)
    vae.save_pretrained(root / "vae")
    unet.save_pretrained(root / "unet")
    (root / "model_index.json").write_text(json.dumps(
        {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
         "vae": ["diffusers", "AutoencoderKL"]}))
    return root


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    torch.set_num_threads(1)
    return save_pipeline(tmp_path_factory.mktemp("sd"))


def latent_config(folder) -> ModelConfig:
    return ModelConfig(architecture="diffusers_unet", pretrained=str(folder), channels=[16, 32],
                       cond_dim=16, sample_steps=4)


def test_codec_maps_images_to_scaled_latents_and_back(sd_folder, digits_task):
    codec = LatentCodec(sd_folder / "vae")
    assert (codec.factor, codec.channels) == (2, 2)
    x, _ = to_tensor(digits_task.forget.records[:5])
    z = codec.encode(x)
    assert z.shape == (5, 2, 4, 4)
    posterior = codec.vae.encode(x).latent_dist.mean
    assert torch.allclose(z, posterior * codec.vae.config.scaling_factor)
    images = codec.decode(z)
    assert images.shape == x.shape and images.abs().max() <= 1.0


def test_a_pipeline_folder_loads_its_unet_and_vae(sd_folder):
    model = build_denoiser(latent_config(sd_folder), 10, 8, 1)
    assert model.codec is not None and model.config.vae == str(sd_folder / "vae")
    assert (model.image_size, model.in_channels) == (4, 2)  # the space it denoises
    assert model.image_shape == (1, 8, 8)  # the images it generates
    assert not model.clip_sample
    assert not any(n.startswith("codec") or "vae" in n for n, _ in model.named_parameters())
    images = sample(model, [1, 2, 3], steps=2)
    assert images.shape == (3, 1, 8, 8) and images.abs().max() <= 1.0
    latents = sample(model, [1, 2, 3], steps=2, decode=False)
    assert latents.shape == (3, 2, 4, 4)


def test_latents_are_not_clipped_while_sampling(sd_folder):
    model = build_denoiser(latent_config(sd_folder), 10, 8, 1)
    x = torch.full((1, 2, 4, 4), 3.0)
    eps = torch.zeros_like(x)
    t = model.schedule.timesteps - 1
    out = ddim_step(model, x, t, -1, eps)  # x̂₀ = x / sqrt(ᾱ_t): far outside [−1, 1]
    expected = x / model.schedule.alphas_cumprod[t].sqrt()
    assert torch.allclose(out, expected, rtol=1e-5)
    pixel = build_denoiser(ModelConfig(channels=[16, 32], cond_dim=16), 10, 8, 1)
    assert ddim_step(pixel, torch.full((1, 1, 8, 8), 3.0), t, -1,
                     torch.zeros(1, 1, 8, 8)).max() == 1.0


def test_the_stages_run_in_latent_space(sd_folder, tmp_path, digits_task):
    """Fine-tune, unlearn (ESD-x samples latents itself; SalUn and Selective Amnesia read the
    task's images, so they are encoded), evaluate with the pixel judge, attack; the saved
    models reload with their VAE."""
    recipe = {
        "name": "latent", "modality": "diffusion",
        "task": {"dataset": "digits", "image_size": 8, "forget_classes": [0],
                 "max_per_class": 20},
        "model": {"architecture": "diffusers_unet", "pretrained": str(sd_folder),
                  "channels": [16, 32], "cond_dim": 16, "sample_steps": 3},
        "finetune": {"steps": 4, "batch_size": 8, "checkpoint_every": 2},
        "unlearn": {"methods": ["esd_x", "uce", "salun", "selective_amnesia"],
                    "train": {"steps": 2, "batch_size": 4},
                    "method_args": {"esd_x": {"ddim_steps": 3},
                                    "salun": {"mask_batches": 1},
                                    "selective_amnesia": {"fisher_samples": 4,
                                                          "replay_per_class": 1,
                                                          "sample_steps": 2}}},
        "evaluation": {"samples_per_class": 2, "sample_steps": 2, "grid_per_class": 2,
                       "kid_subset_size": 4, "kid_subsets": 2, "judge": {"epochs": 1}},
        "attack": {"probe": {"samples": 2, "sample_steps": 2},
                   "options": {"embedding": {"steps": 1, "images": 2, "batch_size": 2},
                               "relearning": {"steps": 1, "curve": [1], "images": 2,
                                              "batch_size": 2},
                               "concept_vector": {"strengths": [1.0]}}},
    }
    path = tmp_path / "latent.yaml"
    path.write_text(yaml.safe_dump(recipe))
    config = load_recipe(DiffusionRecipe, path)
    run = pipeline.open_run(config, tmp_path / "run", "test")
    task = pipeline.prepare_task(config, run)
    pipeline.finetune_stage(config, run, task)
    target = load_denoiser(run.model("target"))
    assert target.codec is not None and target.codec.path == str(sd_folder / "vae")
    pipeline.unlearn_stage(config, run, task)
    summaries = pipeline.evaluate_stage(config, run, task)
    for name in ("target", "unlearned/esd_x", "unlearned/salun", "unlearned/selective_amnesia"):
        value = summaries[name]["generation/forget/unlearning_accuracy"]
        assert 0.0 <= value <= 1.0
    attacks = pipeline.attack_stage(config, run, task, models=["unlearned/esd_x"])
    assert set(attacks["unlearned/esd_x"]) == {"embedding", "concept_vector", "relearning"}
    unlearned = load_denoiser(run.model("unlearned/uce"))  # the printed folder loads
    assert unlearned.codec is not None and unlearned.image_shape == (1, 8, 8)
    assert unlearned.codec is target.codec  # one frozen VAE read once, shared by every model


def test_a_vae_that_does_not_fit_the_task_is_a_clear_error(sd_folder, tmp_path):
    with pytest.raises(ConfigError, match="not a multiple of it"):
        build_denoiser(latent_config(sd_folder), 10, 9, 1)
    with pytest.raises(ModelLoadError, match="the VAE takes 1 channels"):
        build_denoiser(latent_config(sd_folder), 10, 8, 3)
    other = save_pipeline(tmp_path / "other", latent_channels=3)
    shutil.rmtree(other / "unet")
    shutil.copytree(sd_folder / "unet", other / "unet")  # a UNet for 2-channel latents
    with pytest.raises(ModelLoadError, match="the VAE's latents have 3"):
        build_denoiser(latent_config(other), 10, 8, 1)
    with pytest.raises(ModelLoadError, match="cannot load a diffusers AutoencoderKL"):
        build_denoiser(ModelConfig(vae=str(tmp_path / "nowhere")), 10, 8, 1)
