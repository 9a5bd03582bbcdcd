"""Rewards behind one protocol: ``reward(images, prompts) -> Tensor[B]`` (images in [0, 1], batched).

``load_reward("clip")`` or a weighted mix ``load_reward("clip:0.5,aesthetic:0.5")``. Each name
has a tiny-world model (trained by a pipeline stage, under ``models/``) and a paper-scale model
(a hub id) behind the same call; pass ``sources={"clip": "openai/clip-vit-large-patch14"}`` to
choose.
"""

from __future__ import annotations

from typing import Callable

from .base import ImagePreprocess, Reward, Weighted, check_batch, parse_weights
from .clip import CLIPScore

# name -> (loader(source, device, **kw), default tiny-world source, paper-scale source)
REGISTRY: dict[str, tuple[Callable[..., Reward], str, str]] = {
    "clip": (CLIPScore.load, "models/clip_reward", "openai/clip-vit-large-patch14"),
}


def load_reward(spec: str, device="cpu", sources: dict[str, str] | None = None, scale: str = "tiny") -> Reward:
    """A reward by name, or a weighted sum 'name:w,name:w'. `scale` picks the default sources."""
    parts = []
    for name, w in parse_weights(spec):
        if name not in REGISTRY:
            raise KeyError(f"unknown reward {name!r}; available: {', '.join(REGISTRY)}")
        loader, tiny, paper = REGISTRY[name]
        src = (sources or {}).get(name) or (paper if scale == "sdxl" else tiny)
        parts.append((loader(src, device=device), w))
    return parts[0][0] if len(parts) == 1 and parts[0][1] == 1.0 else Weighted(parts)


__all__ = ["Reward", "REGISTRY", "load_reward", "CLIPScore", "ImagePreprocess", "Weighted", "check_batch",
           "parse_weights"]
