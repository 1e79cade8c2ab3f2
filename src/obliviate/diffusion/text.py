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
- Forget-Me-Not drives the attention on the concept name's token positions to zero
  (:meth:`TextDenoiser.concept_positions`).

Prompt attacks learn token embeddings in free slots of a prompt (:meth:`TextConditioner.slot_ids`,
:meth:`TextConditioner.encode_slots`, :func:`invert_tokens`) through the same frozen encoder.

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
from obliviate.diffusion.denoisers import (
    CONFIG,
    FORMAT,
    RELOAD,
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


    # -- free token slots (prompt attacks: UnlearnDiffAtk, concept inversion) -----------------
    def slot_ids(self, template: str, count: int) -> tuple[torch.Tensor, list[int]]:
        """``[1, L]`` ids of ``template`` with ``count`` free token slots where its ``{}``
        stands, and the slots' positions (their ids are placeholders: :meth:`encode_slots`
        replaces their input embeddings)."""
        if template.count("{}") != 1:
            raise ConfigError(f"prompt template {template!r}: needs exactly one {{}} where the "
                              "learned tokens go")
        head, tail = (self.tokenizer(part, add_special_tokens=False).input_ids
                      if part.strip() else [] for part in template.split("{}"))
        bos, eos = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        start = 1 + len(head)
        if start + count >= self.length:
            raise ConfigError(f"prompt template {template!r}: {count} learned tokens do not fit "
                              f"in the text encoder's {self.length} positions")
        ids = [bos, *head, *[eos] * count, *tail][:self.length - 1] + [eos]
        ids += [pad] * (self.length - len(ids))
        return torch.tensor([ids]), list(range(start, start + count))

    def encode_slots(self, ids: torch.Tensor, positions: list[int], vectors: torch.Tensor
                     ) -> torch.Tensor:
        """``[B, L, D]`` states of ``ids`` whose input embeddings at ``positions`` are
        ``vectors`` (``[len(positions), E]``); differentiable in ``vectors``."""
        def fill(module: Any, args: Any, out: torch.Tensor) -> torch.Tensor:
            out = out.clone()
            out[:, positions] = vectors.to(out.dtype)
            return out

        handle = self.token_table.register_forward_hook(fill)
        try:
            return self.encoder(ids.to(self.encoder.device))[0].float()
        finally:
            handle.remove()

    @property
    def token_table(self) -> torch.nn.Embedding:
        return self.encoder.get_input_embeddings()

    def nearest_tokens(self, vectors: torch.Tensor) -> torch.Tensor:
        """The vocabulary token nearest (L2) to each row of ``vectors``."""
        return torch.cdist(vectors.detach().float(), self.token_table.weight.float()).argmin(1)


_TEXT: dict[str, TextConditioner] = {}


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading ids ``a`` and ``b`` share."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def invert_tokens(model: TextDenoiser, x0: torch.Tensor, template: str, vectors: torch.Tensor,
                  steps: int, learning_rate: float, batch_size: int, gen: torch.Generator,
                  discrete: bool = False) -> dict[str, Any]:
    """Learn the tokens in ``template``'s ``{}`` (initialised to ``vectors``) that minimise the
    model's own denoising loss on the concept latents ``x0``:
    ``E_{t,ε} ‖ε_θ(x_t, text(template ∘ v)) − ε‖²`` (textual inversion, Gal et al. 2023).

    ``discrete``: the tokens stay vocabulary tokens, as a hard prompt: each step evaluates the
    gradient at the nearest tokens and applies it to continuous copies (PEZ, Wen et al. 2023).
    The model is not modified. Returns the prompt states ``cond`` (``[1, L, D]``), the vectors,
    the token ids (``discrete``), the loss curve."""
    dev = model.prompt_states.device
    text = model.text
    text.encoder.to(dev)
    ids, positions = text.slot_ids(template, len(vectors))
    ids = ids.to(dev)
    free = vectors.detach().clone().to(dev).requires_grad_()
    opt = torch.optim.Adam([free], lr=learning_rate)
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval().requires_grad_(False)

    def used() -> torch.Tensor:
        if not discrete:
            return free
        hard = text.token_table.weight[text.nearest_tokens(free)]
        return free + (hard - free).detach()

    losses = []
    try:
        for _ in range(steps):
            idx = torch.randint(0, len(x0), (batch_size,), generator=gen).to(dev)
            t = torch.randint(0, model.schedule.timesteps, (batch_size,), generator=gen).to(dev)
            noise = torch.randn((batch_size, *x0.shape[1:]), generator=gen).to(dev)
            cond = text.encode_slots(ids, positions, used())
            pred = model(model.schedule.q_sample(x0[idx], t, noise), t,
                         cond.expand(batch_size, -1, -1))
            loss = (pred - noise).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)
    with torch.no_grad():
        tokens = text.nearest_tokens(free) if discrete else None
        final = free.detach() if tokens is None else text.token_table.weight[tokens]
        out: dict[str, Any] = {"cond": text.encode_slots(ids, positions, final).to(dev),
                               "vectors": final, "losses": losses}
        if tokens is not None:
            out["tokens"] = tokens.tolist()
            out["prompt"] = template.replace(
                "{}", text.tokenizer.decode(tokens.tolist()).strip())
    return out


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
        rows = [row.tolist() for row in ids]
        self._words = [[i for i, tok in enumerate(row) if tok not in special] or [1]
                       for row in rows]
        # its concept's name: the words after the opening it shares with another class prompt
        # ("church" in "a photo of a church" beside "a photo of a tench")
        self._positions = []
        for k, words in enumerate(self._words[:-1]):
            shared = max((common_prefix(rows[k], other) for j, other in enumerate(rows[:-1])
                          if j != k), default=0)
            self._positions.append([i for i in words if i >= shared] or words)
        self._positions.append(self._words[-1])
        self.register_buffer("prompt_states", text.encode([*prompts, ""]), persistent=False)

    def embed(self, labels: torch.Tensor) -> torch.Tensor:
        return self.prompt_states[labels]

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """States of prompts that are not classes (evaluation prompt sets, attacks)."""
        self.text.encoder.to(self.prompt_states.device)
        return self.text.encode(prompts).to(self.prompt_states.device)

    def concept_positions(self, label: int) -> list[int]:
        """The token positions of the concept's name in its prompt: its words (not BOS, EOS or
        padding) after the opening it shares with another class prompt (a template such as
        "a photo of a"); for the empty prompt, the EOS after BOS. Forget-Me-Not silences the
        attention on them: silencing a shared template would silence every prompt."""
        return self._positions[label]

    def concept_vectors(self, label: int) -> torch.Tensor:
        """The states at all of the prompt's words (UCE edits what each of them maps to)."""
        return self.prompt_states[label, self._words[label]]

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


RELOAD["text_pipeline"] = reload_text_pipeline
