"""Distribution scores over feature sets: Frechet distance, streaming feature statistics, and the
Inception-score formula shared by every classifier-based IS in the suite.

Frechet distance, d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)), is computed in float64.
The default ("eigh") evaluates the cross term as tr((S1^(1/2) S2 S1^(1/2))^(1/2)): the inner matrix is
symmetric PSD and similar to S1 S2, so it has the same eigenvalues, and symmetric eigensolvers return
them real and accurate even when the covariances are rank-deficient (fewer samples than feature dims,
the usual case for 2048 Inception features and small sample counts), where a general `sqrtm(S1 @ S2)`
may return complex or non-finite output and needs an ad-hoc eps*I offset. "sqrtm" keeps that
classic formulation (with the offset fallback) for cross-checks against older numbers.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import scipy.linalg
from scipy.special import xlogy
import torch

from walt.runs import atomic_write

log = logging.getLogger(__name__)
ArrayLike = np.ndarray | torch.Tensor


def _as_f64(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _sym(a: np.ndarray) -> np.ndarray:
    return (a + a.T) / 2


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root; round-off negative eigenvalues are clipped to 0."""
    w, v = np.linalg.eigh(_sym(a))
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _trace_sqrt_product_eigh(s1: np.ndarray, s2: np.ndarray) -> float:
    r1 = _psd_sqrt(s1)
    ev = np.linalg.eigvalsh(_sym(r1 @ s2 @ r1))
    return float(np.sqrt(np.clip(ev, 0, None)).sum())


def _trace_sqrt_product_sqrtm(s1: np.ndarray, s2: np.ndarray, eps: float) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all() or (np.iscomplexobj(covmean) and np.abs(covmean.imag).max() > 1e-3):
        log.warning("sqrtm(S1 S2) is not finite or clearly complex; adding %g to the covariance diagonals", eps)
        offset = np.eye(s1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > 1e-3:
            raise ValueError(f"matrix square root has imaginary component {imag:g}; use method='eigh'")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike,
                     method: str = "eigh", eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    method: "eigh" (default, robust for rank-deficient covariances) or "sqrtm" (scipy.linalg.sqrtm
    of sigma1 @ sigma2, retried with eps*I on the diagonals when the result is unusable).
    """
    mu1, mu2, s1, s2 = _as_f64(mu1), _as_f64(mu2), _as_f64(sigma1), _as_f64(sigma2)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f"shape mismatch: mu {mu1.shape} / {mu2.shape}, sigma {s1.shape} / {s2.shape}")
    if method == "eigh":
        tr_covmean = _trace_sqrt_product_eigh(s1, s2)
    elif method == "sqrtm":
        tr_covmean = _trace_sqrt_product_sqrtm(s1, s2, eps)
    else:
        raise ValueError(f"method must be 'eigh' or 'sqrtm', got {method!r}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


class FeatureStats:
    """Running mean and scatter matrix of (N, D) features in float64 (Chan et al. pairwise merge).

    Holding (n, mean, M2) instead of raw sums avoids the cancellation of E[xx^T] - mu mu^T when the
    features have a large mean, and makes merging shards (workers, resumed runs) exact.
    """

    def __init__(self, dim: int | None = None):
        self.n = 0
        self.dim = dim
        self._mean = None if dim is None else np.zeros(dim)
        self._m2 = None if dim is None else np.zeros((dim, dim))

    def _combine(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        if self.dim is None:
            self.dim, self._mean, self._m2 = mean_b.shape[0], np.zeros_like(mean_b), np.zeros_like(m2_b)
        if mean_b.shape[0] != self.dim:
            raise ValueError(f"features have dim {mean_b.shape[0]}, these statistics have dim {self.dim}")
        n = self.n + n_b
        delta = mean_b - self._mean
        self._m2 += m2_b + np.outer(delta, delta) * (self.n * n_b / n)
        self._mean += delta * (n_b / n)
        self.n = n

    def update(self, features: ArrayLike) -> "FeatureStats":
        """Add a batch of features (N, D)."""
        x = _as_f64(features)
        if x.ndim != 2:
            raise ValueError(f"features must be (N, D), got shape {x.shape}")
        if len(x):
            mean_b = x.mean(axis=0)
            xc = x - mean_b  # (N, D)
            self._combine(len(x), mean_b, xc.T @ xc)
        return self

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        """Fold another accumulator (e.g. another worker's shard) into this one."""
        if other.n:
            self._combine(other.n, other._mean, other._m2)
        return self

    @property
    def mean(self) -> np.ndarray:
        if not self.n:
            raise ValueError("no features accumulated")
        return self._mean.copy()

    @property
    def cov(self) -> np.ndarray:
        """Unbiased covariance (ddof=1, as numpy.cov)."""
        if self.n < 2:
            raise ValueError(f"covariance needs at least 2 samples, have {self.n}")
        return self._m2 / (self.n - 1)

    def frechet_distance(self, other: "FeatureStats", method: str = "eigh") -> float:
        return frechet_distance(self.mean, self.cov, other.mean, other.cov, method=method)

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically as .npz (so an interrupted evaluation never leaves a torn file)."""
        with atomic_write(path, "wb") as f:
            np.savez(f, n=np.int64(self.n), dim=np.int64(self.dim or 0),
                     mean=self._mean if self._mean is not None else np.zeros(0),
                     m2=self._m2 if self._m2 is not None else np.zeros((0, 0)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureStats":
        with np.load(path, allow_pickle=False) as z:
            dim = int(z["dim"]) or None
            stats = cls(dim)
            stats.n = int(z["n"])
            if dim:
                stats._mean, stats._m2 = z["mean"].astype(np.float64), z["m2"].astype(np.float64)
        return stats


def accumulate(extract, batches: Iterable[torch.Tensor], stats: FeatureStats | None = None,
               max_items: int | None = None) -> FeatureStats:
    """Stream `batches` (videos) through `extract` (videos -> (N, D)) into `stats`, stopping at max_items."""
    stats = stats if stats is not None else FeatureStats()
    for batch in batches:
        if max_items is not None:
            if stats.n >= max_items:
                break
            batch = batch[: max_items - stats.n]
        stats.update(extract(batch))
    return stats


def inception_score(probs: ArrayLike, splits: int = 1, shuffle_seed: int | None = None) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) over `splits` equal parts of (N, K) class probabilities: (mean, std).

    Uniform predictions give 1, confident predictions spread evenly over K classes give K.
    shuffle_seed: shuffle rows first (StyleGAN-V shuffles with seed 42 before splitting).
    """
    p = _as_f64(probs)
    if p.ndim != 2 or len(p) < splits:
        raise ValueError(f"probs must be (N, K) with N >= splits={splits}, got shape {p.shape}")
    if shuffle_seed is not None:
        p = p[np.random.RandomState(shuffle_seed).permutation(len(p))]
    scores = []
    for part in np.array_split(p, splits):
        marginal = part.mean(axis=0, keepdims=True)
        kl = xlogy(part, part) - xlogy(part, marginal)  # (n, K); xlogy makes 0 * log 0 = 0
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))
