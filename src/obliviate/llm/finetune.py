"""Fine-tune the target (on forget ∪ retain) and the oracle (on retain only) with one recipe.

Both start from the same base weights and see the same optimiser, schedule and seed, so the
oracle differs from the target only by never having seen the forget set (GUIDE §1).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from obliviate.core.errors import ObliviateError
from obliviate.core.io import sha256_dir, temp_dir, writing
from obliviate.core.rundir import RunDir, Stopwatch
from obliviate.core.task import TRAINING_SPLIT, DataSplit, Role, UnlearningTask
from obliviate.llm.data.formatting import PromptFormat, collate, encode_record, resolve_format
from obliviate.llm.models import (
    ModelConfig,
    apply_lora,
    load_pretrained,
    merge_lora,
    save_model,
    tiny_llama,
    train_tokenizer,
)
from obliviate.llm.task import task_texts
from obliviate.llm.training import TrainConfig, is_main_process, remove_checkpoints, train

FINETUNE_ONLY = {"target": ("finetune_retain", "finetune_forget"), "oracle": ("finetune_retain",)}
"""Splits a task may hold that fine-tuning adds to a role's data and no unlearning method sees
(e.g. the synthetic WMDP task's practice questions: the target learns to answer in the
multiple-choice format while the forget set stays a text corpus, as WMDP's)."""


def training_split(task: UnlearningTask, role: Role) -> DataSplit:
    """The data ``role`` is fine-tuned on: its split plus the task's fine-tuning-only splits."""
    split = task.split(TRAINING_SPLIT[role])
    extra = [task.eval_splits[n] for n in FINETUNE_ONLY[role] if n in task.eval_splits]
    if not extra:
        return split
    return DataSplit(split.name, [r for s in (split, *extra) for r in s.records],
                     source="+".join([split.source or split.name, *(s.name for s in extra)]))


def base_tokenizer(config: ModelConfig, task: UnlearningTask, run: RunDir) -> Any:
    """The tokenizer every model of this run shares (trained once for tiny models)."""
    from transformers import AutoTokenizer

    path = run.model("tokenizer")
    with run.lock():  # two commands fine-tuning target and oracle at once write it once
        if (path / "tokenizer.json").is_file():
            return AutoTokenizer.from_pretrained(path)
        if config.name_or_path == "tiny":
            tokenizer = train_tokenizer(task_texts(task), config.tiny.vocab_size)
        else:
            _, tokenizer = load_pretrained(config.name_or_path, config.trust_remote_code)
        prompt_format(config, tokenizer)  # a recipe the tokenizer cannot serve fails first
        if is_main_process():
            _save_tokenizer(tokenizer, path)
    return tokenizer


def _save_tokenizer(tokenizer: Any, path: Path) -> None:
    """Write the tokenizer to a sibling temporary folder, then rename it into place."""
    tmp = temp_dir(path.parent, f".{path.name}.")
    try:
        with writing(path, "the tokenizer"):
            tokenizer.save_pretrained(tmp)
        shutil.rmtree(path, ignore_errors=True)  # a folder left by an interrupted older version
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def base_model(config: ModelConfig, tokenizer: Any, seed: int) -> Any:
    """Fresh base weights: a seeded tiny Llama, or the pretrained model."""
    if config.name_or_path == "tiny":
        return tiny_llama(tokenizer, config.tiny, seed=seed, dtype=config.dtype)
    model, _ = load_pretrained(config.name_or_path, config.trust_remote_code, config.dtype)
    return model


def prompt_format(config: ModelConfig, tokenizer: Any) -> PromptFormat:
    return resolve_format(tokenizer, config.prompt_style, config.system_prompt)


def finetune(role: Role, model_config: ModelConfig, train_config: TrainConfig,
             task: UnlearningTask, run: RunDir, seed: int = 0) -> dict[str, Any]:
    """Train the target or oracle, save it to ``models/<role>`` and record the stage."""
    split = training_split(task, role)
    tokenizer = base_tokenizer(model_config, task, run)
    fmt = prompt_format(model_config, tokenizer)
    model = base_model(model_config, tokenizer, seed)
    if model_config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model = apply_lora(model, model_config.lora)
    examples = [encode_record(tokenizer, fmt, r, max_length=model_config.max_length)
                for r in split.records]
    run.record_stage(f"finetune_{role}", status="running", split=split.provenance())
    with Stopwatch() as watch:
        try:
            outcome = train(model, examples, lambda b: collate(b, tokenizer.pad_token_id),
                            train_config, checkpoint_dir=run.checkpoints(role),
                            description=f"fine-tune {role} on {split.name}")
        except ObliviateError as exc:  # e.g. diverged: the record says so, not "running"
            run.record_stage(f"finetune_{role}", status="failed", error=str(exc))
            raise
        model = merge_lora(model)
        if is_main_process():
            save_model(model, tokenizer, run.model(role))
    remove_checkpoints(run.checkpoints(role))
    return run.record_stage(
        f"finetune_{role}", status="done", seconds=watch.seconds, steps=outcome.steps,
        trainable_parameters=outcome.trainable_parameters,
        total_parameters=outcome.total_parameters, peak_memory=outcome.peak_memory,
        final_loss=outcome.history[-1]["loss"] if outcome.history else None,
        history=outcome.history, resumed_from=outcome.resumed_from,
        model_path=str(run.model(role)), prompt_style=fmt.style,
        weights_sha256=sha256_dir(run.model(role), ("*.safetensors",)),
        config={"model": model_config.model_dump(mode="json"),
                "train": train_config.model_dump(mode="json")})
