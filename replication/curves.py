"""Training-curve measurements for Fig. 4's claim that SFT Diffusion-Sharpening converges faster, more smoothly
and to a lower loss than standard fine-tuning (the paper: 500-1000 vs 1000-1500 steps).

For one run's per-step loss:
* final level: the mean over the last `final_fraction` of the steps, with a bootstrap CI over those steps;
* convergence step: the first step at which the moving average comes within `tolerance` (relative) of the
  final level (a curve that only gets there at its end has not converged within the run);
* roughness: the step-to-step noise, std(loss[t+1] - loss[t]) / sqrt(2) (a slow trend adds next to nothing),
  with a bootstrap CI over the steps.
Two runs are compared by the differences of these, with CIs from independent bootstraps of each run (their
batches are not paired). Seeds add nothing here: with one training seed the CIs are over steps only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .stats import moving_average


@dataclass
class ConvergenceParams:
    """params.yaml: fig4."""

    window: int = 20  # moving-average window (steps)
    tolerance: float = 0.1  # converged: the moving average within this relative distance of the final level
    final_fraction: float = 0.1  # the final level: mean of this share of the last steps
    confidence: float = 0.95
    bootstrap: int = 2000
    seed: int = 0

    def __post_init__(self):
        if self.window < 1 or not 0 < self.final_fraction <= 1 or self.tolerance <= 0:
            raise ValueError("fig4: window >= 1, 0 < final_fraction <= 1 and tolerance > 0 are required")


def _ci(boots: np.ndarray, point: float, confidence: float, n: int) -> dict:
    a = (1 - confidence) / 2
    return {
        "mean": float(point),
        "ci_low": float(np.quantile(boots, a)),
        "ci_high": float(np.quantile(boots, 1 - a)),
        "n": int(n),
        "confidence": confidence,
    }


def _tail(loss: np.ndarray, p: ConvergenceParams) -> np.ndarray:
    return loss[-max(1, int(round(p.final_fraction * loss.size))) :]


def measure(loss, p: ConvergenceParams, seed_offset: int = 0) -> dict:
    """Final level, convergence step and roughness of one run's per-step losses."""
    loss = np.asarray(loss, dtype=np.float64)
    if loss.size < 2 or not np.isfinite(loss).all():
        raise ValueError(f"a loss curve needs >= 2 finite values, got {loss.size} (NaN or inf in the log?)")
    rng = np.random.default_rng(p.seed + seed_offset)  # runs compared are resampled independently
    tail = _tail(loss, p)
    final = float(tail.mean())
    ma = moving_average(loss, p.window)
    close = np.abs(ma - final) <= p.tolerance * abs(final)
    step = int(np.argmax(close)) + 1 if close.any() else None
    jumps = np.diff(loss) / np.sqrt(2)
    boot_tail = tail[rng.integers(0, tail.size, (p.bootstrap, tail.size))].mean(1)
    boot_rough = jumps[rng.integers(0, jumps.size, (p.bootstrap, jumps.size))].std(1)
    return {
        "steps": int(loss.size),
        "final": _ci(boot_tail, final, p.confidence, tail.size),
        "convergence_step": step,
        "roughness": _ci(boot_rough, float(jumps.std()), p.confidence, jumps.size),
        "_boot": {"final": boot_tail, "roughness": boot_rough},
    }


def compare(a_loss, b_loss, p: ConvergenceParams) -> dict:
    """Run a against run b: each one's measurements and the differences a - b with CIs."""
    a, b = measure(a_loss, p), measure(b_loss, p, seed_offset=1)
    out = {"a": a, "b": b}
    for key in ("final", "roughness"):
        boots = a["_boot"][key] - b["_boot"][key]
        out[f"{key}_diff"] = _ci(boots, a[key]["mean"] - b[key]["mean"], p.confidence, min(a[key]["n"], b[key]["n"]))
    for side in (a, b):
        del side["_boot"]
    return out


__all__ = ["ConvergenceParams", "measure", "compare"]
