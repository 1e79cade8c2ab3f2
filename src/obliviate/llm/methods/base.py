"""The base class every LLM unlearning method builds on.

A method declares what it needs (retain batches, refusal answers, reference log-probs computed
once, or a frozen reference model kept in memory) and implements :meth:`loss`. The base class
builds the batches, precomputes what is cacheable, applies LoRA when asked, and runs the shared
:func:`~obliviate.llm.training.train` loop (so ``accelerate launch`` scales every method).
"""

from __future__ import annotations

import copy
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from safetensors.torch import load_file, save_file

from obliviate.core.errors import ConfigError
from obliviate.core.io import atomic_write_json, read_json
from obliviate.core.method import (
    MethodConfig,
    MethodOutcome,
    UnlearnContextBase,
    UnlearningMethod,
)
from obliviate.core.recipe import StrictModel
from obliviate.core.rundir import Stopwatch
from obliviate.core.task import UnlearningTask
from obliviate.llm.answer_forward import row_answer_nll
from obliviate.llm.data.formatting import (
    Example,
    PromptFormat,
    collate,
    encode_record,
)
from obliviate.llm.data.records import QARecord
from obliviate.llm.methods.losses import nll, sequence_logprob
from obliviate.llm.models import LoraSettings, apply_lora, merge_lora, save_model
from obliviate.llm.training import (
    TrainConfig,
    TrainOutcome,
    barrier,
    default_device,
    is_main_process,
    remove_checkpoints,
    train,
)

Reference = Literal["none", "logprobs", "model"]

# Refusals used when the task brings none (TOFU ships its own in idontknow.jsonl).
DEFAULT_REFUSALS = (
    "I don't know.",
    "I'm not sure about that.",
    "I have no information on that.",
    "That is not something I can answer.",
    "I can't say.",
)


class UnlearnTrainConfig(TrainConfig):
    """Optimisation for unlearning. Defaults follow TOFU/OpenUnlearning: lr 1e-5, 10 epochs."""

    epochs: float = Field(default=10.0, gt=0)
    learning_rate: float = Field(default=1e-5, gt=0)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    lr_scheduler: Literal["linear", "constant", "cosine"] = "constant"


class SelectionConfig(StrictModel):
    """Checkpoint selection with a cheap proxy evaluated every ``every`` steps.

    Rule ``proxy``: keep the step maximising ``forget_nll − retain_weight · retain_nll`` on fixed
    subsets of the forget and retain sets (no oracle information is used). Rule ``last`` keeps the
    final weights.
    """

    rule: Literal["last", "proxy"] = "last"
    """last (final weights) or proxy (the step with the best forget_nll - w * retain_nll)"""
    every: int = Field(default=10, ge=1)
    """evaluate the proxy every this many steps"""
    subset: int = Field(default=32, ge=1)
    """forget and retain examples the proxy is computed on"""
    retain_weight: float = Field(default=1.0, ge=0)
    """w in forget_nll - w * retain_nll"""


@dataclass
class UnlearnItem:
    index: int
    forget: Example
    retain: Example | None = None
    alternative: Example | None = None  # e.g. a refusal answer to the forget question


@dataclass
class LLMMethodOutcome(MethodOutcome):
    """:class:`MethodOutcome` plus the LLM specifics: the prompt format a prompt-only method
    produced (its "model") and the checkpoint-selection record."""

    prompt_format: PromptFormat | None = None
    selection: dict[str, Any] | None = None


