"""Fig. 4's convergence measurements (replication/curves.py) and the claims they decide."""

from __future__ import annotations

import json

import numpy as np
import pytest

from replication import curves
from replication.claims import claims


def _curve(start, end, tau, n=400, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    s = np.arange(n)
    return end + (start - end) * np.exp(-s / tau) + rng.normal(0, noise, n)


def test_measure_finds_the_step_a_decaying_curve_settles():
    p = curves.ConvergenceParams(window=10, tolerance=0.1, final_fraction=0.1, bootstrap=500)
    m = curves.measure(_curve(1.0, 0.2, tau=40, noise=0.01), p)
    # the moving average lags its curve by about half a window; 0.8 exp(-s/40) = 0.02 at s = 148
    assert 145 <= m["convergence_step"] <= 165
    assert m["final"]["ci_low"] < 0.2 < m["final"]["ci_high"]
    assert m["roughness"]["mean"] == pytest.approx(0.01, rel=0.15)  # the noise, hardly the trend


def test_compare_tells_faster_smoother_lower_from_the_opposite():
    p = curves.ConvergenceParams(window=10, bootstrap=500)
    fast = _curve(1.0, 0.20, tau=20, noise=0.005, seed=1)
    slow = _curve(1.0, 0.25, tau=80, noise=0.02, seed=2)
    r = curves.compare(fast, slow, p)
    assert r["a"]["convergence_step"] < r["b"]["convergence_step"]
    assert r["final_diff"]["ci_high"] < 0 and r["roughness_diff"]["ci_high"] < 0
    # the two runs are resampled independently: the difference's CI is wider than either run's own
    width = r["final_diff"]["ci_high"] - r["final_diff"]["ci_low"]
    assert width > r["a"]["final"]["ci_high"] - r["a"]["final"]["ci_low"]


def test_nan_in_a_log_is_refused():
    with pytest.raises(ValueError, match="NaN"):
        curves.measure([0.1, float("nan"), 0.1], curves.ConvergenceParams())


def test_fig4_claims_follow_the_measurements(tmp_path):
    p = curves.ConvergenceParams(window=10, bootstrap=500)
    r = curves.compare(_curve(1.0, 0.20, 20, noise=0.005, seed=1), _curve(1.0, 0.25, 80, noise=0.02, seed=2), p)
    out = {
        "runs": {"sft_sharpening": r["a"], "standard_finetune": r["b"]},
        "sft_sharpening - standard_finetune": {"final": r["final_diff"], "roughness": r["roughness_diff"]},
        "settings": {"window": 10, "tolerance": 0.1, "final_fraction": 0.1, "confidence": 0.95},
    }
    (tmp_path / "fig4.json").write_text(json.dumps(out))
    got = {c.id: c.verdict for c in claims(tmp_path)}
    assert got == {"fig4/convergence_step": "holds", "fig4/final": "holds", "fig4/roughness": "holds"}
    # swapped runs: every part fails
    out["runs"] = {"sft_sharpening": r["b"], "standard_finetune": r["a"]}
    out["sft_sharpening - standard_finetune"] = {
        k: {**v, "mean": -v["mean"], "ci_low": -v["ci_high"], "ci_high": -v["ci_low"]}
        for k, v in out["sft_sharpening - standard_finetune"].items()
    }
    (tmp_path / "fig4.json").write_text(json.dumps(out))
    assert set({c.id: c.verdict for c in claims(tmp_path)}.values()) == {"does not hold"}
