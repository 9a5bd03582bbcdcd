"""Stage controls: the laboratory's positive and negative controls (replication/recipes/controls.py)."""

from __future__ import annotations

from .. import config, paths, tables
from ..recipes.controls import ControlsParams, controls

NAME = "controls"

params = config.loader({NAME: ControlsParams})


def run(p: config.Params, show_progress: bool = True) -> dict:
    res = controls(p.controls, show_progress=show_progress)
    paths.write_json(paths.results() / "controls.json", res)
    return res


def show(result: dict, p: config.Params):
    return tables.controls_table(result)
