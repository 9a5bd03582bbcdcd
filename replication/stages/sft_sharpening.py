"""Stage sft_sharpening: SFT Diffusion-Sharpening (Algorithm 1) of models/base on an image-caption set."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import config, figures, paths
from ..methods.sharpening import SFTSharpening, SharpeningSpec
from ..rewards import registry
from ..sources import image_text_source
from ..tensors import default_device
from ..train import TrainParams, train_named
from .common import RunParams, load_model

NAME = "sft_sharpening"


@dataclass
class SFTSharpeningParams(RunParams, SharpeningSpec):
    """params.yaml: sft_sharpening (the method's own settings are SharpeningSpec's)."""

    reward: str = "clip"
    dataset: str = "journeydb"  # the JourneyDB-role set (detailed captions), or a Hugging Face data set id
    train: TrainParams = field(  # the paper's AdamW: beta1 0, beta2 0.99, no weight decay
        default_factory=lambda: TrainParams(steps=200, lr=1e-4, adam_beta1=0.0, adam_beta2=0.99, checkpoint_every=50)
    )


params = config.loader({NAME: SFTSharpeningParams})


def build(p: config.Params) -> SFTSharpening:
    s = p.sft_sharpening
    model, fp = load_model(s)
    return SFTSharpening(
        model,
        registry.load_reward(s.reward, default_device()),
        image_text_source(s.dataset, model.image_size),
        s.train.batch_size,
        s,
        fingerprint={**fp, **registry.fingerprint(s.reward), "dataset": s.dataset},
        lora=s.lora,
    )


def run(p: config.Params, show_progress: bool = True) -> dict:
    return train_named(NAME, build(p), p.sft_sharpening.train, show_progress)


def show(result: dict, p: config.Params):
    return figures.training_curve(paths.train_logs() / f"{NAME}.csv", reward=p.sft_sharpening.reward)
