"""Tables of the result files as pandas DataFrames: what the notebooks show and what the README's results block
and the report are rendered from. Pure functions of result dicts (and of the training logs), nothing else."""

from __future__ import annotations

import csv

import pandas as pd

from . import paths
from .stats import ci_text


def cell_text(v) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def markdown_table(df: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (index as the first column; floats to 4 significant digits; '|' escaped):
    the README's results block and paper_figures/REPORT.md both render tables with it."""
    cols = [str(c) for c in df.columns]
    lines = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for idx, row in df.iterrows():
        lines.append(f"| {idx} | " + " | ".join(cell_text(v).replace("|", "\\|") for v in row.tolist()) + " |")
    return "\n".join(lines)


def base_model_table(report: dict) -> pd.DataFrame:
    """Parser scores of the base model per CompBench-like category, with chance and the ceiling."""
    rows = {cat: v for cat, v in report.get("categories", {}).items()}
    df = pd.DataFrame(rows).T.reindex(columns=["seen", "heldout", "all", "chance", "vae_ceiling"])
    ceiling = report.get("ceiling", {})
    df.loc["overall"] = [
        None,
        None,
        report["overall"]["score"],
        report["overall"]["chance"],
        ceiling.get("vae_reconstructions"),
    ]
    df.attrs["ceiling"] = ceiling
    return df


def controls_table(res: dict) -> pd.DataFrame:
    """One row per control check: the metric, its paired difference against the base model, and the verdict."""
    rows = {
        key: {
            "expect": c["expect"] + (f" >= {c['min_gain']:g}" if c["min_gain"] else ""),
            "delta": round(c["delta"], 4),
            "CI": f"[{c['ci'][0]:.4f}, {c['ci'][1]:.4f}] ({c['confidence']:.1%})",
            "n": c["n"],
            "pass": "yes" if c["pass"] else "NO",
        }
        for key, c in res["controls"].items()
    }
    return pd.DataFrame(rows).T


def clip_table(report: dict) -> pd.DataFrame:
    out = {}
    for role, r in report.items():
        ret = r.get("retrieval_heldout")
        if ret:
            out[role] = {
                "image->text top-1": ret["image_to_text_top1"],
                "text->image top-1": ret["text_to_image_top1"],
                "chance": ret["chance"],
                "train pairs": r["train_pairs"],
            }
        else:
            out[role] = {"source": r.get("source")}
    return pd.DataFrame(out).T


def eval_table(res: dict) -> pd.DataFrame:
    base = next(iter(res["systems"]))
    diffs = res.get(f"vs_{base}", {})
    rows = {}
    for name, r in res["systems"].items():
        rows[name] = {
            "CLIP score (95% CI)": ci_text(r["clip"], 4),
            "NFE / image": r["nfe_per_image"],
            "paired difference (95% CI)": f"{name} - {base}: {ci_text(diffs[name], 4)}" if name in diffs else "",
        }
    for pair, d in res.get("paired", {}).items():
        rows[pair] = {
            "CLIP score (95% CI)": "",
            "NFE / image": "",
            "paired difference (95% CI)": f"{pair}: {ci_text(d, 4)}",
        }
    return pd.DataFrame(rows).T


def feedback_table(report: dict) -> pd.DataFrame:
    """The judged sets of stage feedback: sizes, ties, noise ceiling."""
    rows = {
        name: {k: v for k, v in r.items() if not isinstance(v, dict)}
        for name, r in report.items()
        if isinstance(r, dict) and name in ("pickapic", "pool")
    }
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
    rows = {
        col: {"mean (95% CI)": ci_text(v, 4), "n": v["n"], "evaluator": res.get("evaluators", {}).get(col, "")}
        for col, v in res["columns"].items()
    }
    return pd.DataFrame(rows).T


def nfe_table(res: dict, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Stage nfe_sweep: every method and budget (counted NFEs, verifier score, metric columns with CIs and the
    paired difference vs the base model), then the sharpened models at the base cost."""
    columns = columns or tuple(res.get("settings", {}).get("columns", ("clip",)))
    rows = {}

    def row(r: dict) -> dict:
        out = {"NFE / image": round(r["nfe_per_image"], 1), "verifier": ci_text(r["verifier"], 2)}
        for c in columns:
            if c in r["columns"]:
                out[c] = ci_text(r["columns"][c], 4)
                if "vs_base" in r:
                    out[f"{c} - base"] = ci_text(r["vs_base"][c], 4)
        return out

    rows["Base model"] = row(res["base"])
    for m in res["methods"].values():
        for q in m["points"]:
            rows[f"{m['label']} x{q['budget_multiple']:g}"] = {
                **row(q),
                "verifier calls / image": round(q["verifier_images_per_image"], 1),
            }
    for r in res["sharpened"].values():
        rows[r["label"]] = row(r)
    return pd.DataFrame(rows).T


def reward_summary(rew: dict) -> pd.DataFrame:
    """One row per held-out test of a learned reward: the model, its starting point, the ceiling."""
    rows = {}
    for name, r in rew.items():
        if "source" in r:
            rows[name] = {"test": "released checkpoint", "model": r["source"]}
            continue
        for test, res in r.items():
            if not (isinstance(res, dict) and test.startswith("heldout")):
                continue
            if "vs_noiseless_rating" in res:
                v = res["vs_noiseless_rating"]
                start = res.get("frozen_embedding_readout", {}).get("pearson")  # the best linear head on its CLIP
                rows[name] = {"test": f"{test} (Pearson r)", "model": v["pearson"], "starting CLIP": start, "n": v["n"]}
                continue
            start = next(k for k in res if k not in ("model", "noise_ceiling"))
            rows[f"{name}: {test}"] = {
                "test": test,
                "model": res["model"]["accuracy"],
                "starting CLIP": res[start]["accuracy"],
                "noise ceiling": res.get("noise_ceiling"),
                "n": res["model"]["n"],
            }
    return pd.DataFrame(rows).T.reindex(columns=["test", "model", "starting CLIP", "noise ceiling", "n"])


# the fine-tuning runs of Table 1 (each a stage of dvc.yaml and a section of params.yaml), in the table's order
FINETUNED = (
    "sft_sharpening",
    "rlhf_sharpening",
    "standard_finetune",
    "diffusion_dpo",
    "ddpo",
    "d3po",
    "iterpo",
    "draft",
)


def training_table() -> pd.DataFrame | None:
    """Per fine-tuning run: steps, training NFEs, and the training reward at the start and at the end."""
    rows = {}
    for name in FINETUNED:
        path = paths.train_logs() / f"{name}.csv"
        if not path.exists():
            continue
        with path.open() as f:
            log = list(csv.DictReader(f))
        k = max(1, len(log) // 10)
        row = {
            "steps": len(log),
            "train NFE / step": round(sum(float(r["nfe"]) for r in log) / len(log)),
            "final loss (last 10%)": round(sum(float(r["loss"]) for r in log[-k:]) / k, 4),
        }
        if "reward_mean" in log[0]:
            row["reward, first 10%"] = round(sum(float(r["reward_mean"]) for r in log[:k]) / k, 3)
            row["reward, last 10%"] = round(sum(float(r["reward_mean"]) for r in log[-k:]) / k, 3)
        rows[name] = row
    return pd.DataFrame(rows).T if rows else None


def compute_table(comp: dict) -> pd.DataFrame:
    """Minutes per stage (* where it ran side by side with another), their sum, and the run's span."""
    beside = set(comp["side_by_side"])
    rows = {
        name + (" *" if name in beside else ""): {
            "minutes": round(comp["stages"][name] / 60, 1),
            "share": f"{comp['stages'][name] / comp['total_seconds']:.0%}",
        }
        for name in comp.get("order", comp["stages"])
    }
    rows["all stages"] = {"minutes": round(comp["total_seconds"] / 60, 1), "share": "100%"}
    rows["first start to last end"] = {"minutes": round(comp["span_seconds"] / 60, 1), "share": ""}
    return pd.DataFrame(rows).T


def user_study_table(res: dict) -> pd.DataFrame:
    """Fig. 7: per system, our shares (95% CI) of reference preferred / comparable / other, and the paper's."""
    rows = {}
    for r in res["systems"].values():
        row = {part: ci_text(r[part], 3) for part in ("preferred", "comparable", "other")}
        row["preferred - other"] = ci_text(r["preferred - other"], 3)
        paper = r.get("paper")
        row["paper (%)"] = " / ".join(f"{paper[k]:g}" for k in ("preferred", "comparable", "other")) if paper else ""
        rows[r["label"]] = row
    return pd.DataFrame(rows).T
