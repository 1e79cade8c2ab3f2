"""Distribution distances between two feature sets (rows are samples).

* Fréchet distance (Heusel et al. 2017): ``‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^{1/2})`` between
  Gaussians fitted to each set (unbiased covariances, as the FID reference code).
* KID (Bińkowski et al. 2018): the unbiased MMD² estimate with the cubic polynomial kernel
  ``k(x, y) = (xᵀy / d + 1)³``, averaged over random subsets.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` and ``b``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be [n, d] with the same d, got {a.shape}, {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("each feature set needs at least 2 samples")
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():  # few samples: singular covariances are expected
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():  # regularise as the reference code does
            offset = np.eye(len(s1)) * eps
            covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    covmean = np.real(covmean)
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    return max(value, 0.0)


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
