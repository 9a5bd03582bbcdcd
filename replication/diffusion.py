"""The one place for sampling math: DDIM with per-sample timesteps, x0 prediction, rollouts, NFEs.

Everything here is a pure function of a diffusers scheduler's *configuration* (its
``alphas_cumprod``, ``final_alpha_cumprod``, ``prediction_type`` and clipping options) and of
tensors; no model is owned here. A denoiser is any callable ``eps_fn(x, t) -> model_output``
with ``t`` a LongTensor of one timestep per sample (``models.T2IModel.denoiser`` builds one,
with classifier-free guidance, and counts its network evaluations).

Why our own step: diffusers' ``DDIMScheduler.step`` takes one scalar timestep for the whole
batch. Diffusion-Sharpening rolls out trajectories that start at a different timestep per
sample, and the released code passes a vector there, which crashes. ``ddim_step`` below takes
a vector of timesteps and equals ``DDIMScheduler.step`` when all entries are equal (tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- NFE accounting
@dataclass
class NFECounter:
    """Network function evaluations: `calls` batched forwards, `evals` rows pushed through them.

    With classifier-free guidance one denoising step of one image costs 2 evaluations, so a
    50-step guided image costs 100 NFE, the paper's unit.
    """

    calls: int = 0
    evals: int = 0
    by_tag: dict = field(default_factory=dict)

    def add(self, rows: int, tag: str = "unet") -> None:
        self.calls += 1
        self.evals += rows
        self.by_tag[tag] = self.by_tag.get(tag, 0) + rows

    def per_image(self, n_images: int) -> float:
        return self.evals / max(1, n_images)

    def reset(self) -> None:
        self.calls, self.evals, self.by_tag = 0, 0, {}


# ----------------------------------------------------------------------------- schedule lookups
def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def alpha_bar(scheduler, t: torch.Tensor) -> torch.Tensor:
    """alpha-bar at integer timesteps t (LongTensor); t < 0 gives the scheduler's final alpha-bar."""
    ac = scheduler.alphas_cumprod.to(t.device)
    final = torch.as_tensor(scheduler.final_alpha_cumprod, dtype=ac.dtype, device=t.device)
    return torch.where(t >= 0, ac[t.clamp(min=0)], final)


def _as_vector(t, n: int, device) -> torch.Tensor:
    t = torch.as_tensor(t, device=device).long()
    return t.expand(n).clone() if t.ndim == 0 else t


