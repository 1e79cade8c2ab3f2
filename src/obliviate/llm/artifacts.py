"""Unlearned-model artefacts: weights (or a LoRA-merged copy) or a prompt, plus a manifest.

``models/unlearned/<method>/`` holds ``unlearned.json`` (method, config, what it starts from) and
either ``model/`` (safetensors) or ``prompt.json`` (prompt-only methods, applied to the target).
:func:`load_model_for_eval` turns any of these — or a plain model folder — into
``(model, tokenizer, prompt format)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from obliviate.core.errors import ModelLoadError
from obliviate.core.integrity import MANIFEST, base_model_path
from obliviate.core.io import read_json
from obliviate.llm.data.formatting import PromptFormat, resolve_format
from obliviate.llm.models import ModelConfig, load_pretrained

__all__ = ["MANIFEST", "load_model_for_eval"]


def load_model_for_eval(path: str | Path, model_config: ModelConfig
                        ) -> tuple[Any, Any, PromptFormat]:
    """Load a trained, unlearned or prompt-only model with the prompt format it is used with."""
    path = Path(path)
    manifest = path / MANIFEST
    if manifest.is_file():
        info = read_json(manifest)
        weights = path / "model" if (path / "model").is_dir() else path \
            if (path / "config.json").is_file() else \
            base_model_path(path, info["base_model"])  # relative to the run root
        model, tokenizer = load_pretrained(str(weights), model_config.trust_remote_code,
                                           model_config.dtype)
        if info.get("prompt_format"):
            return model.eval(), tokenizer, PromptFormat.from_dict(info["prompt_format"])
    elif path.exists() or not str(path).startswith(("/", ".")) and path.name != "tiny":
        model, tokenizer = load_pretrained(str(path), model_config.trust_remote_code,
                                           model_config.dtype)
    else:
        raise ModelLoadError(f"{path}: no model here (run `obliviate finetune` first?)")
    fmt = resolve_format(tokenizer, model_config.prompt_style, model_config.system_prompt)
    return model.eval(), tokenizer, fmt
