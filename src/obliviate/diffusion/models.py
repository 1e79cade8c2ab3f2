"""Building, loading and saving a run's denoiser: a network of
:mod:`obliviate.diffusion.denoisers` (``class_unet``, ``prompt_unet``, ``diffusers_unet``, with
or without a VAE) or a text-to-image pipeline of :mod:`obliviate.diffusion.text`, chosen by
``model.architecture``; a saved one reloads by its ``config.json`` (:func:`load_denoiser`).

Saved models are a folder with ``model.safetensors`` and ``config.json`` (never pickles); a
text-to-image model is saved as a diffusers pipeline folder. The networks' names are imported
from here by the rest of the modality.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from obliviate.core.errors import ModelLoadError
from obliviate.core.io import atomic_write_json, read_json
from obliviate.diffusion.denoisers import (  # noqa: F401  (the modality imports them from here)
    ARCHITECTURES,
    CONFIG,
    FORMAT,
    WEIGHTS,
    ClassDenoiser,
    CrossAttention,
    Denoiser,
    LatentCodec,
    ModelConfig,
    NoiseSchedule,
    PromptDenoiser,
    _codec,
    atomic_folder,
    is_pipeline,
    load_denoiser,
    tiny_condition_unet,
)
from obliviate.diffusion.text import load_text_pipeline


def build_denoiser(config: ModelConfig, num_classes: int, image_size: int, in_channels: int,
                   seed: int = 0) -> Denoiser:
    """Fresh weights (seeded), or ``config.pretrained`` when set. ``image_size`` and
    ``in_channels`` are the task's images; with a VAE the network is built for its latents."""
    if config.pretrained or config.architecture == "text_pipeline":
        return load_pretrained(config, num_classes, image_size, in_channels)
    config, codec, size, channels = _codec(config, image_size, in_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ARCHITECTURES[config.architecture](config, num_classes, size, channels)
    model.codec = codec
    return model.enable_gradient_checkpointing() if config.gradient_checkpointing else model


def load_pretrained(config: ModelConfig, num_classes: int, image_size: int,
                    in_channels: int) -> Denoiser:
    """An obliviate model folder, or a diffusers ``UNet2DConditionModel`` folder (with
    ``model.gradient_checkpointing`` applied)."""
    model = _load_pretrained(config, num_classes, image_size, in_channels)
    return model.enable_gradient_checkpointing() if config.gradient_checkpointing else model


def _load_pretrained(config: ModelConfig, num_classes: int, image_size: int,
                     in_channels: int) -> Denoiser:
    path = Path(config.pretrained or "")
    if (path / CONFIG).is_file() and read_json(path / CONFIG).get("format") == FORMAT:
        return load_denoiser(path)
    if config.architecture == "text_pipeline":
        return load_text_pipeline(config, num_classes, image_size, in_channels)
    if config.architecture != "diffusers_unet":
        raise ModelLoadError(f"{path}: not an obliviate model folder (a diffusers "
                             "UNet2DConditionModel or pipeline needs "
                             "model.architecture=diffusers_unet)")
    config, codec, size, channels = _codec(config, image_size, in_channels)
    unet_path = path / "unet" if is_pipeline(path) else path
    try:
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(str(unet_path))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{unet_path}: cannot load a diffusers UNet2DConditionModel "
                             f"({str(exc).splitlines()[0]})") from None
    if unet.config.in_channels != channels:
        space = "the VAE's latents have" if codec else "the task's images have"
        raise ModelLoadError(f"{unet_path}: the UNet takes {unet.config.in_channels} channels, "
                             f"{space} {channels}")
    model = PromptDenoiser(config, num_classes, size, channels, unet=unet)
    model.codec = codec
    if config.prompt_embeddings:
        tokens = load_file(config.prompt_embeddings).get("tokens")
        if tokens is None or tuple(tokens.shape) != tuple(model.tokens.weight.shape):
            raise ModelLoadError(f"{config.prompt_embeddings}: expected a 'tokens' tensor of "
                                 f"shape {tuple(model.tokens.weight.shape)}")
        with torch.no_grad():
            model.tokens.weight.copy_(tokens)
    return model


def save_denoiser(model: Denoiser, path: str | Path, extra: dict[str, Any] | None = None
                  ) -> Path:
    """``model.safetensors`` + ``config.json``; written to a temporary name, then renamed.
    A text-to-image model is written as a diffusers pipeline folder."""
    if hasattr(model, "save_pipeline"):
        return model.save_pipeline(path, extra)
    from obliviate.core.io import writing

    path = Path(path)
    with atomic_folder(path) as tmp:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        with writing(path / WEIGHTS, "the model"):
            save_file(state, str(tmp / WEIGHTS))
        atomic_write_json(tmp / CONFIG, {
            "format": FORMAT, "architecture": model.architecture,
            "model": model.config.model_dump(mode="json"), "num_classes": model.num_classes,
            "image_size": model.image_size, "in_channels": model.in_channels,
            **model.extra_config(), **(extra or {})})
    return path
