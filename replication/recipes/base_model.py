"""The base model: the tiny StableDiffusionPipeline trained from scratch on the T2I-2M-role set, or SDXL.

Two phases through the one training loop: (1) the VAE (L1 + L2 reconstruction, a small KL
term), after which the latent scaling factor is set to 1 / std of the latents as in SD;
(2) the UNet and the text encoder with the epsilon objective and caption dropout (for
classifier-free guidance). Then the model's quality on the CompBench-like set, next to chance and
to the VAE's ceiling (`evaluate.base_model_report`). At paper scale the recipe instead materialises
SDXL from the hub (pinned revision) into the same folder, so every later stage reads ``models/base`` alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import data, evaluate, paths
from ..digests import file_digest
from ..evaluate import GenerationParams
from ..methods.standard import StandardFinetune
from ..models import T2IModel, TinyArch, build_tiny_sd, load_pipeline
from ..sources import ImageTextSource
from ..tensors import default_device, unwrap
from ..train import TrainParams, train


@dataclass
class VAEParams:
    kl_weight: float = 1e-6
    train: TrainParams = field(default_factory=lambda: TrainParams(steps=2000, batch_size=32, lr=1e-3))


@dataclass
class UNetPretrainParams:
    cond_dropout: float = 0.1  # share of captions replaced by "" (classifier-free guidance)
    train: TrainParams = field(default_factory=lambda: TrainParams(steps=3000, batch_size=64, lr=5e-4))


@dataclass
class BaseModelParams:
    """params.yaml: base_model."""

    source: str = "tiny"  # "tiny": train the tiny model here; otherwise a hub id or folder to materialise
    revision: str | None = None
    dataset: str = "t2i2m"
    arch: TinyArch = field(default_factory=TinyArch)
    vae: VAEParams = field(default_factory=VAEParams)
    unet: UNetPretrainParams = field(default_factory=UNetPretrainParams)
    report_prompts: int = 256  # CompBench-like prompts per category and split for the quality report
    generation: GenerationParams = field(default_factory=GenerationParams)


class VAETraining:
    """Autoencoder reconstruction: L1 + L2 on pixels in [-1, 1] plus kl_weight * KL."""

    name = "vae"

    def __init__(self, vae, data_source: ImageTextSource, batch_size: int, kl_weight: float):
        self.vae, self.data, self.batch_size, self.kl_weight = vae, data_source, batch_size, kl_weight

    def modules(self):
        return {"vae": self.vae}

    def bind(self, prepared):
        self.vae = prepared["vae"]

    def fingerprint(self) -> dict:
        # diffusers' private config keys (`_use_default_values` lists a set, in hash order) would make the
        # fingerprint differ between processes, and a finished VAE would be retrained instead of reused
        config = {k: v for k, v in unwrap(self.vae).config.items() if not k.startswith("_")}
        return {
            "method": self.name,
            "data": self.data.name,
            "n": len(self.data),
            "batch_size": self.batch_size,
            "kl_weight": self.kl_weight,
            "config": config,
        }

    def loss(self, step: int, gen: torch.Generator):
        dev = next(self.vae.parameters()).device
        images, _ = self.data.batch(self.batch_size, gen, dev)
        x = images * 2 - 1
        vae = unwrap(self.vae)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(gen)).sample
        l1, l2 = (rec - x).abs().mean(), (rec - x).pow(2).mean()
        kl = post.kl().mean() / x[0].numel()
        return l1 + l2 + self.kl_weight * kl, {"l1": l1.item(), "l2": l2.item(), "kl": kl.item()}

    def save(self, out_dir: Path) -> None:
        unwrap(self.vae).save_pretrained(str(out_dir))


@torch.no_grad()
def latent_scaling_factor(vae, images: np.ndarray, n: int = 2048) -> float:
    """1 / std of posterior means over n training images: latents of unit variance, as SD's 0.18215."""
    x = torch.from_numpy(images[:n]).to(next(vae.parameters()).device).permute(0, 3, 1, 2).float() / 127.5 - 1
    z = torch.cat([vae.encode(c).latent_dist.mean for c in x.split(256)])
    return float(1.0 / z.std())


def train_base_model(p: BaseModelParams, out_dir: Path | None = None, show_progress: bool = True) -> dict:
    """Train (tiny) or materialise (hub id) the base pipeline into models/base."""
    out_dir = out_dir or paths.models() / "base"
    if p.source != "tiny":
        pipe = load_pipeline(p.source, p.revision)
        pipe.save_pretrained(str(out_dir))
        paths.strip_local_paths(out_dir)
        return {"source": p.source, "revision": p.revision}

    ds = data.load_image_set(p.dataset)
    src = ImageTextSource(ds.images, ds.captions, p.dataset)
    pipe = build_tiny_sd(p.arch, seed=p.vae.train.seed)
    runs = paths.checkpoints() / "base_model"

    vae_fit = train(
        VAETraining(pipe.vae, src, p.vae.train.batch_size, p.vae.kl_weight),
        p.vae.train,
        runs / "vae",
        paths.train_logs() / "base_vae.csv",
        show_progress=show_progress,
    )
    from diffusers import AutoencoderKL

    pipe.vae = AutoencoderKL.from_pretrained(paths.root() / vae_fit["final"])
    scale = latent_scaling_factor(pipe.vae, ds.images)
    pipe.vae.register_to_config(scaling_factor=scale)

    model = T2IModel(pipe, device=default_device())
    method = StandardFinetune(
        model,
        src,
        p.unet.train.batch_size,
        cond_dropout=p.unet.cond_dropout,
        train_text_encoder=True,
        fingerprint={
            "vae": file_digest(paths.root() / vae_fit["final"]),
            "scale": scale,
            "arch": vars(p.arch),
            "data": p.dataset,
        },
    )
    method.name = "base-unet"
    fit = train(
        method,
        p.unet.train,
        runs / "unet",
        paths.train_logs() / "base_unet.csv",
        out_dir=out_dir,
        show_progress=show_progress,
    )
    return {
        "vae_scaling_factor": scale,
        "vae_steps": vae_fit["steps"],
        "unet_steps": fit["steps"],
        "parameters": {
            "unet": sum(x.numel() for x in pipe.unet.parameters()),
            "vae": sum(x.numel() for x in pipe.vae.parameters()),
            "text_encoder": sum(x.numel() for x in pipe.text_encoder.parameters()),
        },
    }


def base_model(p: BaseModelParams, show_progress: bool = True) -> dict:
    """Train (tiny) or materialise (hub id) models/base; for the tiny model, its quality report too."""
    torch.manual_seed(0)
    report = {"training": train_base_model(p, show_progress=show_progress)}
    if p.source == "tiny":
        report.update(
            evaluate.base_model_report(paths.models() / "base", p.generation, p.report_prompts, default_device())
        )
    return report
