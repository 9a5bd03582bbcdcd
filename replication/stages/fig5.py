"""Stage fig5: CLIP score against NFE per image (log x), from results/nfe_sweep.json only."""

from __future__ import annotations

import json
from pathlib import Path

from .. import config, figures, paths
from ..figures import FiguresParams

params = config.loader({"figures": FiguresParams})


def run(p: config.Params, show_progress: bool = True) -> list[Path]:
    path = paths.results() / "nfe_sweep.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `dvc repro nfe_sweep` first")
    fig = figures.nfe_curve(json.loads(path.read_text()), column="clip")
    return figures.save(fig, "fig5_nfe", dpi=p.figures.dpi)


def show(result: list[Path], p: config.Params):
    return figures.inline(result[1])
