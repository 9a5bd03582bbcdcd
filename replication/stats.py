"""Confidence intervals and paired comparisons (percentile bootstrap, seeded: reruns give the same numbers)."""

from __future__ import annotations

import numpy as np


def mean_ci(x, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean of x with a percentile-bootstrap confidence interval."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_ci of an empty sample")
    rng = np.random.default_rng(seed)
    boots = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(1)
    a = (1 - confidence) / 2
    return {
        "mean": float(x.mean()),
        "ci_low": float(np.quantile(boots, a)),
        "ci_high": float(np.quantile(boots, 1 - a)),
        "n": int(x.size),
        "confidence": confidence,
    }


def paired_diff(a, b, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean of a - b over paired samples (same prompt and seed) with a bootstrap CI and the share of
    bootstrap means <= 0 (a one-sided bootstrap p-value for 'a is better than b')."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    out = mean_ci(d, confidence, n_boot, seed)
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(1)
    out["p_not_better"] = float((boots <= 0).mean())
    return out


def moving_average(y, window: int) -> np.ndarray:
    """Trailing moving average (window clipped at the start), for training curves."""
    y = np.asarray(y, dtype=np.float64)
    if window <= 1:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, y.size + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def ci_text(v: dict, digits: int = 3) -> str:
    """`mean [ci_low, ci_high]` of a `mean_ci` / `paired_diff` result (the tables', report's and claims' form)."""
    return f"{v['mean']:.{digits}f} [{v['ci_low']:.{digits}f}, {v['ci_high']:.{digits}f}]"
