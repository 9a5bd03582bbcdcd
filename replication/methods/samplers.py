"""The inference-time samplers of Fig. 5 by name: `make_sampler("demon", verifier, kind="boltzmann")`."""

from __future__ import annotations

from .best_of_n import BestOfN
from .demon import Demon
from .free2guide import Free2Guide
from .inference_scaling import ZeroOrderSearch
from .inference_time import InferenceSampler

SAMPLERS: dict[str, type[InferenceSampler]] = {
    "best_of_n": BestOfN,
    "inference_scaling": ZeroOrderSearch,
    "demon": Demon,
    "free2guide": Free2Guide,
}
LABELS = {
    "best_of_n": "Best-of-N (random search)",
    "inference_scaling": "Inference Scaling (zero-order search)",
    "demon": "Demon (tanh)",
    "free2guide": "Free2Guide",
}


def make_sampler(
    name: str, verifier, num_steps: int = 50, guidance_scale: float = 5.0, max_rows: int = 1024, **options
) -> InferenceSampler:
    """A sampler by name with its own options (e.g. make_sampler('demon', reward, kind='boltzmann'))."""
    if name not in SAMPLERS:
        raise KeyError(f"unknown sampler {name!r}; available: {', '.join(SAMPLERS)}")
    return SAMPLERS[name](verifier, num_steps=num_steps, guidance_scale=guidance_scale, max_rows=max_rows, **options)
