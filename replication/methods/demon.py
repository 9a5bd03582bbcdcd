"""Demon (Yeh et al. 2024, "Training-free Diffusion Model Alignment with Sampling Demons").

At a stochastic denoising step x_t -> x_{t-1} = mean + std * z, a demon draws K noise candidates z_k,
estimates the clean image each would lead to, scores those with the verifier, and takes the step with
a combination of the candidates' noises weighted by their scores:

    tanh demon:       w_k = tanh((r_k - mean(r)) / tau)
    Boltzmann demon:  w_k = softmax(r / tau)_k
    z* = sum_k w_k z_k, rescaled to the norm sqrt(d) of a standard normal in d dimensions

(tau = None: the candidates' reward standard deviation, the reference code's "adaptive" tau; equal
rewards give equal weights). Here the stochastic step is DDIM with `eta` (1.0: DDPM's posterior
variance) instead of the paper's EDM SDE, and a candidate's clean estimate integrates the
probability-flow ODE from t-1 with `x0_steps` DDIM steps (1: the one-step Tweedie estimate).

Budget: the base cost (plain DDIM) plus K * x0_steps guided evaluations per demon step. K grows with
the budget (K >= 2; with less room, fewer demon steps, spread evenly over the trajectory; with none,
plain DDIM). The last step is never a demon step (its x_{t-1} is the image). Non-demon steps are
deterministic DDIM, as the base model samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from .. import diffusion
from .inference_time import InferenceSampler, initial_noise, seeded_normal, unit_norm_like


def demon_weights(r: torch.Tensor, kind: str = "tanh", tau: float | None = None) -> torch.Tensor:
    """Weights (B, K) of the K candidates' noises from their rewards r (B, K)."""
    t = r.std(1, keepdim=True) if tau is None else torch.full_like(r[:, :1], float(tau))
    flat = (t <= 1e-8) | ((r.max(1, keepdim=True).values - r.min(1, keepdim=True).values) <= 1e-8)  # no preference
    t = t.clamp_min(1e-8)
    if kind == "tanh":
        w = torch.tanh((r - r.mean(1, keepdim=True)) / t)
    elif kind == "boltzmann":
        w = torch.softmax((r - r.max(1, keepdim=True).values) / t, dim=1)
    else:
        raise ValueError(f"demon kind {kind!r} is not 'tanh' or 'boltzmann'")
    w = torch.where(flat, torch.ones_like(w), w)
    return torch.where(w.abs().sum(1, keepdim=True) > 0, w, torch.ones_like(w))


@dataclass
class DemonSpec:
    """Demon's options (params.yaml: nfe_sweep.demon): noise candidates per step weighted by their rewards."""

    kind: Literal["tanh", "boltzmann"] = "tanh"
    tau: float | None = None  # None: adaptive (the candidates' reward std)
    eta: float = 1.0  # stochasticity of the demon steps (1.0: DDPM's posterior variance)
    x0_steps: int = 4  # PF-ODE DDIM steps for each candidate's clean estimate (1: one-step Tweedie)

    def __post_init__(self):
        if self.kind not in ("tanh", "boltzmann"):
            raise ValueError(f"demon.kind must be 'tanh' or 'boltzmann', got {self.kind!r}")
        if self.tau is not None and self.tau <= 0:
            raise ValueError(f"demon.tau must be > 0 (or null for the adaptive tau), got {self.tau}")
        if self.eta <= 0 or self.x0_steps < 1:
            raise ValueError("demon needs eta > 0 (a stochastic step to steer) and x0_steps >= 1")


class Demon(InferenceSampler):
    name = "demon"

    def __init__(self, verifier, num_steps: int = 50, guidance_scale: float = 5.0, max_rows: int = 1024, **options):
        super().__init__(verifier, num_steps, guidance_scale, max_rows)
        self.spec = DemonSpec(**options)
        self.kind, self.tau, self.eta, self.x0_steps = self.spec.kind, self.spec.tau, self.spec.eta, self.spec.x0_steps

    def plan(self, budget: int) -> tuple[int, list[int]]:
        """(K candidates, demon step indices) that fit the budget."""
        extra = budget - self.base_cost
        unit = self.x0_steps * self.rows_per_eval  # one candidate's clean estimate
        slots = self.num_steps - 1  # steps that may be demon steps (not the last)
        if slots < 1 or extra < 2 * unit:
            return 0, []
        k = max(2, extra // (unit * slots))
        n = min(slots, extra // (unit * k))
        return int(k), sorted({int(i) for i in np.linspace(0, slots - 1, n).round()})

    def width(self, budget: int) -> int:
        return max(1, self.plan(budget)[0])

    def _run(self, model, cond, prompts, seeds, budget):
        k, steps = self.plan(budget)
        info = {"candidates": k, "demon_steps": len(steps), "kind": self.kind, "x0_steps": self.x0_steps}
        x = initial_noise(model, seeds)
        if not steps:
            x = self.plain(model, cond, x)
            return x, self.verifier(model, x, prompts), info
        eps_fn = model.denoiser(cond, self.guidance_scale)
        eps_k = model.denoiser(cond.repeat_interleave(k), self.guidance_scale)
        sched = model.scheduler
        prompts_k = [p for p in prompts for _ in range(k)]
        for i, tv, t_prev in diffusion.ddim_grid(sched, self.num_steps, x.device).steps(len(x)):
            out = eps_fn(x, tv)
            if i not in steps:
                x = diffusion.ddim_step(sched, out, tv, x, t_prev).prev
                continue
            st = diffusion.ddim_step(sched, out, tv, x, t_prev, eta=self.eta, noise=torch.zeros_like(x))
            std = st.std.view(-1, 1, 1, 1, 1)
            z = seeded_normal(seeds, (k, *x.shape[1:]), "demon", i, device=x.device, dtype=x.dtype)  # (B, K, ...)
            cand = (st.mean.unsqueeze(1) + std * z).flatten(0, 1)
            x0 = diffusion.predict_x0(
                eps_k,
                sched,
                cand,
                t_prev.repeat_interleave(k),
                "ode" if self.x0_steps > 1 else "tweedie",
                self.x0_steps,
            )
            r = self.verifier(model, x0, prompts_k).view(len(x), k)
            w = demon_weights(r, self.kind, self.tau)
            z_star = unit_norm_like((w.view(*w.shape, 1, 1, 1) * z).sum(1))
            x = st.mean + std.squeeze(1) * z_star
        return x, self.verifier(model, x, prompts), info
