"""What the inference-time samplers share (the baselines of Fig. 5): an NFE budget, a verifier, seeded noise.

A sampler turns prompts and seeds into latents. It may spend at most `budget` network function
evaluations (NFEs) per image, counted by the model's own counter (`T2IModel.nfe`: every UNet row, so
one guided denoising step of one image is 2 NFE), and it consults a verifier (any reward of the
protocol) to decide where to spend them. The base cost is one plain DDIM image: `num_steps` x 2 with
classifier-free guidance. With a budget equal to the base cost every sampler is plain DDIM and
returns the very latents `T2IModel.generate_latents` makes for the same seeds.

The samplers (one file each): best_of_n.BestOfN (random search over initial noises, Inference
Scaling's first algorithm), inference_scaling.ZeroOrderSearch (Inference Scaling's zero-order search),
demon.Demon (tanh / Boltzmann demons), free2guide.Free2Guide (path guidance on a few steps);
`samplers.make_sampler` makes one by name.
Search samplers can report several budgets from one run (`sample_budgets`): the state after the
first k candidates is exactly what a run with that budget returns, and its NFEs are the counter's
reading at that moment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .. import diffusion
from ..digests import candidate_seed, derive_seed


# ----------------------------------------------------------------------------- seeded noise
def seeded_normal(seeds: Sequence[int], shape: tuple[int, ...], *keys, device, dtype=torch.float32) -> torch.Tensor:
    """(len(seeds), *shape) standard normals; row b depends only on (seeds[b], keys), so results do not
    depend on how prompts are batched (CPU generators: identical on every device)."""
    return torch.stack(  # host: CPU generators (one stream on every device), moved below
        [torch.randn(shape, generator=torch.Generator().manual_seed(derive_seed(s, *keys))) for s in seeds]
    ).to(device, dtype)


def initial_noise(model, seeds: Sequence[int], candidate: int = 0) -> torch.Tensor:
    """Initial latents: candidate 0 is the seed's own noise (the image `generate` makes); candidate j > 0 a
    fresh noise derived from (seed, j)."""
    return model.initial_latents([candidate_seed(s, candidate) for s in seeds])


# ----------------------------------------------------------------------------- the verifier
class Verifier:
    """A reward that scores latents: VAE-decode with the model, then reward(images, prompts), in chunks.

    Counts the images it scored (`images`): the verifier's cost, which NFEs do not include.
    """

    def __init__(self, reward, chunk: int = 512):
        if not callable(reward):
            raise TypeError("the verifier must be a reward: reward(images, prompts) -> Tensor[B]")
        self.reward = reward
        self.chunk = chunk
        self.images = 0

    @property
    def name(self) -> str:
        return getattr(self.reward, "name", type(self.reward).__name__)

    @torch.no_grad()
    def __call__(self, model, latents: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        if len(prompts) != len(latents):
            raise ValueError(f"verifier got {len(latents)} latents but {len(prompts)} prompts")
        out = []
        for i in range(0, len(latents), self.chunk):
            images = model.decode(latents[i : i + self.chunk])
            out.append(self.reward(images, list(prompts[i : i + self.chunk])).float().flatten().to(latents.device))
        self.images += len(latents)
        scores = torch.cat(out)
        if not torch.isfinite(scores).all():
            raise ValueError(f"verifier {self.name} returned NaN/inf scores: check the reward model")
        return scores


# ----------------------------------------------------------------------------- results
@dataclass
class SamplerResult:
    latents: torch.Tensor  # (B, C, h, w) the returned samples
    scores: torch.Tensor  # (B,) the verifier's score of each returned sample
    budget: int  # NFEs per image the sampler was allowed
    nfe_per_image: float  # NFEs per image it spent, from the model's counter
    verifier_images_per_image: float  # images the verifier scored per returned image
    info: dict = field(default_factory=dict)  # how the budget was spent (candidates, steps, ...)


class InferenceSampler:
    """Base of the samplers: budget checks, NFE and verifier accounting, plain DDIM at the base cost.

    Subclasses implement `_run(model, cond, prompts, seeds, budget) -> (latents, scores, info)` for one
    chunk of prompts (at most `max_rows` UNet rows per network call, counting both guidance branches).
    """

    name = "plain"

    def __init__(self, verifier: Verifier, num_steps: int = 50, guidance_scale: float = 5.0, max_rows: int = 1024):
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.verifier = verifier if isinstance(verifier, Verifier) else Verifier(verifier)
        self.num_steps = num_steps
        self.guidance_scale = guidance_scale
        self.max_rows = max_rows

    # -- costs
    @property
    def rows_per_eval(self) -> int:
        """NFEs of one denoiser call for one latent (2 with classifier-free guidance)."""
        return 1 if self.guidance_scale == 1.0 else 2

    @property
    def base_cost(self) -> int:
        """NFEs of one plain DDIM image: the budget at which every sampler is plain DDIM."""
        return self.num_steps * self.rows_per_eval

    def width(self, budget: int) -> int:
        """Latents per prompt in the widest network call at this budget (sets the prompt chunk size)."""
        return 1

    def check_budget(self, budget: int) -> int:
        if int(budget) != budget or budget < self.base_cost:
            raise ValueError(
                f"{self.name}: budget {budget} NFE/image is below the base cost {self.base_cost} "
                f"({self.num_steps} DDIM steps x {self.rows_per_eval}); give at least the base cost"
            )
        return int(budget)

    # -- sampling
    def plain(self, model, cond, latents: torch.Tensor) -> torch.Tensor:
        """Plain DDIM (eta = 0) with guidance: exactly T2IModel.generate_latents for the same noises."""
        return diffusion.sample(model.denoiser(cond, self.guidance_scale), model.scheduler, latents, self.num_steps)

    @torch.no_grad()
    def sample(self, model, prompts: Sequence[str], seeds: Sequence[int], budget: int) -> SamplerResult:
        """Latents for prompts with fixed seeds, spending at most `budget` NFEs per image."""
        return self.sample_budgets(model, prompts, seeds, [budget])[int(budget)]

    @torch.no_grad()
    def sample_budgets(
        self, model, prompts: Sequence[str], seeds: Sequence[int], budgets: Sequence[int]
    ) -> dict[int, SamplerResult]:
        """One independent run per budget (search samplers override this with one anytime run)."""
        return {int(b): self._measure(model, prompts, seeds, int(b)) for b in budgets}

    def _chunks(self, n: int, budget: int) -> list[slice]:
        per = max(1, self.max_rows // (self.width(budget) * self.rows_per_eval))
        return [slice(i, min(n, i + per)) for i in range(0, n, per)]

    def _measure(self, model, prompts, seeds, budget: int) -> SamplerResult:
        prompts, seeds = list(prompts), [int(s) for s in seeds]
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        budget = self.check_budget(budget)
        nfe0, ver0 = model.nfe.evals, self.verifier.images
        lat, sc, info = [], [], {}
        for sl in self._chunks(len(prompts), budget):
            cond = model.encode_prompts(prompts[sl])
            x, s, info = self._run(model, cond, prompts[sl], seeds[sl], budget)
            lat.append(x)
            sc.append(s)
        return self._result(model, prompts, budget, torch.cat(lat), torch.cat(sc), info, nfe0, ver0)

    def _result(self, model, prompts, budget, latents, scores, info, nfe0, ver0) -> SamplerResult:
        n = len(prompts)
        spent = model.nfe.evals - nfe0
        if spent > budget * n:  # a bug in a sampler, never a user error
            raise RuntimeError(f"{self.name} spent {spent / n:.1f} NFE/image, over its budget of {budget}")
        return SamplerResult(latents, scores, budget, spent / n, (self.verifier.images - ver0) / n, dict(info))

    def _run(self, model, cond, prompts, seeds, budget):
        x = self.plain(model, cond, initial_noise(model, seeds))
        return x, self.verifier(model, x, prompts), {}


def unit_norm_like(z: torch.Tensor) -> torch.Tensor:
    """Rescale each row of z to the norm sqrt(d) of a d-dimensional standard normal (Demon's normalisation)."""
    d = z[0].numel()
    return z / z.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (z.ndim - 1))) * math.sqrt(d)


