"""Conditional denoisers ε_θ(x_t, t, c), their noise schedule and how a saved one reloads.

Three architectures share one interface (:class:`Denoiser`):

``class_unet``
    A small hand-written UNet (Ho et al. 2020) conditioned on a class embedding. The embedding
    enters each residual block only through a linear map ``cond_proj`` (FiLM scale and shift,
    Perez et al. 2018), so "the linear maps that read the condition" are well defined: they are
    the analogue of Stable Diffusion's cross-attention key/value projections. Fast on a CPU.
``prompt_unet``
    The same UNet, but its lower-resolution blocks read a short token prompt
    ``[<start>, <class k>, <end>]`` (``<null>`` in the middle for ∅) by cross-attention
    (modules named ``attn2`` with ``to_q``/``to_k``/``to_v``/``to_out``, as in Stable
    Diffusion); the token embeddings are learned. Text-side methods (UCE on ``to_k``/``to_v``,
    Forget-Me-Not on the attention maps, ESD-x on ``attn2``) act on it as on Stable Diffusion.
``diffusers_unet``
    The prompt model with a diffusers ``UNet2DConditionModel`` as the network: a fresh small
    one, or a user's own loaded from a local folder with ``pretrained=PATH``. Its prompt
    embeddings come from ``prompt_embeddings`` (a safetensors file with a ``tokens`` tensor
    ``[num_classes + 3, D]``, e.g. a text encoder's outputs for each concept, then ``<null>``,
    ``<start>``, ``<end>``) or are learned during fine-tuning. The methods only touch the UNet
    and the condition, so a Stable Diffusion user can run them on a GPU in the UNet's latent
    space with the same code (about 7× slower than ``prompt_unet`` on a CPU at equal size).

Latent diffusion (Rombach et al. 2022): with ``vae=PATH`` (a diffusers ``AutoencoderKL``
folder) the network denoises the VAE's scaled latents instead of pixels; images are encoded once
where they enter (training, unlearning, attacks) and samples are decoded before the judge sees
them. ``pretrained`` may also be a diffusers pipeline folder (``model_index.json`` with
``unet/`` and ``vae/``, as Stable Diffusion ships): its UNet is loaded and its VAE used, so a
Stable Diffusion user runs every method on the same code, on a GPU.

Saved models are a folder with ``model.safetensors`` and ``config.json`` (never pickles); the
frozen VAE is not copied into it, its folder is recorded in the config. A family of denoisers
kept in its own module whose folder reloads otherwise registers how in :data:`RELOAD` (the
text-to-image pipelines of :mod:`obliviate.diffusion.text`). :mod:`obliviate.diffusion.models`
builds, loads and saves every kind, and is where the rest of the modality imports them from.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field
from safetensors.torch import load_file
from torch.utils.checkpoint import checkpoint

from obliviate.core.errors import ConfigError, ModelLoadError
from obliviate.core.io import read_json
from obliviate.core.precision import measurement_precision, measuring
from obliviate.core.recipe import ModelSection

FORMAT = "obliviate-denoiser"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class ModelConfig(ModelSection):
    """The denoiser: architecture, size, noise schedule and sampling defaults.

    Defaults: DDPM's linear schedule (β from 1e-4 to 0.02 over 1,000 steps, Ho et al. 2020),
    10% condition dropout and guidance scale 2 for classifier-free guidance (Ho & Salimans 2022;
    the SA/SalUn DDPM code uses 2.0), 50 deterministic DDIM steps (η = 0, Song et al. 2021).
    """

    execution_only: ClassVar[frozenset[str]] = frozenset({"gradient_checkpointing"})

    architecture: Literal["class_unet", "prompt_unet", "diffusers_unet", "text_pipeline"] = \
        "class_unet"
    """the denoiser: class_unet, prompt_unet, diffusers_unet, or text_pipeline (a Stable Diffusion
    pipeline folder)"""
    pretrained: str | None = Field(
        default=None, description="local folder: an obliviate model or a diffusers "
                                  "UNet2DConditionModel (diffusers_unet) to start from")
    prompt_embeddings: str | None = Field(
        default=None, description="safetensors with 'tokens' [num_classes+3, D] for a "
                                  "pretrained diffusers_unet")
    prompts: list[str] | None = Field(
        default=None, description="text_pipeline: the text prompt of each class, in class order "
                                  "(e.g. 'a photo of a church'); the empty prompt is ∅")
    vae: str | None = Field(
        default=None, description="diffusers AutoencoderKL folder: denoise its latents "
                                  "(default: the pipeline's vae/ when pretrained is a pipeline)")
    channels: list[int] = Field(default_factory=lambda: [16, 32, 64], min_length=1)
    """UNet channels per resolution level"""
    cond_dim: int = Field(default=32, ge=1, description="class/token embedding width")
    time_dim: int = Field(default=64, ge=4)
    """size of the timestep embedding"""
    groups: int = Field(default=8, ge=1)
    """GroupNorm groups"""
    attention_head_dim: int = Field(default=8, ge=1)
    """channels per attention head (prompt and diffusers UNets)"""
    schedule: Literal["linear", "scaled_linear", "cosine"] = "linear"
    """the noise schedule: linear (DDPM), scaled_linear (Stable Diffusion) or cosine"""
    timesteps: int = Field(default=1000, ge=2)
    """diffusion timesteps T"""
    beta_start: float = Field(default=1e-4, gt=0)
    """first beta of the noise schedule"""
    beta_end: float = Field(default=0.02, gt=0, lt=1)
    """last beta of the noise schedule"""
    cond_dropout: float = Field(default=0.1, ge=0, lt=1)
    """probability of dropping the condition in training (classifier-free guidance)"""
    guidance_scale: float = Field(default=2.0, ge=0)
    """classifier-free guidance scale when sampling"""
    sample_steps: int = Field(default=50, ge=1)
    """DDIM steps when sampling"""
    sample_eta: float = Field(default=0.0, ge=0, le=1, description="0: DDIM, 1: DDPM-like")
    gradient_checkpointing: bool = False
    """recompute the UNet's blocks in the backward pass instead of keeping their activations
    (less memory for fine-tuning and unlearning, about a third more compute)"""


# -- the noise schedule ---------------------------------------------------------------------------
def make_betas(kind: str, timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """Linear (Ho et al. 2020), scaled linear (Stable Diffusion's: linear in √β) or cosine
    (Nichol & Dhariwal 2021) β schedule, float64."""
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    if kind == "scaled_linear":
        return torch.linspace(beta_start ** 0.5, beta_end ** 0.5, timesteps,
                              dtype=torch.float64) ** 2
    s = 0.008
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    abar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)


class NoiseSchedule(nn.Module):
    """ᾱ_t and the forward process q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I)."""

    def __init__(self, kind: str = "linear", timesteps: int = 1000, beta_start: float = 1e-4,
                 beta_end: float = 0.02) -> None:
        super().__init__()
        betas = make_betas(kind, timesteps, beta_start, beta_end)
        self.timesteps = timesteps
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0).float(),
                             persistent=False)

    def abar(self, t: torch.Tensor) -> torch.Tensor:
        return self.alphas_cumprod[t].view(-1, 1, 1, 1)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        a = self.abar(t)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise


# -- the class-conditional UNet --------------------------------------------------------------------
def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al. 2017; Ho et al. 2020)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / max(half - 1, 1))
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class CrossAttention(nn.Module):
    """``h + to_out(softmax(q kᵀ/√d) v)`` with queries from the feature map and keys/values from
    the prompt tokens (Rombach et al. 2022). ``recorder``, when a list, collects the attention
    probabilities ``[B·heads, HW, tokens]`` (Forget-Me-Not reads them)."""

    def __init__(self, channels: int, cond_dim: int, head_dim: int, groups: int) -> None:
        super().__init__()
        self.heads = max(1, channels // head_dim)
        inner = self.heads * head_dim
        self.norm = _norm(channels, groups)
        self.to_q = nn.Linear(channels, inner, bias=False)
        self.to_k = nn.Linear(cond_dim, inner, bias=False)
        self.to_v = nn.Linear(cond_dim, inner, bias=False)
        self.to_out = nn.Linear(inner, channels)
        self.recorder: list[torch.Tensor] | None = None

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b, c, height, width = h.shape
        q = self.to_q(self.norm(h).flatten(2).transpose(1, 2))
        k, v = self.to_k(cond), self.to_v(cond)

        def heads(z: torch.Tensor) -> torch.Tensor:
            return z.view(b, z.shape[1], self.heads, -1).transpose(1, 2).flatten(0, 1)

        q, k, v = heads(q), heads(k), heads(v)
        probs = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)
        if self.recorder is not None:
            self.recorder.append(probs)
        out = (probs @ v).view(b, self.heads, height * width, -1).transpose(1, 2).flatten(2)
        return h + self.to_out(out).transpose(1, 2).view(b, c, height, width)


class FiLMBlock(nn.Module):
    """Residual block whose second normalisation is modulated by time (and, for class
    conditioning, by the class embedding): ``h ← GN(h)·(1 + s) + b`` with
    ``[s, b] = time_proj(τ) + cond_proj(c)``; for prompt conditioning a cross-attention
    ``attn2`` follows instead."""

    def __init__(self, cin: int, cout: int, time_dim: int, cond_dim: int, groups: int,
                 mode: str = "film", head_dim: int = 8) -> None:
        super().__init__()
        self.norm1 = _norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, 2 * cout)
        # reads the class embedding (UCE edits it)
        self.cond_proj = nn.Linear(cond_dim, 2 * cout) if mode == "film" else None
        self.norm2 = _norm(cout, groups)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.attn2 = CrossAttention(cout, cond_dim, head_dim, groups) if mode == "cross" \
            else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        mod = self.time_proj(temb)
        if self.cond_proj is not None:
            mod = mod + self.cond_proj(cond)
        scale, shift = mod[:, :, None, None].chunk(2, 1)
        h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift)) + self.skip(x)
        return self.attn2(h, cond) if self.attn2 is not None else h


class ClassUNet(nn.Module):
    """A UNet with one block per level, stride-2 convolutions down, nearest-neighbour up.

    ``conditioning="film"`` reads a class vector in every block; ``"cross"`` reads a token
    sequence by cross-attention in every block below the top resolution (and the middle)."""

    def __init__(self, in_channels: int, channels: list[int], time_dim: int, cond_dim: int,
                 groups: int, conditioning: str = "film", head_dim: int = 8) -> None:
        super().__init__()

        def mode(level: int) -> str:
            return "film" if conditioning == "film" else ("cross" if level > 0 else "none")

        def block(cin: int, cout: int, level: int) -> FiLMBlock:
            return FiLMBlock(cin, cout, time_dim, cond_dim, groups, mode(level), head_dim)

        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(),
                                      nn.Linear(time_dim, time_dim))
        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        prev = channels[0]
        for i, ch in enumerate(channels):
            self.down.append(block(prev, ch, i))
            if i < len(channels) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
            prev = ch
        self.mid = block(prev, prev, len(channels))
        self.up = nn.ModuleList()
        for i in reversed(range(len(channels))):
            self.up.append(block(prev + channels[i], channels[i], i))
            prev = channels[i]
        self.norm_out = _norm(channels[0], groups)
        self.conv_out = nn.Conv2d(channels[0], in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.gradient_checkpointing = False

    def _block(self, block: FiLMBlock, h: torch.Tensor, temb: torch.Tensor,
               cond: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, h, temb, cond, use_reentrant=False)
        return block(h, temb, cond)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        temb = F.silu(self.time_mlp(timestep_embedding(t, self.time_dim)))
        h = self.conv_in(x)
        skips = []
        for i, block in enumerate(self.down):
            h = self._block(block, h, temb, cond)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self._block(self.mid, h, temb, cond)
        for j, block in enumerate(self.up):
            h = self._block(block, torch.cat([h, skips.pop()], 1), temb, cond)
            if j < len(self.up) - 1:  # the next block's first convolution mixes the upsampled map
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        return self.conv_out(F.silu(self.norm_out(h)))


# -- the common interface ----------------------------------------------------------------------
class LatentCodec:
    """A frozen diffusers ``AutoencoderKL``: images in [−1, 1] ↔ latents × ``scaling_factor``.

    Encoding takes the posterior's mean (deterministic, as the latents of a fixed image set
    should be). The codec is shared, never copied: it is not part of the denoiser's parameters,
    so methods cannot train it and frozen copies of the denoiser do not duplicate it.
    """

    def __init__(self, path: str | Path, vae: Any = None) -> None:
        """The VAE of the folder ``path``, or the ``vae`` object given (``path`` then only
        names it, e.g. for a pipeline held in memory)."""
        if vae is None:
            try:
                from diffusers import AutoencoderKL

                vae = AutoencoderKL.from_pretrained(str(path))
            except (OSError, ValueError, ImportError) as exc:
                raise ModelLoadError(f"{path}: cannot load a diffusers AutoencoderKL "
                                     f"({str(exc).splitlines()[0]})") from None
        self.path = str(path)
        self.vae = vae.eval().requires_grad_(False)
        self.scale = float(vae.config.scaling_factor)
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.channels = int(vae.config.latent_channels)

    @classmethod
    def load(cls, path: str | Path) -> LatentCodec:
        """The codec of ``path``, read from disk once per process: the target, the oracle and
        every unlearned model of a run share one frozen VAE."""
        key = str(Path(path).resolve())
        if key not in _CODECS:
            _CODECS[key] = cls(path)
        return _CODECS[key]

    def __deepcopy__(self, memo: dict[int, Any]) -> LatentCodec:
        return self

    @staticmethod
    def forget(path: str | Path) -> None:
        """Drop the cached codec of ``path`` (its folder was rewritten)."""
        _CODECS.pop(str(Path(path).resolve()), None)

    def latent_shape(self, image_size: int, in_channels: int) -> tuple[int, int]:
        """``(latent size, latent channels)`` for the task's images."""
        if image_size % self.factor:
            raise ConfigError(f"{self.path}: the VAE downsamples by {self.factor}; the image "
                              f"size {image_size} is not a multiple of it")
        if self.vae.config.in_channels != in_channels:
            raise ModelLoadError(f"{self.path}: the VAE takes {self.vae.config.in_channels} "
                                 f"channels, the task's images have {in_channels}")
        return image_size // self.factor, self.channels

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        self.vae.to(x.device)
        parts = [self.vae.encode(x[i:i + batch_size]).latent_dist.mean * self.scale
                 for i in range(0, len(x), batch_size)]
        return torch.cat(parts) if parts else x

    @torch.no_grad()
    def decode(self, z: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        self.vae.to(z.device)
        parts = [self.vae.decode(z[i:i + batch_size] / self.scale).sample.clamp(-1, 1)
                 for i in range(0, len(z), batch_size)]
        return torch.cat(parts) if parts else z


_CODECS: dict[str, LatentCodec] = {}


class Denoiser(nn.Module):
    """ε_θ(x_t, t, c) plus what methods and attacks need to know about the condition.

    Labels ``0..num_classes-1`` are the classes; ``null_label`` (= ``num_classes``) is the
    unconditional condition ∅ of classifier-free guidance. ``embed(labels)`` gives the condition
    tensor the network reads (``[B, D]`` for ``class_unet``, ``[B, L, D]`` for ``prompt_unet``);
    attacks optimise it directly. ``image_size`` and ``in_channels`` are those of the space the
    network denoises: the VAE's latents when ``codec`` is set (see :meth:`encode`).
    """

    architecture: str = ""

    def __init__(self, config: ModelConfig, num_classes: int, image_size: int,
                 in_channels: int) -> None:
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        self.image_size = image_size
        self.in_channels = in_channels
        self.schedule = NoiseSchedule(config.schedule, config.timesteps, config.beta_start,
                                      config.beta_end)
        self.codec: LatentCodec | None = None

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """ε_θ(x_t, t, c): the forward pass, under the block's measurement autocast
        (:func:`~obliviate.core.precision.measured_in`: an evaluation or attack stage's
        ``mixed_precision``). Under autocast ε comes back in ``x``'s dtype, so the sampler's
        DDIM arithmetic and the losses stay in float32 while the network's products run in
        bf16; outside one nothing changes (a training loop's own autocast stays in force)."""
        return self._measured(lambda: super(Denoiser, self).__call__(x, t, cond), x.dtype)

    def _measured(self, run: Callable[[], torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        if measurement_precision() == "no":
            return run()
        with measuring(self):
            return run().to(dtype)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [−1, 1] → the space the network denoises (the identity without a VAE),
        the VAE under the block's measurement autocast."""
        codec = self.codec
        return images if codec is None else self._measured(lambda: codec.encode(images),
                                                           images.dtype)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """The denoised space → images in [−1, 1] (as :meth:`encode`)."""
        codec = self.codec
        return x if codec is None else self._measured(lambda: codec.decode(x), x.dtype)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images (not the latents) this model generates."""
        if self.codec is None:
            return self.in_channels, self.image_size, self.image_size
        side = self.image_size * self.codec.factor
        return int(self.codec.vae.config.in_channels), side, side

    @property
    def clip_sample(self) -> bool:
        """Whether x̂₀ is clipped to [−1, 1] while sampling (pixels yes, VAE latents no)."""
        return self.codec is None

    @property
    def null_label(self) -> int:
        return self.num_classes

    def enable_gradient_checkpointing(self, enabled: bool = True) -> Denoiser:
        """Recompute the UNet's blocks in the backward pass (``model.gradient_checkpointing``):
        diffusers' own switch for a diffusers UNet, ``torch.utils.checkpoint`` per block for
        obliviate's UNets. Outputs and gradients are unchanged; activations are not kept."""
        net = getattr(self, "unet", None)
        if net is None:
            raise ConfigError(f"model.gradient_checkpointing: {self.architecture} has no UNet "
                              "to checkpoint")
        if hasattr(net, "enable_gradient_checkpointing"):  # diffusers
            if enabled:
                net.enable_gradient_checkpointing()
            else:
                net.disable_gradient_checkpointing()
        else:
            net.gradient_checkpointing = enabled
        return self

    @classmethod
    def from_pretrained(cls, path: str | Path, device: Any = None) -> Denoiser:
        """Load a saved model folder (``config.json`` + ``model.safetensors``)."""
        return load_denoiser(path, device)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def embed(self, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def eps(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self(x, t, self.embed(labels))

    def null_like(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.full_like(labels, self.null_label)

    # -- what the methods touch -----------------------------------------------------------------
    def parameter_group(self, group: str) -> list[tuple[str, nn.Parameter]]:
        """``xattn``: the parameters that read the condition; ``noxattn``: the rest of the
        network (ESD's split); ``full``: all but the condition embeddings."""
        raise NotImplementedError

    def condition_readers(self) -> list[tuple[str, nn.Linear]]:
        """The linear maps applied directly to the condition vectors (UCE edits these)."""
        raise NotImplementedError

    def concept_vectors(self, label: int) -> torch.Tensor:
        """``[n, D]``: the condition vectors specific to ``label`` (what the readers read)."""
        raise NotImplementedError

    def shared_vectors(self) -> torch.Tensor:
        """``[m, D]``: condition vectors every prompt shares (none for class embeddings)."""
        raise NotImplementedError

    def extra_config(self) -> dict[str, Any]:
        return {}


class ClassDenoiser(Denoiser):
    """:class:`ClassUNet` + a class-embedding table (``num_classes`` rows plus ∅)."""

    architecture = "class_unet"

    def __init__(self, config: ModelConfig, num_classes: int, image_size: int,
                 in_channels: int) -> None:
        super().__init__(config, num_classes, image_size, in_channels)
        levels = len(config.channels) - 1
        if image_size % (2 ** levels):
            raise ConfigError(f"model.channels: {levels + 1} levels need an image size divisible"
                              f" by {2 ** levels}, got {image_size}")
        self.class_embedding = nn.Embedding(num_classes + 1, config.cond_dim)
        nn.init.normal_(self.class_embedding.weight, std=1.0)
        self.unet = ClassUNet(in_channels, config.channels, config.time_dim, config.cond_dim,
                              config.groups)

    def embed(self, labels: torch.Tensor) -> torch.Tensor:
        return self.class_embedding(labels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, cond)

    def parameter_group(self, group: str) -> list[tuple[str, nn.Parameter]]:
        named = [(n, p) for n, p in self.named_parameters() if not n.startswith("class_embedding")]
        if group == "xattn":  # the analogue of attn2: the maps reading the class embedding
            return [(n, p) for n, p in named if ".cond_proj." in n]
        if group == "noxattn":  # ESD-u: all else but time embedding and output (as ESD does)
            return [(n, p) for n, p in named if ".cond_proj." not in n
                    and not n.startswith(("unet.time_mlp", "unet.conv_out", "unet.norm_out"))]
        if group == "full":
            return named
        raise ConfigError(f"unknown parameter group {group!r}; known: xattn, noxattn, full")

    def condition_readers(self) -> list[tuple[str, nn.Linear]]:
        return [(n, m) for n, m in self.named_modules() if n.endswith("cond_proj")]

    def concept_vectors(self, label: int) -> torch.Tensor:
        return self.class_embedding.weight[label:label + 1]

    def shared_vectors(self) -> torch.Tensor:
        return self.class_embedding.weight[:0]


class PromptDenoiser(Denoiser):
    """A UNet reading a 3-token prompt by cross-attention: the hand-written one
    (``prompt_unet``) or a diffusers ``UNet2DConditionModel`` (``diffusers_unet``)."""

    CONCEPT_POSITION = 1  # [<start>, <concept>, <end>]

    def __init__(self, config: ModelConfig, num_classes: int, image_size: int, in_channels: int,
                 unet: Any = None) -> None:
        super().__init__(config, num_classes, image_size, in_channels)
        self.architecture = config.architecture
        self.is_diffusers = config.architecture == "diffusers_unet"
        if unet is None and self.is_diffusers:
            unet = tiny_condition_unet(config, image_size, in_channels)
        elif unet is None:
            levels = len(config.channels) - 1
            if levels < 1 or image_size % (2 ** levels):
                raise ConfigError(f"model.channels: prompt_unet needs 2 or more levels and an "
                                  f"image size divisible by {2 ** max(levels, 1)}")
            unet = ClassUNet(in_channels, config.channels, config.time_dim, config.cond_dim,
                             config.groups, conditioning="cross",
                             head_dim=config.attention_head_dim)
        self.unet = unet
        width = unet.config.cross_attention_dim if self.is_diffusers else config.cond_dim
        if isinstance(width, (list, tuple)):
            width = width[0]
        # vocabulary: classes, then <null>, <start>, <end>
        self.tokens = nn.Embedding(num_classes + 3, int(width))
        nn.init.normal_(self.tokens.weight, std=1.0)

    @property
    def start_token(self) -> int:
        return self.num_classes + 1

    @property
    def end_token(self) -> int:
        return self.num_classes + 2

    def prompt_ids(self, labels: torch.Tensor) -> torch.Tensor:
        start = torch.full_like(labels, self.start_token)
        end = torch.full_like(labels, self.end_token)
        return torch.stack([start, labels, end], dim=1)

    def embed(self, labels: torch.Tensor) -> torch.Tensor:
        return self.tokens(self.prompt_ids(labels))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.is_diffusers:
            return self.unet(x, t, encoder_hidden_states=cond, return_dict=False)[0]
        return self.unet(x, t, cond)

    def parameter_group(self, group: str) -> list[tuple[str, nn.Parameter]]:
        named = [(n, p) for n, p in self.named_parameters() if not n.startswith("tokens")]
        if group == "xattn":
            return [(n, p) for n, p in named if "attn2" in n]
        if group == "noxattn":  # as ESD: not attn2, not the time embedding, not the output
            return [(n, p) for n, p in named if "attn2" not in n
                    and not n.startswith(("unet.time_embedding", "unet.conv_out",
                                          "unet.conv_norm_out", "unet.time_mlp",
                                          "unet.norm_out"))]
        if group == "full":
            return named
        raise ConfigError(f"unknown parameter group {group!r}; known: xattn, noxattn, full")

    def cross_attentions(self) -> list[tuple[str, nn.Module]]:
        return [(n, m) for n, m in self.unet.named_modules() if n.endswith("attn2")]

    def condition_readers(self) -> list[tuple[str, nn.Linear]]:
        out = []
        for name, attn in self.cross_attentions():
            out += [(f"{name}.to_k", attn.to_k), (f"{name}.to_v", attn.to_v)]
        return out

    def concept_vectors(self, label: int) -> torch.Tensor:
        return self.tokens.weight[label:label + 1]

    def shared_vectors(self) -> torch.Tensor:
        return self.tokens.weight[self.start_token:self.end_token + 1]

    def extra_config(self) -> dict[str, Any]:
        return {"unet_config": dict(self.unet.config)} if self.is_diffusers else {}


def tiny_condition_unet(config: ModelConfig, image_size: int, in_channels: int) -> Any:
    """A small diffusers ``UNet2DConditionModel``: cross-attention on every level but the
    first, ``config.channels`` wide."""
    from diffusers import UNet2DConditionModel

    n = len(config.channels)
    if image_size % (2 ** (n - 1)):
        raise ConfigError(f"model.channels: {n} levels need an image size divisible by "
                          f"{2 ** (n - 1)}, got {image_size}")
    down = ["DownBlock2D"] + ["CrossAttnDownBlock2D"] * (n - 1)
    up = ["CrossAttnUpBlock2D"] * (n - 1) + ["UpBlock2D"]
    if n == 1:
        down, up = ["CrossAttnDownBlock2D"], ["CrossAttnUpBlock2D"]
    return UNet2DConditionModel(
        sample_size=image_size, in_channels=in_channels, out_channels=in_channels,
        block_out_channels=tuple(config.channels), down_block_types=tuple(down),
        up_block_types=tuple(up), layers_per_block=1, cross_attention_dim=config.cond_dim,
        attention_head_dim=config.attention_head_dim, norm_num_groups=config.groups)


ARCHITECTURES: dict[str, type[Denoiser]] = {"class_unet": ClassDenoiser,
                                            "prompt_unet": PromptDenoiser,
                                            "diffusers_unet": PromptDenoiser}

RELOAD: dict[str, Callable[[Path, dict[str, Any]], Denoiser]] = {}
"""Architectures whose saved folder reloads otherwise than as ``model.safetensors`` into one of
:data:`ARCHITECTURES`: name -> ``reload(folder, its config.json)``; each registers itself in its
own module (``text_pipeline``: :mod:`obliviate.diffusion.text`)."""
RELOADED_BY = {"text_pipeline": "obliviate.diffusion.text"}
"""The module that registers each :data:`RELOAD` entry (imported by :func:`load_denoiser` when
it meets a folder of that architecture first)."""


def _codec(config: ModelConfig, image_size: int, in_channels: int
           ) -> tuple[ModelConfig, LatentCodec | None, int, int]:
    """The config (its ``vae`` resolved), the codec, and the denoised space's size and
    channels: the task's images, or the VAE's latents of them."""
    vae = config.vae
    if vae is None and config.pretrained and is_pipeline(config.pretrained):
        found = Path(config.pretrained) / "vae"
        vae = str(found) if found.is_dir() else None
    if vae is None:
        return config, None, image_size, in_channels
    codec = LatentCodec.load(vae)
    size, channels = codec.latent_shape(image_size, in_channels)
    return config.model_copy(update={"vae": vae}), codec, size, channels


def is_pipeline(path: str | Path) -> bool:
    """A diffusers pipeline folder (``model_index.json``, ``unet/``), e.g. Stable Diffusion's."""
    return (Path(path) / "model_index.json").is_file() and (Path(path) / "unet").is_dir()


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """A temporary folder beside ``path`` that replaces ``path`` once the block completes and
    is removed if it fails, so an interrupted save never leaves a half-written model."""
    import os
    import shutil

    from obliviate.core.io import temp_dir

    tmp = temp_dir(path.parent, f".{path.name}.")
    try:
        yield tmp
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_denoiser(path: str | Path, device: Any = None) -> Denoiser:
    """Rebuild a saved denoiser from its folder."""
    path = Path(path)
    info = read_json(path / CONFIG) if (path / CONFIG).is_file() else {}
    if info.get("architecture") in RELOADED_BY and info["architecture"] not in RELOAD:
        importlib.import_module(RELOADED_BY[info["architecture"]])
    if info.get("architecture") in RELOAD and info.get("format") == FORMAT:
        model = RELOAD[info["architecture"]](path, info).eval()
        return model.to(device) if device is not None else model
    if not (path / CONFIG).is_file() or not (path / WEIGHTS).is_file():
        raise ModelLoadError(f"{path}: not a saved model (expected {CONFIG} and {WEIGHTS})")
    if info.get("format") != FORMAT:
        raise ModelLoadError(f"{path}/{CONFIG}: not an obliviate denoiser")
    config = ModelConfig.model_validate({**info["model"], "pretrained": None})
    args = (config, int(info["num_classes"]), int(info["image_size"]), int(info["in_channels"]))
    codec = LatentCodec.load(config.vae) if config.vae else None  # saved sizes: its latents
    if info["architecture"] == "diffusers_unet":
        from diffusers import UNet2DConditionModel

        model: Denoiser = PromptDenoiser(*args,
                                         unet=UNet2DConditionModel.from_config(info["unet_config"]))
    else:
        model = ARCHITECTURES[info["architecture"]](*args)
    from obliviate.core.safety import check_safetensors

    check_safetensors(path / WEIGHTS)  # truncated or bit-flipped: one line naming the file
    state = load_file(str(path / WEIGHTS))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{path}: weights do not match the config "
                             f"({str(exc).splitlines()[0]})") from None
    model.codec = codec
    model.eval()
    return model.to(device) if device is not None else model
