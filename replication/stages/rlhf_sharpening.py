"""Stage rlhf_sharpening: RLHF Diffusion-Sharpening (Algorithm 2) of models/base on prompts only."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import config, figures, paths
from ..methods.sharpening import RLHFSharpening, RLHFSpec
from ..rewards import registry
from ..sources import prompt_source
from ..tensors import default_device
from ..train import TrainParams, train_named
from .common import RunParams, load_model

NAME = "rlhf_sharpening"


@dataclass
class RLHFSharpeningParams(RunParams, RLHFSpec):
    """params.yaml: rlhf_sharpening (the method's own settings are RLHFSpec's)."""

    reward: str = "clip"
    prompts: str = "rlhf_pool"  # a tiny-world prompt set, or a text file with one prompt per line
    train: TrainParams = field(  # the paper's AdamW: beta1 0, beta2 0.99, no weight decay
        default_factory=lambda: TrainParams(lr=1e-4, adam_beta1=0.0, adam_beta2=0.99, checkpoint_every=25)
    )


params = config.loader({NAME: RLHFSharpeningParams})


def build(p: config.Params) -> RLHFSharpening:
    s = p.rlhf_sharpening
    model, fp = load_model(s)
    return RLHFSharpening(
        model,
        registry.load_reward(s.reward, default_device()),
        prompt_source(s.prompts),
        s.train.batch_size,
        s,
        lora=s.lora,
        fingerprint={**fp, **registry.fingerprint(s.reward), "prompts": s.prompts},
    )


def run(p: config.Params, show_progress: bool = True) -> dict:
    return train_named(NAME, build(p), p.rlhf_sharpening.train, show_progress)


def show(result: dict, p: config.Params):
    return figures.training_curve(paths.train_logs() / f"{NAME}.csv", reward=p.rlhf_sharpening.reward)
