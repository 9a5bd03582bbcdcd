"""D3PO (Yang et al., 2024): DPO on the denoising steps, from online human choices, no reward model.

Every `updates_per_sample` optimiser steps form a round:
  1. for each of G prompts, two images from the current model that share their initial noise x_T and
     diverge through the stochastic DDIM sampler (eta > 0, classifier-free guidance), every latent kept;
  2. a person says which of the two they prefer: here the simulated rater's forced choice
     (`world.rater.Rater.prefer`, noisy Bradley-Terry on its utility);
  3. each optimiser step takes its share of the pairs and, on a random `timestep_fraction` of the steps
     (the same steps for both images of a pair), treats each step as a one-step decision:
        loss = -log sigmoid(beta * log c(r^w_t) - beta * log c(r^l_t)),
        r_t = p_theta(x_{t-1} | x_t) / p_ref(x_{t-1} | x_t),  c = clip to [1 - ratio_clip, 1 + ratio_clip],
     with p_ref the frozen starting model (the released code clips the ratio the same way).
The round's samples and choices are method state, checkpointed with the model, as in DDPO.
The logged `reward_mean`/`reward_std` are the rater's noiseless utilities of the sampled images, a
diagnostic the method never sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .. import diffusion
from ..models import T2IModel
from ..sources import PromptSource
from ..world.rater import Rater
from .common import LoraSpec, SampledRounds, UNetMethod, spec_fields
from .ddpo import pick_timesteps


@dataclass
class D3POSpec:
    """D3PO's settings (params.yaml: d3po.*), the person giving the online feedback included."""

    sample_steps: int = 20
    eta: float = 1.0
    guidance: float = 5.0
    updates_per_sample: int = 1
    beta: float = 0.1  # released code's defaults: beta 0.1, ratio clip 0.1
    ratio_clip: float = 0.1
    timestep_fraction: float = 1.0
    rater: Rater = field(default_factory=Rater)  # the simulated person who chooses between the two images

    def __post_init__(self):
        if self.eta <= 0:
            raise ValueError("D3PO's two images of a pair diverge through the sampler's noise: use eta > 0")
        if self.updates_per_sample < 1 or not 0 < self.timestep_fraction <= 1 or not 0 < self.ratio_clip < 1:
            raise ValueError("need updates_per_sample >= 1, timestep_fraction in (0, 1], ratio_clip in (0, 1)")


def d3po_loss(
    lp_w: torch.Tensor, lp_l: torch.Tensor, ref_w: torch.Tensor, ref_l: torch.Tensor, beta: float, ratio_clip: float
) -> torch.Tensor:
    """Per-step log-probabilities of winner/loser transitions under the policy and the reference."""
    lo, hi = torch.log(torch.tensor(1 - ratio_clip)).item(), torch.log(torch.tensor(1 + ratio_clip)).item()
    log_r_w = (lp_w - ref_w).clamp(lo, hi)  # log of the clipped ratio
    log_r_l = (lp_l - ref_l).clamp(lo, hi)
    return -F.logsigmoid(beta * log_r_w - beta * log_r_l).mean()


class D3PO(SampledRounds, UNetMethod):
    name = "d3po"

    def __init__(
        self,
        model: T2IModel,
        prompts: PromptSource,
        batch_size: int,
        spec: D3POSpec,
        lora: LoraSpec | None = None,
        fingerprint: dict | None = None,
    ):
        self.rater = spec.rater
        super().__init__(
            model, batch_size, {"spec": spec_fields(spec, D3POSpec), **(fingerprint or {})}, lora=lora, reference=True
        )
        self.prompts, self.spec = prompts, spec
        self.group = batch_size * spec.updates_per_sample

    @torch.no_grad()
    def _sample(self, gen: torch.Generator) -> dict:
        model, spec, g = self.model, self.spec, self.group
        prompts = self.prompts.batch(g, gen)
        x_T = torch.randn((g, *model.latent_shape), generator=gen).to(self.device, model.dtype).repeat(2, 1, 1, 1)
        traj = diffusion.sample_with_log_probs(
            model.denoiser(model.encode_prompts(prompts + prompts), spec.guidance),
            model.scheduler,
            x_T * model.scheduler.init_noise_sigma,
            spec.sample_steps,
            spec.eta,
            gen,
        )
        images = model.decode(traj.latents[-1]).cpu()  # rows: side a (g), then side b (g)
        a_wins = self.rater.prefer(images[:g], images[g:], prompts, gen)
        utility = self.rater.utility(images, prompts + prompts).float()
        return {
            "latents": traj.latents,
            "timesteps": traj.timesteps,
            "a_wins": a_wins.to(self.device),
            "utility": utility,
            "order": torch.randperm(g, generator=gen).to(self.device),
            "prompts": prompts,
        }

    def loss(self, step: int, gen: torch.Generator):
        model, spec = self.model, self.spec
        mark = self.nfe_mark()
        buf, idx = self.round_rows(step, gen)
        g = self.group
        win = idx + g * (~buf["a_wins"][idx]).long()  # row of the preferred image of each pair
        lose = idx + g * buf["a_wins"][idx].long()
        rows = torch.cat([win, lose])
        ts = pick_timesteps(len(idx), len(buf["timesteps"]), spec.timestep_fraction, gen).to(self.device).repeat(2, 1)
        col = rows[:, None].expand_as(ts)
        x_t = buf["latents"][ts, col].flatten(0, 1)
        x_prev = buf["latents"][ts + 1, col].flatten(0, 1)
        t = buf["timesteps"][ts].flatten()
        prompts = [buf["prompts"][i] for i in idx.tolist()] * 2
        cond = model.encode_prompts(prompts).repeat_interleave(ts.shape[1])
        s = diffusion.stride(model.scheduler, spec.sample_steps)
        lp = diffusion.step_log_prob(model.denoiser(cond, spec.guidance), model.scheduler, x_t, t, x_prev, s, spec.eta)
        ref = diffusion.step_log_prob(
            self.ref_denoiser(cond, spec.guidance), model.scheduler, x_t, t, x_prev, s, spec.eta
        )
        n = len(lp) // 2
        loss = d3po_loss(lp[:n], lp[n:], ref[:n], ref[n:], spec.beta, spec.ratio_clip)
        u = buf["utility"]
        return loss, {
            "reward_mean": u.mean().item(),
            "reward_std": u.std(unbiased=False).item(),
            "a_preferred": buf["a_wins"].float().mean().item(),
            "log_ratio": (lp - ref).mean().item(),
            "nfe": self.nfe_since(mark),
        }
