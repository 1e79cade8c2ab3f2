"""TOFU legacy aggregation (GUIDE.md §3): published logs, hand-computed cases, readers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from obliviate.core.errors import ConfigError, DataError
from obliviate.llm.evaluation.tofu_aggregate import (
    LEGACY_FILES,
    SPLITS,
    TofuSplitItems,
    forget_quality,
    load_eval_log,
    model_utility,
    parse_legacy_log,
    probabilities,
    score_tofu,
    truth_ratio_stat,
    truth_ratios,
)

PUBLISHED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tofu_published_eval"
needs_published = pytest.mark.skipif(
    not PUBLISHED.is_dir(),
    reason=f"TOFU's published evaluation logs are not at {PUBLISHED} (../shared/data)",
)

COMPONENTS = [f"{s}_{m}" for s in SPLITS for m in ("prob", "rouge", "truth_ratio")]

# Computed once by a separate script that follows locuslab/tofu aggregate_eval_stat.py
# (get_model_utility, get_forget_quality) line by line on the same files, scipy 1.17,
# ks_2samp method "auto" (exact for 300 vs 300).
EXPECTED = {
    "phi": {
        "files": (
            "ft_epoch5_lr2e-05_phi_full_wd0.01.json",
            "ft_epoch5_lr2e-05_phi_retain90_wd0.01.json",
        ),
        "model_utility": 0.5220737132035151,
        "forget_quality": 2.1942743021891237e-16,
        "ks_statistic": 0.3466666666666667,
        "forget_prob": 0.9282394842423188,
        "forget_rouge": 0.9248612622630048,
        "forget_truth_ratio": 0.48335558566802284,
        "retain_prob": 0.9260884160508499,
        "retain_rouge": 0.9292525097192792,
        "retain_truth_ratio": 0.482683008320846,
        "real_authors_prob": 0.3773603259680648,
        "real_authors_rouge": 0.4156666666666667,
        "real_authors_truth_ratio": 0.4560090213398623,
        "world_facts_prob": 0.40899845221380016,
        "world_facts_rouge": 0.7773504273504274,
        "world_facts_truth_ratio": 0.4923369138766094,
    },
    "llama2-7b": {
        "files": (
            "ft_epoch5_lr1e-05_llama2-7b_full_wd0.01.json",
            "ft_epoch5_lr1e-05_llama2-7b_retain90_wd0.01.json",
        ),
        "model_utility": 0.6226773637427152,
        "forget_quality": 1.834066410994743e-21,
        "ks_statistic": 0.39666666666666667,
        "forget_prob": 0.9909385566403208,
        "forget_rouge": 0.985449693916369,
        "forget_truth_ratio": 0.5159854212808593,
        "retain_prob": 0.9895272273969067,
        "retain_rouge": 0.9856545937933034,
        "retain_truth_ratio": 0.47469858801063747,
        "real_authors_prob": 0.45548207783762884,
        "real_authors_rouge": 0.9329999999999999,
        "real_authors_truth_ratio": 0.5962289157077105,
        "world_facts_prob": 0.41856180755948974,
        "world_facts_rouge": 0.8824786324786325,
        "world_facts_truth_ratio": 0.5390328416393139,
    },
}


# --------------------------------------------------------------------------------------------
# Published logs
# --------------------------------------------------------------------------------------------


@needs_published
@pytest.mark.parametrize("model", sorted(EXPECTED))
def test_reproduces_published_aggregation(model: str) -> None:
    exp = EXPECTED[model]
    full, retain = exp["files"]
    score = score_tofu(
        load_eval_log(PUBLISHED / full), load_eval_log(PUBLISHED / retain, splits=("forget",))
    )
    flat = score.to_flat_dict()
    assert set(flat) == {"model_utility", "forget_quality", "options", *COMPONENTS}
    for key in ["model_utility", "forget_quality", *COMPONENTS]:
        assert flat[key] == pytest.approx(exp[key], rel=1e-9, abs=0), key
    assert score.ks_statistic == pytest.approx(exp["ks_statistic"], rel=1e-12)
    assert flat["options"]["n"] == {
        "forget": 300,
        "retain": 300,
        "real_authors": 100,
        "world_facts": 117,
    }
    assert flat["options"]["ds_size"] is None and flat["options"]["ks_method"] == "auto"
    assert flat["options"]["oracle_n_forget"] == 300


@needs_published
def test_published_directory_layout_and_ds_size(tmp_path: Path) -> None:
    """TOFU's output folder (one file per split) reads the same as the combined file."""
    full, retain = EXPECTED["phi"]["files"]
    combined = json.loads((PUBLISHED / full).read_text())
    for name, content in combined.items():
        (tmp_path / name).write_text(json.dumps(content))
    from_dir = score_tofu(load_eval_log(tmp_path), load_eval_log(PUBLISHED / retain))
    from_file = score_tofu(load_eval_log(PUBLISHED / full), load_eval_log(PUBLISHED / retain))
    assert from_dir.to_flat_dict() == from_file.to_flat_dict()
    # ds_size=300 is what the published logs already hold: nothing changes but the record.
    at_300 = score_tofu(load_eval_log(PUBLISHED / full), load_eval_log(PUBLISHED / retain), 300)
    assert at_300.model_utility == from_file.model_utility
    assert at_300.forget_quality == from_file.forget_quality
    assert at_300.to_flat_dict()["options"]["ds_size"] == 300


