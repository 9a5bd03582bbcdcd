"""What every stage shares: the device, JSON results, model and dataset references from params.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .. import data, paths
from ..methods.common import HFImageTextSource, ImageTextSource, LoraSpec


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    return path


def model_source(name: str) -> str | Path:
    """A params.yaml model reference: a repository folder (models/...) or a hub id."""
    return paths.resolve(name) if name.startswith(("models", ".", "/")) else name


def image_text_source(name: str, resolution: int):
    """A tiny-world set by name, or a Hugging Face dataset id (paper scale, `datasets` required)."""
    if name in data.IMAGE_SETS:
        ds = data.load_image_set(name)
        return ImageTextSource(ds.images, ds.captions, name)
    return HFImageTextSource(data.load_hf_image_text(name), resolution, name=name)


def lora_spec(sec) -> LoraSpec:
    """A section's `lora` entry (rank 0: full fine-tuning)."""
    return LoraSpec(rank=sec.lora.rank, alpha=sec.lora.alpha)


def load_model(sec):
    """The starting pipeline of a section (its `model` and `revision`) and its fingerprint entry: the weights'
    digest for a folder, hub id@revision otherwise (a retrained base model retrains what starts from it)."""
    from ..models import T2IModel
    from ..train import file_digest

    src = model_source(sec.model)
    model = T2IModel.from_pretrained(src, device=device(), revision=sec.revision)
    return model, {"model": file_digest(src) if isinstance(src, Path) else f"{src}@{sec.revision}"}


def reward_fingerprint(spec: str) -> dict:
    """A reward spec and the digests of the model folders behind it (retraining a reward retrains the method)."""
    from ..rewards import REGISTRY, parse_weights
    from ..train import file_digest

    return {
        "reward": spec,
        "reward_models": {
            name: file_digest(paths.resolve(REGISTRY[name][1])) for name, _ in parse_weights(spec) if name in REGISTRY
        },
    }
