"""Diffusion-DPO (Wallace et al., 2023): direct preference optimisation on offline image pairs.

For each judged pair (winner x^w, loser x^l, prompt) of a batch:
  1. encode both images to clean latents; draw one timestep t and one noise eps, shared by the pair;
  2. noise both latents at t with eps; the policy and the frozen reference predict the noise;
  3. with per-sample epsilon-MSEs in place of log-likelihoods (log p_theta(x)/p_ref(x) ~ mse_ref - mse_theta),
        loss = -log sigmoid(beta * [(mse_ref^w - mse_theta^w) - (mse_ref^l - mse_theta^l)]).
Wallace et al. write the same loss with -beta_W / 2 * (...); our beta = beta_W / 2 (the diffusers
example's 2500 for SDXL is beta_W = 5000). In the tiny world the pairs are a Pick-a-Pic-like set:
two images per prompt from the base model with different seeds and guidance scales, labelled by the
simulated rater (`replication.feedback.PreferencePairs`, ties dropped; batches from `sources.PairSource`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import diffusion
from ..models import Cond, T2IModel
from ..sources import PairSource
from .common import LoraSpec, UNetMethod, spec_fields


def dpo_loss(mse_w: torch.Tensor, mse_l: torch.Tensor, ref_w: torch.Tensor, ref_l: torch.Tensor, beta: float):
    """Diffusion-DPO on per-sample epsilon-MSEs (all (B,)); returns (mean loss, logits z)."""
    z = beta * ((ref_w - mse_w) - (ref_l - mse_l))
    return -F.logsigmoid(z).mean(), z


@dataclass
class DPOSpec:
    """Diffusion-DPO's settings (params.yaml: diffusion_dpo.*)."""

    beta: float = 2500.0  # ours = Wallace et al.'s beta / 2 (their SDXL 5000)

    def __post_init__(self):
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")


class DiffusionDPO(UNetMethod):
    name = "diffusion-dpo"

    def __init__(
        self,
        model: T2IModel,
        pairs: PairSource,
        batch_size: int,
        spec: DPOSpec | None = None,
        lora: LoraSpec | None = None,
        fingerprint: dict | None = None,
    ):
        spec = spec or DPOSpec()
        super().__init__(
            model, batch_size, {"spec": spec_fields(spec, DPOSpec), **(fingerprint or {})}, lora=lora, reference=True
        )
        self.pairs, self.beta = pairs, spec.beta

    def loss(self, step: int, gen: torch.Generator):
        model, sched = self.model, self.model.scheduler
        mark = self.nfe_mark()
        xw, xl, prompts = self.pairs.batch(self.batch_size, gen, self.device)
        b = len(prompts)
        with torch.no_grad():
            z0 = model.encode(torch.cat([xw, xl]), gen)  # (2B): winners, then losers
        t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=gen).to(self.device).repeat(2)
        eps = torch.randn((b, *z0.shape[1:]), generator=gen).to(z0.device, z0.dtype).repeat(2, 1, 1, 1)
        x_t = diffusion.add_noise(sched, z0, eps, t)
        cond = model.encode_prompts(prompts)
        both = Cond.cat([cond, cond])
        target = diffusion.target_for(sched, z0, eps, t).float()
        mse = (model.eps(x_t, t, both).float() - target).pow(2).mean(dim=(1, 2, 3))
        ref = (self.ref_denoiser(both)(x_t, t).float() - target).pow(2).mean(dim=(1, 2, 3))
        loss, z = dpo_loss(mse[:b], mse[b:], ref[:b], ref[b:], self.beta)
        return loss, {
            "dpo_logit": z.mean().item(),
            "implicit_acc": (z > 0).float().mean().item(),
            "nfe": self.nfe_since(mark),
        }
