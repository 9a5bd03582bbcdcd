"""Stage d3po: D3PO with online choices of the simulated rater (no reward model)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import config, figures, paths
from ..methods.d3po import D3PO, D3POSpec
from ..sources import prompt_source
from ..train import train_named
from .common import RunParams, load_model

NAME = "d3po"


@dataclass
class D3POParams(RunParams, D3POSpec):
    """params.yaml: d3po (the method's own settings, the rater included, are D3POSpec's)."""

    prompts: str = "rlhf_pool"


params = config.loader({NAME: D3POParams})


def build(p: config.Params) -> D3PO:
    s = p.d3po
    model, fp = load_model(s)
    return D3PO(
        model, prompt_source(s.prompts), s.train.batch_size, s, lora=s.lora, fingerprint={**fp, "prompts": s.prompts}
    )


def run(p: config.Params, show_progress: bool = True) -> dict:
    return train_named(NAME, build(p), p.d3po.train, show_progress)


def show(result: dict, p: config.Params):
    return figures.training_curve(paths.train_logs() / f"{NAME}.csv", reward="the rater's utility")
