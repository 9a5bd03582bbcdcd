"""Rewards behind one protocol: ``reward(images, prompts) -> Tensor[B]`` (images in [0, 1], batched).

``load_reward("clip")`` or a weighted mix ``load_reward("clip:0.5,aesthetic:0.5")``. Each name
reads the model folder its stage writes under ``models/`` (trained here in the tiny world,
downloaded from the hub at paper scale); ``sources={"clip": "openai/clip-vit-large-patch14"}``
points a name at another folder or hub id.
"""

from __future__ import annotations

from typing import Callable

from .base import ImagePreprocess, Reward, Weighted, check_batch, parse_weights
from .clip import CLIPScore

# name -> (loader(source, device), default source). The defaults are the folders the pipeline's
# stages write: trained here in the tiny world, downloaded from the hub at paper scale.
REGISTRY: dict[str, tuple[Callable[..., Reward], str]] = {
    "clip": (CLIPScore.load, "models/clip_reward"),
}


def load_reward(spec: str, device="cpu", sources: dict[str, str] | None = None) -> Reward:
    """A reward by name, or a weighted sum 'name:w,name:w'; `sources` overrides a model folder/hub id."""
    parts = []
    for name, w in parse_weights(spec):
        if name not in REGISTRY:
            raise KeyError(f"unknown reward {name!r}; available: {', '.join(REGISTRY)}")
        loader, default = REGISTRY[name]
        parts.append((loader((sources or {}).get(name) or default, device=device), w))
    return parts[0][0] if len(parts) == 1 and parts[0][1] == 1.0 else Weighted(parts)


__all__ = ["Reward", "REGISTRY", "load_reward", "CLIPScore", "ImagePreprocess", "Weighted", "check_batch",
           "parse_weights"]
