"""Where training batches come from: every batch source, drawn with the training step's generator.

| source              | gives                                          | used by                                      |
|---------------------|------------------------------------------------|----------------------------------------------|
| `ImageTextSource`   | (images, captions) of an in-memory set         | SFT sharpening, standard fine-tuning, VAE    |
| `LatentCache`       | clean latents of those images (VAE posterior)  | standard fine-tuning and the base UNet       |
| `HFImageTextSource` | (images, captions) of a Hugging Face data set  | the same methods at paper scale              |
| `PromptSource`      | prompts                                        | RLHF sharpening, DDPO, D3PO, IterPO, DRaFT   |
| `PairSource`        | (winner images, loser images, prompts)         | Diffusion-DPO                                |

`image_text_source`, `prompt_source` and `pair_source` make one from a params.yaml reference: a tiny-world set
by name, or a Hugging Face data set id / a text file / a pairs file at paper scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from . import data, paths
from .feedback import PreferencePairs
from .models import T2IModel
from .tensors import to_float


class ImageTextSource:
    """Random (image, caption) batches from a tiny-world set (uint8 images) drawn with the step generator."""

    def __init__(self, images: np.ndarray, captions: Sequence[str], name: str = "data"):
        if len(images) != len(captions):
            raise ValueError(f"{name}: {len(images)} images but {len(captions)} captions")
        self.images, self.captions, self.name = images, list(captions), name
        self._latents: LatentCache | None = None

    def __len__(self) -> int:
        return len(self.captions)

    def indices(self, size: int, gen: torch.Generator) -> np.ndarray:
        """The rows of one random batch (what `batch` draws from `gen`)."""
        return torch.randint(len(self), (size,), generator=gen).numpy()

    def pixels(self, idx, device) -> torch.Tensor:
        """Images of rows `idx` as floats in [0, 1], (N, 3, H, W)."""
        return to_float(self.images[idx], device)

    def batch(self, size: int, gen: torch.Generator, device) -> tuple[torch.Tensor, list[str]]:
        idx = self.indices(size, gen)
        return self.pixels(idx, device), [self.captions[i] for i in idx]

    def latent_batch(self, size: int, gen: torch.Generator, model: T2IModel) -> tuple[torch.Tensor, list[str]]:
        """A random batch as clean latents of `model`'s (frozen) VAE, from a posterior cached at the first call."""
        if self._latents is None or self._latents.model is not model:
            self._latents = LatentCache(model, self)
        idx = self.indices(size, gen)
        return self._latents.latents(idx, gen), [self.captions[i] for i in idx]


class LatentCache:
    """The VAE posterior (mean, std) of every image of an in-memory set, computed once, for methods that train on
    clean latents of a frozen VAE: a batch then costs an index and a draw instead of a VAE encoder pass.
    `latents(idx, gen)` draws the posterior sample as `T2IModel.encode(images, gen)` does (both through
    `T2IModel.posterior_sample`), so a method's random stream is the same with or without the cache. Valid while
    the VAE does not change (T2IModel freezes it). `ImageTextSource.latent_batch` builds one on first use."""

    def __init__(self, model: T2IModel, source: ImageTextSource, chunk: int = 256):
        means, stds = [], []
        with torch.no_grad():
            for start in range(0, len(source), chunk):
                rows = np.arange(start, min(start + chunk, len(source)))
                mean, std = model.posterior(source.pixels(rows, model.device))
                means.append(mean)
                stds.append(std)
        self.model, self.mean, self.std = model, torch.cat(means), torch.cat(stds)

    def latents(self, idx, gen: torch.Generator) -> torch.Tensor:
        idx = torch.as_tensor(idx, device=self.mean.device)
        return self.model.posterior_sample(self.mean[idx], self.std[idx], gen)


