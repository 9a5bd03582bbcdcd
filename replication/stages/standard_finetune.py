"""Stage standard_finetune: the diffusers SDXL example's objective on the SFT sharpening data (Fig. 4's baseline)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import config, figures, paths
from ..methods.standard import StandardFinetune
from ..sources import image_text_source
from ..train import train_named
from .common import RunParams, load_model

NAME = "standard_finetune"


@dataclass
class StandardFinetuneParams(RunParams):
    """params.yaml: standard_finetune."""

    dataset: str = "journeydb"


params = config.loader({NAME: StandardFinetuneParams})


def build(p: config.Params) -> StandardFinetune:
    s = p.standard_finetune
    model, fp = load_model(s)
    return StandardFinetune(
        model,
        image_text_source(s.dataset, model.image_size),
        s.train.batch_size,
        fingerprint={**fp, "dataset": s.dataset},
        lora=s.lora,
    )


def run(p: config.Params, show_progress: bool = True) -> dict:
    return train_named(NAME, build(p), p.standard_finetune.train, show_progress)


def show(result: dict, p: config.Params):
    return figures.training_curve(paths.train_logs() / f"{NAME}.csv")
