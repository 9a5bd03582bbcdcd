"""Plumbing shared by the fine-tuning methods: which modules train (full or LoRA), the frozen
reference model, where batches come from, differentiable rewards, NFE accounting, saving."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..models import T2IModel


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
        return torch.from_numpy(self.images[idx]).to(device).permute(0, 3, 1, 2).float() / 255

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
    clean latents of a frozen VAE. A batch then costs an index and a draw instead of a VAE encoder pass: for the
    base model's UNet (batch 64 of 32x32 images) that pass is about 13% of a training step. `latents(idx, gen)`
    draws the posterior sample as `T2IModel.encode(images, gen)` does (both through `T2IModel.posterior_sample`), so
    a method's random stream is the same with or without the cache. Valid while the VAE does not change (T2IModel
    freezes it). `ImageTextSource.latent_batch` builds one on first use."""

    def __init__(self, model: T2IModel, source: ImageTextSource, chunk: int = 256):
        means, stds = [], []
        with torch.no_grad():
            for start in range(0, len(source), chunk):
                mean, std = model.posterior(
                    source.pixels(np.arange(start, min(start + chunk, len(source))), model.device)
                )
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


# ----------------------------------------------------------------------------- LoRA
@dataclass
class LoraSpec:
    """LoRA on the UNet's attention projections (peft); rank 0 means full fine-tuning."""

    rank: int = 0
    alpha: float = 0.0  # 0: alpha = rank (scale 1)
    targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")

    def __post_init__(self):
        if self.rank < 0:
            raise ValueError(f"lora.rank must be >= 0 (0 = full fine-tuning), got {self.rank}")
        self.targets = tuple(self.targets)

    @property
    def enabled(self) -> bool:
        return self.rank > 0


def add_lora(unet, spec: LoraSpec) -> None:
    """Freeze the UNet and add trainable LoRA adapters (diffusers' peft integration)."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    unet.add_adapter(
        LoraConfig(
            r=spec.rank,
            lora_alpha=spec.alpha or spec.rank,
            init_lora_weights="gaussian",
            target_modules=list(spec.targets),
        )
    )


def merged_unet(unet):
    """A copy of a LoRA UNet with the adapters fused into the weights and removed: a plain
    UNet2DConditionModel that `DiffusionPipeline.from_pretrained` loads like the base model's."""
    out = copy.deepcopy(unet)
    out.fuse_lora()
    out.unload_lora()
    return out


def unwrap(module):
    """The module inside a DDP wrapper (accelerate on several GPUs), else the module."""
    return getattr(module, "module", module)


# ----------------------------------------------------------------------------- rewards with gradients
def differentiable(reward):
    """reward(images, prompts) with gradients flowing back to the images (DRaFT, ReFL, IterPO).

    A reward that offers `with_grad(images, prompts)` is used through it. The rewards of this
    repository score under torch.no_grad (cheap in every other method); for them the same
    computation is rebuilt here from their public parts. Anything else is called as is and must
    return a result that requires grad.
    """
    fn = getattr(reward, "with_grad", None)
    if callable(fn):
        return fn
    parts = getattr(reward, "parts", None)
    if parts is not None:  # rewards.Weighted
        fns = [(differentiable(r), w) for r, w in parts]
        return lambda images, prompts: sum(w * f(images, prompts) for f, w in fns)
    kind = type(reward).__name__
    if kind == "CLIPScore":
        from ..rewards.clip import _features

        def clip_with_grad(images, prompts):
            f = _features(reward.model.get_image_features(pixel_values=reward.preprocess(images.float())))
            f = f / f.norm(dim=-1, keepdim=True)
            return reward.scale * (f * reward.embed_texts(prompts)).sum(-1)

        return clip_with_grad
    if kind == "FusionReward":

        def fusion_with_grad(images, prompts):
            ids, mask = reward.tokens(prompts)
            return (reward.model(reward.preprocess(images.float()), ids, mask) - reward.mean) / reward.std

        return fusion_with_grad

    def checked(images, prompts):
        r = reward(images, prompts)
        if not r.requires_grad:
            raise TypeError(
                f"reward {getattr(reward, 'name', kind)!r} gives no gradient (it scores under no_grad); "
                f"methods that backpropagate through the reward need a differentiable one: give it a "
                f"`with_grad(images, prompts)` method"
            )
        return r

    return checked


