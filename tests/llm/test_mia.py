"""Hand-computed tests for the MIA attacks, PrivLeak and the memorisation metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from obliviate.core.errors import ConfigError, DataError
from obliviate.core.result import MetricResult
from obliviate.llm.evaluation.memorization import (
    exact_memorization,
    exact_memorization_score,
    extraction_strength,
    extraction_strength_score,
    fluency,
    fluency_components,
    fluency_score,
)
from obliviate.llm.evaluation.mia import (
    SIGMA_FLOOR,
    TokenStats,
    attack_scores,
    gradnorm_scores,
    loss_score,
    mia_auc,
    min_k_plus_plus_score,
    min_k_score,
    privleak,
    reference_score,
    run_mia,
    token_stats_from_logits,
    zlib_length,
    zlib_score,
)

LN2 = math.log(2.0)
LN3 = math.log(3.0)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _toy_logits() -> tuple[torch.Tensor, torch.Tensor]:
    """Three positions over a 3-token vocabulary.

    Positions 0 and 1: p = (1/2, 1/4, 1/4) (logits 2 ln2, ln2, ln2), so
    mu = -1.5 ln2 and E[(log p)^2] = 2.5 ln2^2, sigma = 0.5 ln2.
    Position 2: uniform, mu = -ln3, sigma = 0. Labels 0, 1, 2.
    """
    logits = torch.tensor([[2 * LN2, LN2, LN2], [2 * LN2, LN2, LN2], [0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1, 2])
    return logits, labels


# ------------------------------------------------------------------------------------------
# TokenStats and token_stats_from_logits
# ------------------------------------------------------------------------------------------


def test_token_stats_from_logits_matches_hand_values():
    logits, labels = _toy_logits()
    stats = token_stats_from_logits(logits, labels, text="abc")
    np.testing.assert_allclose(stats.logprobs, [-LN2, -2 * LN2, -LN3], atol=1e-6)
    np.testing.assert_allclose(stats.mu, [-1.5 * LN2, -1.5 * LN2, -LN3], atol=1e-6)
    np.testing.assert_allclose(stats.sigma, [0.5 * LN2, 0.5 * LN2, 0.0], atol=1e-6)
    # argmax ties resolve to the first index, so the uniform position is not label 2.
    assert stats.is_argmax.tolist() == [True, False, False]
    assert stats.text == "abc"
    assert stats.logprobs.dtype == np.float64
    assert stats.nll == pytest.approx((LN2 + 2 * LN2 + LN3) / 3, abs=1e-6)


def test_token_stats_from_logits_matches_naive_formula_and_handles_masked_vocab():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 11, generator=gen, dtype=torch.float64) * 3
    labels = torch.randint(0, 11, (7,), generator=gen)
    stats = token_stats_from_logits(logits, labels)
    logp = torch.log_softmax(logits, -1)
    p = logp.exp()
    mu = (p * logp).sum(-1)
    sigma = ((p * logp**2).sum(-1) - mu**2).sqrt()
    np.testing.assert_allclose(stats.mu, mu.numpy(), atol=1e-10)
    np.testing.assert_allclose(stats.sigma, sigma.numpy(), atol=1e-7)
    np.testing.assert_allclose(stats.logprobs, logp[torch.arange(7), labels].numpy(), atol=1e-12)
    # A -inf logit has p = 0 and contributes nothing (no NaN from 0 * -inf).
    masked = token_stats_from_logits(torch.tensor([[0.0, 0.0, -math.inf]]), torch.tensor([1]))
    np.testing.assert_allclose(masked.mu, [-LN2], atol=1e-6)
    np.testing.assert_allclose(masked.sigma, [0.0], atol=1e-6)
    # Half-precision logits are upcast.
    half = token_stats_from_logits(logits.to(torch.bfloat16), labels)
    assert np.all(np.isfinite(half.mu))


def test_token_stats_validation():
    with pytest.raises(DataError):
        TokenStats(logprobs=[-1.0, -2.0], mu=[0.0])
    with pytest.raises(DataError):
        TokenStats(logprobs=[-1.0], is_argmax=[True, False])
    with pytest.raises(DataError):
        token_stats_from_logits(torch.zeros(2, 3), torch.tensor([0, -100]))
    with pytest.raises(DataError):
        token_stats_from_logits(torch.zeros(2, 3), torch.tensor([0, 1, 2]))


# ------------------------------------------------------------------------------------------
# Attack scores
# ------------------------------------------------------------------------------------------


def test_loss_score_is_mean_logprob():
    assert loss_score(TokenStats(logprobs=[-1.0, -2.0, -3.0])) == pytest.approx(-2.0)
    assert math.isnan(loss_score(TokenStats(logprobs=[])))


def test_min_k_five_tokens():
    stats = TokenStats(logprobs=[-0.1, -2.0, -0.5, -3.0, -1.0])
    # k = 0.4 keeps floor(0.4 * 5) = 2 tokens: -3.0 and -2.0.
    assert min_k_score(stats) == pytest.approx(-2.5)
    assert min_k_score(stats, k=1.0) == pytest.approx(-6.6 / 5)
    # floor(0.4 * 3) = 1 token; floor(0.4 * 2) = 0 is raised to 1.
    assert min_k_score(TokenStats(logprobs=[-1.0, -4.0, -2.0])) == pytest.approx(-4.0)
    assert min_k_score(TokenStats(logprobs=[-1.0, -4.0])) == pytest.approx(-4.0)
    assert math.isnan(min_k_score(TokenStats(logprobs=[])))
    with pytest.raises(ConfigError):
        min_k_score(stats, k=0.0)


def test_min_k_plus_plus_on_hand_distribution():
    logits, labels = _toy_logits()
    stats = token_stats_from_logits(logits, labels)
    # z = (log p(y) - mu) / sigma: (-ln2 + 1.5 ln2) / (0.5 ln2) = 1; (-2 ln2 + 1.5 ln2) / ... = -1;
    # the uniform position has a zero numerator and sigma floored at SIGMA_FLOOR: z = 0.
    assert min_k_plus_plus_score(stats, k=0.4) == pytest.approx(-1.0, abs=1e-5)  # 1 token
    assert min_k_plus_plus_score(stats, k=0.7) == pytest.approx(-0.5, abs=1e-5)  # 2 tokens
    assert min_k_plus_plus_score(stats, k=1.0) == pytest.approx(0.0, abs=1e-5)
    # Same numbers from hand-written stats.
    hand = TokenStats(
        logprobs=[-LN2, -2 * LN2, -LN3],
        mu=[-1.5 * LN2, -1.5 * LN2, -LN3],
        sigma=[0.5 * LN2, 0.5 * LN2, 0.0],
    )
    assert min_k_plus_plus_score(hand, k=0.7) == pytest.approx(-0.5)
    # sigma = 0 with a non-zero numerator divides by the floor.
    floored = TokenStats(logprobs=[-1.0], mu=[-0.5], sigma=[0.0])
    assert min_k_plus_plus_score(floored) == pytest.approx(-0.5 / SIGMA_FLOOR)
    with pytest.raises(DataError):
        min_k_plus_plus_score(TokenStats(logprobs=[-1.0]))


def test_zlib_score_on_known_string():
    # "a" compresses to 2 header bytes + one fixed-Huffman block (3 + 8 + 7 bits -> 3 bytes)
    # + 4 Adler-32 bytes = 9 bytes; the empty string to 2 + 2 + 4 = 8 bytes.
    assert zlib_length("a") == 9
    assert zlib_length("") == 8
    stats = TokenStats(logprobs=[-1.0, -3.0], text="a")
    assert zlib_score(stats) == pytest.approx(-2.0 / 9)
    with pytest.raises(DataError):
        zlib_score(TokenStats(logprobs=[-1.0]))


def test_reference_score_is_reference_loss_minus_target_loss():
    target = TokenStats(logprobs=[-0.5, -1.5])  # NLL 1.0
    reference = TokenStats(logprobs=[-2.0, -4.0])  # NLL 3.0
    assert reference_score(target, reference) == pytest.approx(2.0)
    with pytest.raises(DataError):
        reference_score(target, TokenStats(logprobs=[-1.0]))


# ------------------------------------------------------------------------------------------
# AUC, PrivLeak, run_mia
# ------------------------------------------------------------------------------------------


def test_mia_auc_separable_and_not():
    assert mia_auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert mia_auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert mia_auc([1.0, 2.0], [1.0, 2.0]) == 0.5
    assert mia_auc([1.0, 4.0], [2.0, 3.0]) == 0.5  # 2 of 4 pairs ordered
    assert mia_auc([2.0, 4.0], [1.0, 3.0]) == 0.75  # 3 of 4 pairs ordered
    # Non-finite scores are left out.
    assert mia_auc([3.0, math.nan], [1.0]) == 1.0
    with pytest.raises(DataError):
        mia_auc([math.nan], [1.0])


def test_privleak_muse_default_hand_computed():
    # AUC_u = 0.9 (forget = members), AUC_r = 0.6: ((1-0.9) - (1-0.6)) / (1-0.6) * 100
    # = (0.1 - 0.4) / 0.4 * 100 = -75: the unlearned model still tells forget from holdout.
    assert privleak(0.9, 0.6) == pytest.approx(-75.0)
    assert privleak(0.9, 0.6, convention="muse") == pytest.approx(-75.0)
    # Over-unlearning: forget now looks *less* like training data than holdout does.
    # ((1-0.2) - (1-0.6)) / 0.4 * 100 = (0.8 - 0.4) / 0.4 * 100 = +100
    assert privleak(0.2, 0.6) == pytest.approx(100.0)
    assert privleak(0.6, 0.6) == 0.0
    # MUSE News target model: -99.8 published against AUC_RETRAIN["forget_holdout_Min-40%"] =
    # 0.4772 (MUSE labels forget 0, so its AUCs are 1 - ours): MUSE-oriented target AUC of
    # 0.4772 * 0.002 gives (0.4772*0.002 - 0.4772) / 0.4772 * 100 = -99.8.
    assert privleak(1 - 0.4772 * 0.002, 1 - 0.4772) == pytest.approx(-99.8)
    assert math.isnan(privleak(0.7, 1.0))


def test_privleak_relative_auc_is_the_old_default():
    # (AUC_u - AUC_r) / AUC_r * 100: (0.9 - 0.6) / 0.6 * 100 = 50; opposite sign, other scale.
    assert privleak(0.9, 0.6, convention="relative_auc") == pytest.approx(50.0)
    assert privleak(0.3, 0.5, convention="relative_auc") == pytest.approx(-40.0)
    # At AUC_r = 0.5 the two conventions have the same magnitude and opposite signs.
    assert privleak(0.9, 0.5) == pytest.approx(-privleak(0.9, 0.5, convention="relative_auc"))
    assert math.isnan(privleak(0.7, 0.0, convention="relative_auc"))
    with pytest.raises(ConfigError):
        privleak(0.5, 0.5, convention="guide")


def test_run_mia_returns_metric_results():
    members = [TokenStats(logprobs=[-0.1, -0.2, -0.3], text="alpha beta") for _ in range(3)]
    nonmembers = [TokenStats(logprobs=[-2.0, -3.0, -1.0], text="gamma delta") for _ in range(2)]
    ref_m = [TokenStats(logprobs=[-1.0, -1.0, -1.0]) for _ in range(3)]
    ref_n = [TokenStats(logprobs=[-1.0, -1.0, -1.0]) for _ in range(2)]
    results = run_mia(
        ["loss", "zlib", "min_k", "reference"],
        members,
        nonmembers,
        forget_reference_stats=ref_m,
        holdout_reference_stats=ref_n,
        precomputed={"gradnorm": ([-1.0, -2.0, -3.0], [-5.0, -6.0])},
    )
    assert set(results) == {"loss", "zlib", "min_k", "reference", "gradnorm"}
    for name, result in results.items():
        assert isinstance(result, MetricResult)
        assert result.name == f"mia_{name}"
        assert result.value == 1.0
        assert len(result.per_item) == 3
        assert len(result.details["holdout_scores"]) == 2
    assert results["loss"].per_item[0] == pytest.approx(-0.2)
    assert results["min_k"].details["k"] == 0.4
    assert results["reference"].per_item[0] == pytest.approx(1.0 - 0.2)
    with pytest.raises(ConfigError):
        attack_scores("nope", members)
    with pytest.raises(DataError):
        run_mia(["reference"], members, nonmembers)


# ------------------------------------------------------------------------------------------
# GradNorm
# ------------------------------------------------------------------------------------------


def _linear_setup() -> tuple[torch.nn.Linear, list[tuple[torch.Tensor, torch.Tensor]]]:
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
        model.bias.copy_(torch.tensor([0.5]))
    # Residuals r = w.x + b - y: 3.5 for ([1, 1], 0) and -1 for ([0, 0], 1.5).
    items = [(torch.tensor([1.0, 1.0]), torch.tensor(0.0)), (torch.tensor([0.0, 0.0]), 1.5)]
    return model, items


def _half_squared_error(model: torch.nn.Module, item) -> torch.Tensor:
    x, y = item
    return 0.5 * (model(x).squeeze() - y) ** 2


def test_gradnorm_scores_on_linear_model():
    model, items = _linear_setup()
    model.eval()
    # Gradients: dL/dw = r x, dL/db = r. Item 0: w-grad (3.5, 3.5), b-grad 3.5.
    # Item 1: w-grad (0, 0), b-grad -1.
    mean2 = gradnorm_scores(model, items, _half_squared_error)
    np.testing.assert_allclose(mean2, [-(3.5 * math.sqrt(2) + 3.5) / 2, -(0.0 + 1.0) / 2])
    glob2 = gradnorm_scores(model, items, _half_squared_error, reduction="global")
    np.testing.assert_allclose(glob2, [-3.5 * math.sqrt(3), -1.0])
    mean1 = gradnorm_scores(model, items, _half_squared_error, p=1)
    np.testing.assert_allclose(mean1, [-(7.0 + 3.5) / 2, -0.5])
    glob_inf = gradnorm_scores(model, items, _half_squared_error, p=math.inf, reduction="global")
    np.testing.assert_allclose(glob_inf, [-3.5, -1.0])
    assert not model.training  # the mode is left alone
    with pytest.raises(ConfigError):
        gradnorm_scores(model, items, _half_squared_error, p=3)


def test_gradnorm_restores_existing_gradients_and_works_under_no_grad():
    model, items = _linear_setup()
    model.weight.grad = torch.full_like(model.weight, 7.0)
    with torch.no_grad():
        scores = gradnorm_scores(model, items[:1], _half_squared_error)
    assert scores[0] == pytest.approx(-(3.5 * math.sqrt(2) + 3.5) / 2)
    assert torch.equal(model.weight.grad, torch.full_like(model.weight, 7.0))
    assert model.bias.grad is None


def test_gradnorm_runs_its_forward_in_the_measurement_precision():
    from obliviate.core.precision import measured_in

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    items = [(torch.randn(64), torch.tensor(0.3)) for _ in range(4)]
    fp32 = gradnorm_scores(model, items, _half_squared_error)
    with measured_in("bf16"):
        bf16 = gradnorm_scores(model, items, _half_squared_error)
    assert not np.array_equal(fp32, bf16)  # the products ran in bf16
    np.testing.assert_allclose(bf16, fp32, rtol=0.05)
    assert all(q.dtype == torch.float32 and q.grad is None for q in model.parameters())


# ------------------------------------------------------------------------------------------
# Memorisation
# ------------------------------------------------------------------------------------------


def _brute_extraction_strength(arr: list[bool]) -> float:
    total = len(arr)
    for k in range(total + 1):
        if all(arr[k:]):
            return 1 - k / total
    raise AssertionError


def test_extraction_strength_hand_cases():
    assert extraction_strength_score([True, True, True, True]) == 1.0
    assert extraction_strength_score([True, True, True, False]) == 0.0
    assert extraction_strength_score([False, True, True, True]) == 0.75
    assert extraction_strength_score([True, False, True, True]) == 0.5
    assert extraction_strength_score([False, False, False, False]) == 0.0
    assert math.isnan(extraction_strength_score([]))
    # OpenUnlearning's loop stops at k = T - 1 and scores an empty answer 0.
    assert extraction_strength_score([True, True, True, False], openunlearning_compat=True) == 0.25
    assert extraction_strength_score([True, False, True, True], openunlearning_compat=True) == 0.5
    assert extraction_strength_score([], openunlearning_compat=True) == 0.0


def test_extraction_strength_matches_definition_on_random_arrays():
    rng = np.random.default_rng(0)
    for _ in range(200):
        arr = (rng.random(rng.integers(1, 9)) < 0.7).tolist()
        assert extraction_strength_score(arr) == pytest.approx(_brute_extraction_strength(arr))


def test_exact_memorization_and_results_from_token_stats():
    assert exact_memorization_score([True, False, True, True]) == 0.75
    assert math.isnan(exact_memorization_score([]))
    logits, labels = _toy_logits()
    stats = token_stats_from_logits(logits, labels)  # is_argmax = [True, False, False]
    full = TokenStats(logprobs=[-0.1, -0.1], is_argmax=[True, True])
    em = exact_memorization([stats, full, []], split="forget")
    assert em.per_item[:2] == pytest.approx([1 / 3, 1.0])
    assert math.isnan(em.per_item[2])
    assert em.value == pytest.approx((1 / 3 + 1.0) / 2)
    assert em.split == "forget"
    es = extraction_strength([stats, full])
    assert es.per_item == pytest.approx([0.0, 1.0])
    assert es.value == pytest.approx(0.5)
    with pytest.raises(DataError):
        exact_memorization([TokenStats(logprobs=[-1.0])])


# ------------------------------------------------------------------------------------------
# Fluency heuristic
# ------------------------------------------------------------------------------------------


def test_fluency_ranks_sentence_above_degenerate_text():
    sentence = "The quick brown fox jumps over the lazy dog."
    repeated = "the the the the the the the the"
    noise = "@@## $$%% ^^&& ~~||"
    # Sentence: 9 words, 8 distinct (>= 0.5), 7 distinct trigrams, no symbol noise -> 1.
    assert fluency_score(sentence) == pytest.approx(1.0)
    # 8 x "the": 6 trigrams, 1 distinct -> 1 - 5/6; distinct ratio 1/8 -> credit 1/4.
    assert fluency_score(repeated) == pytest.approx((1 / 6) * 0.25)
    assert fluency_score(noise) == 0.0
    assert fluency_score("") == 0.0
    parts = fluency_components("a b a b a b")
    assert parts["repeated_ngram_ratio"] == pytest.approx(1 - 2 / 4)
    assert parts["distinct_word_ratio"] == pytest.approx(2 / 6)
    assert fluency_components("ok #")["nonword_char_fraction"] == pytest.approx(1 / 3)
    result = fluency([sentence, repeated])
    assert result.per_item[0] > result.per_item[1]
    assert result.higher_is_better is True
    with pytest.raises(ConfigError):
        fluency_score(sentence, distinct_floor=0.0)


def test_token_stats_from_logits_chunking_and_empty():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(10, 5, generator=gen)
    labels = torch.randint(0, 5, (10,), generator=gen)
    whole = token_stats_from_logits(logits, labels)
    chunked = token_stats_from_logits(logits, labels, chunk_size=3)
    for name in ("logprobs", "mu", "sigma", "is_argmax"):
        np.testing.assert_array_equal(getattr(whole, name), getattr(chunked, name))
    empty = token_stats_from_logits(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))
    assert len(empty) == 0 and empty.mu.shape == (0,)
