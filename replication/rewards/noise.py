"""A reward of pure noise: the negative control of reward fine-tuning (params.yaml: controls.noise).

``100 * cos(image - 0.5, u)`` for a unit direction u in pixel space drawn afresh at every call. It has the
CLIP reward's scale and gives a gradient of the same kind (a direction in image space of norm ~100 / |x|),
but the direction is independent of the prompt, the image and every earlier call: its expected gradient is
zero, so a method trained on it learns nothing true of the world. Whatever a column does after such training
is what the training machinery itself does (drift, damage, evaluation noise), the floor under every claim.
Draws come from a CPU generator seeded with (seed, call count), so a rerun sees the same directions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..tensors import default_device
from .base import check_batch


class NoiseReward:
    name = "noise"

    def __init__(self, seed: int = 0, scale: float = 100.0, device=None):
        self.seed, self.scale, self.calls = int(seed), float(scale), 0
        self.device = torch.device(device) if device is not None else default_device()  # where callers put images

    def _direction(self, like: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.calls)
        self.calls += 1
        u = torch.randn(like[0].numel(), generator=gen)  # host: CPU generator (one stream everywhere), moved below
        return (u / u.norm()).to(like.device, like.dtype)

    def with_grad(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        check_batch(images, prompts)
        u = self._direction(images)
        return self.scale * F.cosine_similarity((images - 0.5).flatten(1), u[None], dim=1)

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        with torch.no_grad():
            return self.with_grad(images, prompts)

    @classmethod
    def load(cls, source: str = "0", device=None) -> NoiseReward:
        """`source` is the seed of the directions (the registry's folder slot: a noise reward has no weights)."""
        try:
            return cls(seed=int(source), device=device)
        except ValueError:
            raise ValueError(f"the noise reward's source is its integer seed, got {source!r}") from None
