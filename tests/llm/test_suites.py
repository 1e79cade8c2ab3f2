"""Evaluation suites: values equal TOFU's hand formulas on scorer outputs, logs round-trip."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from rouge_score import rouge_scorer
from scipy.stats import hmean, ks_2samp

from obliviate.core.errors import ConfigError, DataError
from obliviate.core.registry import SUITES
from obliviate.core.result import EvalResult
from obliviate.core.task import DataSplit
from obliviate.llm.data.formatting import resolve_format
from obliviate.llm.data.records import QARecord
from obliviate.llm.evaluation import memorization as mem
from obliviate.llm.evaluation import mia
from obliviate.llm.evaluation import tofu_aggregate as agg
from obliviate.llm.evaluation.generation import greedy_generate
from obliviate.llm.evaluation.scorer import AnswerScorer
from obliviate.llm.evaluation.suites import (
    EvalSession,
    SuiteOutput,
    TofuSuite,
    evaluate,
    get_suite,
)
from obliviate.llm.models import TinyModelConfig, tiny_llama, train_tokenizer

torch.set_num_threads(1)

CONFIG = TinyModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)
NEW_TOKENS = 10
PUBLISHED_KEYS = {"avg_gt_loss", "gt_loss", "num_token_gt", "generated_text", "rouge1_recall",
                  "rougeL_recall", "average_perturb_loss", "avg_paraphrased_loss", "truth_ratio",
                  "paraphrased_loss", "perturb_loss", "num_token_paraphrased",
                  "num_token_perturb"}


@pytest.fixture(scope="module")
def data():
    from obliviate.llm.data.synthetic import SyntheticFactsConfig, generate_synthetic_facts

    return generate_synthetic_facts(SyntheticFactsConfig(
        num_people=8, facts_per_person=4, forget_people=2, holdout_people=2, num_perturbed=3,
        seed=0))


@pytest.fixture(scope="module")
def tok(data):
    texts = [t for split in data.values() for r in split
             for t in (r.question, r.answer, r.paraphrased_answer or "", *r.perturbed_answers)]
    return train_tokenizer(texts, vocab_size=400)


@pytest.fixture(scope="module")
def fmt(tok):
    return resolve_format(tok)


def peaked_model(tok, seed: int = 0):
    model = tiny_llama(tok, CONFIG, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.15, generator=gen)
    return model.eval()


@pytest.fixture(scope="module")
def model(tok):
    return peaked_model(tok, 0)


@pytest.fixture(scope="module")
def splits(data):
    """The four TOFU roles from synthetic facts (real authors / world facts: no paraphrase)."""
    def plain(records):
        return [replace(r, paraphrased_answer=None, paraphrased_question=None) for r in records]

    return {
        "forget": DataSplit("forget", data["forget"][:6]),
        "retain": DataSplit("retain", data["retain"][:6]),
        "real_authors": DataSplit("real_authors", plain(data["retain"][6:11])),
        "world_facts": DataSplit("world_facts", plain(data["retain"][11:15])),
        "holdout": DataSplit("holdout", data["holdout"][:6]),
    }


@pytest.fixture(scope="module")
def outputs(model, tok, fmt, splits):
    return evaluate(model, tok, fmt, splits, options={"tofu": {"max_new_tokens": NEW_TOKENS}})


def _per_item(result: EvalResult, key: str) -> list[float]:
    return result.metrics[key].per_item


def test_suites_are_registered():
    assert {"tofu", "mia", "memorization"} <= set(SUITES.names("llm"))
    assert isinstance(get_suite("tofu", {"ds_size": 3}), TofuSuite)
    with pytest.raises(ConfigError, match="ds_sise"):
        get_suite("tofu", {"ds_sise": 3})
    with pytest.raises(ConfigError, match="unknown evaluation suite"):
        get_suite("tofu2")


def test_tofu_values_match_hand_formulas(outputs, model, tok, fmt, splits):
    result = outputs["tofu"].result
    naive = AnswerScorer(model, tok, fmt, mode="naive")
    rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    nine = []
    for role in ("forget", "retain", "real_authors", "world_facts"):
        records = list(splits[role])
        scores = naive.score_records(records)
        gt = np.array([s.gt.mean_nll for s in scores])
        pert = np.array([[p.mean_nll for p in s.perturbed] for s in scores])
        base = (np.array([s.paraphrased.mean_nll for s in scores])
                if role in ("forget", "retain") else gt)
        if role in ("forget", "retain"):
            prob = np.exp(-gt)
        else:
            prob = np.exp(-gt) / (np.exp(-gt) + np.exp(-pert).sum(axis=1))
        ratio = np.exp(pert.mean(axis=1) - base)
        stat = np.minimum(ratio, 1 / ratio) if role == "forget" else np.maximum(0, 1 - 1 / ratio)
        texts = greedy_generate(model, tok, fmt, [r.question for r in records], NEW_TOKENS)
        recall = [rouge.score(r.answer, t)["rougeL"].recall for r, t in zip(records, texts,
                                                                           strict=True)]
        np.testing.assert_allclose(_per_item(result, f"{role}/prob"), prob, rtol=1e-5)
        np.testing.assert_allclose(_per_item(result, f"{role}/truth_ratio"), stat, rtol=1e-4,
                                   atol=1e-6)
        np.testing.assert_allclose(result.metrics[f"{role}/truth_ratio"].details[
            "raw_truth_ratio"], ratio, rtol=1e-4)
        assert _per_item(result, f"{role}/rouge") == pytest.approx(recall)
        assert result.metrics[f"{role}/prob"].value == pytest.approx(prob.mean(), rel=1e-5)
        if role != "forget":
            nine += [prob.mean(), np.mean(recall), stat.mean()]
    assert result.summary()["model_utility"] == pytest.approx(hmean(nine), rel=1e-4)
    assert "forget_quality" not in result.metrics
    assert "no oracle" in result.provenance["skipped"]["forget_quality"]
    assert outputs["tofu"].artifacts["tofu_score"] is not None


def test_bfloat16_evaluation_matches_the_hand_formulas_on_the_bf16_model(tok, fmt, splits):
    """``model.dtype: bfloat16``: the shared scoring pass (prefix once, packed answers, the LM
    head on answer rows) gives the Prob and truth ratio the plain per-answer forward of the same
    bf16 model gives, to bf16 rounding (the two sum in other orders)."""
    model = peaked_model(tok, 0).to(torch.bfloat16)
    roles = ("forget", "retain")
    result = evaluate(model, tok, fmt, {r: splits[r] for r in roles}, suites=("tofu",),
                      options={"tofu": {"max_new_tokens": NEW_TOKENS}})["tofu"].result
    naive = AnswerScorer(model, tok, fmt, mode="naive")
    for role in roles:
        scores = naive.score_records(list(splits[role]))
        gt = np.array([s.gt.mean_nll for s in scores])
        pert = np.array([[p.mean_nll for p in s.perturbed] for s in scores])
        para = np.array([s.paraphrased.mean_nll for s in scores])
        assert np.isfinite(gt).all() and gt.std() > 0.1  # real, varied losses
        np.testing.assert_allclose(-np.log(_per_item(result, f"{role}/prob")), gt, rtol=0.02)
        np.testing.assert_allclose(result.metrics[f"{role}/truth_ratio"].details[
            "raw_truth_ratio"], np.exp(pert.mean(axis=1) - para), rtol=0.05)


def test_legacy_log_round_trips_through_tofu_aggregate(outputs, tmp_path):
    out = outputs["tofu"]
    log = out.artifacts["tofu_log"]
    assert set(log) == set(agg.LEGACY_FILES.values())
    for role, fname in agg.LEGACY_FILES.items():
        extra = {"normalized_gt_loss"} if role in ("real_authors", "world_facts") else set()
        assert set(log[fname]) == PUBLISHED_KEYS | extra
        assert list(log[fname]["avg_gt_loss"]) == [str(i) for i in range(len(
            log[fname]["avg_gt_loss"]))]
        i = "0"
        assert log[fname]["avg_gt_loss"][i] == pytest.approx(
            log[fname]["gt_loss"][i] / log[fname]["num_token_gt"][i])
        assert log[fname]["truth_ratio"][i] == pytest.approx(math.exp(
            log[fname]["avg_paraphrased_loss"][i] - np.mean(log[fname]["average_perturb_loss"][i])))
    out.save(tmp_path)
    json.loads((tmp_path / agg.LEGACY_COMBINED_FILE).read_text())
    score = agg.score_tofu(agg.load_eval_log(tmp_path), None)
    summary = out.result.summary()
    for key, value in score.components().items():
        role, metric = key.rsplit("_", 1) if not key.endswith("truth_ratio") else (
            key.removesuffix("_truth_ratio"), "truth_ratio")
        assert summary[f"{role}/{metric}"] == pytest.approx(value, rel=1e-9)
    assert summary["model_utility"] == pytest.approx(score.model_utility, rel=1e-9)
    reloaded = EvalResult.load(tmp_path / "tofu.json")
    assert reloaded.summary().keys() == summary.keys()
    assert reloaded.options["engine"]["scorer_mode"] == "prefix"


def test_published_log_keys_match(outputs):
    from pathlib import Path

    path = (Path(__file__).resolve().parents[3] / "shared" / "data" / "tofu_published_eval"
            / "ft_epoch5_lr2e-05_phi_full_wd0.01.json")
    if not path.is_file():
        pytest.skip("published TOFU logs not present")
    published = json.loads(path.read_text())
    log = outputs["tofu"].artifacts["tofu_log"]
    for fname in agg.LEGACY_FILES.values():
        assert set(log[fname]) == set(published[fname])


def test_forget_quality_against_oracle(outputs, model, tok, fmt, splits, tmp_path):
    oracle_model = peaked_model(tok, seed=1)
    suite = get_suite("tofu", {"max_new_tokens": NEW_TOKENS})
    oracle = suite(oracle_model, tok, fmt, splits)
    own = outputs["tofu"]
    r_model = own.result.metrics["forget/truth_ratio"].details["raw_truth_ratio"]
    r_oracle = oracle.result.metrics["forget/truth_ratio"].details["raw_truth_ratio"]
    expected = ks_2samp(r_model, r_oracle).pvalue
    oracle.save(tmp_path)
    session = EvalSession(model, tok, fmt)
    values = []
    for form in (oracle, oracle.result, oracle.artifacts["tofu_log"], tmp_path,
                 tmp_path / agg.LEGACY_COMBINED_FILE):
        res = suite.run(session, splits, oracle=form).result
        values.append(res.metrics["forget_quality"].value)
        assert res.metrics["forget_quality"].details["oracle_n"] == len(r_oracle)
    assert values == pytest.approx([expected] * len(values), rel=1e-6)
    same = suite.run(session, splits, oracle=own).result.metrics["forget_quality"].value
    assert same == pytest.approx(1.0)


def test_ds_size_and_options_recorded(model, tok, fmt, splits):
    out = get_suite("tofu", {"ds_size": 3, "generate": False})(model, tok, fmt, splits)
    res = out.result
    assert res.options["ds_size"] == 3 and res.options["generate"] is False
    assert res.options["roles"]["retain"] == "retain"
    assert len(res.metrics["forget/prob"].per_item) == 3
    assert "forget/rouge" not in res.metrics
    assert "model_utility" not in res.metrics and "model_utility" in res.provenance["skipped"]
    assert len(out.artifacts["tofu_log"]["eval_log_forget.json"]["avg_gt_loss"]) == 3
    assert res.provenance["splits"]["forget"]["n"] == 6


def test_splits_without_perturbed_fields_skip_truth_ratio(model, tok, fmt, data):
    plain = [QARecord(r.question, r.answer) for r in data["forget"][:4]]
    no_para = [replace(r, paraphrased_answer=None) for r in data["retain"][:4]]
    out = get_suite("tofu", {"max_new_tokens": 4})(
        model, tok, fmt, {"forget": plain, "retain": no_para, "real_authors": plain})
    res = out.result
    assert {"forget/prob", "forget/rouge", "retain/prob", "real_authors/prob"} <= set(res.metrics)
    assert not any(k.endswith("truth_ratio") for k in res.metrics)
    skipped = res.provenance["skipped"]
    assert "no perturbed answers" in skipped["forget/truth_ratio"]
    assert "no paraphrased answer" in skipped["retain/truth_ratio"]
    assert res.metrics["real_authors/prob"].details["normalised"] is False
    assert "avg_paraphrased_loss" not in out.artifacts["tofu_log"]["eval_log_forget.json"]
    with pytest.raises(DataError, match="TOFU role"):
        get_suite("tofu")(model, tok, fmt, {"holdout": plain})
    custom = get_suite("tofu", {"roles": {"forget": "mine"}, "generate": False})(
        model, tok, fmt, {"mine": data["forget"][:2]})
    assert "forget/prob" in custom.result.metrics


def test_one_pass_shared_by_all_suites(outputs, splits):
    session_stats = outputs["tofu"].result.provenance["session"]
    unique = {(r.question, a) for name in ("forget", "retain", "real_authors", "world_facts")
              for r in splits[name]
              for a in (r.answer, r.paraphrased_answer, *r.perturbed_answers) if a is not None}
    unique |= {(r.question, r.answer) for r in splits["holdout"]}
    final = outputs["memorization"].result.provenance["session"]
    assert final["answers_scored"] == len(unique)  # every answer computed exactly once
    assert final["cache_hits"] > session_stats["cache_hits"] > 0
    assert final["padding_tokens"] < 0.15 * final["forward_tokens"]


def test_mia_and_memorization_match_direct_computation(outputs, model, tok, fmt, splits):
    naive = AnswerScorer(model, tok, fmt, mode="naive")
    f_stats = [s.token_stats for s in _gt(naive.score(list(splits["forget"]), token_stats=True))]
    h_stats = [s.token_stats for s in _gt(naive.score(list(splits["holdout"]), token_stats=True))]
    res = outputs["mia"].result
    direct = mia.run_mia(["loss", "zlib", "min_k", "min_k_plus_plus"], f_stats, h_stats)
    for attack, metric in direct.items():
        assert res.metrics[f"forget/mia_{attack}"].value == pytest.approx(metric.value)
        np.testing.assert_allclose(res.metrics[f"forget/mia_{attack}"].per_item,
                                   metric.per_item, rtol=1e-4, atol=1e-6)
    assert "forget/mia_gradnorm" in res.metrics
    assert "forget/mia_reference" not in res.metrics
    memo = outputs["memorization"].result
    assert memo.metrics["forget/exact_memorization"].per_item == pytest.approx(
        mem.exact_memorization(f_stats).per_item)
    assert memo.metrics["forget/extraction_strength"].value == pytest.approx(
        mem.extraction_strength(f_stats).value)


def _gt(rows):
    return [row[0] for row in rows]


def test_mia_reference_and_privleak(model, tok, fmt, splits):
    reference = peaked_model(tok, seed=2)
    out = evaluate(model, tok, fmt, splits, suites=["mia"],
                   options={"mia": {"attacks": ["loss", "min_k"]}}, reference_model=reference)
    res = out["mia"].result
    assert {"forget/mia_loss", "forget/mia_min_k", "forget/mia_reference"} == set(res.metrics)
    naive = AnswerScorer(reference, tok, fmt, mode="naive")
    ref_f = [s.token_stats for s in _gt(naive.score(list(splits["forget"]), token_stats=True))]
    assert res.metrics["forget/mia_reference"].per_item[0] == pytest.approx(
        ref_f[0].nll - (-res.metrics["forget/mia_loss"].per_item[0]), rel=1e-4)
    oracle = get_suite("mia", {"attacks": ["loss", "min_k"]})(reference, tok, fmt, splits)
    with_oracle = get_suite("mia", {"attacks": ["loss", "min_k"]})(
        model, tok, fmt, splits, oracle_mia=oracle)
    leak = with_oracle.result.metrics["forget/privleak_loss"]
    auc, auc_o = res.metrics["forget/mia_loss"].value, oracle.result.metrics[
        "forget/mia_loss"].value
    assert leak.value == pytest.approx(((1 - auc) - (1 - auc_o)) / (1 - auc_o) * 100)
    assert leak.details["convention"] == "muse"
    by_dict = get_suite("mia", {"attacks": ["loss"]})(
        model, tok, fmt, splits, oracle_mia={"loss": 0.5}).result
    assert by_dict.metrics["forget/privleak_loss"].value == pytest.approx((0.5 - auc) / 0.5 * 100)
    old = get_suite("mia", {"attacks": ["loss"], "privleak_convention": "relative_auc"})(
        model, tok, fmt, splits, oracle_mia={"loss": 0.5}).result
    assert old.metrics["forget/privleak_loss"].value == pytest.approx((auc - 0.5) / 0.5 * 100)
    with pytest.raises(ConfigError, match="unknown attack"):
        get_suite("mia", {"attacks": ["los"]})(model, tok, fmt, splits)
    with pytest.raises(DataError, match="no split"):
        get_suite("mia")(model, tok, fmt, {"forget": splits["forget"]})


def test_suite_output_is_json_serialisable(outputs, tmp_path):
    for name, out in outputs.items():
        assert isinstance(out, SuiteOutput)
        path = out.save(tmp_path / name)
        data = json.loads((path / f"{name}.json").read_text())
        assert data["suite"] == name and data["model"] == "model"
        assert data["seconds"] is not None


def test_tofu_splits_end_to_end(tofu_root):
    """TOFU's own files: retain_eval is the retain role, the original answer the base on real
    authors / world facts, and the log has TOFU's keys."""
    from obliviate.llm.data.tofu import load_tofu

    named = load_tofu(tofu_root, forget_splits=("forget01",)).splits("forget01")
    splits = {name: list(split.records)[:3] for name, split in named.items()}
    texts = [t for recs in splits.values() for r in recs
             for t in (r.question, r.answer, r.paraphrased_answer or "", *r.perturbed_answers)]
    tok = train_tokenizer(texts, vocab_size=400)
    model = peaked_model(tok)
    out = get_suite("tofu", {"max_new_tokens": 4})(model, tok, resolve_format(tok), splits)
    res = out.result
    assert res.options["roles"] == {"forget": "forget", "retain": "retain_eval",
                                    "real_authors": "real_authors", "world_facts": "world_facts"}
    assert "model_utility" in res.metrics
    log = out.artifacts["tofu_log"]
    real = log["eval_real_author_wo_options.json"]
    assert real["avg_paraphrased_loss"] == real["avg_gt_loss"]  # base = the answer
    n_options = len(splits["real_authors"][0].perturbed_answers)
    assert len(real["average_perturb_loss"]["0"]) == n_options
    forget = log["eval_log_forget.json"]
    assert forget["avg_paraphrased_loss"] != forget["avg_gt_loss"]
    assert len(forget["average_perturb_loss"]["0"]) == 5


def test_tofu_suite_scores_fluency_of_its_generations(outputs, splits):
    from obliviate.llm.evaluation.memorization import fluency_score

    metric = outputs["tofu"].result.metrics["forget/fluency"]
    log = outputs["tofu"].artifacts["tofu_log"]["eval_log_forget.json"]["generated_text"]
    texts = [log[str(i)][1] for i in range(len(splits["forget"]))]
    assert len(metric.per_item) == len(texts)
    assert metric.per_item == pytest.approx([fluency_score(t) for t in texts])
