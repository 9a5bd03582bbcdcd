"""Stage base_model: train the tiny base model (or materialise SDXL) into models/base and report its quality."""

from __future__ import annotations

from .. import config, data, evaluate, figures, paths, tables
from ..recipes.base_model import BaseModelParams, base_model

params = config.loader({"base_model": BaseModelParams})


def run(p: config.Params, show_progress: bool = True) -> dict:
    report = base_model(p.base_model, show_progress=show_progress)
    paths.write_json(paths.results() / "base_model_report.json", report)
    return report


def show(result: dict, p: config.Params):
    return tables.base_model_table(result)


def samples(p: config.Params, n: int = 16):
    """The base model's images of the first n DrawBench-like prompts (the evaluation's seeds and sampler)."""
    prompts = [r["prompt"] for r in data.load_prompts("drawbench")[:n]]
    images, _ = evaluate.generate_cached(
        paths.models() / "base", prompts, evaluate.seeds_for(n, 0), p.base_model.generation
    )
    return figures.image_grid(images, prompts)
