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


def feedback_table(report: dict) -> pd.DataFrame:
    """The judged sets of stage feedback: sizes, ties, noise ceiling."""
    rows = {name: {k: v for k, v in r.items() if not isinstance(v, dict)} for name, r in report.items()
            if isinstance(r, dict) and name in ("pickapic", "pool")}
    return pd.DataFrame(rows).T


def rewards_table(report: dict) -> pd.DataFrame:
    """Held-out accuracy of every learned reward next to its baseline (and the rater's noise ceiling)."""
    rows = {}
    for name, r in report.items():
        if "source" in r:
            rows[name] = {"source": r["source"]}
            continue
        for test, res in r.items():
            if not (isinstance(res, dict) and test.startswith("heldout")):
                continue
            row = {}
            for who, v in res.items():
                if isinstance(v, dict):
                    row[who] = v.get("accuracy", v.get("pearson"))
                    if "n" in v:
                        row["n"] = v["n"]
                else:
                    row[who] = v
            rows[f"{name}: {test}"] = row
    return pd.DataFrame(rows).T


def metrics_table(res: dict) -> pd.DataFrame:
    """Every Table-1 column of one pipeline with its CI and the model that scored it."""
    rows = {col: {"mean (95% CI)": _ci(v), "n": v["n"], "evaluator": res.get("evaluators", {}).get(col, "")}
            for col, v in res["columns"].items()}
    return pd.DataFrame(rows).T


def nfe_table(res: dict, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Stage nfe_sweep: every method and budget (counted NFEs, verifier score, metric columns with CIs and the
    paired difference vs the base model), then the sharpened models at the base cost."""
    columns = columns or tuple(res.get("settings", {}).get("columns", ("clip",)))
    rows = {}

    def row(r: dict) -> dict:
        out = {"NFE / image": round(r["nfe_per_image"], 1), "verifier": _ci(r["verifier"], 2)}
        for c in columns:
            if c in r["columns"]:
                out[c] = _ci(r["columns"][c])
                if "vs_base" in r:
                    out[f"{c} - base"] = _ci(r["vs_base"][c])
        return out

    rows["Base model"] = row(res["base"])
    for name, m in res["methods"].items():
        for q in m["points"]:
            rows[f"{m['label']} x{q['budget_multiple']:g}"] = {**row(q), "verifier calls / image":
                                                               round(q["verifier_images_per_image"], 1)}
    for name, r in res["sharpened"].items():
        rows[r["label"]] = row(r)
    return pd.DataFrame(rows).T
