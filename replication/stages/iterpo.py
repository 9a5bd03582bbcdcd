"""Stage iterpo: IterComp's feedback learning (ReFL on the compositional reward), see methods/iterpo.py."""

from __future__ import annotations

from dataclasses import dataclass

from .. import config, figures, paths
from ..methods.iterpo import IterPO, IterPOSpec
from ..rewards import registry
from ..rewards.base import parse_weights
from ..sources import prompt_source
from ..tensors import default_device
from ..train import train_named
from .common import RunParams, load_model

NAME = "iterpo"


@dataclass
class IterPOParams(RunParams, IterPOSpec):
    """params.yaml: iterpo (the method's own settings are IterPOSpec's); `reward` may mix rewards, each with its
    own hinge ("compositional:0.5,clip:0.5")."""

    reward: str = "compositional"
    prompts: str = "rlhf_pool"


params = config.loader({NAME: IterPOParams})


def build(p: config.Params) -> IterPO:
    s = p.iterpo
    model, fp = load_model(s)
    rewards = [(registry.load_reward(name, default_device()), w) for name, w in parse_weights(s.reward)]
    return IterPO(
        model,
        rewards,
        prompt_source(s.prompts),
        s.train.batch_size,
        s,
        lora=s.lora,
        fingerprint={**fp, **registry.fingerprint(s.reward), "prompts": s.prompts},
    )


def run(p: config.Params, show_progress: bool = True) -> dict:
    return train_named(NAME, build(p), p.iterpo.train, show_progress)


def show(result: dict, p: config.Params):
    return figures.training_curve(paths.train_logs() / f"{NAME}.csv", reward=p.iterpo.reward)
