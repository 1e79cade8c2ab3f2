"""Text-to-image models: a diffusers pipeline folder (Stable Diffusion's layout) as one denoiser.

A pipeline folder holds ``unet/`` (``UNet2DConditionModel``), ``vae/`` (``AutoencoderKL``),
``text_encoder/`` (``CLIPTextModel``), ``tokenizer/`` (``CLIPTokenizer``), ``scheduler/`` and
``model_index.json``. :class:`TextDenoiser` loads it with ``model.architecture=text_pipeline``:
concepts are named by text prompts (``model.prompts``, one per class of the task, e.g.
``"a photo of a church"``), and the unconditional condition ∅ is the empty prompt, as in
classifier-free guidance for Stable Diffusion (Rombach et al. 2022; Ho & Salimans 2022).

The text encoder is frozen and shared, never copied or trained (as in ESD, UCE, Concept
Ablation, SalUn, Forget-Me-Not, Selective Amnesia and EraseDiff, which all edit the UNet): each
prompt's hidden states are computed once and are what the UNet's cross-attention reads, so every
diffusion method works through text conditioning without precomputed embeddings:

- ESD-x trains ``attn2`` and ESD-u the rest of the UNet, as the original code's ``xattn`` /
  ``noxattn``;
- UCE edits ``attn2.to_k`` / ``to_v`` in closed form with the text encoder's outputs at the
  concept prompt's tokens (:meth:`TextDenoiser.concept_vectors`);
- Forget-Me-Not drives the attention on those token positions to zero
  (:meth:`TextDenoiser.concept_positions`).

The unlearned model saves as a pipeline folder (:meth:`TextDenoiser.save_pipeline`) that
``diffusers.DiffusionPipeline.from_pretrained`` loads and generates with, beside obliviate's own
``config.json`` (which ``load_denoiser`` reads) and a model card.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from obliviate.core.errors import ConfigError, ModelLoadError
from obliviate.core.io import atomic_write_json, atomic_write_text
from obliviate.diffusion.models import (
    CONFIG,
    FORMAT,
    LatentCodec,
    ModelConfig,
    PromptDenoiser,
    _codec,
    atomic_folder,
    is_pipeline,
)


class TextConditioner:
    """A frozen CLIP text encoder and its tokenizer; shared, never copied (like the VAE)."""

    def __init__(self, encoder: Any, tokenizer: Any, path: str | None = None) -> None:
        self.encoder = encoder.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.path = path

    @classmethod
    def load(cls, path: str | Path) -> TextConditioner:
        """From a pipeline folder's ``text_encoder/`` and ``tokenizer/``, once per process."""
        key = str(Path(path).resolve())
        if key not in _TEXT:
            try:
                from transformers import CLIPTextModel, CLIPTokenizer

                encoder = CLIPTextModel.from_pretrained(str(Path(path) / "text_encoder"))
                tokenizer = CLIPTokenizer.from_pretrained(str(Path(path) / "tokenizer"))
            except (OSError, ValueError) as exc:
                raise ModelLoadError(f"{path}: cannot load text_encoder/ and tokenizer/ "
                                     f"({str(exc).splitlines()[0]})") from None
            _TEXT[key] = cls(encoder, tokenizer, str(path))
        return _TEXT[key]

    def __deepcopy__(self, memo: dict[int, Any]) -> TextConditioner:
        return self

    @property
    def length(self) -> int:
        return int(self.tokenizer.model_max_length)

    def ids(self, prompts: list[str]) -> torch.Tensor:
        """``[B, L]`` token ids, padded to the encoder's length (as Stable Diffusion does)."""
        return self.tokenizer([str(p) for p in prompts], padding="max_length",
                              max_length=self.length, truncation=True,
                              return_tensors="pt").input_ids

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """``[B, L, D]``: the last hidden states the UNet's cross-attention reads."""
        ids = self.ids(prompts).to(self.encoder.device)
        return self.encoder(ids)[0].float()


_TEXT: dict[str, TextConditioner] = {}


