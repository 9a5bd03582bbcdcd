"""Stage draft: DRaFT-K (or ReFL, mode: refl) with a differentiable reward; beyond the paper's table."""

from __future__ import annotations

from dataclasses import dataclass

from .. import config, figures, paths
from ..methods.draft import BackpropSpec, RewardBackprop, reward_backprop
from ..train import train_named
from .common import RunParams, load_model

NAME = "draft"


@dataclass
class DraftParams(RunParams, BackpropSpec):
    """params.yaml: draft (the method's own settings are BackpropSpec's)."""

    reward: str = "clip"
    prompts: str = "rlhf_pool"


params = config.loader({NAME: DraftParams})


def build(p: config.Params) -> RewardBackprop:
    model, fp = load_model(p.draft)
    return reward_backprop(model, p.draft, fp)


def run(p: config.Params, show_progress: bool = True) -> dict:
    return train_named(NAME, build(p), p.draft.train, show_progress)


def show(result: dict, p: config.Params):
    return figures.training_curve(paths.train_logs() / f"{NAME}.csv", reward=p.draft.reward)