class HFImageTextSource:
    """Random batches from a Hugging Face image-text dataset (paper scale: JourneyDB, Text-to-Image-2M,
    pokemon-blip-captions): each image is resized on its shortest side and centre-cropped, as in the
    diffusers SDXL training example. Decoding files is the data pipeline's job, once per sample."""

    def __init__(
        self, rows, resolution: int, image_column: str = "image", caption_column: str = "text", name: str = "hf"
    ):
        self.rows, self.resolution, self.name = rows, resolution, name
        self.image_column, self.caption_column = image_column, caption_column

    def __len__(self) -> int:
        return len(self.rows)

    def _pixels(self, image) -> np.ndarray:
        from PIL import Image

        img = image.convert("RGB")
        scale = self.resolution / min(img.size)
        w, h = max(self.resolution, round(img.width * scale)), max(self.resolution, round(img.height * scale))
        img = img.resize((w, h), Image.BICUBIC)
        left, top = (w - self.resolution) // 2, (h - self.resolution) // 2
        img = img.crop((left, top, left + self.resolution, top + self.resolution))
        return np.asarray(img, dtype=np.uint8)

    def batch(self, size: int, gen: torch.Generator, device) -> tuple[torch.Tensor, list[str]]:
        idx = torch.randint(len(self), (size,), generator=gen).tolist()
        rows = [self.rows[i] for i in idx]
        x = to_float(np.stack([self._pixels(r[self.image_column]) for r in rows]), device)
        return x, [str(r[self.caption_column]) for r in rows]

    def latent_batch(self, size: int, gen: torch.Generator, model: T2IModel) -> tuple[torch.Tensor, list[str]]:
        """A random batch as clean latents of `model`'s VAE, encoded batch by batch (the set is not in memory)."""
        images, captions = self.batch(size, gen, model.device)
        with torch.no_grad():
            return model.encode(images, gen), captions


class PromptSource:
    """Random prompt batches (RLHF-style methods train on prompts only), drawn with the step generator."""

    def __init__(self, prompts: Sequence[str], name: str = "prompts"):
        if not prompts:
            raise ValueError(f"{name}: no prompts")
        self.prompts, self.name = list(prompts), name

    def __len__(self) -> int:
        return len(self.prompts)

    def batch(self, size: int, gen: torch.Generator) -> list[str]:
        idx = torch.randint(len(self), (size,), generator=gen).tolist()
        return [self.prompts[i] for i in idx]


class PairSource:
    """Random batches of decided preference pairs: (winner images, loser images, prompts)."""

    def __init__(self, pairs: PreferencePairs, name: str = "pairs"):
        self.winners, self.losers, self.prompts = pairs.decided()
        if not self.prompts:
            raise ValueError(f"{name}: every pair is a tie; Diffusion-DPO needs pairs with a preference")
        self.name = name

    def __len__(self) -> int:
        return len(self.prompts)

    def batch(self, size: int, gen: torch.Generator, device):
        idx = torch.randint(len(self), (size,), generator=gen).numpy()
        return to_float(self.winners[idx], device), to_float(self.losers[idx], device), [self.prompts[i] for i in idx]


# ----------------------------------------------------------------------------- from params.yaml references
def image_text_source(name: str, resolution: int):
    """A tiny-world set by name, or a Hugging Face dataset id (paper scale, `datasets` required)."""
    if name in data.IMAGE_SETS:
        ds = data.load_image_set(name)
        return ImageTextSource(ds.images, ds.captions, name)
    return HFImageTextSource(data.load_hf_image_text(name), resolution, name=name)


def prompt_source(name: str) -> PromptSource:
    """A tiny-world prompt set by name, or a text file with one prompt per line (paper scale)."""
    if name in data.PROMPT_SEEDS:
        return PromptSource([r["prompt"] for r in data.load_prompts(name)], name)
    path = paths.resolve(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"prompts {name!r}: not a tiny-world prompt set ({', '.join(data.PROMPT_SEEDS)}) and no such text file"
        )
    return PromptSource([ln.strip() for ln in path.read_text().splitlines() if ln.strip()], path.name)


def pair_source(path: str) -> PairSource:
    """Judged pairs from a file in `feedback.PreferencePairs`' format (stage feedback writes the tiny world's)."""
    full = paths.resolve(path)
    if not full.exists():
        raise FileNotFoundError(f"pairs file {full} is missing: run `dvc repro feedback` first (or point at one)")
    return PairSource(PreferencePairs.load(full), full.name)
