"""Table 1's metric suite: every column of a pipeline's images, each scored by its evaluator, with CIs.

`COLUMNS` are Table 1's columns (plus numeracy); `EVALUATORS` says which model scores each, at both scales;
`MetricSuite` scores generated images; `evaluate_pipeline` generates (cached, `replication.evaluate`) and scores
one pipeline. The command line does the same:

    python -m replication.metrics --pipeline models/base --prompts table1 --out results/x.json
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from . import data, paths
from .evaluate import GenerationParams, generate_rows, parser_scores, summarise
from .tensors import to_float

# Table 1's columns (plus numeracy). Which prompts each column scores: the CLIP score and the learned /
# graded metrics use the DrawBench-like set (the paper: DrawBench); the CompBench-like columns use that
# category's prompts of the CompBench-like set.
COLUMNS = (
    "clip",
    "color",
    "shape",
    "texture",
    "spatial",
    "non_spatial",
    "complex",
    "aesthetic",
    "image_reward",
    "mllm",
    "numeracy",
)
PARSER_COLUMNS = ("color", "shape", "texture", "spatial", "non_spatial", "complex", "numeracy")
DRAWBENCH_COLUMNS = ("clip", "aesthetic", "image_reward", "mllm")


def evaluation_rows(
    per_category: int | None = None, drawbench: str = "drawbench", compbench: str = "compbench"
) -> list[dict]:
    """The prompts every system is evaluated on: the DrawBench-like set, then the CompBench-like set
    (the first `per_category` prompts of each category and split, or all). Each row has prompt, spec,
    set ("drawbench" | "compbench"), category and split."""
    rows = [{**r, "set": "drawbench", "split": "all"} for r in data.load_prompts(drawbench)]
    comp = data.load_prompts(compbench)
    for key in sorted({(r["category"], r["split"]) for r in comp}):
        group = [r for r in comp if (r["category"], r["split"]) == key]
        rows += [{**r, "set": "compbench"} for r in group[:per_category]]
    return rows


def applies(column: str, rows: Sequence[dict]) -> np.ndarray:
    """Which rows a column scores (bool mask)."""
    if column in DRAWBENCH_COLUMNS:
        return np.array([r["set"] == "drawbench" for r in rows])
    if column in PARSER_COLUMNS:
        return np.array([r["set"] == "compbench" and r["category"] == column for r in rows])
    raise KeyError(f"unknown metric column {column!r}; columns: {', '.join(COLUMNS)}")


# Which model scores each column (tiny world | paper scale). Evaluators are never the training rewards where
# the paper's are separate: a method cannot raise a column by fooling the reward it trained on.
EVALUATORS = {
    "clip": (
        "models/clip_evaluator: a second tiny CLIP (other half of the data, other seed), cosine",
        "CLIP (evaluate_base.evaluators.clip, default: the clip stage's evaluator model), cosine",
    ),
    "color": ("scene parser (exact)", "BLIP-VQA (Salesforce/blip-vqa-base): product of P(yes) over noun phrases"),
    "shape": ("scene parser (exact)", "BLIP-VQA, as color"),
    "texture": ("scene parser (exact)", "BLIP-VQA, as color"),
    "spatial": ("scene parser (exact)", "open-vocabulary detector (OWL-ViT) + T2I-CompBench's position rule"),
    "non_spatial": ("scene parser (exact)", "CLIP ViT-B/32 cosine (T2I-CompBench's non-spatial metric)"),
    "complex": ("scene parser (exact)", "mean of the BLIP-VQA, detector and CLIP scores (T2I-CompBench's 3-in-1)"),
    "numeracy": ("scene parser (exact)", "open-vocabulary detector: share of counted phrases with the right count"),
    "aesthetic": (
        "models/aesthetic_evaluator: MLP on the evaluator CLIP's embeddings (other half, other seed), 1-10",
        "LAION's aesthetic MLP on CLIP ViT-L/14, 1-10",
    ),
    "image_reward": (
        "models/image_reward_evaluator: Bradley-Terry CLIP preference model (evaluator CLIP, other half "
        "of the rater's pairs, other seed), z-scored on base-model images",
        "ImageReward v1.0 (THUDM/ImageReward), z-scored as released",
    ),
    "mllm": (
        "the tiny world's grader over the OpenAI chat-completions protocol (loopback), overall / 10",
        "GPT-4o (or any OpenAI-compatible model) with the five-aspect rubric, overall / 10",
    ),
}
PAPER_SCALE_KEYS = ("blip_vqa", "detector", "clip_b32")


class MetricSuite:
    """Per-image scores of Table 1's columns for generated images (uint8 (N, H, W, 3)) and their rows.

    `scorers` maps a column to fn(images, rows) -> np.ndarray of that many scores, called only on the
    rows the column applies to; `score` returns every column as an (N,) array with NaN elsewhere.
    """

    def __init__(self, scorers: dict, closers: Sequence = ()):
        unknown = [c for c in scorers if c not in COLUMNS]
        if unknown:
            raise KeyError(f"unknown metric column(s) {unknown}; columns: {', '.join(COLUMNS)}")
        self.scorers = scorers
        self._closers = list(closers)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(c for c in COLUMNS if c in self.scorers)

    @classmethod
    def load(cls, columns: Sequence[str] = COLUMNS, device=None, sources: dict | None = None) -> MetricSuite:
        """The evaluators of the given columns (EVALUATORS says which model scores what).

        `sources` overrides a column's model (a folder or hub id; for `mllm` a source string or the
        `mllm` params); giving `blip_vqa` (and `detector`, `clip_b32`) switches the CompBench columns
        from the tiny world's exact parser to T2I-CompBench's models (paper scale).
        """
        sources = dict(sources or {})
        paper = any(k in sources for k in PAPER_SCALE_KEYS)
        scorers, closers = {}, []
        prompts_of = lambda rows: [r["prompt"] for r in rows]  # noqa: E731
        compbench = None
        for col in columns:
            if col == "clip":
                from .rewards.clip import CLIPScore

                clip = CLIPScore.load(sources.get("clip") or paths.models() / "clip_evaluator", device)
                scorers[col] = lambda im, rows, m=clip: m.cosine(to_float(im, m.device), prompts_of(rows)).cpu().numpy()
            elif col in PARSER_COLUMNS and not paper:
                scorers[col] = lambda im, rows: parser_scores(im, [r["spec"] for r in rows])
            elif col in PARSER_COLUMNS:
                from .rewards.compbench import CompBenchScorer

                compbench = compbench or CompBenchScorer.load(sources, device)
                scorers[col] = lambda im, rows, c=col, m=compbench: m.score(c, to_float(im, m.device), prompts_of(rows))
            elif col == "aesthetic":
                from .rewards.aesthetic import AestheticScore

                aes = AestheticScore.load(sources.get("aesthetic") or paths.models() / "aesthetic_evaluator", device)
                scorers[col] = lambda im, rows, m=aes: m(to_float(im, m.device)).cpu().numpy()
            elif col == "image_reward":
                from .rewards.preference import load_preference

                ir = load_preference(sources.get("image_reward") or paths.models() / "image_reward_evaluator", device)
                scorers[col] = lambda im, rows, m=ir: m(to_float(im, m.device), prompts_of(rows)).cpu().numpy()
            elif col == "mllm":
                from .rewards.mllm import MLLMGrader

                grader = MLLMGrader.load(sources.get("mllm") or "local")
                closers.append(grader.close)
                scorers[col] = lambda im, rows, m=grader: m.grade(im, prompts_of(rows))["overall"] / 10.0
            else:
                raise KeyError(f"unknown metric column {col!r}; columns: {', '.join(COLUMNS)}")
        return cls(scorers, closers)

    def close(self) -> None:
        """Stop what the evaluators started (the local MLLM grader's server)."""
        for fn in self._closers:
            fn()
        self._closers = []

    def __enter__(self) -> MetricSuite:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def score(self, images: np.ndarray, rows: Sequence[dict]) -> dict[str, np.ndarray]:
        if len(images) != len(rows):
            raise ValueError(f"{len(images)} images but {len(rows)} rows")
        out = {}
        for col, fn in self.scorers.items():
            mask = applies(col, rows)
            vals = np.full(len(rows), np.nan)
            if mask.any():
                idx = np.nonzero(mask)[0]
                vals[idx] = np.asarray(fn(images[idx], [rows[i] for i in idx]), dtype=np.float64)
            out[col] = vals
        return out


def summarise_columns(
    per_image: dict[str, np.ndarray], confidence: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> dict[str, dict]:
    """Mean and bootstrap CI of every column over the rows it scored."""
    return {
        col: summarise(v[~np.isnan(v)], confidence, n_boot, seed)
        for col, v in per_image.items()
        if (~np.isnan(v)).any()
    }


def select_rows(
    prompts: str = "table1", per_category: int | None = 100, drawbench_limit: int | None = None
) -> list[dict]:
    """The rows of a prompt selection: 'table1' (DrawBench-like + CompBench-like), 'drawbench' or 'compbench'."""
    if prompts not in ("table1", "drawbench", "compbench"):
        raise KeyError(f"unknown prompt selection {prompts!r}; choose table1, drawbench or compbench")
    rows = evaluation_rows(per_category)
    draw = [r for r in rows if r["set"] == "drawbench"][:drawbench_limit]
    comp = [r for r in rows if r["set"] == "compbench"]
    return (draw if prompts != "compbench" else []) + (comp if prompts != "drawbench" else [])


def evaluate_pipeline(
    model_dir: Path,
    prompts: str = "table1",
    columns: Sequence[str] = COLUMNS,
    g: GenerationParams | None = None,
    seed: int = 0,
    per_category: int | None = 100,
    drawbench_limit: int | None = None,
    confidence: float = 0.95,
    n_boot: int = 2000,
    device=None,
    sources: dict | None = None,
) -> dict:
    """Every column for one pipeline: images with fixed seeds (cached), scored by the evaluators, with CIs."""
    g = g or GenerationParams()
    rows = select_rows(prompts, per_category, drawbench_limit)
    images, nfe = generate_rows(Path(model_dir), rows, g, seed, device)
    with MetricSuite.load(columns, device, sources) as suite:
        per_image = suite.score(images, rows)
    paper = any(k in (sources or {}) for k in PAPER_SCALE_KEYS)
    return {
        "pipeline": paths.display(model_dir),
        "prompts": prompts,
        "n_prompts": len(rows),
        "seed": seed,
        "per_category": per_category,
        "nfe_per_image": nfe,
        "generation": {"num_steps": g.num_steps, "guidance_scale": g.guidance_scale},
        "columns": summarise_columns(per_image, confidence, n_boot, seed),
        "evaluators": {c: EVALUATORS[c][1 if paper else 0] for c in columns},
        "sources": {k: str(v) for k, v in (sources or {}).items() if k != "mllm"},
    }


def format_table(result: dict) -> str:
    """The columns of an evaluate_pipeline result as aligned text."""
    lines = [
        f"{result['pipeline']} on {result['prompts']} ({result['n_prompts']} prompts, "
        f"{result['nfe_per_image']:.0f} NFE/image)"
    ]
    for col, v in result["columns"].items():
        lines.append(f"  {col:<13} {v['mean']:8.4f}  [{v['ci_low']:.4f}, {v['ci_high']:.4f}]  n={v['n']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(
        prog="python -m replication.metrics",
        description="Table 1's columns for a text-to-image pipeline (JSON with CIs).",
    )
    ap.add_argument("--pipeline", required=True, help="a diffusers pipeline folder (e.g. models/base)")
    ap.add_argument("--prompts", default="table1", help="table1 (default), drawbench or compbench")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--columns", default=",".join(COLUMNS), help="comma-separated subset of the columns")
    ap.add_argument("--per-category", type=int, default=100, help="CompBench-like prompts per category and split")
    ap.add_argument("--drawbench-limit", type=int, default=None)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="COLUMN=MODEL",
        help="use another evaluator for a column (folder or hub id), e.g. image_reward=THUDM/ImageReward",
    )
    a = ap.parse_args(argv)
    columns = [c.strip() for c in a.columns.split(",") if c.strip()]
    bad = [c for c in columns if c not in COLUMNS]
    if bad:
        print(f"error: unknown column(s) {bad}; columns: {', '.join(COLUMNS)}", file=sys.stderr)
        return 2
    sources = dict(s.split("=", 1) for s in a.source)
    pipeline = paths.resolve(a.pipeline) if not Path(a.pipeline).is_absolute() else Path(a.pipeline)
    if not (pipeline / "model_index.json").exists():
        print(f"error: {pipeline} is not a diffusers pipeline folder (no model_index.json)", file=sys.stderr)
        return 2
    g = GenerationParams(num_steps=a.steps, guidance_scale=a.guidance)
    res = evaluate_pipeline(
        pipeline,
        a.prompts,
        columns,
        g,
        a.seed,
        a.per_category,
        a.drawbench_limit,
        n_boot=a.bootstrap,
        device=a.device,
        sources=sources,
    )
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
    print(format_table(res))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
