"""Parts the learned rewards are built from: ImageReward's scalar head, the z-scored reward wrapper, and the
vision-tower helpers (freezing, running a tower whose frozen prefix needs no autograd).

`preference` (the CLIP-based rewards of the tiny world), `fusion` (ImageReward's BLIP architecture) and
`aesthetic` (LAION's predictor) all build on these; none of them imports another's module for them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..tensors import resolve_device
from .base import ImagePreprocess, check_batch

HEAD_DIMS = (1024, 128, 64, 16)
HEAD_DROPOUT = (0.2, 0.2, 0.1)


class PreferenceHead(nn.Module):
    """ImageReward's MLP: Linear(d, 1024), Dropout, Linear(1024, 128), Dropout, Linear(128, 64), Dropout,
    Linear(64, 16), Linear(16, 1) (indices 0, 2, 4, 6, 7 as in its checkpoint; no activations)."""

    def __init__(self, d_in: int, dims: Sequence[int] = HEAD_DIMS, dropout: Sequence[float] = HEAD_DROPOUT):
        super().__init__()
        layers: list[nn.Module] = []
        prev = d_in
        for i, d in enumerate(dims):
            layers.append(nn.Linear(prev, d))
            if i < len(dropout):
                layers.append(nn.Dropout(dropout[i]))
            prev = d
        layers.append(nn.Linear(prev, 1))
        self.layers = nn.Sequential(*layers)  # PyTorch's default initialisation: ImageReward's N(0, 1/(d+1))
        # weights make the product of five linear maps vanish, and a tiny model trained briefly never recovers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).squeeze(-1)


class ZScoredReward:
    """reward(images, prompts) = (raw - mean) / std for a model with
    `encode_images(pixel_values)` and `score_encoded(encoded, input_ids, attention_mask)`."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        preprocess: ImagePreprocess,
        name: str,
        max_length: int,
        mean: float = 0.0,
        std: float = 1.0,
        device=None,
        batch_size: int = 256,
    ):
        device = resolve_device(device)
        self.model = model.to(device).eval().requires_grad_(False)
        self.tokenizer, self.preprocess, self.name = tokenizer, preprocess, name
        self.max_length, self.mean, self.std = int(max_length), float(mean), float(std)
        self.device, self.batch_size = torch.device(device), batch_size

    def tokens(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.tokenizer(
            list(prompts), padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return tok.input_ids.to(self.device), tok.attention_mask.to(self.device)

    @torch.no_grad()
    def raw(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        check_batch(images, prompts)
        out = []
        for s in range(0, len(prompts), self.batch_size):
            px = self.preprocess(images[s : s + self.batch_size].to(self.device, torch.float32))
            ids, mask = self.tokens(prompts[s : s + self.batch_size])
            out.append(self.model.score_encoded(self.model.encode_images(px), ids, mask).float())
        return torch.cat(out) if out else torch.zeros(0, device=self.device)

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return (self.raw(images, prompts) - self.mean) / self.std

    def with_grad(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """The same score with gradients flowing back to the images (DRaFT, ReFL, IterPO); one batch."""
        check_batch(images, prompts)
        ids, mask = self.tokens(prompts)
        encoded = self.model.encode_images(self.preprocess(images.float()))
        return (self.model.score_encoded(encoded, ids, mask).float() - self.mean) / self.std


def run_vision(vision, pixel_values: torch.Tensor, clip_style: bool) -> torch.Tensor:
    """All tokens of a CLIP/BLIP vision tower. The frozen prefix (embeddings and leading layers without
    trainable parameters) runs without autograd, unless the images themselves need gradients."""
    layers = list(vision.encoder.layers)
    n_frozen = next((i for i, l in enumerate(layers) if any(p.requires_grad for p in l.parameters())), len(layers))
    frozen_embed = not any(p.requires_grad for p in vision.embeddings.parameters()) and not pixel_values.requires_grad
    grad = torch.is_grad_enabled()
    with torch.set_grad_enabled(grad and not frozen_embed):
        h = vision.embeddings(pixel_values)
        if clip_style:
            h = vision.pre_layrnorm(h)
    for i, layer in enumerate(layers):
        with torch.set_grad_enabled(grad and not (frozen_embed and i < n_frozen)):
            h = layer(h, None) if clip_style else layer(h)
    return h


def freeze_vision(vision, trainable_layers: int) -> None:
    """Freeze a vision tower's embeddings and all but its last `trainable_layers` layers."""
    layers = vision.encoder.layers
    k = max(0, len(layers) - trainable_layers)
    frozen = [vision.embeddings, getattr(vision, "pre_layrnorm", None), *layers[:k]]
    if trainable_layers <= 0:  # the whole tower is fixed: its outputs can be computed once
        frozen.append(vision.post_layernorm)
    for m in frozen:
        if m is not None:
            m.requires_grad_(False)