@needs_published
def test_truth_ratio_uses_paraphrased_loss_not_gt_loss() -> None:
    """On real authors the stored avg_gt_loss and avg_paraphrased_loss (same answer text)
    differ slightly for a few questions; TOFU's truth ratio uses the latter."""
    log = load_eval_log(PUBLISHED / EXPECTED["llama2-7b"]["files"][0])
    ra = log["real_authors"]
    assert not np.allclose(ra.gt_loss, ra.paraphrased_loss, rtol=0, atol=1e-6)
    # The legacy log's own per-question truth_ratio field is exp(L_para - mean L_pert) = 1/R.
    raw = json.loads((PUBLISHED / EXPECTED["llama2-7b"]["files"][0]).read_text())
    stored = [raw[LEGACY_FILES["real_authors"]]["truth_ratio"][k] for k in ra.index]
    np.testing.assert_allclose(1 / truth_ratios(ra), stored, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Hand-computed cases
# --------------------------------------------------------------------------------------------


def _items(n: int = 3, shift: float = 0.0) -> TofuSplitItems:
    return TofuSplitItems(
        gt_loss=[0.1 * (i + 1) + shift for i in range(n)],
        paraphrased_loss=[0.5 + 0.1 * i + shift for i in range(n)],
        perturbed_loss=[[1.0 + 0.2 * i, 1.5, 2.0 - 0.1 * i] for i in range(n)],
        rouge_l_recall=[1.0 - 0.1 * i for i in range(n)],
        generated_text=[f"answer {i}" for i in range(n)],
    )


def _log(n: int = 3, shift: float = 0.0) -> dict[str, TofuSplitItems]:
    return {split: _items(n, shift) for split in SPLITS}


def _legacy_dict(log: dict[str, TofuSplitItems]) -> dict:
    out = {}
    for split, it in log.items():
        ids = list(it.index)
        out[LEGACY_FILES[split]] = {
            "avg_gt_loss": dict(zip(ids, it.gt_loss, strict=True)),
            "avg_paraphrased_loss": dict(zip(ids, it.paraphrased_loss, strict=True)),
            "average_perturb_loss": dict(zip(ids, it.perturbed_loss, strict=True)),
            "rougeL_recall": dict(zip(ids, it.rouge_l_recall, strict=True)),
            "generated_text": {
                k: ["Q", t, "A"] for k, t in zip(ids, it.generated_text, strict=True)
            },
        }
    return out


def test_truth_ratio_orientation_forget_vs_retain() -> None:
    # Prefers the base answer: mean perturbed loss 2.0 > base loss 0.5, so R = e^1.5 > 1.
    prefers_true = TofuSplitItems([0.5], [0.5], [[1.5, 2.5]], [1.0])
    r = truth_ratios(prefers_true)
    assert r[0] == pytest.approx(math.exp(1.5), rel=1e-15)
    assert truth_ratio_stat(r, "forget")[0] == pytest.approx(math.exp(-1.5), rel=1e-15)
    for split in ("retain", "real_authors", "world_facts"):
        assert truth_ratio_stat(r, split)[0] == pytest.approx(1 - math.exp(-1.5), rel=1e-15)
    # Prefers the wrong answers: R = e^-1 < 1; forget keeps R, the others clip to 0.
    prefers_wrong = TofuSplitItems([2.0], [2.0], [[1.0, 1.0, 1.0]], [0.0])
    r = truth_ratios(prefers_wrong)
    assert r[0] == pytest.approx(math.exp(-1.0), rel=1e-15)
    assert truth_ratio_stat(r, "forget")[0] == pytest.approx(math.exp(-1.0), rel=1e-15)
    assert truth_ratio_stat(r, "retain")[0] == 0.0
    # Indifferent (the oracle's ideal on forget): R = 1 gives 1 on forget, 0 elsewhere.
    assert truth_ratio_stat([1.0], "forget")[0] == 1.0
    assert truth_ratio_stat([1.0], "world_facts")[0] == 0.0


def test_truth_ratio_is_geometric_not_arithmetic_mean() -> None:
    # Perturbed losses 1 and 3 around a base loss of 2: the geometric mean of the perturbed
    # probabilities equals the base probability (R = 1); the arithmetic mean would not.
    items = TofuSplitItems([2.0], [2.0], [[1.0, 3.0]], [1.0])
    assert truth_ratios(items)[0] == pytest.approx(1.0, abs=1e-15)
    arithmetic = ((math.exp(-1) + math.exp(-3)) / 2) / math.exp(-2)
    assert abs(arithmetic - 1.0) > 0.5


def test_probabilities_per_split() -> None:
    items = TofuSplitItems([1.0], [1.5], [[2.0, 3.0]], [1.0])
    assert probabilities(items, "forget")[0] == pytest.approx(math.exp(-1.0), rel=1e-15)
    assert probabilities(items, "retain")[0] == pytest.approx(math.exp(-1.0), rel=1e-15)
    expected = math.exp(-1) / (math.exp(-1) + math.exp(-2) + math.exp(-3))
    assert probabilities(items, "real_authors")[0] == pytest.approx(expected, rel=1e-15)
    assert probabilities(items, "world_facts")[0] == pytest.approx(expected, rel=1e-15)


def test_model_utility_harmonic_mean_and_zero() -> None:
    assert model_utility([1.0, 0.5]) == pytest.approx(2 / 3, rel=1e-15)
    assert model_utility([0.4] * 9) == pytest.approx(0.4, rel=1e-15)
    assert model_utility([0.9, 0.8, 0.0, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]) == 0.0
    log = _log()
    log["world_facts"] = TofuSplitItems([0.1], [0.2], [[1.0]], [0.0])  # ROUGE 0
    score = score_tofu(log, None)
    assert score.to_flat_dict()["world_facts_rouge"] == 0.0
    assert score.model_utility == 0.0


def test_score_tofu_by_hand() -> None:
    log = _log(n=2)
    score = score_tofu(log, None)
    flat = score.to_flat_dict()
    assert flat["forget_quality"] is None and flat["options"]["oracle_n_forget"] is None
    it = log["retain"]
    r = [
        math.exp(np.mean(p) - b)
        for p, b in zip(it.perturbed_loss, it.paraphrased_loss, strict=True)
    ]
    assert flat["retain_prob"] == pytest.approx(np.mean(np.exp(-np.array(it.gt_loss))), 1e-14)
    assert flat["retain_rouge"] == pytest.approx(0.95, rel=1e-14)
    assert flat["retain_truth_ratio"] == pytest.approx(
        np.mean([max(0, 1 - 1 / x) for x in r]), rel=1e-14
    )
    assert flat["forget_truth_ratio"] == pytest.approx(
        np.mean([min(x, 1 / x) for x in r]), rel=1e-14
    )
    nine = [
        flat[f"{s}_{m}"]
        for s in ("retain", "real_authors", "world_facts")
        for m in ("prob", "rouge", "truth_ratio")
    ]
    assert score.model_utility == pytest.approx(len(nine) / sum(1 / v for v in nine), rel=1e-14)
    per_item = score.per_item()
    assert set(per_item) == set(SPLITS)
    assert per_item["forget"]["truth_ratio"] == pytest.approx(r, rel=1e-14)
    assert per_item["forget"]["index"] == ["0", "1"]
    table = score.format_table()
    assert "Model Utility" in table and "Forget Quality" in table and "n/a" in table
    assert len(score.metric_results()) == 13


def test_forget_quality_ks_by_hand() -> None:
    # Identical samples: D = 0, p = 1.
    p, d = forget_quality([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert (p, d) == (1.0, 0.0)
    # Fully separated 3 vs 3: D = 1; of the C(6,3) = 20 equally likely orderings under H0,
    # exactly 2 reach D = 1, so the exact two-sided p-value is 2/20 = 0.1.
    p, d = forget_quality([0.1, 0.2, 0.3], [4.0, 5.0, 6.0])
    assert d == 1.0 and p == pytest.approx(0.1, rel=1e-12)
    # 2 vs 2 separated: 2 / C(4,2) = 1/3.
    assert forget_quality([1.0, 2.0], [3.0, 4.0])[0] == pytest.approx(1 / 3, rel=1e-12)
    # The method option reaches scipy: the asymptotic p-value differs from the exact one.
    p_asymp, _ = forget_quality([0.1, 0.2, 0.3], [4.0, 5.0, 6.0], ks_method="asymp")
    assert p_asymp < 0.1
    with pytest.raises(ConfigError):
        forget_quality([1.0], [2.0], ks_method="bogus")


def test_forget_quality_uses_raw_truth_ratio() -> None:
    """R and 1/R samples with the same min(R, 1/R) are told apart by the KS test."""
    model = {
        s: TofuSplitItems([0.1] * 3, [0.0] * 3, [[1.0], [1.1], [1.2]], [1.0] * 3) for s in SPLITS
    }  # R = e^1, e^1.1, e^1.2
    oracle = {"forget": TofuSplitItems([0.1] * 3, [1.0, 1.1, 1.2], [[0.0]] * 3, [1.0] * 3)}
    assert truth_ratio_stat(truth_ratios(oracle["forget"]), "forget") == pytest.approx(
        truth_ratio_stat(truth_ratios(model["forget"]), "forget"), rel=1e-14
    )
    score = score_tofu(model, oracle)
    assert score.ks_statistic == 1.0 and score.forget_quality == pytest.approx(0.1, rel=1e-12)
    assert score.oracle_forget_truth_ratio == pytest.approx(np.exp([-1.0, -1.1, -1.2]).tolist())


def test_ds_size_truncates_every_split_and_the_oracle() -> None:
    log, oracle = _log(n=5), _log(n=5, shift=0.3)
    cut = score_tofu(log, oracle, ds_size=2, ks_method="exact")
    manual = score_tofu(
        {s: it.head(2) for s, it in log.items()},
        {"forget": oracle["forget"].head(2)},
        ks_method="exact",
    )
    a, b = cut.to_flat_dict(), manual.to_flat_dict()
    assert a["options"] == {**b["options"], "ds_size": 2}
    assert a["options"]["n"] == dict.fromkeys(SPLITS, 2) and a["options"]["oracle_n_forget"] == 2
    assert a["options"]["ks_method"] == "exact"
    assert {k: v for k, v in a.items() if k != "options"} == {
        k: v for k, v in b.items() if k != "options"
    }
    assert cut.per_item()["retain"]["index"] == ["0", "1"]
    # Larger than a split keeps the whole split; the setting is still recorded.
    big = score_tofu(log, None, ds_size=300)
    assert big.to_flat_dict()["options"]["n"]["forget"] == 5
    assert big.to_flat_dict()["options"]["ds_size"] == 300
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError):
            score_tofu(log, None, ds_size=bad)


# --------------------------------------------------------------------------------------------
# Readers and malformed input
# --------------------------------------------------------------------------------------------


def test_legacy_reader_round_trip(tmp_path: Path) -> None:
    log = _log(n=4)
    path = tmp_path / "eval_log_aggregated.json"
    path.write_text(json.dumps(_legacy_dict(log)))
    read = load_eval_log(path)
    assert set(read) == set(SPLITS)
    assert read["forget"].generated_text == ["answer 0", "answer 1", "answer 2", "answer 3"]
    assert score_tofu(read, read).to_flat_dict() == score_tofu(log, log).to_flat_dict()
    # A folder holding only the combined file is read too.
    assert (
        score_tofu(load_eval_log(tmp_path), None).model_utility
        == score_tofu(log, None).model_utility
    )


def test_legacy_reader_orders_ids_numerically() -> None:
    data = _legacy_dict(_log(n=12))
    fwd = data[LEGACY_FILES["forget"]]
    fwd["avg_gt_loss"] = dict(reversed(list(fwd["avg_gt_loss"].items())))
    read = parse_legacy_log(data, "x.json", splits=("forget",))
    assert list(read["forget"].index) == [str(i) for i in range(12)]
    assert read["forget"].gt_loss == pytest.approx(_items(12).gt_loss)


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.pop("eval_log.json"), "'eval_log.json'"),
        (
            lambda d: d["eval_log_forget.json"].pop("avg_paraphrased_loss"),
            "eval_log_forget.json: missing key 'avg_paraphrased_loss'",
        ),
        (
            lambda d: d["eval_real_world_wo_options.json"].pop("average_perturb_loss"),
            "eval_real_world_wo_options.json: missing key 'average_perturb_loss'",
        ),
        (
            lambda d: d["eval_log.json"]["rougeL_recall"].pop("1"),
            "rougeL_recall: lacks question '1'",
        ),
        (lambda d: d["eval_log.json"]["avg_gt_loss"].update({"0": None}), "avg_gt_loss['0']"),
        (
            lambda d: d["eval_log.json"]["average_perturb_loss"].update({"2": []}),
            "average_perturb_loss['2']",
        ),
    ],
)
def test_malformed_legacy_log_names_file_and_key(tmp_path: Path, mutate, needle: str) -> None:
    data = _legacy_dict(_log())
    mutate(data)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as err:
        load_eval_log(path)
    message = str(err.value)
    assert str(path) in message and needle in message and "\n" not in message


