"""Stage evaluate_base: every Table-1 column of the base model, with confidence intervals."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import config, metrics, paths, tables
from ..evaluate import GenerationParams
from ..rewards.mllm import MLLMParams
from ..tensors import default_device


@dataclass
class EvaluateBaseParams:
    """params.yaml: evaluate_base."""

    model: str = "models/base"
    per_category: int = 100  # CompBench-like prompts per category and split (base_model.report_prompts reuses them)
    drawbench_limit: int | None = None  # first N DrawBench-like prompts (None: all 200)
    generation: GenerationParams = field(default_factory=GenerationParams)
    seed: int = 0
    confidence: float = 0.95
    bootstrap: int = 2000
    evaluators: dict = field(default_factory=dict)  # column -> model folder / hub id (paper scale)


params = config.loader({"evaluate_base": EvaluateBaseParams, "mllm": MLLMParams})


def run(p: config.Params, show_progress: bool = True) -> dict:
    e = p.evaluate_base
    res = metrics.evaluate_pipeline(
        paths.model_source(e.model),
        "table1",
        metrics.COLUMNS,
        e.generation,
        e.seed,
        e.per_category,
        e.drawbench_limit,
        e.confidence,
        e.bootstrap,
        default_device(),
        {**e.evaluators, "mllm": p.mllm},
    )
    paths.write_json(paths.results() / "base_model.json", res)
    return res


def show(result: dict, p: config.Params):
    return tables.metrics_table(result)
