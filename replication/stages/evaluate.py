"""Stage evaluate: CLIP score (the separate evaluator CLIP, cosine) of the base model, the sharpened models and
standard fine-tuning on the DrawBench-like set, with paired differences."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import config, evaluate, paths, tables
from ..evaluate import GenerationParams
from ..rewards.clip import CLIPScore
from ..tensors import default_device


@dataclass
class EvaluateParams:
    """params.yaml: evaluate."""

    prompts: str = "drawbench"
    limit: int | None = None  # first N prompts of the set (None: all)
    systems: tuple[str, ...] = ("base", "sft_sharpening", "standard_finetune", "rlhf_sharpening")  # models/<name>
    generation: GenerationParams = field(default_factory=GenerationParams)
    seed: int = 0
    confidence: float = 0.95
    bootstrap: int = 2000

    def __post_init__(self):
        if self.limit is not None and self.limit < 2:
            raise ValueError(f"limit is {self.limit}; a confidence interval needs at least 2 prompts (null: all)")


params = config.loader({"evaluate": EvaluateParams})


def run(p: config.Params, show_progress: bool = True) -> dict:
    e = p.evaluate
    res = evaluate.clip_evaluation(
        {name: paths.models() / name for name in e.systems},
        e.prompts,
        e.generation,
        CLIPScore.load(paths.models() / "clip_evaluator", default_device()),
        e.seed,
        e.confidence,
        e.bootstrap,
        default_device(),
        limit=e.limit,
        show_progress=show_progress,
    )
    res["evaluator"] = "models/clip_evaluator"
    paths.write_json(paths.results() / "eval_clip.json", res)
    return res


def show(result: dict, p: config.Params):
    return tables.eval_table(result)
