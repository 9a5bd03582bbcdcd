"""Inference Scaling (Ma et al. 2025): search over initial noises with a verifier, zero-order search.

The paper frames inference-time scaling as a search over the sampler's initial noise, with a verifier
scoring each candidate's final image, and three algorithms: random search (= best_of_n.BestOfN),
zero-order search (here) and search over paths. Zero-order search:

1. the pivot is a Gaussian noise (here the seed's own noise, so budget = base cost is plain DDIM);
2. draw `candidates` noises in the pivot's neighbourhood;
3. run each through the full DDIM sampler and score the image with the verifier;
4. if the best candidate beats the pivot it becomes the pivot; repeat 2-4 while the budget lasts.

Neighbourhood: y = sqrt(1 - step^2) * pivot + step * eps, eps ~ N(0, I). The paper defines it as a
sphere of radius `step` around the pivot; this variance-preserving perturbation keeps every candidate
a standard normal (so the sampler never sees an out-of-distribution noise) and has the same knob:
step -> 0 searches locally, step = 1 is random search. The pivot moves only when a candidate is
better, so the returned score never drops as the budget grows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .inference_time import NoiseSearch, initial_noise, pieces, seeded_normal


@dataclass
class ZeroOrderSpec:
    """The zero-order search's options (params.yaml: nfe_sweep.inference_scaling)."""

    candidates: int = 4  # noises per round around the pivot
    step: float = 0.5  # neighbourhood: sqrt(1 - step^2) pivot + step eps (1: random search)

    def __post_init__(self):
        if self.candidates < 1:
            raise ValueError(f"inference_scaling.candidates must be >= 1, got {self.candidates}")
        if not 0 < self.step <= 1:
            raise ValueError(f"inference_scaling.step must be in (0, 1], got {self.step}")


class ZeroOrderSearch(NoiseSearch):
    name = "inference_scaling"

    def __init__(self, verifier, num_steps: int = 50, guidance_scale: float = 5.0, max_rows: int = 1024, **options):
        super().__init__(verifier, num_steps, guidance_scale, max_rows)
        self.spec = ZeroOrderSpec(**options)
        self.candidates, self.step = self.spec.candidates, self.spec.step

    def neighbour(self, pivot: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """A candidate noise near `pivot` (standard normal): sqrt(1 - step^2) * pivot + step * eps."""
        return math.sqrt(1 - self.step**2) * pivot + self.step * eps

    def _search(self, model, cond, prompts, seeds, marks):
        total = max(marks)
        sigma = model.scheduler.init_noise_sigma
        pivot = initial_noise(model, seeds) / sigma  # standard-normal noise of the best image so far
        best = self.plain(model, cond, pivot * sigma)
        score = self.verifier(model, best, prompts)
        info = {"candidates": 1, "rounds": 0, "per_round": self.candidates, "step": self.step, "pivot_moves": 0}
        yield 1, best, score, info
        done, rnd, moves = 1, 0, torch.zeros(len(prompts), dtype=torch.long, device=best.device)
        while done < total:
            centre, end = pivot, min(total, done + self.candidates)
            for a, b in pieces(done, end, marks, self.candidates_per_call(len(prompts))):
                eps = torch.cat(
                    [
                        seeded_normal(
                            seeds, model.latent_shape, "zero-order", rnd, j - done, device=best.device, dtype=best.dtype
                        )
                        for j in range(a, b)
                    ]
                )
                noise = self.neighbour(centre.repeat(b - a, 1, 1, 1), eps)
                x, s = self.generate(model, cond, prompts, noise * sigma, b - a)
                old = score
                best, score, pivot = self.keep_best(best, score, x, s, (pivot, noise.view_as(x)))
                moves += (score > old).long()
                info = {**info, "candidates": b, "rounds": rnd + 1, "pivot_moves": float(moves.float().mean())}
                yield b, best, score, info
            done, rnd = end, rnd + 1