def add_noise(scheduler, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Forward process x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps, one timestep per sample."""
    a = _bcast(alpha_bar(scheduler, _as_vector(t, x0.shape[0], x0.device)), x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


def to_x0_eps(scheduler, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
    """(x0, eps) implied by a model output of the scheduler's prediction type (clipping applied to x0)."""
    cfg = scheduler.config
    a = _bcast(alpha_bar(scheduler, t), x_t)
    b = 1 - a
    if cfg.prediction_type == "epsilon":
        x0, eps = (x_t - b.sqrt() * model_output) / a.sqrt(), model_output
    elif cfg.prediction_type == "sample":
        x0 = model_output
        eps = (x_t - a.sqrt() * x0) / b.sqrt()
    elif cfg.prediction_type == "v_prediction":
        x0 = a.sqrt() * x_t - b.sqrt() * model_output
        eps = a.sqrt() * model_output + b.sqrt() * x_t
    else:
        raise ValueError(f"prediction_type {cfg.prediction_type!r} is not one of epsilon, sample, v_prediction")
    if getattr(cfg, "thresholding", False):
        raise NotImplementedError("dynamic thresholding is not supported; set thresholding=False in the scheduler")
    if getattr(cfg, "clip_sample", False):
        x0 = x0.clamp(-cfg.clip_sample_range, cfg.clip_sample_range)
    return x0, eps


def target_for(scheduler, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The regression target of the network for the scheduler's prediction type."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return eps
    a = _bcast(alpha_bar(scheduler, t), x0)
    if kind == "v_prediction":
        return a.sqrt() * eps - (1 - a).sqrt() * x0
    if kind == "sample":
        return x0
    raise ValueError(f"prediction_type {kind!r} is not one of epsilon, sample, v_prediction")


# ----------------------------------------------------------------------------- one DDIM step
@dataclass
class Step:
    prev: torch.Tensor  # x at t_prev
    x0: torch.Tensor  # one-step (Tweedie) prediction of the clean sample
    eps: torch.Tensor
    std: torch.Tensor  # per-sample standard deviation of the added noise (0 when eta = 0)
    mean: torch.Tensor  # prev before the noise was added


def ddim_step(
    scheduler,
    model_output: torch.Tensor,
    t,
    x_t: torch.Tensor,
    t_prev,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Step:
    """DDIM update from t to t_prev (both per sample; t_prev < 0 means 'to the end').

    Mirrors ``diffusers.DDIMScheduler.step`` (use_clipped_model_output=False) term by term.
    """
    n = x_t.shape[0]
    t = _as_vector(t, n, x_t.device)
    t_prev = _as_vector(t_prev, n, x_t.device)
    a_t = _bcast(alpha_bar(scheduler, t), x_t)
    a_prev = _bcast(alpha_bar(scheduler, t_prev), x_t)
    x0, eps = to_x0_eps(scheduler, model_output, x_t, t)
    variance = ((1 - a_prev) / (1 - a_t)) * (1 - a_t / a_prev)
    std = eta * variance.sqrt()
    mean = a_prev.sqrt() * x0 + (1 - a_prev - std**2).sqrt() * eps
    prev = mean
    if eta > 0:
        if noise is None:
            noise = (
                torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
                if generator is None or generator.device == x_t.device
                else torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype).to(x_t.device)
            )
        prev = mean + std * noise
    return Step(prev=prev, x0=x0, eps=eps, std=std.flatten(), mean=mean)


def inference_timesteps(scheduler, num_steps: int) -> torch.Tensor:
    """The scheduler's own timestep grid for `num_steps` (respects steps_offset and spacing)."""
    scheduler.set_timesteps(num_steps)
    return scheduler.timesteps.clone().long()


def stride(scheduler, num_steps: int) -> int:
    """Timesteps between two inference steps: diffusers' `num_train_timesteps // num_inference_steps`."""
    return scheduler.config.num_train_timesteps // num_steps


# ----------------------------------------------------------------------------- x0 prediction
def predict_x0(
    eps_fn: EpsFn,
    scheduler,
    x_t: torch.Tensor,
    t: torch.Tensor,
    mode: str = "tweedie",
    ode_steps: int = 4,
    model_output: torch.Tensor | None = None,
) -> torch.Tensor:
    """Clean-sample estimate from x_t.

    - ``tweedie``: one network evaluation, x0 = (x_t - sqrt(1-a) eps) / sqrt(a) (the released code).
    - ``ode``: integrate the probability-flow ODE from t to 0 (the paper's Eq. 6) with `ode_steps`
      deterministic DDIM steps (DDIM with eta = 0 is a first-order solver of that ODE) on an even
      per-sample grid; the last step's x0 is returned. `ode_steps = 1` equals ``tweedie``.
    A precomputed `model_output` at (x_t, t) saves the first evaluation.
    """
    if mode not in ("tweedie", "ode"):
        raise ValueError(f"x0 mode {mode!r} is not 'tweedie' or 'ode'")
    out = eps_fn(x_t, t) if model_output is None else model_output
    if mode == "tweedie" or ode_steps <= 1:
        return to_x0_eps(scheduler, out, x_t, t)[0]
    x = x_t
    for j in range(ode_steps):
        t_j = (t * (ode_steps - j)) // ode_steps
        t_next = (t * (ode_steps - j - 1)) // ode_steps if j + 1 < ode_steps else torch.full_like(t, -1)
        if j > 0:
            out = eps_fn(x, t_j)
        step = ddim_step(scheduler, out, t_j, x, t_next)
        x = step.prev
    return step.x0


# ----------------------------------------------------------------------------- trajectories
@dataclass
class Trajectory:
    """m DDIM steps from per-sample start times; tensors are stacked as (m, N, ...)."""

    t: torch.Tensor  # (m, N) timestep of each step (clamped at 0 where invalid)
    valid: torch.Tensor  # (m, N) bool: step k exists for sample i (k < min(m, 1 + t_i // stride))
    x: torch.Tensor  # (m, N, C, H, W) input latents of each step
    x0: torch.Tensor  # (m, N, C, H, W) clean estimate at each step (what the reward sees)
    out: torch.Tensor  # (m, N, C, H, W) model outputs

    def rows(self, idx: torch.Tensor) -> Trajectory:
        """The trajectories `idx` (graphs, where kept, stay attached)."""
        return Trajectory(self.t[:, idx], self.valid[:, idx], self.x[:, idx], self.x0[:, idx], self.out[:, idx])


def rollout(
    eps_fn: EpsFn,
    scheduler,
    x_t: torch.Tensor,
    t: torch.Tensor,
    m: int,
    step_stride: int,
    x0_mode: str = "tweedie",
    ode_steps: int = 4,
) -> Trajectory:
    """Roll out m deterministic DDIM steps t, t - s, t - 2s, ... from x_t.

    A sample whose start time allows fewer steps (the released code's cap m <= 1 + t // s) stops
    early: its later steps are marked invalid and its latent is carried unchanged. Gradients flow
    through the unrolled steps when the caller has grad enabled (not through the extra UNet calls of a PF-ODE
    clean estimate: those are only ever scored).
    """
    ts, valids, xs, x0s, outs = [], [], [], [], []
    x = x_t
    for k in range(m):
        tk = t - k * step_stride
        valid = tk >= 0
        tk = tk.clamp(min=0)
        out = eps_fn(x, tk)
        step = ddim_step(scheduler, out, tk, x, tk - step_stride)
        if x0_mode == "tweedie":
            x0 = step.x0
        else:
            with torch.no_grad():
                x0 = predict_x0(eps_fn, scheduler, x, tk, x0_mode, ode_steps, out)
        ts.append(tk), valids.append(valid), xs.append(x), x0s.append(x0), outs.append(out)
        x = torch.where(_bcast(valid, x).bool(), step.prev, x)
    return Trajectory(torch.stack(ts), torch.stack(valids), torch.stack(xs), torch.stack(x0s), torch.stack(outs))


@dataclass
class Grid:
    """The DDIM steps of a scheduler's inference grid: `timesteps` (T,), first step first, `stride` apart."""

    timesteps: torch.Tensor
    stride: int

    def __len__(self) -> int:
        return len(self.timesteps)

    def steps(self, batch: int):
        """(i, t, t_prev) for every step: t and t_prev are vectors of `batch` timesteps (one per sample), on the
        grid's device; t_prev < 0 at the last step. The one loop every sampler runs over."""
        for i, t in enumerate(self.timesteps):
            t = t.expand(batch)
            yield i, t, t - self.stride


def ddim_grid(scheduler, num_steps: int, device=None) -> Grid:
    """The scheduler's grid for `num_steps` DDIM steps, its timesteps on `device`."""
    ts = inference_timesteps(scheduler, num_steps)
    return Grid(ts if device is None else ts.to(device), stride(scheduler, num_steps))


def sample(
    eps_fn: EpsFn,
    scheduler,
    latents: torch.Tensor,
    num_steps: int,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DDIM sampling on the scheduler's grid from `latents` (already scaled by init_noise_sigma)."""
    x = latents
    for _, t, t_prev in ddim_grid(scheduler, num_steps, x.device).steps(len(x)):
        x = ddim_step(scheduler, eps_fn(x, t), t, x, t_prev, eta=eta, generator=generator).prev
    return x


# ----------------------------------------------------------------------------- stochastic DDIM: log-probabilities
# DDPO and D3PO treat DDIM sampling with eta > 0 as a policy: each step x_t -> x_prev is a Gaussian
# N(mean_theta(x_t, t), std_t^2 I) whose mean comes from the network (ddim_step's `mean`) and whose
# std_t = eta * sqrt(variance_t) is fixed by the schedule.
def ddim_log_prob(step: Step, x_prev: torch.Tensor) -> torch.Tensor:
    """Per-sample log N(x_prev; step.mean, step.std^2 I), averaged over latent elements (DDPO's
    convention: a mean, not a sum, so the scale does not depend on the latent size)."""
    std = _bcast(step.std, x_prev)
    if not bool((std > 0).all()):
        raise ValueError("log-probabilities need a stochastic step: use eta > 0 (DDPO/D3PO sample with eta = 1)")
    lp = -((x_prev.detach() - step.mean) ** 2) / (2 * std**2) - std.log() - 0.5 * math.log(2 * math.pi)
    return lp.flatten(1).mean(1)


def step_log_prob(
    eps_fn: EpsFn, scheduler, x_t: torch.Tensor, t: torch.Tensor, x_prev: torch.Tensor, step_stride: int, eta: float
) -> torch.Tensor:
    """Log-probability under eps_fn of the recorded transitions x_t -> x_prev (one timestep per row),
    one batched network call; differentiable when grad is enabled."""
    out = eps_fn(x_t, t)
    step = ddim_step(scheduler, out, t, x_t, t - step_stride, eta=eta, noise=torch.zeros_like(x_t))
    return ddim_log_prob(step, x_prev)


@dataclass
class SampledTrajectory:
    """A stochastic DDIM sample with every latent kept: the data DDPO and D3PO train on."""

    timesteps: torch.Tensor  # (T,) the scheduler's grid, first step first
    latents: torch.Tensor  # (T + 1, N, C, H, W): x_T, ..., x_0
    log_probs: torch.Tensor  # (T, N) log-probability of each transition under the sampling policy


@torch.no_grad()
def sample_with_log_probs(
    eps_fn: EpsFn,
    scheduler,
    latents: torch.Tensor,
    num_steps: int,
    eta: float,
    generator: torch.Generator | None = None,
) -> SampledTrajectory:
    """DDIM sampling with eta > 0 that records each latent and each transition's log-probability."""
    grid = ddim_grid(scheduler, num_steps, latents.device)
    xs, lps = [latents], []
    x = latents
    for _, t, t_prev in grid.steps(len(x)):
        step = ddim_step(scheduler, eps_fn(x, t), t, x, t_prev, eta=eta, generator=generator)
        lps.append(ddim_log_prob(step, step.prev))
        x = step.prev
        xs.append(x)
    return SampledTrajectory(grid.timesteps, torch.stack(xs), torch.stack(lps))
