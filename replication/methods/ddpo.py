"""DDPO (Black et al., 2023): PPO on the denoising chain, DDPO_IS with per-prompt advantages.

Every `updates_per_sample` optimiser steps form a round (the paper's epoch):
  1. sample k images for each of G/k prompts with the current model: stochastic DDIM (eta > 0,
     classifier-free guidance), keeping every latent x_T..x_0 and the log-probability of every
     transition under the sampling policy (`diffusion.sample_with_log_probs`);
  2. reward the final images; advantage = reward normalised among the k images of its prompt,
     clipped to +-adv_clip;
  3. each optimiser step of the round takes its share (batch_size trajectories) of a shuffled order
     and, on a random `timestep_fraction` of each trajectory's steps, the clipped surrogate
        loss = mean_t max(-A * ratio_t, -A * clip(ratio_t, 1 - clip_range, 1 + clip_range)),
        ratio_t = p_theta(x_{t-1} | x_t) / p_old(x_{t-1} | x_t),
     all timesteps in one batched network call (DDPO accumulates gradients over them; same sum).
The first step of a round is on-policy (ratio 1, no clipping); later steps reuse the round's samples,
where the ratio leaves 1 and the clipping acts. The round's samples are method state, checkpointed
with the model (`state_dict`), so a run killed mid-round resumes exactly.

Differences from ddpo-pytorch: advantages are normalised within the round's k images of a prompt
(it keeps a per-prompt history of past rewards, falling back to the batch statistics until 16 are
seen); the per-element mean log-probability convention is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import diffusion
from ..models import T2IModel
from ..sources import PromptSource
from .common import LoraSpec, SampledRounds, UNetMethod, spec_fields


@dataclass
class DDPOSpec:
    """DDPO's settings (params.yaml: ddpo.*)."""

    sample_steps: int = 20
    eta: float = 1.0
    guidance: float = 5.0
    images_per_prompt: int = 4  # k: advantages are normalised among these
    updates_per_sample: int = 2  # optimiser steps per round of sampling
    clip_range: float = 1e-4  # ddpo-pytorch's default
    adv_clip: float = 5.0
    timestep_fraction: float = 1.0

    def __post_init__(self):
        if self.eta <= 0:
            raise ValueError("DDPO needs a stochastic sampler: eta > 0 (the paper uses 1.0)")
        if self.images_per_prompt < 2:
            raise ValueError("per-prompt advantage normalisation needs images_per_prompt >= 2")
        if self.updates_per_sample < 1 or not 0 < self.timestep_fraction <= 1:
            raise ValueError("updates_per_sample must be >= 1 and timestep_fraction in (0, 1]")


def clipped_surrogate(new_lp: torch.Tensor, old_lp: torch.Tensor, adv: torch.Tensor, clip_range: float):
    """PPO's clipped objective as a loss (to minimise), and the share of clipped terms."""
    ratio = torch.exp(new_lp - old_lp)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1 - clip_range, 1 + clip_range)
    return torch.maximum(unclipped, clipped).mean(), ((ratio - 1).abs() > clip_range).float().mean()


def per_prompt_advantages(rewards: torch.Tensor, k: int, clip: float) -> torch.Tensor:
    """(r - mean) / std within each consecutive group of k rewards (one prompt's images), clipped."""
    r = rewards.float().view(-1, k)
    adv = (r - r.mean(1, keepdim=True)) / (r.std(1, unbiased=False, keepdim=True) + 1e-6)
    return adv.flatten().clamp(-clip, clip)


def pick_timesteps(b: int, steps: int, fraction: float, gen: torch.Generator) -> torch.Tensor:
    """(b, n) random distinct step indices per trajectory (n = round(fraction * steps), at least 1)."""
    n = max(1, round(fraction * steps))
    return torch.rand((b, steps), generator=gen).argsort(1)[:, :n]  # host: CPU generator; callers move the indices


class DDPO(SampledRounds, UNetMethod):
    name = "ddpo"

    def __init__(
        self,
        model: T2IModel,
        reward,
        prompts: PromptSource,
        batch_size: int,
        spec: DDPOSpec,
        lora: LoraSpec | None = None,
        fingerprint: dict | None = None,
    ):
        self.group = batch_size * spec.updates_per_sample
        if self.group % spec.images_per_prompt:
            raise ValueError(
                f"ddpo: batch_size x updates_per_sample = {self.group} trajectories per round must be a "
                f"multiple of images_per_prompt = {spec.images_per_prompt}"
            )
        super().__init__(model, batch_size, {"spec": spec_fields(spec, DDPOSpec), **(fingerprint or {})}, lora=lora)
        self.reward, self.prompts, self.spec = reward, prompts, spec

    @torch.no_grad()
    def _sample(self, gen: torch.Generator) -> dict:
        model, spec, k = self.model, self.spec, self.spec.images_per_prompt
        prompts = [p for p in self.prompts.batch(self.group // k, gen) for _ in range(k)]
        x_T = torch.randn((self.group, *model.latent_shape), generator=gen).to(self.device, model.dtype)
        traj = diffusion.sample_with_log_probs(
            model.denoiser(model.encode_prompts(prompts), spec.guidance),
            model.scheduler,
            x_T * model.scheduler.init_noise_sigma,
            spec.sample_steps,
            spec.eta,
            gen,
        )
        rewards = self.reward(model.decode(traj.latents[-1]), prompts).float()
        return {
            "latents": traj.latents,
            "log_probs": traj.log_probs,
            "timesteps": traj.timesteps,
            "rewards": rewards,
            "adv": per_prompt_advantages(rewards, k, spec.adv_clip).to(self.device),
            "order": torch.randperm(self.group, generator=gen).to(self.device),
            "prompts": prompts,
        }

    def loss(self, step: int, gen: torch.Generator):
        model, spec = self.model, self.spec
        mark = self.nfe_mark()
        buf, idx = self.round_rows(step, gen)
        steps = len(buf["timesteps"])
        ts = pick_timesteps(len(idx), steps, spec.timestep_fraction, gen).to(self.device)  # (b, n)
        col = idx[:, None].expand_as(ts)
        x_t, x_prev = buf["latents"][ts, col], buf["latents"][ts + 1, col]  # (b, n, C, H, W)
        cond = model.encode_prompts([buf["prompts"][i] for i in idx.tolist()]).repeat_interleave(ts.shape[1])
        new_lp = diffusion.step_log_prob(
            model.denoiser(cond, spec.guidance),
            model.scheduler,
            x_t.flatten(0, 1),
            buf["timesteps"][ts].flatten(),
            x_prev.flatten(0, 1),
            diffusion.stride(model.scheduler, spec.sample_steps),
            spec.eta,
        )
        old_lp = buf["log_probs"][ts, col].flatten()
        adv = buf["adv"][idx].repeat_interleave(ts.shape[1])
        loss, clip_frac = clipped_surrogate(new_lp, old_lp, adv, spec.clip_range)
        r = buf["rewards"]
        return loss, {
            "reward_mean": r.mean().item(),
            "reward_std": r.std(unbiased=False).item(),
            "clip_frac": clip_frac.item(),
            "approx_kl": 0.5 * (new_lp - old_lp).pow(2).mean().item(),
            "nfe": self.nfe_since(mark),
        }
