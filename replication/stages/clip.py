"""Stage clip: the CLIP reward and the separate CLIP evaluator (trained here in the tiny world)."""

from __future__ import annotations

from .. import config, paths, tables
from ..recipes.clip import ClipParams, clips

params = config.loader({"clip": ClipParams})


def run(p: config.Params, show_progress: bool = True) -> dict:
    report = clips(p.clip, show_progress)
    paths.write_json(paths.results() / "clip_report.json", report)
    return report


def show(result: dict, p: config.Params):
    return tables.clip_table(result)
