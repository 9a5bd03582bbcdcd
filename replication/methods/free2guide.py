"""Free2Guide (Kim et al. 2024, "Free2Guide: Gradient-Free Path Integral Control for Enhancing
Text-to-Video Generation with Large Vision-Language Models"), for images.

Gradient-free guidance by path integral control on a few denoising steps. At a guided step the
stochastic DDIM step x_t -> x_{t-1} = mean + std * z is sampled n times; each candidate's clean
estimate (one evaluation at t-1, Tweedie) is scored by the verifier, and one candidate continues:
the best (`temperature` = 0, what the released code does), or one drawn with probability
softmax(r / temperature) (the path-integral weighting). The chosen candidate's evaluation at t-1 is
the next step's, so a guided step costs n - 1 extra evaluations.

Guided steps: `fraction` of the trajectory (the Diffusion-Sharpening paper: 5 of 50 DDIM steps, chosen
at random; here drawn once per sampler from `seed`, never the last step). Budget: the base cost plus
(n - 1) evaluations per guided step, so n grows with the budget (with no room for n = 2 at every
guided step, fewer guided steps; with none, plain DDIM). Unguided steps are deterministic DDIM.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import diffusion
from .inference_time import InferenceSampler, derive_seed, initial_noise, seeded_normal


@dataclass
class Free2GuideSpec:
    """Free2Guide's options (params.yaml: nfe_sweep.free2guide): path guidance on a random subset of steps."""

    fraction: float = 0.1  # share of the DDIM steps that are guided (paper: 5 of 50)
    eta: float = 1.0
    temperature: float = 0.0  # 0: keep the best candidate (the released code); > 0: softmax(r / T) draw
    seed: int = 0  # which steps are guided

    def __post_init__(self):
        if not 0 < self.fraction <= 1:
            raise ValueError(f"free2guide.fraction must be in (0, 1], got {self.fraction}")
        if self.eta <= 0 or self.temperature < 0:
            raise ValueError(
                "free2guide needs eta > 0 (candidates differ only by the step's noise) and temperature >= 0"
            )


class Free2Guide(InferenceSampler):
    name = "free2guide"

    def __init__(self, verifier, num_steps: int = 50, guidance_scale: float = 5.0, max_rows: int = 1024, **options):
        super().__init__(verifier, num_steps, guidance_scale, max_rows)
        self.spec = s = Free2GuideSpec(**options)
        self.fraction, self.eta, self.temperature, self.seed = s.fraction, s.eta, s.temperature, s.seed
        slots = max(0, num_steps - 1)
        g = min(slots, max(1, round(s.fraction * num_steps)))
        order = torch.randperm(slots, generator=torch.Generator().manual_seed(s.seed)).tolist()
        self.guided = order[:g]  # in drawing order: with a small budget the first ones are kept

    def plan(self, budget: int) -> tuple[int, list[int]]:
        """(n candidates, guided step indices) that fit the budget."""
        extra = (budget - self.base_cost) // self.rows_per_eval  # extra evaluations per image
        g = min(len(self.guided), extra)
        if g < 1:
            return 0, []
        return int(1 + extra // g), sorted(self.guided[:g])

    def width(self, budget: int) -> int:
        return max(1, self.plan(budget)[0])

    def _run(self, model, cond, prompts, seeds, budget):
        n, steps = self.plan(budget)
        info = {"candidates": n, "guided_steps": steps, "temperature": self.temperature}
        x = initial_noise(model, seeds)
        if not steps:
            x = self.plain(model, cond, x)
            return x, self.verifier(model, x, prompts), info
        b = len(x)
        eps_fn = model.denoiser(cond, self.guidance_scale)
        eps_n = model.denoiser(cond.repeat_interleave(n), self.guidance_scale)
        sched = model.scheduler
        prompts_n = [p for p in prompts for _ in range(n)]
        rows = torch.arange(b, device=x.device)
        cached = None  # the chosen candidate's model output at the next step
        for i, tv, t_prev in diffusion.ddim_grid(sched, self.num_steps, x.device).steps(b):
            out = eps_fn(x, tv) if cached is None else cached
            cached = None
            if i not in steps:
                x = diffusion.ddim_step(sched, out, tv, x, t_prev).prev
                continue
            st = diffusion.ddim_step(sched, out, tv, x, t_prev, eta=self.eta, noise=torch.zeros_like(x))
            z = seeded_normal(seeds, (n, *x.shape[1:]), "free2guide", i, device=x.device, dtype=x.dtype)
            cand = (st.mean.unsqueeze(1) + st.std.view(-1, 1, 1, 1, 1) * z).flatten(0, 1)
            t_cand = t_prev.repeat_interleave(n)
            out_c = eps_n(cand, t_cand)
            r = self.verifier(model, diffusion.to_x0_eps(sched, out_c, cand, t_cand)[0], prompts_n).view(b, n)
            pick = self.choose(r, seeds, i)
            x = cand.view(b, n, *x.shape[1:])[rows, pick]
            cached = out_c.view(b, n, *x.shape[1:])[rows, pick]
        return x, self.verifier(model, x, prompts), info

    def choose(self, r: torch.Tensor, seeds, step: int) -> torch.Tensor:
        """Index of the continuing candidate per image: argmax, or a draw from softmax(r / temperature)."""
        if self.temperature == 0:
            return r.argmax(1)
        p = torch.softmax((r - r.max(1, keepdim=True).values) / self.temperature, dim=1).cpu()
        u = torch.tensor(  # host: compared with p, brought to the host above
            [torch.rand((), generator=torch.Generator().manual_seed(derive_seed(s, "f2g-pick", step))) for s in seeds]
        )
        return torch.searchsorted(p.cumsum(1), u.unsqueeze(1)).squeeze(1).clamp(max=r.shape[1] - 1).to(r.device)
