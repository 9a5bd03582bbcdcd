"""Stage diffusion_dpo: Diffusion-DPO on the Pick-a-Pic-like judged pairs of stage feedback."""

from __future__ import annotations

from dataclasses import dataclass

from .. import config, figures, paths
from ..digests import file_digest
from ..methods.dpo import DiffusionDPO, DPOSpec
from ..sources import pair_source
from ..train import train_named
from .common import RunParams, load_model

NAME = "diffusion_dpo"


@dataclass
class DiffusionDPOParams(RunParams, DPOSpec):
    """params.yaml: diffusion_dpo (the method's own settings are DPOSpec's)."""

    pairs: str = "generated/pickapic.npz"  # judged pairs in feedback.PreferencePairs' format


params = config.loader({NAME: DiffusionDPOParams})


def build(p: config.Params) -> DiffusionDPO:
    s = p.diffusion_dpo
    model, fp = load_model(s)
    pairs = pair_source(s.pairs)
    return DiffusionDPO(
        model,
        pairs,
        s.train.batch_size,
        s,
        lora=s.lora,
        fingerprint={**fp, "pairs": file_digest(paths.resolve(s.pairs))},
    )


def run(p: config.Params, show_progress: bool = True) -> dict:
    return train_named(NAME, build(p), p.diffusion_dpo.train, show_progress)


def show(result: dict, p: config.Params):
    return figures.training_curve(paths.train_logs() / f"{NAME}.csv")
