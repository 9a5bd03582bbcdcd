"""The reward protocol and what every reward shares.

A reward is a callable ``reward(images, prompts) -> Tensor[B]``: images are a float tensor in
[0, 1], shape (B, 3, H, W), on the reward's device; prompts a list of B strings. It never
takes PIL images or loops over images in Python, so it can sit in a training hot path.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class Reward(Protocol):
    name: str

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor: ...


def check_batch(images: torch.Tensor, prompts: Sequence[str]) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"reward images must be (B, 3, H, W) floats in [0, 1], got shape {tuple(images.shape)}")
    if len(prompts) != images.shape[0]:
        raise ValueError(f"reward got {images.shape[0]} images but {len(prompts)} prompts")
    if not torch.isfinite(images).all():
        raise ValueError("reward images contain NaN or inf: the generator diverged (lower the learning rate)")


class ImagePreprocess:
    """Tensor version of a CLIP image processor: resize (shortest side, bicubic), centre crop, normalise."""

    def __init__(self, size: int, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD):
        self.size = size
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)  # host: moved to the images at each call
        self.std = torch.tensor(std).view(1, 3, 1, 1)  # host: moved to the images at each call

    @classmethod
    def from_folder(cls, folder: str | Path | None, size: int) -> ImagePreprocess:
        """Read mean/std (and crop size) from a saved preprocessor_config.json when there is one."""
        if folder is not None and (Path(folder) / "preprocessor_config.json").exists():
            cfg = json.loads((Path(folder) / "preprocessor_config.json").read_text())
            crop = cfg.get("crop_size", size)
            crop = crop.get("height", size) if isinstance(crop, dict) else crop
            return cls(int(crop), cfg.get("image_mean", OPENAI_CLIP_MEAN), cfg.get("image_std", OPENAI_CLIP_STD))
        return cls(size)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        if (h, w) != (self.size, self.size):
            scale = self.size / min(h, w)
            nh, nw = max(self.size, round(h * scale)), max(self.size, round(w * scale))
            images = F.interpolate(images, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
            top, left = (nh - self.size) // 2, (nw - self.size) // 2
            images = images[..., top : top + self.size, left : left + self.size]
        return (images - self.mean.to(images)) / self.std.to(images)

    def config(self) -> dict:
        return {
            "crop_size": {"height": self.size, "width": self.size},
            "size": {"shortest_edge": self.size},
            "image_mean": self.mean.flatten().tolist(),
            "image_std": self.std.flatten().tolist(),
            "do_resize": True,
            "do_center_crop": True,
            "do_normalize": True,
            "image_processor_type": "CLIPImageProcessor",
        }


class Weighted:
    """A weighted sum of rewards, e.g. parse_weights('clip:0.5,aesthetic:0.5'). Differentiable (`with_grad`)
    when every part is; `with_grad` is None otherwise."""

    def __init__(self, parts: list[tuple[Reward, float]]):
        self.parts = parts
        self.name = ",".join(f"{r.name}:{w:g}" for r, w in parts)
        if not all(callable(getattr(r, "with_grad", None)) for r, _ in parts):
            self.with_grad = None

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return sum(w * r(images, prompts) for r, w in self.parts)

    def with_grad(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return sum(w * r.with_grad(images, prompts) for r, w in self.parts)


def parse_weights(spec: str) -> list[tuple[str, float]]:
    """'clip' -> [('clip', 1.0)]; 'clip:0.5,aesthetic:0.5' -> two weighted parts."""
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, w = part.partition(":")
        try:
            out.append((name.strip(), float(w) if w else 1.0))
        except ValueError:
            raise ValueError(f"reward weight {w!r} in {spec!r} is not a number (write e.g. 'clip:0.5')") from None
    if not out:
        raise ValueError(f"empty reward specification {spec!r}")
    return out
