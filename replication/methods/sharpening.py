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
     original noise at every step (`step_targets`: for a v-prediction model, the v of the same
     x0 and noise at each step's timestep), gradients flowing through the unrolled steps.

With `grad_pass: rerun` (default) steps 2-5 (`explore`) run without gradients: n*m UNet evaluations,
and step 6 re-runs only the chosen trajectory with gradients (m evaluations). The rollout is
deterministic, so this is exactly the loss and gradient of the released code, which keeps the graph
of all n trajectories and backpropagates one of them (tests/test_sharpening.py checks the equality):
at equal batch size it holds 1/n of the activations, and its backward pass covers one trajectory
instead of n. `grad_pass: keep` is the released structure: exploration with gradients kept and the
chosen rows' loss backpropagated, m fewer UNet calls per step, which wins where a step is bound by
kernel launches rather than FLOPs (one caption per step on a GPU); benchmarks/bench_sharpening_step.py
and bench_sdxl_step.py measure both. The argmax is per caption, so batches larger than one work (the
released code takes it over the whole batch, mixing captions).

RLHF variant (Algorithm 2, Eqs. 10-11), prompts only, for each prompt of a batch:
  1. generate x0 with the current model (DDIM, classifier-free guidance as at evaluation; the
     released code generates without guidance: gen_guidance = 1);
  2-5. `explore` as above; the best (w) and the worst (l) of the n trajectories by score;
  6. re-run w and l with gradients (2m evaluations) and the frozen reference on the same inputs;
     the loss (`rlhf_loss`) compares their epsilon-MSE along the trajectories, Diffusion-DPO style:
     `paper` puts the reward margin R(x^w) - R(x^l) inside the log-sigmoid (Eq. 11), `official`
     adds it outside (a constant: no effect on gradients) and reads the reference at the first
     step only, `dpo` is plain Diffusion-DPO on best/worst. The released code also re-noises n
     generated images (one per noise, each with the noise that generated it) where the paper
     re-noises one image n times; we follow the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .. import diffusion
from ..models import Cond, T2IModel
from ..sources import ImageTextSource, PromptSource
from .common import LoraSpec, UNetMethod, spec_fields


@dataclass
class SharpeningSpec:
    """The core both variants share (params.yaml: sft_sharpening.*, and rlhf_sharpening.* through RLHFSpec)."""

    n: int = 3  # trajectories (noise samples) per image (paper: 3)
    m: int = 3  # denoising steps per trajectory (paper: 3)
    infer_steps: int = 25  # rollout grid: stride 1000 // infer_steps timesteps (released code: 25, stride 40)
    aggregate: Literal["sum", "mean"] = "sum"  # trajectory score: paper Eq. 8 sums, the code averages; same argmax
    x0: Literal["tweedie", "ode"] = "tweedie"  # one-step x0 (released code) | the PF-ODE (paper, Eq. 6)
    ode_steps: int = 4  # DDIM steps of the PF-ODE when x0 = ode
    grad_pass: Literal["rerun", "keep"] = "rerun"  # how the chosen trajectories get gradients (`explore`)

    def __post_init__(self):
        if self.grad_pass not in ("rerun", "keep"):
            raise ValueError(f"grad_pass must be 'rerun' or 'keep', got {self.grad_pass!r}")
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
    x0: torch.Tensor  # (B, C, H, W) the clean latents that were re-noised

    def metrics(self) -> dict[str, float]:
        per_traj = self.step_rewards.nanmean(0).view_as(self.scores)  # mean step reward of each trajectory
        best = self.scores.argmax(1)
        rows = torch.arange(len(best), device=best.device)
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
    images = model.decode(traj.x0.flatten(0, 1)[flat].detach())
    r = reward(images, [prompts[i % n] for i in torch.nonzero(flat).flatten().tolist()])
    out = torch.full((m * n,), float("nan"), device=r.device, dtype=torch.float32)
    out[flat.to(r.device)] = r.float()
    return out.view(m, n)


def step_targets(scheduler, x0: torch.Tensor, eps: torch.Tensor, t_steps: torch.Tensor) -> torch.Tensor:
    """The regression target at every step of a trajectory, (m, B, C, H, W), for trajectories started from
    x_t = a_t x0 + s_t eps. For epsilon models it is the trajectory's noise eps at every step (the paper's target);
    a v-prediction (or sample) target depends on the timestep, so it is the same (x0, eps) written at each step's
    own t_k (t_steps: (m, B), as `Trajectory.t`), not at the start."""
    return torch.stack([diffusion.target_for(scheduler, x0, eps, tk) for tk in t_steps])


def explore(
    model: T2IModel, reward, x0: torch.Tensor, prompts: list[str], spec: SharpeningSpec, gen: torch.Generator
) -> Exploration:
    """Steps 2-5: noise each clean latent n times, roll out m steps, score every step and trajectory. The
    rollout keeps its graph when `spec.grad_pass` is keep (the caller then backpropagates chosen rows of
    `traj`); nothing else here carries gradients."""
    b, n = x0.shape[0], spec.n
    sched = model.scheduler
    dev = x0.device
    with torch.no_grad():
        t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=gen).repeat_interleave(n).to(dev)
        eps = torch.randn((b * n, *x0.shape[1:]), generator=gen).to(dev, x0.dtype)
        x_t = diffusion.add_noise(sched, x0.repeat_interleave(n, 0), eps, t)
        cond = model.encode_prompts(prompts).repeat_interleave(n)
    with torch.set_grad_enabled(spec.grad_pass == "keep" and torch.is_grad_enabled()):
        traj = diffusion.rollout(
            model.denoiser(cond),
            sched,
            x_t,
            t,
            spec.m,
            diffusion.stride(sched, spec.infer_steps),
            spec.x0,
            spec.ode_steps,
        )
    rep = [p for p in prompts for _ in range(n)]
    with torch.no_grad():
        step_r = score_steps(model, reward, traj, rep)
    total = step_r.nansum(0)
    if spec.aggregate == "mean":
        total = total / traj.valid.sum(0).clamp_min(1)
    return Exploration(t, eps, x_t, cond, traj, step_r, total.view(b, n), x0)