class TextDenoiser(PromptDenoiser):
    """A diffusers ``UNet2DConditionModel`` read by a CLIP text encoder's prompt states.

    Label ``k`` is the prompt ``prompts[k]``; ``null_label`` is the empty prompt."""

    architecture = "text_pipeline"

    def __init__(self, config: ModelConfig, num_classes: int, image_size: int, in_channels: int,
                 unet: Any = None, text: TextConditioner | None = None,
                 scheduler: Any = None) -> None:
        if unet is None or text is None:
            raise ConfigError("model.architecture=text_pipeline needs model.pretrained: a "
                              "diffusers pipeline folder (unet/, vae/, text_encoder/, tokenizer/)")
        prompts = list(config.prompts or [])
        if len(prompts) != num_classes:
            raise ConfigError(f"model.prompts: the task has {num_classes} classes, "
                              f"{len(prompts)} prompts were given (one per class, in order)")
        super().__init__(config.model_copy(update={"architecture": "diffusers_unet"}),
                         num_classes, image_size, in_channels, unet=unet)
        del self.tokens  # the text encoder's states replace the learned prompt tokens
        self.config = config
        self.architecture = "text_pipeline"
        self.text, self.scheduler, self.prompts = text, scheduler, prompts
        ids = text.ids([*prompts, ""])
        special = {text.tokenizer.bos_token_id, text.tokenizer.eos_token_id,
                   text.tokenizer.pad_token_id}
        # a prompt's word tokens; the empty prompt (∅) has none: its first EOS stands for it
        self._positions = [[i for i, tok in enumerate(row.tolist()) if tok not in special]
                           or [1] for row in ids]
        self.register_buffer("prompt_states", text.encode([*prompts, ""]), persistent=False)

    def embed(self, labels: torch.Tensor) -> torch.Tensor:
        return self.prompt_states[labels]

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """States of prompts that are not classes (evaluation prompt sets, attacks)."""
        self.text.encoder.to(self.prompt_states.device)
        return self.text.encode(prompts).to(self.prompt_states.device)

    def concept_positions(self, label: int) -> list[int]:
        """The token positions of the prompt's words (not BOS, EOS or padding); for the empty
        prompt, the EOS after BOS."""
        return self._positions[label]

    def concept_vectors(self, label: int) -> torch.Tensor:
        return self.prompt_states[label, self.concept_positions(label)]

    def shared_vectors(self) -> torch.Tensor:
        """The BOS state: under CLIP's causal attention it is the same for every prompt."""
        return self.prompt_states[self.null_label, :1]

    def parameter_group(self, group: str) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in super().parameter_group(group) if n.startswith("unet.")]

    def extra_config(self) -> dict[str, Any]:
        return {"unet_config": dict(self.unet.config), "image_shape": list(self.image_shape)}

    # -- a pipeline folder users load ---------------------------------------------------------
    def save_pipeline(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write a diffusers pipeline folder (``DiffusionPipeline.from_pretrained`` loads it)
        with obliviate's ``config.json`` and a model card; atomically replaces ``path``."""
        from diffusers import StableDiffusionPipeline

        if self.codec is None:
            raise ConfigError("a text pipeline needs its VAE to be saved as a pipeline")
        path = Path(path)
        with atomic_folder(path) as tmp:
            pipe = StableDiffusionPipeline(
                vae=self.codec.vae, text_encoder=self.text.encoder, tokenizer=self.text.tokenizer,
                unet=self.unet, scheduler=self.scheduler, safety_checker=None,
                feature_extractor=None, requires_safety_checker=False)
            pipe.save_pretrained(str(tmp), safe_serialization=True)
            info = {"format": FORMAT, "architecture": self.architecture,
                    "model": self.config.model_copy(update={"pretrained": None, "vae": None})
                    .model_dump(mode="json"),
                    "num_classes": self.num_classes, "image_size": self.image_size,
                    "in_channels": self.in_channels, **self.extra_config(), **(extra or {})}
            atomic_write_json(tmp / CONFIG, info)
            atomic_write_text(tmp / "README.md", model_card(self, extra or {}))
        return path


def model_card(model: TextDenoiser, extra: dict[str, Any]) -> str:
    method = extra.get("method", "none (the original pipeline)")
    forgotten = extra.get("forget_prompts") or []
    lines = ["---", "library_name: diffusers", "tags: [obliviate, machine-unlearning, "
             "text-to-image]", "---", "", "# An unlearned text-to-image pipeline", "",
             f"- Unlearning method: {method}",
             f"- Concept prompts: {', '.join(repr(p) for p in model.prompts)}"]
    if forgotten:
        lines.append(f"- Erased: {', '.join(repr(p) for p in forgotten)}")
    lines += ["", "```python", "from diffusers import DiffusionPipeline",
              "pipe = DiffusionPipeline.from_pretrained(\"<this folder>\")",
              "image = pipe(\"a prompt\").images[0]", "```", ""]
    return "\n".join(lines)


def scheduler_settings(scheduler: Any) -> dict[str, Any]:
    """The noise schedule of a diffusers scheduler as :class:`ModelConfig` fields."""
    cfg = scheduler.config
    kinds = {"linear": "linear", "scaled_linear": "scaled_linear",
             "squaredcos_cap_v2": "cosine"}
    kind = kinds.get(cfg.get("beta_schedule", "linear"))
    if kind is None:
        raise ModelLoadError(f"scheduler: beta_schedule {cfg.get('beta_schedule')!r} is not "
                             f"supported (known: {', '.join(kinds)})")
    if cfg.get("prediction_type", "epsilon") != "epsilon":
        raise ModelLoadError("scheduler: only ε-prediction pipelines are supported "
                             f"(prediction_type={cfg.get('prediction_type')!r})")
    return {"schedule": kind, "timesteps": int(cfg.get("num_train_timesteps", 1000)),
            "beta_start": float(cfg.get("beta_start", 1e-4)),
            "beta_end": float(cfg.get("beta_end", 0.02))}


def load_text_pipeline(config: ModelConfig, num_classes: int, image_size: int,
                       in_channels: int, path: str | Path | None = None) -> TextDenoiser:
    """Load ``path`` (default ``config.pretrained``), a diffusers pipeline folder, as one model.

    ``image_size`` / ``in_channels`` are the task's images; the UNet denoises the VAE's latents.
    """
    path = Path(path or config.pretrained or "")
    if not is_pipeline(path) or not (path / "text_encoder").is_dir():
        raise ModelLoadError(f"{path}: not a text-to-image pipeline folder (model_index.json, "
                             "unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
    try:
        from diffusers import DDIMScheduler, UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(str(path / "unet"))
        scheduler = DDIMScheduler.from_pretrained(str(path / "scheduler"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: cannot load the pipeline's unet/ or scheduler/ "
                             f"({str(exc).splitlines()[0]})") from None
    config = config.model_copy(update={"pretrained": str(path), "vae": None,
                                       **scheduler_settings(scheduler)})
    config, codec, size, channels = _codec(config, image_size, in_channels)
    if codec is None:
        raise ModelLoadError(f"{path}: the pipeline has no vae/")
    if unet.config.in_channels != channels:
        raise ModelLoadError(f"{path}/unet: takes {unet.config.in_channels} channels, the VAE's "
                             f"latents have {channels}")
    model = TextDenoiser(config, num_classes, size, channels, unet=unet,
                         text=TextConditioner.load(path), scheduler=scheduler)
    model.codec = codec
    return model


PIPELINE_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def from_pipeline(pipe: Any, prompts: list[str], image_size: int, in_channels: int = 3,
                  **settings: Any) -> TextDenoiser:
    """The diffusers pipeline ``pipe`` (in memory) as one model whose class ``k`` is the
    prompt ``prompts[k]``; ``image_size`` and ``in_channels`` are the images it is taught
    with, ``settings`` other :class:`ModelConfig` fields (``sample_steps``, ...).

    The model holds the pipeline's own UNet, so what a method edits is what ``pipe``
    generates with; its VAE and text encoder are frozen (as in every method here) and shared."""
    missing = [part for part in PIPELINE_PARTS if getattr(pipe, part, None) is None]
    if missing:
        raise ConfigError(f"a diffusers pipeline without {', '.join(missing)}: a text-to-image "
                          f"model needs {', '.join(PIPELINE_PARTS)}")
    config = ModelConfig(architecture="text_pipeline", prompts=list(prompts),
                         **scheduler_settings(pipe.scheduler), **settings)
    codec = LatentCodec(f"<{type(pipe).__name__}.vae>", vae=pipe.vae)
    size, channels = codec.latent_shape(image_size, in_channels)
    if pipe.unet.config.in_channels != channels:
        raise ModelLoadError(f"{type(pipe).__name__}.unet takes {pipe.unet.config.in_channels} "
                             f"channels, the VAE's latents have {channels}")
    model = TextDenoiser(config, len(prompts), size, channels, unet=pipe.unet,
                         text=TextConditioner(pipe.text_encoder, pipe.tokenizer),
                         scheduler=pipe.scheduler)
    model.codec = codec
    return model.to(pipe.unet.device)


def reload_text_pipeline(path: Path, info: dict[str, Any]) -> TextDenoiser:
    """The model a :meth:`TextDenoiser.save_pipeline` folder holds (``load_denoiser``)."""
    config = ModelConfig.model_validate({**info["model"], "pretrained": str(path)})
    channels, side, _ = info["image_shape"]
    LatentCodec.forget(path / "vae")
    _TEXT.pop(str(path.resolve()), None)  # the folder may hold newer weights than last read
    return load_text_pipeline(config, int(info["num_classes"]), int(side), int(channels), path)
