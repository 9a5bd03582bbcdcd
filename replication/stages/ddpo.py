"""Stage ddpo: DDPO (PPO over stochastic DDIM) with the configured reward (the paper: aesthetic)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import config, figures, paths
from ..methods.ddpo import DDPO, DDPOSpec
from ..rewards import registry
from ..sources import prompt_source
from ..tensors import default_device
from ..train import train_named
from .common import RunParams, load_model

NAME = "ddpo"


@dataclass
class DDPOParams(RunParams, DDPOSpec):
    """params.yaml: ddpo (the method's own settings are DDPOSpec's)."""

    reward: str = "aesthetic"
    prompts: str = "rlhf_pool"


params = config.loader({NAME: DDPOParams})


def build(p: config.Params) -> DDPO:
    s = p.ddpo
    model, fp = load_model(s)
    return DDPO(
        model,
        registry.load_reward(s.reward, default_device()),
        prompt_source(s.prompts),
        s.train.batch_size,
        s,
        lora=s.lora,
        fingerprint={**fp, **registry.fingerprint(s.reward), "prompts": s.prompts},
    )


def run(p: config.Params, show_progress: bool = True) -> dict:
    return train_named(NAME, build(p), p.ddpo.train, show_progress)


def show(result: dict, p: config.Params):
    return figures.training_curve(paths.train_logs() / f"{NAME}.csv", reward=p.ddpo.reward)
