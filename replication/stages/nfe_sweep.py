"""Stage nfe_sweep: inference-time samplers over NFE budgets against the sharpened models at the base cost
(results/nfe_sweep.json; the images and verifier scores in generated/nfe_sweep.npz)."""

from __future__ import annotations

import numpy as np

from .. import config, paths, tables
from ..recipes.nfe_sweep import NFESweepParams, nfe_sweep
from ..rewards.mllm import MLLMParams

params = config.loader({"nfe_sweep": NFESweepParams, "mllm": MLLMParams})


def run(p: config.Params, show_progress: bool = True) -> dict:
    res, arrays = nfe_sweep(p.nfe_sweep, p.mllm, show_progress)
    paths.generated().mkdir(parents=True, exist_ok=True)
    np.savez_compressed(paths.generated() / "nfe_sweep.npz", **arrays)
    paths.write_json(paths.results() / "nfe_sweep.json", res)
    return res


def show(result: dict, p: config.Params):
    return tables.nfe_table(result)
