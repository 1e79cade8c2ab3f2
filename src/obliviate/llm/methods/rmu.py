"""Representation Misdirection for Unlearning, RMU (Li et al. 2024, "The WMDP Benchmark:
Measuring and Reducing Malicious Use With Unlearning", arXiv:2403.03218).

loss = mse(h_l(F), c·u) + α·mse(h_l(R), h_l^ref(R)), where ``h_l`` is the output of decoder layer
``l`` (the residual stream after that layer), ``u`` a fixed random unit vector and ``h^ref`` the
frozen target. Only a few MLP weights below and at ``l`` are trained. The mean is over hidden
units and tokens, as ``F.mse_loss`` in the reference code (padding left out, see
:func:`~obliviate.llm.methods.losses.activation_mse`).

Defaults, checked against the reference code ``centerforaisafety/wmdp`` (``rmu/unlearn.py``) and
the notebook that produced the paper's released Zephyr-7B model (``run_rmu_zephyr.ipynb``):

* ``steering_coeff`` c = 6.5 and ``alpha`` = 1200: the notebook's command (its argparse defaults
  are c = 20, α = 100; OpenUnlearning's ``RMU.yaml`` uses c = 300, α = 1000 and warns that both
  depend on model and data). A fixed c is used with ``coefficient = "fixed"``.
* ``coefficient = "adaptive"`` (the default): adaptive RMU (Dang et al., AAAI 2025, "On Effects
  of Steering Latent Representation for Large Language Model Unlearning", arXiv:2408.06223)
  sets c = β·mean_t ‖h_l^ref(x_F)‖, the frozen model's mean per-token activation norm at layer
  ``l`` on the forget data times ``adaptive_scale`` β = 5 (the paper's scale; its code measures
  the norm on the first forget batch, here on the whole forget set once before training, over
  the tokens that enter the loss, so a resumed run steers towards the same vector).

  Why: c = 6.5 was tuned for Zephyr-7B, and a fixed c does nothing on a model whose residual
  stream is larger. Measured on SmolLM2-135M-Instruct (30 layers, width 576), the per-token norm
  of the layer-7 output is 145 on average (median 120; the first token 784): c·u with c = 6.5 is
  1/20 of the activations, so the forget term only asks to *shrink* ``h_l`` towards 0. With the
  adaptive rule c ≈ 690 there. Measured (8 steps, batch 4, the synthetic hazard corpus, layer 7,
  lr 1e-3): fixed c moves the forget activations by 9.6% but their cosine with u stays 0.005;
  adaptive c turns them towards u (cosine 0.003 → 0.062, 7.5% change; retain 2%). How *far*
  they move is set by the learning rate and the number of steps, not by c: AdamW normalises the
  gradient's scale, and at lr 5e-5 8 steps move them by 0.9% whichever c (BENCHMARKS.md's
  15 TOFU steps at 5e-5 left RMU unchanged for that reason too). The paper has no rule for α,
  the layer or the learning rate; they stay the WMDP values, and a CPU budget of a few dozen
  steps needs a larger learning rate (the recipe's ``unlearn.method_args.rmu.learning_rate``).
* ``layer`` = 7, trained parameters ``mlp.down_proj.weight`` of layers 5, 6, 7 (the reference's
  ``layer_ids=5,6,7``, ``param_ids=6``, which is ``mlp.down_proj.weight`` in a Mistral/Llama
  decoder layer; OpenUnlearning: ``model\\.layers\\.(5|6|7)\\.mlp\\.down_proj\\.weight``).
* ``learning_rate`` 5e-5, AdamW (the reference's default and the notebook; OpenUnlearning's
  ``RMU.yaml`` sets none and inherits its trainer's 1e-5): RMU's ``train_defaults``, so a
  learning rate the recipe sets (``unlearn.train.learning_rate``, or
  ``unlearn.method_args.rmu.learning_rate`` for RMU alone) replaces it.
* The retain term is the activation MSE of the paper (OpenUnlearning's ``retain_loss_type:
  EMBED_DIFF``; its ``RMU.yaml`` default ``null`` falls back to GradDiff's retain NLL).
  OpenUnlearning also counts answer tokens only and averages per sequence first; here
  ``tokens`` chooses the tokens and the mean is over all counted tokens, as the reference.
* ``u``: entries drawn uniformly from [0, 1) and normalised (the reference's ``torch.rand``), not
  an isotropic direction; seeded by ``seed`` so a resumed run steers towards the same vector.

How the layer maps onto a model: ``layer`` is an absolute decoder-layer index, as in the paper and
both implementations (OpenUnlearning's ``RMU.yaml`` fixes ``model.layers.7`` whatever the
model's depth). The value was picked for Zephyr-7B (32 layers) and no rule for rescaling it with
depth is given, so a fraction would invent a mapping the sources do not make. Negative values
count from the end. On a model with 7 layers or fewer (the tiny test models) set ``layer``: the
default raises a :class:`ConfigError` naming the field.

Efficiency: the frozen reference is a copy of the embeddings and layers ``0..l`` only (no layers
above ``l``, no LM head), and the trained model's forward passes also stop after layer ``l``.
"""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Literal

