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


class HFImageTextSource:
    """Random batches from a Hugging Face image-text dataset (paper scale: JourneyDB, Text-to-Image-2M,
    pokemon-blip-captions): each image is resized on its shortest side and centre-cropped, as in the
    diffusers SDXL training example. Decoding files is the data pipeline's job, once per sample."""

    def __init__(self, rows, resolution: int, image_column: str = "image", caption_column: str = "text",
                 name: str = "hf"):
        self.rows, self.resolution, self.name = rows, resolution, name
        self.image_column, self.caption_column = image_column, caption_column

    def __len__(self) -> int:
        return len(self.rows)

    def _pixels(self, image) -> torch.Tensor:
        from PIL import Image

        img = image.convert("RGB")
        scale = self.resolution / min(img.size)
        w, h = max(self.resolution, round(img.width * scale)), max(self.resolution, round(img.height * scale))
        img = img.resize((w, h), Image.BICUBIC)
        left, top = (w - self.resolution) // 2, (h - self.resolution) // 2
        img = img.crop((left, top, left + self.resolution, top + self.resolution))
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)

    def batch(self, size: int, gen: torch.Generator, device) -> tuple[torch.Tensor, list[str]]:
        idx = torch.randint(len(self), (size,), generator=gen).tolist()
        rows = [self.rows[i] for i in idx]
        x = torch.stack([self._pixels(r[self.image_column]) for r in rows]).to(device).float() / 255
        return x, [str(r[self.caption_column]) for r in rows]


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
