"""The notebook path (issue 17): ``obliviate.unlearn/evaluate/attack/report`` on the objects a
user holds — a tiny Llama and its tokenizer with a ``datasets.Dataset``, lists of dicts or a
DataFrame, and a tiny diffusion model with image rows — typed results, nothing written without
``output_dir``, one-line errors for typos."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import obliviate
from obliviate.core.errors import ConfigError, DataError
from obliviate.llm.models import TinyModelConfig, tiny_llama

TINY = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                       max_position_embeddings=128)
FAST_EVAL = {"tofu": {"max_new_tokens": 4}, "engine": {"generation_batch_size": 32}}


@pytest.fixture()
def empty_cwd(tmp_path, monkeypatch):
    """An empty working directory; the test checks that it stays empty."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def rows(facts, split):
    return [r.to_dict() for r in facts[split]]


def test_verbs_are_exposed_by_import_obliviate():
    for verb in ("unlearn", "evaluate", "attack", "report"):
        assert callable(getattr(obliviate, verb))
    assert obliviate.UnlearnResult and obliviate.EvaluationResult


def test_llm_notebook_path_with_a_datasets_dataset(facts, tiny_tokenizer, empty_cwd):
    from datasets import Dataset

    forget = Dataset.from_list(rows(facts, "forget"))
    retain = Dataset.from_list(rows(facts, "retain"))
    holdout = Dataset.from_list(rows(facts, "holdout"))
    model = tiny_llama(tiny_tokenizer, TINY)
    oracle = tiny_llama(tiny_tokenizer, TINY, seed=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    result = obliviate.unlearn(model, tiny_tokenizer, forget=forget, retain=retain,
                               method="npo", beta=0.2, max_steps=3, learning_rate=1e-3)
    assert isinstance(result, obliviate.UnlearnResult) and result.model is model
    assert result.config["beta"] == 0.2 and result.train["max_steps"] == 3
    assert result.steps == 3 and result.trainable_parameters > 0
    assert result.data["forget"]["n"] == len(forget)
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert next(model.parameters()).device == next(iter(before.values())).device
    history = result.to_pandas()
    assert list(history["step"]) == [3] and "loss" in history.columns
    assert result.to_dict()["method"] == "npo" and "model" not in result.to_dict()

    scores = obliviate.evaluate(result, forget=forget, retain=retain, holdout=holdout,
                                oracle=oracle, options=FAST_EVAL)
    assert isinstance(scores, obliviate.EvaluationResult)
    assert set(scores.suites) == {"tofu", "mia", "memorization"}
    assert 0 <= scores["tofu/forget/prob"] <= 1
    assert "tofu/forget_quality" in scores.summary  # the oracle's results arrived
    table = scores.to_pandas()
    row = table[(table.suite == "tofu") & (table.metric == "prob") & (table.split == "forget")]
    assert row["oracle"].item() == scores.oracle["tofu/forget/prob"]
    shown = str(scores)  # the headline numbers next to the oracle's
    assert "oracle" in shown.splitlines()[0] and "tofu/forget/prob" in shown
    assert "gt_loss" not in shown and "gt_loss" in " ".join(table.metric)
    assert os.listdir(empty_cwd) == []


def test_llm_lists_of_dicts_and_dataframes(facts, tiny_tokenizer, empty_cwd):
    import pandas as pd

    model = tiny_llama(tiny_tokenizer, TINY)
    result = obliviate.unlearn(model, tiny_tokenizer, forget=rows(facts, "forget"),
                               retain=pd.DataFrame(rows(facts, "retain")),
                               method="grad_diff", max_steps=2)
    assert result.method == "grad_diff" and result.steps == 2
    scores = obliviate.evaluate(model, tiny_tokenizer, forget=pd.DataFrame(rows(facts, "forget")),
                                retain=rows(facts, "retain"), suites=["tofu"],
                                options={"tofu": {"generate": False}})
    assert set(scores.suites) == {"tofu"} and "tofu/forget/prob" in scores.summary
    report = obliviate.report({"npo": scores})
    assert report.to_pandas().loc[0, "model"] == "npo"
    assert os.listdir(empty_cwd) == []


def test_prompt_only_method_returns_its_prompt_and_evaluates_with_it(facts, tiny_tokenizer):
    model = tiny_llama(tiny_tokenizer, TINY)
    result = obliviate.unlearn(model, tiny_tokenizer, forget=rows(facts, "forget"),
                               retain=rows(facts, "retain"), method="guardrail")
    assert result.prompt_format.system_prompt and result.steps == 0
    scores = obliviate.evaluate(result, forget=rows(facts, "forget"),
                                retain=rows(facts, "retain"), suites=["tofu"],
                                options={"tofu": {"generate": False}})
    plain = obliviate.evaluate(model, tiny_tokenizer, forget=rows(facts, "forget"),
                               retain=rows(facts, "retain"), suites=["tofu"],
                               options={"tofu": {"generate": False}})
    assert scores["tofu/forget/prob"] != plain["tofu/forget/prob"]  # the prompt is applied


def test_one_line_errors(facts, tiny_tokenizer):
    model = tiny_llama(tiny_tokenizer, TINY)
    kwargs = {"forget": rows(facts, "forget"), "retain": rows(facts, "retain")}
    with pytest.raises(ConfigError) as err:
        obliviate.unlearn(model, tiny_tokenizer, method="npo", betta=0.2, **kwargs)
    message = str(err.value)
    assert "\n" not in message and "did you mean 'beta'" in message
    assert "learning_rate" in message  # optimiser settings are valid names too
    with pytest.raises(ConfigError, match="unknown method 'npoo'"):
        obliviate.unlearn(model, tiny_tokenizer, method="npoo", **kwargs)
    with pytest.raises(ConfigError, match="tokenizer"):
        obliviate.unlearn(model, method="npo", **kwargs)
    with pytest.raises(DataError, match=r"forget\[1\]: missing field 'answer'"):
        obliviate.unlearn(model, tiny_tokenizer, forget=[rows(facts, "forget")[0],
                                                         {"question": "q?"}],
                          retain=kwargs["retain"])
    with pytest.raises(DataError, match="expected rows"):
        obliviate.unlearn(model, tiny_tokenizer, forget={"question": "q"},
                          retain=kwargs["retain"])


def digit_rows(labels, per_class=6):
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = []
    for label in labels:
        for image in digits.images[digits.target == label][:per_class]:
            out.append({"image": (image / 16.0).astype(np.float32), "label": int(label)})
    return out


def test_diffusion_notebook_path(empty_cwd):
    from obliviate.diffusion.models import ModelConfig, build_denoiser

    model = build_denoiser(ModelConfig(channels=[8, 16], cond_dim=8, time_dim=16,
                                       sample_steps=4), 10, 8, 1)
    oracle = build_denoiser(ModelConfig(channels=[8, 16], cond_dim=8, time_dim=16,
                                        sample_steps=4), 10, 8, 1, seed=1)
    forget, retain = digit_rows([0]), digit_rows(range(1, 10))
    result = obliviate.unlearn(model, forget=forget, retain=retain, method="esd_x", steps=2,
                               batch_size=4, ddim_steps=2)
    assert result.modality == "diffusion" and result.model is model and result.steps == 2
    options = {"samples_per_class": 2, "kid_subset_size": 4, "kid_subsets": 2,
               "grid_per_class": 0, "judge": {"epochs": 1}}
    scores = obliviate.evaluate(model, forget=forget, retain=retain, oracle=oracle,
                                options=options)
    assert "generation/forget/unlearning_accuracy" in scores.summary
    assert "generation/forget/unlearning_accuracy_oracle_gap" in scores.summary
    attacked = obliviate.attack(model, forget=forget, retain=retain, oracle=oracle,
                                attacks=["concept_vector"], probe={"samples": 4,
                                                                   "sample_steps": 2})
    assert attacked["concept_vector"].metric == "accuracy"
    assert list(attacked.to_pandas()["attack"]) == ["concept_vector"]
    assert os.listdir(empty_cwd) == []


def test_llm_attack_on_copies(facts, tiny_tokenizer, empty_cwd):
    model = tiny_llama(tiny_tokenizer, TINY)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    report = obliviate.attack(model, tiny_tokenizer, forget=rows(facts, "forget"),
                              retain=rows(facts, "retain"),
                              oracle=tiny_llama(tiny_tokenizer, TINY, seed=1),
                              attacks=["quantization"], options={"quantization": {"bits": [4]}},
                              probe={"max_new_tokens": 4})
    result = report["quantization"]
    assert result.oracle_attacked is not None and result.recovery is not None
    assert report.to_dict()["results"]["quantization"]["metric"] == result.metric
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    with pytest.raises(ConfigError, match="did you mean 'quantization'"):
        obliviate.attack(model, tiny_tokenizer, forget=rows(facts, "forget"),
                         retain=rows(facts, "retain"), attacks=["quantization"],
                         options={"quantisation": {}})
    assert os.listdir(empty_cwd) == []


def test_llm_default_suites_follow_the_data(tiny_tokenizer, empty_cwd):
    """Plain-text documents get MUSE's VerbMem, not TOFU's question metrics, and a task without
    a holdout split no MIA; what was left out is said, with the reason."""
    docs = [{"text": f"Document {i} tells how the river town of Vell{i} was founded in "
                     f"{1700 + i} by traders from the north."} for i in range(6)]
    model = tiny_llama(tiny_tokenizer, TINY)
    scores = obliviate.evaluate(model, tiny_tokenizer, forget=docs[:3], retain=docs[3:],
                                options={"muse": {"excerpt_prompt_tokens": 4,
                                                  "verbmem_max_new_tokens": 4}})
    assert set(scores.suites) == {"muse", "memorization"}
    assert set(scores.left_out) == {"tofu", "mia"} and "holdout" in scores.left_out["mia"]
    assert "muse/verbmem_forget/verbmem" in scores.summary