def with_gradients(model: T2IModel, spec: SharpeningSpec, ex: Exploration, rows: torch.Tensor) -> diffusion.Trajectory:
    """The trajectories `rows` of an exploration with gradients through every unrolled step: re-run (rerun) or
    the explored rows themselves, whose graph `explore` kept (keep). The rollout is deterministic, so both give
    the same outputs up to the rounding of a different batch size."""
    if spec.grad_pass == "keep":
        return ex.traj.rows(rows)
    sched = model.scheduler
    return diffusion.rollout(
        model.denoiser(ex.cond[rows]),
        sched,
        ex.x_t[rows],
        ex.t[rows],
        spec.m,
        diffusion.stride(sched, spec.infer_steps),
    )


class SFTSharpening(UNetMethod):
    name = "sft-sharpening"

    def __init__(
        self,
        model: T2IModel,
        reward,
        data: ImageTextSource,
        batch_size: int,
        spec: SharpeningSpec,
        fingerprint: dict | None = None,
        lora: LoraSpec | None = None,
    ):
        super().__init__(
            model, batch_size, {"spec": spec_fields(spec, SharpeningSpec), **(fingerprint or {})}, lora=lora
        )
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
        # Step 6: the chosen trajectories with gradients through every unrolled step.
        traj = with_gradients(model, spec, ex, chosen)
        target = step_targets(model.scheduler, x0, ex.eps[chosen], traj.t)
        mse = (traj.out.float() - target.float()).pow(2).mean(dim=(2, 3, 4))  # (m, B)
        valid = traj.valid.float()
        loss = ((mse * valid).sum(0) / valid.sum(0)).mean()
        return loss, {**ex.metrics(), "nfe": float(model.nfe.evals - nfe0)}


# ============================================================================= RLHF variant
RLHF_LOSSES = ("paper", "official", "dpo")


@dataclass
class RLHFSpec(SharpeningSpec):
    """What RLHF sharpening adds to the shared core (params.yaml: rlhf_sharpening.*); defaults follow the paper."""

    x0: Literal["tweedie", "ode"] = "ode"  # the paper's Eq. 6 (tweedie = the released code)
    loss: Literal["paper", "official", "dpo"] = "paper"  # Eq. 11 | the released code | Diffusion-DPO on best/worst
    beta: float = 2500.0  # NOT STATED in the paper; the released code's value for SDXL (see rlhf_loss)
    margin_scale: float = 1.0  # units of the reward margin R(x^w) - R(x^l) inside Eq. 11 (paper: 1)
    gen_steps: int = 25  # DDIM steps generating x0 with the current model (released code: 25)
    gen_guidance: float = 5.0  # CFG while generating (paper: as at evaluation; released code: 1, none)

    def __post_init__(self):
        super().__post_init__()
        if self.loss not in RLHF_LOSSES:
            raise ValueError(f"loss must be one of {', '.join(RLHF_LOSSES)}, got {self.loss!r}")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.n < 2:
            raise ValueError("RLHF sharpening compares the best and the worst trajectory: it needs n >= 2")


