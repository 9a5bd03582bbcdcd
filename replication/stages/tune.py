"""Stage tune (tuning/dvc.yaml, outside the default `dvc repro`): one cell of the per-method search.

`dvc exp run --queue -S tune.method=draft -S tune.lr=1e-05 tuning/dvc.yaml` queues a cell; `make tune` queues the
whole grid of `tune.grid`, runs it (`dvc queue start`) and collects the table (replication/recipes/tuning.py).
"""

from __future__ import annotations

import pandas as pd

from .. import config, paths
from ..recipes import tuning
from ..recipes.tuning import TuneParams
from ..train import train_named
from . import d3po, ddpo, diffusion_dpo, draft, iterpo, rlhf_sharpening, sft_sharpening, standard_finetune

NAME = "tune"
STAGES = {
    m.NAME: m for m in (sft_sharpening, rlhf_sharpening, standard_finetune, diffusion_dpo, ddpo, d3po, iterpo, draft)
}
assert tuple(STAGES) == tuning.METHODS, "stages/tune.py and recipes/tuning.METHODS must list the same methods"

params = config.loader({NAME: TuneParams, **{k: v for m in STAGES.values() for k, v in m.params.sections.items()}})


def run(p: config.Params, show_progress: bool = True) -> dict:
    """Train the cell's model as its stage would (models/tune) and score it on the validation prompts."""
    t = p.tune
    stage = STAGES[t.method]
    q = stage.params(p.profile, t.overrides(getattr(p, t.method)))
    section = getattr(q, t.method)
    fit = train_named(NAME, stage.build(q), section.train, show_progress)
    result = tuning.validate(t, section, paths.models() / NAME, paths.model_source(section.model))
    result["training"] = {k: fit[k] for k in ("steps", "seconds") if k in fit}
    paths.write_json(paths.results() / "tuning" / "cell.json", result)
    return result


def show(result: dict, p: config.Params):
    return pd.DataFrame([{k: v for k, v in result.items() if k != "training"}])
