"""Best-of-N sampling: N images from N initial noises, the verifier keeps the best.

The simplest way to spend inference compute, and the first search algorithm ("random search") of
Inference Scaling (Ma et al. 2025, "Inference-Time Scaling for Diffusion Models beyond Scaling
Denoising Steps"): N = budget // base cost, so a budget of 100 x the base cost scores 100 full DDIM
images per prompt. Candidate 0 is the seed's own noise (the image `T2IModel.generate` makes); the
others come from noises derived from the seed.
"""

from __future__ import annotations

import torch

from .inference_time import NoiseSearch, initial_noise, pieces


class BestOfN(NoiseSearch):
    name = "best_of_n"

    def _search(self, model, cond, prompts, seeds, marks):
        total = max(marks)
        best = self.plain(model, cond, initial_noise(model, seeds))
        score = self.verifier(model, best, prompts)
        yield 1, best, score, {"candidates": 1}
        for a, b in pieces(1, total, marks, self.candidates_per_call(len(prompts))):
            noise = torch.cat([initial_noise(model, seeds, j) for j in range(a, b)])
            x, s = self.generate(model, cond, prompts, noise, b - a)
            best, score = self.keep_best(best, score, x, s)
            yield b, best, score, {"candidates": b}