def masked_mean(v: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over the step axis (0) of the existing steps only."""
    w = valid.to(v.dtype)
    return (v * w).sum(0) / w.sum(0).clamp_min(1)


def rlhf_loss(
    variant: str,
    mse_w: torch.Tensor,
    mse_l: torch.Tensor,
    ref_w: torch.Tensor,
    ref_l: torch.Tensor,
    valid_w: torch.Tensor,
    valid_l: torch.Tensor,
    margin: torch.Tensor,
    beta: float,
):
    """The RLHF sharpening loss of best (w) vs worst (l) trajectories, per prompt, then averaged.

    mse_*: (m, B) per-step epsilon-MSE of the policy along each trajectory; ref_*: the frozen
    reference's, (m, B) (only row 0 is read by `official`); margin: (B,) R(x^w) - R(x^l).
    Diffusion-DPO replaces log p_theta(x)/p_ref(x) by mse_ref(x) - mse_theta(x), so
        z = beta * [(ref_w - mse_w) - (ref_l - mse_l)]
      paper    (Eq. 11):  -log sigmoid(z - margin), MSEs averaged over the trajectory's steps
      official (code):    -log sigmoid(z) + margin, policy averaged over steps, reference at the first step
      dpo:                -log sigmoid(z), both averaged over steps
    (Wallace et al. write -log sigmoid(-beta_W/2 * ...): our beta is their beta_W / 2, as in the code.)
    Returns (loss, z).
    """
    pol_w, pol_l = masked_mean(mse_w, valid_w), masked_mean(mse_l, valid_l)
    if variant == "official":
        r_w, r_l = ref_w[0], ref_l[0]
    else:
        r_w, r_l = masked_mean(ref_w, valid_w), masked_mean(ref_l, valid_l)
    z = beta * ((r_w - pol_w) - (r_l - pol_l))
    if variant == "paper":
        loss = -F.logsigmoid(z - margin)
    elif variant == "official":
        loss = -F.logsigmoid(z) + margin
    elif variant == "dpo":
        loss = -F.logsigmoid(z)
    else:
        raise ValueError(f"unknown RLHF loss {variant!r}; choose one of {', '.join(RLHF_LOSSES)}")
    return loss.mean(), z


class RLHFSharpening(UNetMethod):
    """Algorithm 2: prompts only; the reference is the frozen starting UNet (LoRA: adapters off)."""

    name = "rlhf-sharpening"

    def __init__(
        self,
        model: T2IModel,
        reward,
        prompts: PromptSource,
        batch_size: int,
        spec: RLHFSpec,
        lora: LoraSpec | None = None,
        fingerprint: dict | None = None,
    ):
        super().__init__(
            model, batch_size, {"spec": spec_fields(spec, RLHFSpec), **(fingerprint or {})}, lora=lora, reference=True
        )
        self.reward, self.prompts, self.spec = reward, prompts, spec

    def select(self, gen: torch.Generator) -> Exploration:
        """Steps 1-2: generate x0 with the current model (as it samples at evaluation), re-noise it n times,
        roll out and score the trajectories; the pair is the best and the worst of each prompt."""
        model, spec = self.model, self.spec
        prompts = self.prompts.batch(self.batch_size, gen)
        with torch.no_grad():
            noise = torch.randn((len(prompts), *model.latent_shape), generator=gen).to(self.device, model.dtype)
            x0 = diffusion.sample(
                model.denoiser(model.encode_prompts(prompts), spec.gen_guidance),
                model.scheduler,
                noise * model.scheduler.init_noise_sigma,
                spec.gen_steps,
            )
        return explore(model, self.reward, x0, prompts, spec, gen)

    def pair_loss(self, ex: Exploration):
        """Step 3: best (w) and worst (l) again with gradients through the unrolled steps, the frozen
        reference on the same inputs, and the chosen loss variant (`rlhf_loss`). Returns (loss, z, margin)."""
        model, spec, sched = self.model, self.spec, self.model.scheduler
        b, dev = ex.scores.shape[0], self.device
        rows = torch.arange(b, device=dev) * spec.n
        pick = torch.cat([rows + ex.scores.argmax(1).to(dev), rows + ex.scores.argmin(1).to(dev)])
        traj = with_gradients(model, spec, ex, pick)
        target = step_targets(sched, torch.cat([ex.x0, ex.x0]), ex.eps[pick], traj.t).float()
        mse = (traj.out.float() - target).pow(2).mean(dim=(2, 3, 4))  # (m, 2B)
        k = 1 if spec.loss == "official" else spec.m
        ref_fn = self.ref_denoiser(Cond.cat([ex.cond[pick]] * k))  # the first k steps in one batched call
        ref_out = ref_fn(traj.x[:k].detach().flatten(0, 1), traj.t[:k].flatten()).view(k, *traj.out.shape[1:])
        ref_mse = (ref_out.float() - target[:k]).pow(2).mean(dim=(2, 3, 4))  # (k, 2B)
        margin = spec.margin_scale * (ex.scores.max(1).values - ex.scores.min(1).values).to(dev).float()
        loss, z = rlhf_loss(
            spec.loss,
            mse[:, :b],
            mse[:, b:],
            ref_mse[:, :b],
            ref_mse[:, b:],
            traj.valid[:, :b],
            traj.valid[:, b:],
            margin,
            spec.beta,
        )
        return loss, z, margin

    def loss(self, step: int, gen: torch.Generator):
        mark = self.nfe_mark()
        ex = self.select(gen)
        loss, z, margin = self.pair_loss(ex)
        return loss, {
            **ex.metrics(),
            "reward_margin": margin.mean().item(),
            "dpo_logit": z.mean().item(),
            "nfe": self.nfe_since(mark),
        }