# ----------------------------------------------------------------------------- rounds of on-policy samples
class SampledRounds:
    """Mixin of methods that sample a round with the current model and reuse it for `spec.updates_per_sample`
    optimiser steps (DDPO, D3PO). The subclass provides `_sample(gen) -> dict` (with an "order" permutation of
    the round's rows) and sets `self.group`. The round's samples are method state: the training loop
    checkpoints `state_dict()`, so a run killed mid-round resumes exactly."""

    _round: int = -1
    _buf: dict | None = None
    # one share of the round per optimiser step: a second micro-step (train.grad_accum > 1) would repeat its rows,
    # so the training loop refuses gradient accumulation for these methods
    one_batch_per_step = True

    def state_dict(self) -> dict:
        return {"round": self._round, "buffer": self._buf}

    def load_state_dict(self, state: dict) -> None:
        self._round, buf = state["round"], state["buffer"]
        self._buf = None if buf is None else {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in buf.items()}

    def round_rows(self, step: int, gen: torch.Generator) -> tuple[dict, torch.Tensor]:
        """The current round's samples (sampled now at a round's first step) and this step's share of its rows."""
        rnd, j = divmod(step - 1, self.spec.updates_per_sample)
        if self._round != rnd:
            if j:
                raise RuntimeError(
                    f"{self.name}: step {step} is inside round {rnd} but its samples are missing; "
                    f"resume from a checkpoint written by the training loop (it stores them)"
                )
            self._buf, self._round = self._sample(gen), rnd
        return self._buf, self._buf["order"][j * self.batch_size : (j + 1) * self.batch_size]


# ----------------------------------------------------------------------------- the method base
class UNetMethod:
    """Base of methods that fine-tune the UNet of a T2IModel: all of its weights, or LoRA adapters on
    its attention projections (`lora`); the text encoders and the VAE stay frozen, as in the paper's
    scripts. Methods with a KL anchor get a frozen reference: the starting UNet (a frozen copy for
    full fine-tuning; with LoRA, the same UNet with its adapters disabled)."""

    name = "unet-method"

    def __init__(
        self,
        model: T2IModel,
        batch_size: int,
        fingerprint: dict | None = None,
        lora: LoraSpec | None = None,
        reference: bool = False,
    ):
        self.model = model
        self.batch_size = batch_size
        self._fp = dict(fingerprint or {})
        self.lora = lora if lora is not None and lora.enabled else None
        if self.lora is not None:
            add_lora(model.unet, self.lora)
        self._ref_unet = None
        if reference and self.lora is None:
            self._ref_unet = copy.deepcopy(model.unet).requires_grad_(False).eval()

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.model.unet}

    def bind(self, prepared: dict[str, torch.nn.Module]) -> None:
        self.model.unet = prepared["unet"]

    def fingerprint(self) -> dict:
        fp = {"method": self.name, "batch_size": self.batch_size, **self._fp}
        if self.lora is not None:
            fp["lora"] = {"rank": self.lora.rank, "alpha": self.lora.alpha, "targets": list(self.lora.targets)}
        return fp

    def save(self, out_dir: Path) -> None:
        unet = merged_unet(unwrap(self.model.unet)) if self.lora is not None else self.model.unet
        self.model.save(out_dir, unet=unet)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # -- the frozen reference
    @contextlib.contextmanager
    def _reference_weights(self):
        if self.lora is None:
            yield self._ref_unet
            return
        inner = unwrap(self.model.unet)
        inner.disable_adapters()
        try:
            yield inner
        finally:
            inner.enable_adapters()

    def ref_denoiser(self, cond, guidance_scale: float = 1.0):
        """eps_fn of the frozen reference model (no gradients; its evaluations count as NFEs)."""
        if self.lora is None and self._ref_unet is None:
            raise RuntimeError(f"{self.name}: constructed without a reference model (reference=True)")

        uncond = self.model.encode_uncond(len(cond)) if guidance_scale != 1.0 else None

        def eps_fn(x, t):
            with torch.no_grad(), self._reference_weights() as unet:
                return self.model.denoiser(cond, guidance_scale, uncond, unet=unet)(x, t)

        return eps_fn

    def nfe_mark(self) -> int:
        return self.model.nfe.evals

    def nfe_since(self, mark: int) -> float:
        return float(self.model.nfe.evals - mark)
