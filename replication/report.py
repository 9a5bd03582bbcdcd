"""Tables and inline figures the notebooks show (pandas DataFrames, matplotlib figures)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from . import data, evaluate, figures, paths
from .config import Params


def _ci(d: dict, digits: int = 4) -> str:
    return f"{d['mean']:.{digits}f} [{d['ci_low']:.{digits}f}, {d['ci_high']:.{digits}f}]"


def base_model_table(report: dict) -> pd.DataFrame:
    """Parser scores of the base model per CompBench-like category, with chance and the ceiling."""
    rows = {cat: v for cat, v in report.get("categories", {}).items()}
    df = pd.DataFrame(rows).T.reindex(columns=["seen", "heldout", "all", "chance"])
    df.loc["overall"] = [None, None, report["overall"]["score"], report["overall"]["chance"]]
    df.attrs["ceiling"] = report.get("ceiling")
    return df


def clip_table(report: dict) -> pd.DataFrame:
    out = {}
    for role, r in report.items():
        ret = r.get("retrieval_heldout")
        if ret:
            out[role] = {"image->text top-1": ret["image_to_text_top1"], "text->image top-1": ret["text_to_image_top1"],
                         "chance": ret["chance"], "train pairs": r["train_pairs"]}
        else:
            out[role] = {"source": r.get("source")}
    return pd.DataFrame(out).T


def eval_table(res: dict) -> pd.DataFrame:
    base = next(iter(res["systems"]))
    diffs = res.get(f"vs_{base}", {})
    rows = {}
    for name, r in res["systems"].items():
        rows[name] = {"CLIP score (95% CI)": _ci(r["clip"]), "NFE / image": r["nfe_per_image"],
                      f"difference vs {base}": _ci(diffs[name]) if name in diffs else ""}
    return pd.DataFrame(rows).T


def training_curve(run: str, p: Params):
    """The reward curve of one training run, inline (the paper figure is made by the figure stage)."""
    return figures.reward_curve({run: paths.train_logs() / f"{run}.csv"}, smoothing=p.figures.smoothing)


def sample_figure(p: Params, model_dir: str, n: int = 16, prompt_set: str = "drawbench"):
    """Images of the first n prompts of a set (cached generation, fixed seeds)."""
    rows = data.load_prompts(prompt_set)[:n]
    prompts = [r["prompt"] for r in rows]
    images, _ = evaluate.generate_cached(paths.resolve(model_dir), prompts, evaluate.seeds_for(n, 0),
                                         p.evaluate.generation)
    return figures.image_grid(images, prompts)


__all__ = ["base_model_table", "clip_table", "eval_table", "training_curve", "sample_figure", "plt"]