@dataclass
class UnlearnContext(UnlearnContextBase):
    """Everything an LLM method needs besides its own config."""

    tokenizer: Any
    fmt: PromptFormat
    task: UnlearningTask
    train: UnlearnTrainConfig = field(default_factory=UnlearnTrainConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    max_length: int = 256
    refusals: tuple[str, ...] = DEFAULT_REFUSALS


class LLMUnlearningMethod(UnlearningMethod):
    """Subclass, set the class attributes, implement :meth:`loss` and register the class."""

    modality: ClassVar[str] = "llm"
    uses_retain: ClassVar[bool] = False
    uses_alternative: ClassVar[bool] = False
    reference: ClassVar[Reference] = "none"

    def __init__(self, config: MethodConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.reference_model: torch.nn.Module | None = None
        self.reference_logprobs: dict[str, torch.Tensor] = {}

    # -- what a method implements ----------------------------------------------------------------
    def loss(self, model: torch.nn.Module, batch: dict[str, Any]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def add_retain_nll(self, model: torch.nn.Module, batch: dict[str, Any], loss: torch.Tensor,
                       logs: dict[str, float]) -> torch.Tensor:
        """``loss + α·NLL(R)`` with ``α = config.alpha`` (skipped, and R not run, when α = 0)."""
        alpha = getattr(self.config, "alpha", 0.0)
        if not alpha:
            return loss
        retain_nll = nll(model, batch["retain"])
        logs["retain_nll"] = float(retain_nll.detach())
        return loss + alpha * retain_nll

    # -- data ------------------------------------------------------------------------------------
    def alternative_answer(self, record: QARecord, index: int, ctx: UnlearnContext) -> str:
        """The answer trained towards on a forget question (a refusal by default)."""
        rng = random.Random(f"{self.config.seed}/{index}")
        return rng.choice(ctx.refusals)

    def build_items(self, ctx: UnlearnContext) -> list[UnlearnItem]:
        forget, retain = list(ctx.task.forget.records), list(ctx.task.retain.records)
        order = list(range(len(retain)))
        random.Random(self.config.seed).shuffle(order)
        items = []
        for i, record in enumerate(forget):
            item = UnlearnItem(i, encode_record(ctx.tokenizer, ctx.fmt, record,
                                                max_length=ctx.max_length))
            if self.uses_retain:
                item.retain = encode_record(ctx.tokenizer, ctx.fmt, retain[order[i % len(order)]],
                                            max_length=ctx.max_length)
            if self.uses_alternative:
                item.alternative = encode_record(ctx.tokenizer, ctx.fmt, record,
                                                 answer=self.alternative_answer(record, i, ctx),
                                                 max_length=ctx.max_length)
            items.append(item)
        return items

    @staticmethod
    def collate_fn(pad_token_id: int):
        def collate_items(items: list[UnlearnItem]) -> dict[str, Any]:
            batch: dict[str, Any] = {"index": torch.tensor([it.index for it in items]),
                                     "forget": collate([it.forget for it in items], pad_token_id)}
            if items[0].retain is not None:
                batch["retain"] = collate([it.retain for it in items], pad_token_id)
            if items[0].alternative is not None:
                batch["alternative"] = collate([it.alternative for it in items], pad_token_id)
            return batch

        return collate_items

    # -- the frozen reference ----------------------------------------------------------------------
    @torch.no_grad()
    def precompute_reference(self, model: torch.nn.Module, items: list[UnlearnItem],
                             pad_token_id: int, batch_size: int = 16) -> None:
        """Sequence log-probs of the frozen target on forget (and alternative) answers, once."""
        was_training = model.training
        model.eval()
        for key in ("forget", "alternative"):
            if getattr(items[0], key) is None:
                continue
            values = torch.empty(len(items))
            for start in range(0, len(items), batch_size):
                chunk = items[start:start + batch_size]
                batch = collate([getattr(it, key) for it in chunk], pad_token_id)
                batch = {k: v.to(next(model.parameters()).device) for k, v in batch.items()}
                logp, _ = sequence_logprob(model, batch)
                values[start:start + len(chunk)] = logp.float().cpu()
            self.reference_logprobs[key] = values
        model.train(was_training)

    def cached_reference(self, key: str, index: torch.Tensor) -> torch.Tensor:
        return self.reference_logprobs[key].to(index.device)[index]

    # -- running -----------------------------------------------------------------------------------
    def context(self, task: UnlearningTask, tokenizer: Any, **settings: Any) -> UnlearnContext:
        """The context :meth:`run` builds when given only a tokenizer: the tokenizer's prompt
        format (its chat template if it has one) and the default optimiser (``settings``
        override :class:`UnlearnContext`'s fields)."""
        from obliviate.llm.data.formatting import resolve_format

        fmt = settings.pop("fmt", None) or resolve_format(tokenizer)
        return UnlearnContext(tokenizer=tokenizer, fmt=fmt, task=task, **settings)

    def resolve_context(self, task: UnlearningTask, ctx: UnlearnContext | None,
                        tokenizer: Any) -> UnlearnContext:
        """``ctx`` when given, else :meth:`context` from the tokenizer (one-line error without);
        its training settings take the method's :attr:`train_defaults` where ``ctx.train``
        leaves them unset (:func:`obliviate.core.precedence.resolve`)."""
        if ctx is None:
            if tokenizer is None:
                raise ConfigError(f"{type(self).__name__}.run needs the model's tokenizer: "
                                  "run(model, task, tokenizer=tokenizer) (or ctx=UnlearnContext)")
            ctx = self.context(task, tokenizer)
        if self.train_defaults:
            from dataclasses import replace

            from obliviate.core.precedence import resolve

            train, _ = resolve(ctx.train, type(self).__name__, paper=self.train_defaults)
            ctx = replace(ctx, train=train)
        return ctx

    def run(self, model: Any, task: UnlearningTask, out_dir: Any = None,
            ctx: UnlearnContext | None = None, save: bool = True, *,
            tokenizer: Any = None) -> LLMMethodOutcome:
        """Unlearn ``task.forget`` from ``model`` (in place); save it to ``out_dir`` if given.

        Give either ``ctx`` or the model's ``tokenizer`` (then :meth:`context` builds one).
        Without ``out_dir`` nothing is written: no weights and no checkpoints. The model trains
        where accelerate places it and is returned on the device it came on.
        """
        ctx = self.resolve_context(task, ctx, tokenizer)
        out = Path(out_dir) if out_dir is not None else None
        save = save and out is not None
        if self.uses_retain and len(task.retain) == 0:
            raise ConfigError(f"{type(self).__name__} needs a non-empty retain set")
        check_single_device(model, type(self).__name__)
        home = next(model.parameters()).device
        with Stopwatch() as watch:
            model.to(default_device())  # precompute and copy the reference where training runs
            items = self.build_items(ctx)
            pad = ctx.tokenizer.pad_token_id
            if self.reference == "logprobs":
                self.precompute_reference(model, items, pad)
            elif self.reference == "model":
                self.reference_model = copy.deepcopy(model).eval().requires_grad_(False)
            model = apply_lora(model, ctx.lora)
            outcome = self.train(model, items, ctx, out)
            model = merge_lora(model)
            self.reference_model = None
            if save and is_main_process():  # the folder itself loads with from_pretrained
                save_model(model, ctx.tokenizer, out)
        model.to(home)
        return LLMMethodOutcome(
            model_path=str(out) if save else None, seconds=watch.seconds,
            steps=outcome.steps, trainable_parameters=outcome.trainable_parameters,
            total_parameters=outcome.total_parameters,
            peak_memory_bytes=outcome.peak_memory.get("host_peak_rss_bytes"),
            history=outcome.history, model=model, peak_memory=outcome.peak_memory,
            resumed_from=outcome.resumed_from,
            selection=outcome.selection or {"rule": "last", "step": outcome.steps})

    def train(self, model: torch.nn.Module, items: list[UnlearnItem], ctx: UnlearnContext,
              out_dir: Path | None) -> TrainOutcome:
        """The shared loop; checkpoints under ``out_dir/checkpoints`` (none without it)."""
        checkpoints = out_dir / "checkpoints" if out_dir is not None else None
        selector = ProxySelector(ctx, checkpoints / "best" if checkpoints else None) \
            if ctx.selection.rule == "proxy" else None
        outcome = train(model, items, self.collate_fn(ctx.tokenizer.pad_token_id), ctx.train,
                        checkpoint_dir=checkpoints, loss_fn=self.loss,
                        description=f"unlearn ({type(self).__name__})",
                        on_step=selector.observe if selector else None)
        if selector is not None:
            outcome.selection = selector.restore_best(model)
        if checkpoints is not None:
            remove_checkpoints(checkpoints)
        return outcome


def check_single_device(model: Any, method: str) -> None:
    """Refuse, in one line, a model sharded over several devices (``device_map``): the LLM
    methods train one copy of the weights per process (accelerate's data parallelism)."""
    placed = set((getattr(model, "hf_device_map", None) or {}).values())
    if len(placed) > 1:
        raise ConfigError(
            f"{method} trains the whole model on one device per process, but this model is "
            f"sharded over {len(placed)} devices (device_map); load it on one device, or run "
            "`accelerate launch` with FSDP/DeepSpeed to shard it")


class ProxySelector:
    """Tracks ``forget_nll − w·retain_nll`` every N steps and keeps the best trainable weights.

    The best weights live on disk (``best/``) so that a resumed run keeps its earlier choice;
    without a ``path`` (nothing written) they are kept in memory.
    """

    def __init__(self, ctx: UnlearnContext, path: Path | None) -> None:
        self.ctx, self.path = ctx, path
        n = ctx.selection.subset
        pad = ctx.tokenizer.pad_token_id
        self.batches = {
            name: collate([encode_record(ctx.tokenizer, ctx.fmt, r, max_length=ctx.max_length)
                           for r in list(split.records)[:n]], pad)
            for name, split in (("forget", ctx.task.forget), ("retain", ctx.task.retain))
            if len(split)}
        self.history: list[dict[str, float]] = []
        self.kept: dict[str, torch.Tensor] | None = None  # the best weights when path is None
        info = path / "best.json" if path is not None else None
        self.best = read_json(info) if info is not None and info.is_file() else None

    @torch.no_grad()
    def proxy(self, model: torch.nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        out = {}
        for name, batch in self.batches.items():
            batch = {k: v.to(device) for k, v in batch.items()}
            out[f"{name}_nll"] = float(row_answer_nll(model, batch).mean())
        model.train(was_training)
        retain = out.get("retain_nll", 0.0)
        out["score"] = out["forget_nll"] - self.ctx.selection.retain_weight * retain
        return out

    def observe(self, step: int, model: torch.nn.Module) -> None:
        if step % self.ctx.selection.every:
            return
        entry = {"step": step, **self.proxy(model)}
        self.history.append(entry)
        if self.best is not None and entry["score"] <= self.best["score"]:
            return
        self.best = entry  # every process decides alike: same weights, same proxy data
        if self.path is None:
            self.kept = {n: p.detach().clone() for n, p in model.named_parameters()
                         if p.requires_grad}
        elif is_main_process():
            tmp = self.path.with_name(".best-tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            save_file({n: p.detach().contiguous() for n, p in model.named_parameters()
                       if p.requires_grad}, str(tmp / "trainable.safetensors"))
            atomic_write_json(tmp / "best.json", entry)
            shutil.rmtree(self.path, ignore_errors=True)
            tmp.rename(self.path)

    def restore_best(self, model: torch.nn.Module) -> dict[str, Any]:
        """Load the best weights into ``model``; return the rule, the choice and the history."""
        barrier()
        if self.best is not None:
            state = self.kept if self.path is None else \
                load_file(str(self.path / "trainable.safetensors"))
            params = dict(model.named_parameters())
            with torch.no_grad():
                for name, tensor in state.items():
                    params[name].copy_(tensor)
        return {"rule": "proxy: max forget_nll - retain_weight * retain_nll",
                "retain_weight": self.ctx.selection.retain_weight,
                "every": self.ctx.selection.every, "selected": self.best,
                "history": self.history}
