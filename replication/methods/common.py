"""Plumbing shared by the fine-tuning methods: which modules train, where batches come from, saving."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..models import T2IModel


class ImageTextSource:
    """Random (image, caption) batches from a tiny-world set (uint8 images) drawn with the step generator."""

    def __init__(self, images: np.ndarray, captions: Sequence[str], name: str = "data"):
        if len(images) != len(captions):
            raise ValueError(f"{name}: {len(images)} images but {len(captions)} captions")
        self.images, self.captions, self.name = images, list(captions), name

    def __len__(self) -> int:
        return len(self.captions)

    def batch(self, size: int, gen: torch.Generator, device) -> tuple[torch.Tensor, list[str]]:
        idx = torch.randint(len(self), (size,), generator=gen).numpy()
        x = torch.from_numpy(self.images[idx]).to(device).permute(0, 3, 1, 2).float() / 255
        return x, [self.captions[i] for i in idx]


class UNetMethod:
    """Base of methods that fine-tune the UNet of a T2IModel (full weights; the text encoders and
    the VAE stay frozen, as in the paper's scripts)."""

    name = "unet-method"

    def __init__(self, model: T2IModel, batch_size: int, fingerprint: dict | None = None):
        self.model = model
        self.batch_size = batch_size
        self._fp = dict(fingerprint or {})

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.model.unet}

    def bind(self, prepared: dict[str, torch.nn.Module]) -> None:
        self.model.unet = prepared["unet"]

    def fingerprint(self) -> dict:
        return {"method": self.name, "batch_size": self.batch_size, **self._fp}

    def save(self, out_dir: Path) -> None:
        self.model.save(out_dir, unet=self.model.unet)

    @property
    def device(self) -> torch.device:
        return self.model.device