def test_unreadable_inputs(tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text(json.dumps({"accuracy": 0.5}))
    with pytest.raises(DataError, match="not a TOFU evaluation log"):
        load_eval_log(tmp_path / "other.json")
    with pytest.raises(DataError, match="file not found"):
        load_eval_log(tmp_path / "absent.json")
    with pytest.raises(DataError, match="eval_log_forget.json"):
        load_eval_log(tmp_path)  # a folder with no TOFU log
    with pytest.raises(DataError, match="lacks split"):
        score_tofu({"forget": _items()}, None)
    with pytest.raises(DataError, match="gt_loss has 2"):
        TofuSplitItems([0.1, 0.2], [0.1], [[1.0], [1.0]], [1.0, 1.0])


def _open_unlearning_eval(log: dict[str, TofuSplitItems]) -> dict:
    """A TOFU_EVAL.json as OpenUnlearning's evaluator writes it (metric -> agg_value,
    value_by_index), including the aggregates the reader ignores."""
    prefix = {"forget": "forget", "retain": "retain", "real_authors": "ra", "world_facts": "wf"}
    out: dict = {}
    for split, it in log.items():
        p = prefix[split]
        ids = list(it.index)

        def prob_entry(loss):
            return {"prob": math.exp(-loss), "avg_loss": loss}

        out[f"{p}_Q_A_Prob"] = {
            "agg_value": float(np.mean(np.exp(-np.array(it.gt_loss)))),
            "value_by_index": {k: prob_entry(v) for k, v in zip(ids, it.gt_loss, strict=True)},
        }
        if split in ("forget", "retain"):
            out[f"{p}_Q_A_PARA_Prob"] = {
                "agg_value": 0.0,
                "value_by_index": {
                    k: prob_entry(v) for k, v in zip(ids, it.paraphrased_loss, strict=True)
                },
            }
        out[f"{p}_Q_A_PERT_Prob"] = {
            "agg_value": 0.0,
            "value_by_index": {
                k: {"prob": [math.exp(-x) for x in row], "avg_loss": list(row)}
                for k, row in zip(ids, it.perturbed_loss, strict=True)
            },
        }
        out[f"{p}_Q_A_ROUGE"] = {
            "agg_value": float(np.mean(it.rouge_l_recall)),
            "value_by_index": {
                k: {
                    "rouge1_recall": r,
                    "rougeL_f1": r,
                    "rougeL_recall": r,
                    "input": "Q",
                    "ground_truth": "A",
                    "generation": g,
                }
                for k, r, g in zip(ids, it.rouge_l_recall, it.generated_text, strict=True)
            },
        }
    out["forget_truth_ratio"] = {"agg_value": 0.5, "value_by_index": {"0": {"score": 0.5}}}
    out["model_utility"] = {"agg_value": 0.5}
    return dict(sorted(out.items()))


def test_open_unlearning_reader(tmp_path: Path) -> None:
    log = _log(n=3)
    # On real authors / world facts the base answer of the truth ratio is the original answer.
    for split in ("real_authors", "world_facts"):
        log[split] = TofuSplitItems(
            log[split].gt_loss,
            log[split].gt_loss,
            log[split].perturbed_loss,
            log[split].rouge_l_recall,
            log[split].generated_text,
        )
    path = tmp_path / "TOFU_EVAL.json"
    path.write_text(json.dumps(_open_unlearning_eval(log)))
    for source in (path, tmp_path):
        read = load_eval_log(source)
        assert read["forget"].paraphrased_loss == pytest.approx(log["forget"].paraphrased_loss)
        assert read["real_authors"].paraphrased_loss == pytest.approx(log["real_authors"].gt_loss)
        expected_pert = [list(r) for r in log["world_facts"].perturbed_loss]
        assert read["world_facts"].perturbed_loss == expected_pert
        assert read["retain"].generated_text == ["answer 0", "answer 1", "answer 2"]
        a = score_tofu(read, read).to_flat_dict()
        b = score_tofu(log, log).to_flat_dict()
        assert a.keys() == b.keys()
        for key in ["model_utility", "forget_quality", *COMPONENTS]:
            assert a[key] == pytest.approx(b[key], rel=1e-14), key


def test_open_unlearning_prob_only_entries_and_missing_keys(tmp_path: Path) -> None:
    log = _log(n=2)
    data = _open_unlearning_eval(log)
    for entry in data["forget_Q_A_PERT_Prob"]["value_by_index"].values():
        del entry["avg_loss"]  # loss falls back to -log(prob)
    path = tmp_path / "TOFU_EVAL.json"
    path.write_text(json.dumps(data))
    read = load_eval_log(path)
    np.testing.assert_allclose(
        read["forget"].perturbed_loss, log["forget"].perturbed_loss, rtol=1e-14
    )

    del data["forget_Q_A_PARA_Prob"]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as err:
        load_eval_log(path)
    assert str(path) in str(err.value) and "'forget_Q_A_PARA_Prob'" in str(err.value)
    # An oracle log needs only the forget split, which now fails; retain alone still loads.
    assert set(load_eval_log(path, splits=("retain",))) == {"retain"}

    data = _open_unlearning_eval(log)
    del data["ra_Q_A_ROUGE"]["value_by_index"]["1"]["rougeL_recall"]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"ra_Q_A_ROUGE\.value_by_index\['1'\]: missing key"):
        load_eval_log(path)
