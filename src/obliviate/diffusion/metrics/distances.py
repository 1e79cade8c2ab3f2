"""Distribution distances between two feature sets (rows are samples).

* Fréchet distance (Heusel et al. 2017): ``‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^{1/2})`` between
  Gaussians fitted to each set (unbiased covariances, as the FID reference code).
* KID (Bińkowski et al. 2018): the unbiased MMD² estimate with the cubic polynomial kernel
  ``k(x, y) = (xᵀy / d + 1)³``, averaged over random subsets.
"""

from __future__ import annotations

import numpy as np


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` and ``b``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be [n, d] with the same d, got {a.shape}, {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("each feature set needs at least 2 samples")
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2)
                  - 2 * trace_sqrt_product(s1, s2))
    return max(value, 0.0)


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """``Tr((Σ₁Σ₂)^{1/2})`` for covariance matrices ``s1`` and ``s2``.

    The FID reference code (``pytorch-fid``, TTUR) takes ``scipy.linalg.sqrtm(Σ₁Σ₂)`` and its
    trace. Σ₁Σ₂ has the eigenvalues of the symmetric ``Σ₁^{1/2} Σ₂ Σ₁^{1/2}`` (AB and BA share
    them), which are ≥ 0, so the trace is the sum of their square roots: two symmetric
    eigendecompositions instead of a Schur-based square root, about 6× faster at 2,048 features
    (1.8-2.0 s against 11.4-11.7 s, ``benchmarks/bench_fid.py``) and the same value (3.8e-8
    relative where n < d, 2e-15 otherwise). Rounding leaves singular covariances with
    eigenvalues slightly below 0, read as 0."""
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    middle = root @ s2 @ root
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with ``k(x, y) = (xᵀy / d + 1)³``."""
    d = x.shape[1]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2 * kxy.mean())


def kernel_inception_distance(a: np.ndarray, b: np.ndarray, subsets: int = 10,
                              subset_size: int = 100, seed: int = 0) -> tuple[float, float]:
    """KID (mean, standard deviation over subsets) between feature sets ``a`` and ``b``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("each feature set needs at least 2 samples")
    size = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    values = [polynomial_mmd2(a[rng.choice(len(a), size, replace=False)],
                              b[rng.choice(len(b), size, replace=False)])
              for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))
