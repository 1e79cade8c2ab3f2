"""The model card (``README.md``, Hugging Face format) written beside every unlearned model.

Its YAML metadata holds what a reader needs to trust the checkpoint: the base model, the
forget and retain data hashes, the method and its config, the metrics next to the oracle's,
the attack results and the cost (key ``obliviate``); the Markdown body shows the same as tables
and says how to load the folder. ``huggingface_hub.ModelCard`` parses it; uploading is an
explicit opt-in (:func:`push_folder`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from obliviate.core.io import atomic_write_text

CARD = "README.md"

LOADERS = {
    "llm": ("transformers",
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            "model = AutoModelForCausalLM.from_pretrained({path!r})\n"
            "tokenizer = AutoTokenizer.from_pretrained({path!r})"),
    "diffusion": ("obliviate",
                  "from obliviate.diffusion.models import Denoiser\n\n"
                  "model = Denoiser.from_pretrained({path!r})"),
}


def _plain(value: Any) -> Any:
    """JSON/YAML-safe values (NaN and infinities become None)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "–" if value is None else str(value)


def _is_hub_id(name: str | None) -> bool:
    return bool(name) and "/" in str(name) and not str(name).startswith(("/", ".", "~")) \
        and str(name).count("/") == 1 and not Path(str(name)).exists()


def card_text(info: Mapping[str, Any], path: str = ".") -> str:
    """The card for one unlearned model. ``info`` keys: ``method``, ``paper``, ``modality``,
    ``base_model``, ``config``, ``train``, ``data`` (split -> ``{n, sha256, source}``),
    ``metrics`` and ``oracle`` (key -> value), ``attacks`` (name -> result dict), ``cost``."""
    info = _plain(dict(info))
    modality = info.get("modality") or "llm"
    library, loader = LOADERS.get(modality, LOADERS["llm"])
    meta: dict[str, Any] = {"library_name": library,
                            "tags": ["obliviate", "machine-unlearning", str(info.get("method"))]}
    if _is_hub_id(info.get("base_model")):
        meta["base_model"] = info["base_model"]
    meta["obliviate"] = {k: info.get(k) for k in ("method", "paper", "modality", "base_model",
                                                   "config", "train", "data", "metrics",
                                                   "oracle", "attacks", "cost")}
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---",
             "", f"# {info.get('method')}: an unlearned model", ""]
    base = info.get("base_model") or "the target model"
    paper = f" ({info['paper']})" if info.get("paper") else ""
    lines += [f"`{base}` after unlearning its forget set with **{info.get('method')}**{paper}, "
              "made with [obliviate](https://github.com/obliviate-ml/obliviate).", ""]
    lines += ["## Method", "", "| setting | value |", "|---|---|"]
    for section in ("config", "train"):
        for key, value in (info.get(section) or {}).items():
            lines.append(f"| {section}.{key} | {_fmt(value)} |")
    lines += ["", "## Data", "", "| split | records | sha256 |", "|---|---|---|"]
    for name, split in (info.get("data") or {}).items():
        if isinstance(split, Mapping):
            lines.append(f"| {name} | {_fmt(split.get('n'))} | `{split.get('sha256')}` |")
    metrics, oracle = info.get("metrics") or {}, info.get("oracle") or {}
    lines += ["", "## Metrics", ""]
    if metrics:
        lines += ["| metric | this model | oracle |", "|---|---|---|"]
        lines += [f"| {k} | {_fmt(v)} | {_fmt(oracle.get(k))} |" for k, v in metrics.items()]
    else:
        lines.append("Not evaluated yet.")
    lines += ["", "## Attacks", ""]
    attacks = info.get("attacks") or {}
    if attacks:
        lines += ["| attack | probe | plain | attacked | oracle attacked | recovery |",
                  "|---|---|---|---|---|---|"]
        for name, r in attacks.items():
            lines.append(f"| {name} | {r.get('metric')} | {_fmt(r.get('plain'))} | "
                         f"{_fmt(r.get('attacked'))} | {_fmt(r.get('oracle_attacked'))} | "
                         f"{_fmt(r.get('recovery'))} |")
    else:
        lines.append("Not attacked yet.")
    lines += ["", "## Cost", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in (info.get("cost") or {}).items()]
    lines += ["", "## Load it", "", "```python", loader.format(path=path), "```", ""]
    return "\n".join(lines)


def write_card(folder: str | Path, info: Mapping[str, Any]) -> Path:
    """Write ``folder/README.md`` (atomically)."""
    folder = Path(folder)
    return atomic_write_text(folder / CARD, card_text(info, str(folder)))


def run_card_info(record: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The card of run model ``name`` (``unlearned/npo``) from the run's record (``run.json``):
    its unlearning stage, its evaluation next to the oracle's, its attacks."""
    stages = record.get("stages") or {}
    method = name.removeprefix("unlearned/")
    unlearn = stages.get(f"unlearn_{method}")
    if not isinstance(unlearn, Mapping) or unlearn.get("status") != "done":
        return None
    evaluation = stages.get(f"eval_{name}") or {}
    oracle = stages.get("eval_oracle") or {}
    attacks = {s.get("attack"): {k: s.get(k) for k in ("metric", "plain", "attacked",
                                                         "oracle_plain", "oracle_attacked",
                                                         "recovery")}
               for s in stages.values() if isinstance(s, Mapping) and s.get("model") == name
               and s.get("attack") and s.get("status") == "done"}
    cost = {k: unlearn.get(k) for k in ("seconds", "steps", "trainable_parameters",
                                        "total_parameters") if unlearn.get(k) is not None}
    peak = unlearn.get("peak_memory") or {}
    cost.update({k: v for k, v in peak.items() if isinstance(v, (int, float))})
    return {"method": unlearn.get("method") or method, "paper": unlearn.get("paper"),
            "modality": (record.get("task") or {}).get("modality"),
            "base_model": unlearn.get("target"), "config": unlearn.get("config"),
            "train": unlearn.get("train"), "data": unlearn.get("data"),
            "metrics": evaluation.get("summary") or {}, "oracle": oracle.get("summary") or {},
            "attacks": attacks, "cost": cost}


def write_run_cards(root: str | Path, record: Mapping[str, Any]) -> list[Path]:
    """(Re)write the card of every unlearned model of the run at ``root`` from its record."""
    out = []
    for stage in (record.get("stages") or {}):
        if not stage.startswith("unlearn_"):
            continue
        name = "unlearned/" + stage.removeprefix("unlearn_")
        folder = Path(root) / "models" / name
        info = run_card_info(record, name)
        if info is not None and folder.is_dir():
            out.append(write_card(folder, info))
    return out


def push_folder(folder: str | Path, repo_id: str, private: bool = True) -> str:
    """Upload a saved model folder to the Hugging Face Hub (explicit opt-in; needs a token)."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id,
                             commit_message="Upload an unlearned model (obliviate)")
    return str(getattr(info, "commit_url", info))
