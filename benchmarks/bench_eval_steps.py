"""Evaluation images at fewer DDIM steps: what they cost and whether they score the same.

The paper evaluates at DDIM 50 steps with CFG 5 (100 NFE). Generation is the largest cost of the controls stage,
so the tiny profile may use fewer steps where the tiny base model's images score the same. This script measures
both sides on one machine, in one run:

* seconds per image of `model.generate` at each step count (fresh, uncached: the same prompts and seeds), printed
  as ratios to the first step count;
* every evaluation column (parser, evaluator CLIP, aesthetic, ImageReward) of the base model's images on the
  controls stage's rows (`controls.per_category` CompBench-like prompts per category and split, plus the
  DrawBench-like set), `--images` images per prompt, as paired differences to the first step count with a
  bootstrap CI over prompts. These images go through the evaluation cache, as the stages' do.

    python benchmarks/bench_eval_steps.py                       # 50 vs 25 steps, 20 prompts/category, 2 images
    python benchmarks/bench_eval_steps.py --steps 50 25 10 --json benchmarks/results/eval_steps.json

It needs the default pipeline's models (models/base and the evaluators: `dvc repro evaluate_base`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from replication import paths
from replication.evaluate import GenerationParams, generate_rows
from replication.metrics import MetricSuite, evaluation_rows
from replication.models import T2IModel
from replication.recipes.controls import COLUMNS, per_prompt
from replication.report import machine_info, stats
from replication.tensors import default_device


def seconds_per_image(model: T2IModel, prompts: list[str], steps: int, g: GenerationParams) -> float:
    model.generate(prompts[:2], [0, 1], num_steps=steps, guidance_scale=g.guidance_scale, batch_size=g.batch_size)
    t = time.perf_counter()
    seeds = list(range(len(prompts)))
    model.generate(prompts, seeds, num_steps=steps, guidance_scale=g.guidance_scale, batch_size=g.batch_size)
    return (time.perf_counter() - t) / len(prompts)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--steps", type=int, nargs="+", default=[50, 25], help="DDIM step counts; the first is the baseline"
    )
    ap.add_argument("--per-category", type=int, default=20, help="CompBench-like prompts per category and split")
    ap.add_argument("--images", type=int, default=2, help="images per prompt (seeds 0..images-1)")
    ap.add_argument("--timing-prompts", type=int, default=256, help="prompts generated fresh for the timing")
    ap.add_argument("--model", default="models/base")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = ap.parse_args(argv)
    if len(a.steps) < 2:
        ap.error("--steps needs a baseline and at least one other step count")
    dev = default_device()
    model_dir = paths.model_source(a.model)
    rows = evaluation_rows(a.per_category)
    g = GenerationParams()
    model = T2IModel.from_pretrained(model_dir, device=dev)
    prompts = [r["prompt"] for r in rows][: a.timing_prompts]
    timing = {s: seconds_per_image(model, prompts, s, g) for s in a.steps}
    scores = {}
    with MetricSuite.load(COLUMNS, dev) as suite:
        for s in a.steps:
            gs = GenerationParams(num_steps=s, guidance_scale=g.guidance_scale, batch_size=g.batch_size)
            scores[s] = per_prompt(
                suite, [generate_rows(model_dir, rows, gs, k, dev)[0] for k in range(a.images)], rows
            )
    base = a.steps[0]
    out = {"device": str(dev), "rows": len(rows), "images_per_prompt": a.images, "baseline_steps": base, "steps": {}}
    print(f"{len(rows)} prompts x {a.images} images on {dev}; baseline {base} steps ({timing[base]:.4f} s/image)")
    for s in a.steps[1:]:
        cols = {}
        for c in ("parser", "clip", "aesthetic", "image_reward"):
            x, y = scores[s][c], scores[base][c]
            m = ~np.isnan(x) & ~np.isnan(y)
            d = stats.paired_diff(x[m], y[m], 0.95, 2000, 0)
            ci = [round(d["ci_low"], 4), round(d["ci_high"], 4)]
            cols[c] = {"baseline": round(float(y[m].mean()), 4), "delta": round(d["mean"], 4), "ci": ci, "n": d["n"]}
        out["steps"][s] = {"time_ratio": round(timing[s] / timing[base], 3), "columns": cols}
        print(f"{s} steps: time x{timing[s] / timing[base]:.2f} of {base} steps")
        for c, v in cols.items():
            print(
                f"  {c:13s} {v['baseline']:.4f} -> {s} - {base}: {v['delta']:+.4f} [{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}]"
            )
    if a.json:
        paths.write_json(a.json, {**out, "machine": machine_info(dev)})
    return out


if __name__ == "__main__":
    main()