import torch
from pydantic import Field

from obliviate.core.errors import ConfigError
from obliviate.core.method import MethodConfig, MethodOutcome
from obliviate.core.registry import METHODS
from obliviate.core.task import UnlearningTask
from obliviate.llm.answer_forward import forward
from obliviate.llm.data.formatting import IGNORE_INDEX, collate, encode_record
from obliviate.llm.methods.base import LLMUnlearningMethod, UnlearnContext
from obliviate.llm.methods.losses import rmu_loss


class RMUConfig(MethodConfig):
    """RMU's hyperparameters; defaults from the WMDP release for Zephyr-7B (see module doc)."""

    coefficient: Literal["adaptive", "fixed"] = Field(
        default="adaptive", description="adaptive: c = adaptive_scale x the frozen model's mean "
                                        "activation norm at the layer on forget data (Dang et "
                                        "al. 2025); fixed: c = steering_coeff (Li et al. 2024)")
    adaptive_scale: float = Field(default=5.0, gt=0, description="β of adaptive RMU")
    steering_coeff: float = Field(default=6.5, gt=0,
                                  description="c when coefficient = fixed: the norm of c·u")
    alpha: float = Field(default=1200.0, ge=0, description="weight of the retain term")
    layer: int = Field(default=7, description="decoder layer whose output is steered (absolute "
                                              "index; negative counts from the end)")
    update_layers: list[int] | None = Field(
        default=None, description="layers whose parameters are trained; default "
                                  "[layer-2, layer-1, layer] (those that exist)")
    param_names: list[str] = Field(
        default_factory=lambda: ["mlp.down_proj.weight"], min_length=1,
        description="parameter names inside each updated decoder layer")
    tokens: Literal["all", "answer"] = Field(
        default="all", description="tokens whose activations enter the loss: every non-padding "
                                   "token (reference code) or answer tokens only (OpenUnlearning)")


# -- locating and truncating the decoder stack ---------------------------------------------------
def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(model)


def decoder_layers(model: torch.nn.Module) -> tuple[str, torch.nn.Module, str, torch.nn.ModuleList]:
    """``(path, owner, attribute, layers)`` of the model's decoder layers.

    The layers are the first ``ModuleList`` holding ``config.num_hidden_layers`` modules (e.g.
    ``model.layers`` of a Llama, ``base_model.model.model.layers`` under a LoRA wrapper).
    """
    root = _unwrap(model)
    depth = getattr(getattr(root, "config", None), "num_hidden_layers", None)
    if depth is None:
        raise ConfigError(f"rmu: {type(root).__name__} has no config.num_hidden_layers")
    for name, module in root.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == depth:
            owner_name, _, attr = name.rpartition(".")
            return name, root.get_submodule(owner_name), attr, module
    raise ConfigError(f"rmu: no list of {depth} decoder layers found in {type(root).__name__}")


@contextmanager
def first_layers(owner: torch.nn.Module, attr: str, layers: torch.nn.ModuleList, keep: int
                 ) -> Iterator[None]:
    """Run the decoder with only its first ``keep`` layers (the same modules, not copies)."""
    if keep < len(layers):
        setattr(owner, attr, torch.nn.ModuleList(list(layers)[:keep]))
    try:
        yield
    finally:
        setattr(owner, attr, layers)