# ----------------------------------------------------------------------------- search over initial noises
def pieces(start: int, stop: int, marks: Sequence[int], size: int) -> list[tuple[int, int]]:
    """Split candidate indices [start, stop) into runs of at most `size` that never straddle a mark."""
    cuts = sorted({start, stop, *(m for m in marks if start < m < stop)})
    out = []
    for a, b in zip(cuts, cuts[1:]):
        out += [(i, min(b, i + size)) for i in range(a, b, size)]
    return out


class NoiseSearch(InferenceSampler):
    """A search whose candidates are whole DDIM images from different initial noises, scored by the verifier.

    A budget buys `budget // base_cost` images; candidate 0 is the seed's own noise, generated alone, so
    a budget of one image is plain DDIM and larger budgets never return a lower verifier score than it.
    Subclasses write `_search(model, cond, prompts, seeds, marks)`: a generator that yields
    (images generated, best latents, their scores, info) at least at every mark.
    """

    def generations(self, budget: int) -> int:
        return budget // self.base_cost

    @torch.no_grad()
    def sample_budgets(self, model, prompts, seeds, budgets) -> dict[int, SamplerResult]:
        """Every budget from one run: the state after k images is what a run with budget k images returns."""
        prompts, seeds = list(prompts), [int(s) for s in seeds]
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        budgets = sorted({self.check_budget(int(b)) for b in budgets})
        marks = sorted({self.generations(b) for b in budgets})
        snaps: list[dict] = []
        for sl in self._chunks(len(prompts), 1):
            cond = model.encode_prompts(prompts[sl])
            nfe0, ver0, got = model.nfe.evals, self.verifier.images, {}
            for done, lat, sc, info in self._search(model, cond, prompts[sl], seeds[sl], marks):
                if done in marks:
                    got[done] = (
                        lat.clone(),
                        sc.clone(),
                        dict(info),
                        model.nfe.evals - nfe0,
                        self.verifier.images - ver0,
                    )
            snaps.append(got)
        out = {}
        n = len(prompts)
        for b in budgets:
            k = self.generations(b)
            parts = [s[k] for s in snaps]
            spent = sum(p[3] for p in parts)
            if spent > b * n:
                raise RuntimeError(f"{self.name} spent {spent / n:.1f} NFE/image, over its budget of {b}")
            out[b] = SamplerResult(
                torch.cat([p[0] for p in parts]),
                torch.cat([p[1] for p in parts]),
                b,
                spent / n,
                sum(p[4] for p in parts) / n,
                parts[-1][2],
            )
        return out

    def candidates_per_call(self, n_prompts: int) -> int:
        return max(1, self.max_rows // (n_prompts * self.rows_per_eval))

    def generate(self, model, cond, prompts, noise: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        """m candidates per prompt (noise rows candidate-major: m blocks of B) -> latents (m, B, ...) and scores (m, B)."""
        from ..models import Cond

        b = len(prompts)
        x = self.plain(model, Cond.cat([cond] * m), noise)
        s = self.verifier(model, x, list(prompts) * m)
        return x.view(m, b, *x.shape[1:]), s.view(m, b)

    @staticmethod
    def keep_best(best: torch.Tensor, score: torch.Tensor, x: torch.Tensor, s: torch.Tensor, *extra):
        """Per prompt, replace the best so far by the best of the new candidates when strictly better.
        `extra` are (old, new (m, B, ...)) pairs carried along with the winner (e.g. its noise)."""
        top, idx = s.max(0)
        better = top > score
        pick = lambda new: new[idx, torch.arange(new.shape[1], device=new.device)]  # noqa: E731
        mask = lambda t: better.view(-1, *([1] * (t.ndim - 1)))  # noqa: E731
        out = [torch.where(mask(best), pick(x), best), torch.where(better, top, score)]
        out += [torch.where(mask(old), pick(new), old) for old, new in extra]
        return out
