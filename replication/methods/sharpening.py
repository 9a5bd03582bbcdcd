"""Diffusion-Sharpening (Tian et al., arXiv 2502.12146): move trajectory search into training.

SFT variant (Algorithm 1, Eq. 9), for each (image, caption) of a batch:
  1. encode the image to a clean latent x0;
  2. draw n noises and one timestep t; make n noisy latents x_t^i;
  3. from each, roll out m deterministic DDIM steps t, t-s, t-2s, ... (s = 1000 // 25 = 40 as in
     the released code; a sample with t < (m-1)s takes only 1 + t // s steps);
  4. at every step predict the clean sample (one-step Tweedie as the code, or the probability-
     flow ODE of Eq. 6) and score it with the reward;
  5. trajectory score = sum (paper, Eq. 8) or mean (code) of its step rewards; the best of the
     n trajectories of each caption is picked by a hard argmax;
  6. loss = epsilon-MSE averaged over the best trajectory's steps, target = that trajectory's
     original noise at every step, gradients flowing through the unrolled steps.

Steps 2-5 (`explore`) run without gradients: n*m UNet evaluations. Step 6 re-runs only the
chosen trajectory with gradients (m evaluations). The rollout is deterministic, so this is
exactly the loss and gradient of the released code, which keeps the graph of all n trajectories
and backpropagates one of them (tests/test_sharpening.py checks the equality): at equal batch
size it holds 1/n of the activations, and its backward pass covers one trajectory instead of n
(benchmarks/bench_sharpening_step.py: about 3x faster per step at batch 8 on a CPU). The argmax
is per caption, so batches larger than one work (the released code takes it over the whole
batch, mixing captions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import diffusion
from ..models import Cond, T2IModel
from .common import ImageTextSource, UNetMethod


@dataclass
class SharpeningSpec:
    """Hyperparameters shared by SFT and RLHF sharpening (params.yaml: sft_sharpening.*)."""

    n: int = 3
    m: int = 3
    infer_steps: int = 25
    aggregate: str = "sum"  # "sum" (paper) | "mean" (released code); same argmax, different scale
    x0: str = "tweedie"  # "tweedie" (released code) | "ode" (paper, Eq. 6)
    ode_steps: int = 4

    def __post_init__(self):
        if self.n < 1 or self.m < 1:
            raise ValueError(f"sharpening needs n >= 1 and m >= 1, got n={self.n}, m={self.m}")
        if self.aggregate not in ("sum", "mean"):
            raise ValueError(f"aggregate must be 'sum' or 'mean', got {self.aggregate!r}")
        if self.x0 not in ("tweedie", "ode"):
            raise ValueError(f"x0 must be 'tweedie' or 'ode', got {self.x0!r}")


@dataclass
class Exploration:
    """n scored trajectories per prompt; rows are prompt-major (row b*n + i is prompt b, noise i)."""

    t: torch.Tensor  # (B*n,) start timesteps
    eps: torch.Tensor  # (B*n, C, H, W) the noises
    x_t: torch.Tensor  # (B*n, C, H, W) noisy latents the trajectories start from
    cond: Cond  # (B*n) conditioning
    traj: diffusion.Trajectory
    step_rewards: torch.Tensor  # (m, B*n), NaN where a step does not exist
    scores: torch.Tensor  # (B, n) trajectory scores (sum or mean over steps)

    def metrics(self) -> dict[str, float]:
        per_traj = self.step_rewards.nanmean(0).view_as(self.scores)  # mean step reward of each trajectory
        best = self.scores.argmax(1)
        rows = torch.arange(len(best))
        return {
            "reward_mean": per_traj.mean().item(),
            "reward_std": per_traj.std(unbiased=False).item(),
            "reward_std_within": per_traj.std(1, unbiased=False).mean().item(),
            "reward_best": per_traj[rows, best].mean().item(),
            "reward_worst": per_traj[rows, self.scores.argmin(1)].mean().item(),
        }


def score_steps(model: T2IModel, reward, traj: diffusion.Trajectory, prompts: list[str]) -> torch.Tensor:
    """Reward of every existing step's clean estimate, decoded and scored in one batch."""
    m, n = traj.valid.shape
    flat = traj.valid.flatten()
    images = model.decode(traj.x0.flatten(0, 1)[flat])
    r = reward(images, [prompts[i % n] for i in torch.nonzero(flat).flatten().tolist()])
    out = torch.full((m * n,), float("nan"), device=r.device, dtype=torch.float32)
    out[flat.to(r.device)] = r.float()
    return out.view(m, n)


@torch.no_grad()
def explore(model: T2IModel, reward, x0: torch.Tensor, prompts: list[str], spec: SharpeningSpec,
            gen: torch.Generator) -> Exploration:
    """Steps 2-5: noise each clean latent n times, roll out m steps, score every step and trajectory."""
    b, n = x0.shape[0], spec.n
    sched = model.scheduler
    dev = x0.device
    t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=gen).repeat_interleave(n).to(dev)
    eps = torch.randn((b * n, *x0.shape[1:]), generator=gen).to(dev, x0.dtype)
    x_t = diffusion.add_noise(sched, x0.repeat_interleave(n, 0), eps, t)
    cond = model.encode_prompts(prompts).repeat_interleave(n)
    traj = diffusion.rollout(model.denoiser(cond), sched, x_t, t, spec.m, diffusion.stride(sched, spec.infer_steps),
                             spec.x0, spec.ode_steps)
    rep = [p for p in prompts for _ in range(n)]
    step_r = score_steps(model, reward, traj, rep)
    total = step_r.nansum(0)
    if spec.aggregate == "mean":
        total = total / traj.valid.sum(0).clamp_min(1)
    return Exploration(t, eps, x_t, cond, traj, step_r, total.view(b, n))


class SFTSharpening(UNetMethod):
    name = "sft-sharpening"

    def __init__(self, model: T2IModel, reward, data: ImageTextSource, batch_size: int, spec: SharpeningSpec,
                 fingerprint: dict | None = None):
        super().__init__(model, batch_size, {"spec": vars(spec), **(fingerprint or {})})
        self.reward, self.data, self.spec = reward, data, spec

    def loss(self, step: int, gen: torch.Generator):
        model, spec = self.model, self.spec
        nfe0 = model.nfe.evals
        images, prompts = self.data.batch(self.batch_size, gen, self.device)
        with torch.no_grad():
            x0 = model.encode(images, gen)
        ex = explore(model, self.reward, x0, prompts, spec, gen)
        b = x0.shape[0]
        chosen = torch.arange(b, device=x0.device) * spec.n + ex.scores.argmax(1).to(x0.device)
        # Step 6: the chosen trajectories again, now with gradients through every unrolled step.
        traj = diffusion.rollout(model.denoiser(ex.cond[chosen]), model.scheduler, ex.x_t[chosen], ex.t[chosen],
                                 spec.m, diffusion.stride(model.scheduler, spec.infer_steps))
        target = diffusion.target_for(model.scheduler, x0, ex.eps[chosen], ex.t[chosen])
        mse = (traj.out.float() - target.float()[None]).pow(2).mean(dim=(2, 3, 4))  # (m, B)
        valid = traj.valid.float()
        loss = ((mse * valid).sum(0) / valid.sum(0)).mean()
        return loss, {**ex.metrics(), "nfe": float(model.nfe.evals - nfe0)}
