"""CLIP score: the reward (100 x cosine, as the released code) and the evaluation metric (cosine).

Both scales use ``transformers.CLIPModel``: at paper scale loaded from the hub
(openai/clip-vit-large-patch14 for the reward), in the tiny world trained contrastively here on
tiny-world captions (``ContrastiveTraining`` through the one training loop). The reward model
and the evaluation model are separate models trained on disjoint halves of the data with
different seeds, so a method cannot raise the evaluation score by fooling its own reward.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import paths
from ..tensors import resolve_device, to_float, unwrap
from .base import ImagePreprocess, check_batch


def _features(out) -> torch.Tensor:
    """transformers 4 returns a tensor from get_*_features, transformers 5 an output with pooler_output."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class CLIPScore:
    """reward(images, prompts) = scale * cos(image embedding, text embedding)."""

    name = "clip"

    def __init__(self, model, tokenizer, preprocess: ImagePreprocess, device=None, scale: float = 100.0):
        device = resolve_device(device)
        self.model = model.to(device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.device = torch.device(device)
        self.scale = scale
        self._text_cache: dict[str, torch.Tensor] = {}

    @classmethod
    def load(
        cls, source: str | Path = "models/clip_reward", device=None, revision: str | None = None, scale: float = 100.0
    ) -> CLIPScore:
        """A local folder (the tiny world's trained CLIP) or a hub id (paper scale)."""
        from transformers import AutoTokenizer, CLIPModel

        local = paths.resolve(source) if str(source).startswith(("models", ".", "/")) else None
        if local is not None and not (local / "config.json").exists():
            raise FileNotFoundError(f"no CLIP model at {local}: run `dvc repro clip` first (or give a hub id)")
        where = str(local) if local is not None else str(source)
        model = CLIPModel.from_pretrained(where, revision=revision)
        tok = AutoTokenizer.from_pretrained(where, revision=revision)
        pre = ImagePreprocess.from_folder(local, model.config.vision_config.image_size)
        return cls(model, tok, pre, device, scale)

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        px = self.preprocess(images.to(self.device, torch.float32))
        f = _features(self.model.get_image_features(pixel_values=px))
        return f / f.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def embed_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Normalised text embeddings, cached per prompt (training batches repeat prompts n*m times)."""
        missing = sorted({p for p in prompts if p not in self._text_cache})
        if missing:
            tok = self.tokenizer(
                missing,
                padding="max_length",
                truncation=True,
                max_length=self.tokenizer.model_max_length,
                return_tensors="pt",
            ).to(self.device)
            f = _features(self.model.get_text_features(input_ids=tok.input_ids, attention_mask=tok.attention_mask))
            f = f / f.norm(dim=-1, keepdim=True)
            if len(self._text_cache) > 100_000:
                self._text_cache.clear()
            self._text_cache.update(zip(missing, f))
        return torch.stack([self._text_cache[p] for p in prompts])

    def cosine(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        check_batch(images, prompts)
        return (self.embed_images(images) * self.embed_texts(prompts)).sum(-1)

    def __call__(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        return self.scale * self.cosine(images, prompts)

    def with_grad(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """The same score with gradients flowing back to the images (DRaFT, ReFL); the text side stays cached."""
        check_batch(images, prompts)
        f = _features(self.model.get_image_features(pixel_values=self.preprocess(images.float())))
        f = f / f.norm(dim=-1, keepdim=True)
        return self.scale * (f * self.embed_texts(prompts)).sum(-1)


# ----------------------------------------------------------------------------- the tiny world's CLIP
@dataclass
class ClipArch:
    """Sizes of a tiny CLIP (params.yaml: clip.reward.arch, clip.evaluator.arch)."""

    image_size: int = 32
    patch_size: int = 4
    width: int = 64
    layers: int = 3
    heads: int = 4
    embed_dim: int = 64


def build_tiny_clip(arch: ClipArch, tokenizer, seed: int = 0):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    common = dict(
        hidden_size=arch.width,
        intermediate_size=2 * arch.width,
        num_hidden_layers=arch.layers,
        num_attention_heads=arch.heads,
    )
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **common,
        ),
        vision_config=dict(image_size=arch.image_size, patch_size=arch.patch_size, num_channels=3, **common),
        projection_dim=arch.embed_dim,
    )
    return CLIPModel(cfg)


@dataclass
class Pairs:
    """Image-caption pairs as uint8 images (N, H, W, 3) and strings."""

    images: np.ndarray
    captions: list[str]

    def __len__(self) -> int:
        return len(self.captions)

    def take(self, idx) -> tuple[torch.Tensor, list[str]]:
        idx = np.asarray(idx)
        x = to_float(self.images[idx])
        return x, [self.captions[i] for i in idx]


def split_pairs(sets, shard: int, n_shards: int = 2, holdout: int = 500) -> tuple[Pairs, Pairs]:
    """Training pairs (shard `shard` of the non-held-out part of each set) and the held-out tails."""
    tr_i, tr_c, ho_i, ho_c = [], [], [], []
    for s in sets:
        n = len(s) - holdout
        idx = np.arange(n)[shard::n_shards]
        tr_i.append(s.images[idx])
        tr_c += [s.captions[i] for i in idx]
        ho_i.append(s.images[n:])
        ho_c += s.captions[n:]
    return Pairs(np.concatenate(tr_i), tr_c), Pairs(np.concatenate(ho_i), ho_c)


class ContrastiveTraining:
    """CLIP's symmetric InfoNCE on in-batch negatives, as a method of the one training loop."""

    def __init__(
        self,
        model,
        tokenizer,
        preprocess: ImagePreprocess,
        pairs: Pairs,
        batch_size: int,
        name: str = "clip",
        fingerprint: dict | None = None,
    ):
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.pairs = pairs
        self.batch_size = batch_size
        self._fp = fingerprint or {}

    def modules(self):
        return {"clip": self.model}

    def bind(self, prepared):
        self.model = prepared["clip"]

    def fingerprint(self) -> dict:
        return {"kind": "clip-contrastive", "n": len(self.pairs), "batch": self.batch_size, **self._fp}

    def loss(self, step: int, gen: torch.Generator):
        idx = torch.randperm(len(self.pairs), generator=gen)[: self.batch_size].numpy()
        images, captions = self.pairs.take(idx)
        dev = next(self.model.parameters()).device
        tok = self.tokenizer(
            captions,
            padding="max_length",
            truncation=True,
            max_length=self.tokenizer.model_max_length,
            return_tensors="pt",
        ).to(dev)
        out = self.model(
            input_ids=tok.input_ids,
            attention_mask=tok.attention_mask,
            pixel_values=self.preprocess(images.to(dev)),
            return_loss=True,
        )
        acc = (out.logits_per_image.argmax(1) == torch.arange(len(idx), device=dev)).float().mean()
        scale = unwrap(self.model).logit_scale.exp()
        return out.loss, {"batch_acc": acc.item(), "logit_scale": scale.item()}

    def save(self, out_dir: Path) -> None:
        self.model.save_pretrained(str(out_dir))
        self.tokenizer.save_pretrained(str(out_dir))
        (Path(out_dir) / "preprocessor_config.json").write_text(json.dumps(self.preprocess.config(), indent=1))


@torch.no_grad()
def retrieval_accuracy(scorer: CLIPScore, pairs: Pairs, pool: int = 100, seed: int = 0) -> dict[str, float]:
    """Top-1 image->text and text->image retrieval in random pools of `pool` held-out pairs.

    Captions that are identical strings count as correct for each other's images.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pairs))
    i2t, t2i, n = 0.0, 0.0, 0
    for start in range(0, len(order) - pool + 1, pool):
        idx = order[start : start + pool]
        images, caps = pairs.take(idx)
        sim = scorer.embed_images(images) @ scorer.embed_texts(caps).T
        same = torch.tensor([[a == b for b in caps] for a in caps], device=sim.device)
        rows = torch.arange(pool, device=sim.device)
        i2t += same[rows, sim.argmax(1)].float().sum().item()
        t2i += same[sim.argmax(0), rows].float().sum().item()
        n += pool
    return {
        "image_to_text_top1": i2t / n,
        "text_to_image_top1": t2i / n,
        "pool": pool,
        "queries": n,
        "chance": 1 / pool,
    }