def layer_output(run: Callable[[], Any], layer: torch.nn.Module) -> torch.Tensor:
    """The output of ``layer`` (its hidden states) during ``run()``."""
    seen: list[torch.Tensor] = []

    def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        seen.append(output[0] if isinstance(output, tuple) else output)

    handle = layer.register_forward_hook(hook)
    try:
        run()
    finally:
        handle.remove()
    if not seen:
        raise RuntimeError("rmu: the steered layer did not run")
    return seen[-1]


def control_vector(dim: int, steering_coeff: float, seed: int) -> torch.Tensor:
    """``c·u`` with ``u`` uniform on [0, 1)^dim, normalised to unit length (as the reference)."""
    u = torch.rand(dim, generator=torch.Generator().manual_seed(seed))
    return steering_coeff * u / u.norm()


@METHODS.register("rmu", modality="llm")
class RMU(LLMUnlearningMethod):
    """Steer layer-l activations on forget data to a random vector; keep them on retain data."""

    config_class = RMUConfig
    uses_retain = True
    reference = "model"  # a frozen copy, truncated after layer l (built by run, not the base)
    paper = "Li et al. 2024, arXiv:2403.03218"
    train_defaults = {"learning_rate": 5e-5}  # its loss scale differs from the NLL methods'

    def __init__(self, config: MethodConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.layer_index: int | None = None
        self.update_indices: list[int] = []
        self._stack: tuple[torch.nn.Module, str, torch.nn.ModuleList] | None = None
        self._reference_layers: torch.nn.ModuleList | None = None
        self._control: torch.Tensor | None = None
        self.steering: dict[str, float] | None = None
        self._model_kwargs: dict[str, Any] = {}

    # -- configuration against the model -----------------------------------------------------------
    def resolve_layers(self, depth: int) -> tuple[int, list[int]]:
        """The steered layer and the updated layers as absolute indices, validated."""
        cfg = self.config
        if not -depth <= cfg.layer < depth:
            raise ConfigError(
                f"rmu: layer={cfg.layer} is out of range for a model with {depth} decoder layers "
                f"(use 0..{depth - 1}, or -{depth}..-1 from the end)")
        layer = cfg.layer % depth
        if cfg.update_layers is None:
            update = [i for i in (layer - 2, layer - 1, layer) if i >= 0]
        else:
            bad = [i for i in cfg.update_layers if not -depth <= i < depth]
            if bad or not cfg.update_layers:
                raise ConfigError(f"rmu: update_layers={cfg.update_layers} must be a non-empty "
                                  f"list of indices within the model's {depth} decoder layers")
            update = sorted({i % depth for i in cfg.update_layers})
            if update[-1] > layer:
                raise ConfigError(
                    f"rmu: update_layers={cfg.update_layers} includes layers above layer={layer}; "
                    "they cannot change the steered activations")
        return layer, update

    def selected_parameters(self, path: str, layers: torch.nn.ModuleList, update: list[int]
                            ) -> dict[str, torch.nn.Parameter]:
        """The trained parameters by full name, e.g. ``model.layers.5.mlp.down_proj.weight``."""
        out = {}
        for i in update:
            named = dict(layers[i].named_parameters())
            for name in self.config.param_names:
                if name not in named:
                    raise ConfigError(
                        f"rmu: param_names entry {name!r} is not a parameter of decoder layer {i} "
                        f"(it has: {', '.join(named)})")
                out[f"{path}.{i}.{name}"] = named[name]
        return out

    # -- running -----------------------------------------------------------------------------------
    def run(self, model: Any, task: UnlearningTask, out_dir: Any = None,
            ctx: UnlearnContext | None = None, save: bool = True, *,
            tokenizer: Any = None) -> MethodOutcome:
        ctx = self.resolve_context(task, ctx, tokenizer)
        setup_start = time.perf_counter()
        path, owner, attr, layers = decoder_layers(model)
        layer, update = self.resolve_layers(len(layers))
        trained = self.selected_parameters(path, layers, update)
        self.layer_index, self.update_indices = layer, update
        self._stack = (owner, attr, layers)
        self._control = None
        self.steering = None
        base = _unwrap(model)
        self._model_kwargs = {"use_cache": False}
        if "logits_to_keep" in inspect.signature(base.forward).parameters:
            self._model_kwargs["logits_to_keep"] = 1  # the LM head is not needed

        # The frozen reference: embeddings and layers 0..l only.
        with first_layers(owner, attr, layers, layer + 1):
            reference = copy.deepcopy(owner).eval().requires_grad_(False)
        self.reference_model = reference
        self._reference_layers = getattr(reference, attr)

        if self.config.coefficient == "adaptive":
            self.steering = self.adaptive_coefficient(ctx)
        else:
            self.steering = {"steering_coeff": self.config.steering_coeff}

        flags = [(p, p.requires_grad) for p in model.parameters()]
        if ctx.lora.enabled:  # adapters on the chosen modules only
            modules = sorted({name.rpartition(".")[0] for name in trained})
            ctx = replace(ctx, lora=ctx.lora.model_copy(update={"target_modules": modules}))
        else:
            model.requires_grad_(False)
            for p in trained.values():
                p.requires_grad_(True)
        # The base class would deep-copy the whole model for reference == "model"; the truncated
        # copy above replaces it, so the base is told (for this call only) to build none.
        self.reference = "none"
        setup_seconds = time.perf_counter() - setup_start
        try:
            outcome = super().run(model, task, out_dir, ctx=ctx, save=save)
        finally:
            del self.reference
            self.reference_model = self._reference_layers = self._stack = None
            for p, flag in flags:
                p.requires_grad_(flag)
        outcome.seconds += setup_seconds  # the reference copy is part of the method's cost
        outcome.extra["rmu"] = {"layer": layer, "update_layers": update,
                                "trained_parameters": sorted(trained),
                                "coefficient": self.config.coefficient, **self.steering}
        return outcome

    @torch.no_grad()
    def adaptive_coefficient(self, ctx: UnlearnContext, batch_size: int = 16
                             ) -> dict[str, float]:
        """Adaptive RMU's c = β·mean ‖h_l^ref‖ over the forget set's counted tokens."""
        records = list(ctx.task.forget.records)
        device = next(self.reference_model.parameters()).device
        total, count = 0.0, 0
        for start in range(0, len(records), batch_size):
            batch = collate([encode_record(ctx.tokenizer, ctx.fmt, r, max_length=ctx.max_length)
                             for r in records[start:start + batch_size]],
                            ctx.tokenizer.pad_token_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            norms = self.reference_activations(batch).float().norm(dim=-1)
            mask = self.token_mask(batch)
            total += float(norms[mask].sum())
            count += int(mask.sum())
        norm = total / max(count, 1)
        return {"activation_norm": norm,
                "steering_coeff": self.config.adaptive_scale * norm}

    # -- the loss ----------------------------------------------------------------------------------
    def activations(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
                    ) -> torch.Tensor:
        """``h_l`` of the trained model; the forward pass stops after layer ``l``."""
        assert self._stack is not None and self.layer_index is not None
        owner, attr, layers = self._stack
        with first_layers(owner, attr, layers, self.layer_index + 1):
            return layer_output(lambda: forward(model, batch, **self._model_kwargs),
                                layers[self.layer_index])

    @torch.no_grad()
    def reference_activations(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        assert self.reference_model is not None and self._reference_layers is not None
        device = batch["input_ids"].device
        if next(self.reference_model.parameters()).device != device:
            self.reference_model.to(device)
        return layer_output(lambda: forward(self.reference_model, batch, use_cache=False),
                            self._reference_layers[-1])

    def token_mask(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.config.tokens == "answer":
            return batch["labels"] != IGNORE_INDEX
        return batch["attention_mask"].bool()

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        forget, retain = batch["forget"], batch["retain"]
        h_forget = self.activations(model, forget)
        if self._control is None:
            self._control = control_vector(h_forget.shape[-1], self.steering["steering_coeff"],
                                           cfg.seed)
        control = self._control.to(h_forget.device)
        h_retain = self.activations(model, retain)
        h_reference = self.reference_activations(retain)
        total, forget_term, retain_term = rmu_loss(
            h_forget, control, self.token_mask(forget), h_retain, h_reference,
            self.token_mask(retain), cfg.alpha)
        return total, {"forget_mse": float(forget_term.detach()),
                       "retain_mse": float(retain_term.detach())}
