"""Formulas checked against hand computation: Fréchet distance, KID, the ESD target, the UCE
closed form (against a least-squares solve) and the SalUn mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from obliviate.diffusion.methods.esd import esd_target
from obliviate.diffusion.methods.salun import saliency_mask
from obliviate.diffusion.methods.uce import uce_closed_form
from obliviate.diffusion.metrics import (
    frechet_distance,
    kernel_inception_distance,
    polynomial_mmd2,
)
from obliviate.diffusion.metrics.distances import trace_sqrt_product


@pytest.fixture
def feats() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(400, 6)) @ np.diag([1, 2, 3, 1, 1, 0.5])


def test_frechet_identical_is_zero(feats):
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)


def test_frechet_shift_is_squared_norm(feats):
    mu = np.array([1.0, -2.0, 0.5, 0.0, 3.0, 1.0])
    assert frechet_distance(feats, feats + mu) == pytest.approx(float(mu @ mu), rel=1e-6)


@pytest.mark.parametrize("n, d", [(300, 20), (40, 64)])  # the second: singular covariances
def test_frechet_trace_term_is_the_reference_codes_sqrtm(n, d):
    """Tr((Σ₁Σ₂)^{1/2}) as pytorch-fid computes it, ``scipy.linalg.sqrtm`` of the product, on
    covariances that do not commute (a mixed, anisotropic second set)."""
    import scipy.linalg

    rng = np.random.default_rng(1)
    a = rng.normal(size=(n, d)) * np.linspace(0.5, 2.0, d)
    b = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d) + 0.3
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    want = float(np.trace(np.real(scipy.linalg.sqrtm(s1 @ s2))))
    assert trace_sqrt_product(s1, s2) == pytest.approx(want, rel=1e-6)
    mu = a.mean(0) - b.mean(0)
    assert frechet_distance(a, b) == pytest.approx(
        float(mu @ mu + np.trace(s1) + np.trace(s2) - 2 * want), rel=1e-6)


def test_frechet_scaling_by_two(feats):
    # Σ₂ = 4Σ₁, μ₂ = 2μ₁  ⇒  FD = ‖μ₁‖² + Tr(Σ₁ + 4Σ₁ − 2·2Σ₁) = ‖μ₁‖² + Tr(Σ₁)
    mu, cov = feats.mean(0), np.cov(feats, rowvar=False)
    expected = float(mu @ mu + np.trace(cov))
    assert frechet_distance(feats, 2 * feats) == pytest.approx(expected, rel=1e-6)


def test_kid_hand_case():
    x, y = np.array([[0.0], [1.0]]), np.array([[2.0], [3.0]])
    k = lambda a, b: (a * b + 1) ** 3  # noqa: E731  (d = 1)
    xx = 2 * k(0, 1) / 2
    yy = 2 * k(2, 3) / 2
    xy = (k(0, 2) + k(0, 3) + k(1, 2) + k(1, 3)) / 4
    assert polynomial_mmd2(x, y) == pytest.approx(xx + yy - 2 * xy)


def test_kid_same_distribution_near_zero(feats):
    other = np.random.default_rng(1).normal(size=(400, 6)) @ np.diag([1, 2, 3, 1, 1, 0.5])
    same, _ = kernel_inception_distance(feats, other, subsets=20, subset_size=200)
    shifted, _ = kernel_inception_distance(feats, other + 2.0, subsets=20, subset_size=200)
    assert abs(same) < 0.05 * shifted


def test_esd_target_by_hand():
    null, cond = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.5])
    # ε(∅) − η(ε(c) − ε(∅)) with η = 1: [1 − 2, −2 − 2.5]
    assert esd_target(null, cond, 1.0).tolist() == [-1.0, -4.5]
    assert torch.equal(esd_target(null, cond, 0.0), null)


def test_uce_closed_form_matches_least_squares():
    g = torch.Generator().manual_seed(0)
    out_dim, in_dim = 5, 7
    w0 = torch.randn(out_dim, in_dim, generator=g, dtype=torch.float64)
    ce, cp = torch.randn(2, in_dim, generator=g, dtype=torch.float64), \
        torch.randn(4, in_dim, generator=g, dtype=torch.float64)
    ve = torch.randn(2, out_dim, generator=g, dtype=torch.float64)
    lamb, se, sp = 0.1, 1.0, 0.3
    w = uce_closed_form(w0, ce, ve, cp, lamb, se, sp)
    # min λ‖W − W₀‖² + s_e‖C_e Wᵀ − V‖² + s_p‖C_p Wᵀ − C_p W₀ᵀ‖²  as one stacked lstsq
    a = torch.cat([lamb ** 0.5 * torch.eye(in_dim, dtype=torch.float64), se ** 0.5 * ce,
                   sp ** 0.5 * cp])
    b = torch.cat([lamb ** 0.5 * w0.T, se ** 0.5 * ve, sp ** 0.5 * cp @ w0.T])
    solution = torch.linalg.lstsq(a, b).solution.T
    assert torch.allclose(w, solution, atol=1e-10)
    # the normal equations hold: W(λI + s_e CᵀC + s_p PᵀP) = λW₀ + s_e VᵀC + s_p W₀PᵀP
    lhs = w @ (lamb * torch.eye(in_dim, dtype=torch.float64) + se * ce.T @ ce + sp * cp.T @ cp)
    rhs = lamb * w0 + se * ve.T @ ce + sp * w0 @ cp.T @ cp
    assert torch.allclose(lhs, rhs, atol=1e-10)


def test_uce_small_lambda_erases_exactly():
    g = torch.Generator().manual_seed(1)
    w0 = torch.randn(6, 8, generator=g, dtype=torch.float64)
    ce, cp = torch.randn(1, 8, generator=g, dtype=torch.float64), \
        torch.randn(3, 8, generator=g, dtype=torch.float64)
    target = w0 @ torch.randn(8, generator=g, dtype=torch.float64)
    w = uce_closed_form(w0, ce, target[None], cp, lamb=1e-8, erase_scale=1, preserve_scale=1)
    assert torch.allclose(w @ ce[0], target, atol=1e-5)
    assert torch.allclose(w @ cp.T, w0 @ cp.T, atol=1e-5)


def test_saliency_mask_keeps_the_largest_half():
    params = [("a", torch.nn.Parameter(torch.zeros(4))), ("b", torch.nn.Parameter(torch.zeros(4)))]
    grads = {"a": torch.tensor([8.0, -1.0, 2.0, 0.0]), "b": torch.tensor([-7.0, 3.0, 0.5, 6.0])}
    mask = saliency_mask(None, params, grads, 0.5)  # type: ignore[arg-type]
    assert mask["a"].tolist() == [1, 0, 0, 0] and mask["b"].tolist() == [1, 1, 0, 1]
