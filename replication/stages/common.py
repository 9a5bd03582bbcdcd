"""What several stages share: the settings every fine-tuning section has, and the pipeline a section starts from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import paths
from ..digests import file_digest
from ..models import LoraSpec, T2IModel
from ..tensors import default_device
from ..train import TrainParams


@dataclass
class RunParams:
    """What every fine-tuning section has beside its method's own spec: the pipeline it starts from, LoRA (rank 0:
    full fine-tuning) and the training loop's settings (the paper's Table-1 baselines: AdamW 0.9 / 0.999)."""

    model: str = "models/base"
    revision: str | None = None
    lora: LoraSpec = field(default_factory=LoraSpec)
    train: TrainParams = field(
        default_factory=lambda: TrainParams(steps=100, batch_size=8, lr=1e-4, checkpoint_every=25)
    )


def load_model(sec) -> tuple[T2IModel, dict]:
    """The starting pipeline of a section and its fingerprint entry: the weights' digest for a folder, hub
    id@revision otherwise (a retrained base model retrains what starts from it)."""
    src = paths.model_source(sec.model)
    model = T2IModel.from_pretrained(src, device=default_device(), revision=sec.revision)
    return model, {"model": file_digest(src) if isinstance(src, Path) else f"{src}@{sec.revision}"}
