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
            "CLIP score (95% CI)": _ci(r["clip"]),
            "NFE / image": r["nfe_per_image"],
            "paired difference (95% CI)": f"{name} - {base}: {_ci(diffs[name])}" if name in diffs else "",
        }
    for pair, d in res.get("paired", {}).items():
        rows[pair] = {"CLIP score (95% CI)": "", "NFE / image": "", "paired difference (95% CI)": f"{pair}: {_ci(d)}"}
    return pd.DataFrame(rows).T


def training_curve(run: str, p: Params):
    """The reward curve of one training run (its loss if it logs no reward), inline; paper figures are made by
    the figure stages."""
    log = paths.train_logs() / f"{run}.csv"
    if "reward_mean" in figures.read_log(log):
        reward = getattr(getattr(p, run, None), "reward", None) or "the rater's utility"
        return figures.reward_curve({run: log}, smoothing=p.figures.smoothing, ylabel=f"training reward ({reward})")
    return figures.loss_curve({run: log}, smoothing=p.figures.smoothing)


def sample_figure(p: Params, model_dir: str, n: int = 16, prompt_set: str = "drawbench"):
    """Images of the first n prompts of a set (cached generation, fixed seeds)."""
    rows = data.load_prompts(prompt_set)[:n]
    prompts = [r["prompt"] for r in rows]
    images, _ = evaluate.generate_cached(
        paths.resolve(model_dir), prompts, evaluate.seeds_for(n, 0), p.evaluate.generation
    )
    return figures.image_grid(images, prompts)


__all__ = ["base_model_table", "clip_table", "eval_table", "training_curve", "sample_figure", "plt"]


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
        col: {"mean (95% CI)": _ci(v), "n": v["n"], "evaluator": res.get("evaluators", {}).get(col, "")}
        for col, v in res["columns"].items()
    }
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
            rows[f"{m['label']} x{q['budget_multiple']:g}"] = {
                **row(q),
                "verifier calls / image": round(q["verifier_images_per_image"], 1),
            }
    for name, r in res["sharpened"].items():
        rows[r["label"]] = row(r)
    return pd.DataFrame(rows).T


# ----------------------------------------------------------------------------- README results block
# The README's results section is rendered from the committed result files by `python -m replication.report readme`
# (`make repro` runs it after the tiny profile), and tests/test_readme.py checks that it is current: every number in
# it is one the pipeline produced. The paper's numbers next to ours are copied from the paper (PAPER.md, section 4).
PAPER_SDXL = {
    "clip": 0.322,
    "color": 0.6369,
    "shape": 0.5408,
    "texture": 0.5637,
    "spatial": 0.2032,
    "non_spatial": 0.3110,
    "complex": 0.4091,
    "aesthetic": 5.531,
    "image_reward": 0.780,
    "mllm": 0.780,
}
BEGIN, END = "<!-- results:begin (python -m replication.report readme) -->", "<!-- results:end -->"


def _md(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for idx, row in df.iterrows():
        cells = [
            "" if v is None or (isinstance(v, float) and v != v) else (f"{v:.4g}" if isinstance(v, float) else str(v))
            for v in row.tolist()
        ]
        lines.append(f"| {idx} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _load(name: str) -> dict | None:
    import json

    path = paths.results() / name
    return json.loads(path.read_text()) if path.exists() else None


def _ci_md(v: dict, digits: int = 3) -> str:
    return f"{v['mean']:.{digits}f} [{v['ci_low']:.{digits}f}, {v['ci_high']:.{digits}f}]"


def readme_block() -> str:
    """Markdown of every headline result file (results/*.json, results/train/*.csv)."""
    out = []
    base = _load("base_model_report.json")
    if base:
        df = base_model_table(base)
        out += [
            "**Base model** (`base_model`): exact scene-parser score of its images (50 DDIM steps, CFG 5) per "
            "CompBench-like category, on compositions seen in training and held out, against chance "
            f"(a random image of the world). Ceilings: renders {base['ceiling']['renders']}, renders through "
            f"the VAE {base['ceiling']['vae_reconstructions']}.",
            "",
            _md(df.round(3)),
            "",
        ]
    clip = _load("clip_report.json")
    if clip:
        out += [
            "**CLIP reward and evaluator** (`clip`): held-out top-1 retrieval among 100 candidates.",
            "",
            _md(clip_table(clip).drop(columns=["train pairs"], errors="ignore").round(3)),
            "",
        ]
    rew = _load("rewards_report.json")
    if rew:
        out += [
            "**Learned rewards** (`rewards`): held-out pairwise accuracy of each preference model and of the "
            "CLIP it starts from (the noise ceiling: how often the rater's noiseless utility agrees with its own "
            "noisy choices); Pearson r of the aesthetic predictors with the rater's noiseless rating.",
            "",
            _md(reward_summary(rew)),
            "",
        ]
    bm = _load("base_model.json")
    if bm:
        rows = {
            c: {
                "tiny world (ours)": _ci_md(v),
                "SDXL (paper)": PAPER_SDXL.get(c, ""),
                "evaluated by": bm["evaluators"].get(c, ""),
            }
            for c, v in bm["columns"].items()
        }
        out += [
            "**Table 1, base-model row** (`evaluate_base`): every column with a 95% bootstrap CI, next to the "
            "paper's SDXL row. Scales differ by construction (our CLIP is a tiny model; aesthetic is the "
            "rater's 1-10 scale; ImageReward is z-scored on base-model images); compare orderings, not values.",
            "",
            _md(pd.DataFrame(rows).T),
            "",
        ]
    ev = _load("eval_clip.json")
    if ev:
        out += [
            "**Sharpened models, standard fine-tuning and the base model** (`evaluate`): CLIP score (evaluator "
            f"CLIP, cosine) on the {ev['n_prompts']} DrawBench-like prompts, paired differences with a 95% CI.",
            "",
            _md(eval_table(ev)),
            "",
        ]
    sweep = _load("nfe_sweep.json")
    if sweep:
        out += [
            f"**Fig. 5** (`nfe_sweep`): CLIP score against NFE per image on {sweep['settings']['n_prompts']} "
            f"DrawBench-like prompts (base cost {sweep['settings']['base_cost']} NFE: "
            f"{sweep['settings']['num_steps']} DDIM steps x 2 for guidance).",
            "",
            _md(nfe_table(sweep, ("clip",))),
            "",
        ]
    verdicts = claims()
    if verdicts:
        out += ["**Does the paper's claim hold here?** (each sentence is computed from the result files above)", ""]
        out += [f"- {v}" for v in verdicts] + [""]
    comp = _load("compute.json")
    if comp:
        m = comp["machine"]
        out += [
            f"**Compute** (`results/compute.json`): wall time of each stage of the last `dvc repro` on the "
            f"`{comp['profile']}` profile, from papermill's record, on {m['cpu_count']} CPU cores "
            f"({m['gpu'] or 'no GPU'}, torch {m['torch']}).",
            "",
            _md(compute_table(comp)),
            "",
        ]
    ft = training_table()
    if ft is not None:
        out += [
            "**Fine-tuning runs** (one stage each): training cost and the logged training reward (first and "
            "last 10% of the steps; each method's own reward, so rows are not comparable with each other).",
            "",
            _md(ft),
            "",
        ]
    return "\n".join(out).rstrip() + "\n"


def _diff_verdict(d: dict) -> str:
    if d["ci_low"] > 0:
        return "better"
    if d["ci_high"] < 0:
        return "worse"
    return "not distinguishable"


# Table 1's CLIP scores of the fine-tuned systems the evaluate stage scores (the base model's: PAPER_SDXL["clip"])
PAPER_CLIP = {
    "sft_sharpening": ("SFT-DS", 0.334),
    "rlhf_sharpening": ("RLHF-DS", 0.338),
    "standard_finetune": ("standard fine-tuning", 0.325),
}


def claims() -> list[str]:
    """One sentence per built paper claim, with the numbers behind it and whether it holds in the tiny world."""
    import csv

    out = []
    logs = {
        label: paths.train_logs() / f"{run}.csv"
        for run, label in (("sft_sharpening", "SFT-DS"), ("rlhf_sharpening", "RLHF-DS"))
    }
    parts = []
    for label, path in logs.items():
        if not path.exists():
            continue
        with path.open() as f:
            log = list(csv.DictReader(f))
        k = max(1, len(log) // 10)
        m0, m1 = (sum(float(r["reward_mean"]) for r in rows) / k for rows in (log[:k], log[-k:]))
        s0, s1 = (sum(float(r["reward_std"]) for r in rows) / k for rows in (log[:k], log[-k:]))
        holds = m1 > m0 and s1 < s0
        parts.append(
            f"{label}: mean {m0:.1f} -> {m1:.1f}, std {s0:.1f} -> {s1:.1f} over {len(log)} steps "
            f"({'holds' if holds else 'does not hold'})"
        )
    if parts:
        out.append(
            "Fig. 6, 'the training reward's mean rises and its spread shrinks' (first vs last 10% of the "
            "steps): " + "; ".join(parts) + "."
        )
    ev = _load("eval_clip.json") or {}
    for name, d in ev.get("vs_base", {}).items():
        if name in PAPER_CLIP:
            label, value = PAPER_CLIP[name]
            out.append(
                f"Table 1, '{label} beats the base model on CLIP score': {label} - base = {_ci_md(d)} on "
                f"{d['n']} prompts: {_diff_verdict(d)} (the paper: {value} vs {PAPER_SDXL['clip']})."
            )
    d = ev.get("paired", {}).get("sft_sharpening - standard_finetune")
    if d:
        out.append(
            f"Table 1 and Fig. 4, 'SFT-DS beats standard fine-tuning on the same data': SFT-DS - standard = "
            f"{_ci_md(d)}: {_diff_verdict(d)} (the paper: {PAPER_CLIP['sft_sharpening'][1]} vs "
            f"{PAPER_CLIP['standard_finetune'][1]})."
        )
    sweep = _load("nfe_sweep.json")
    if sweep and sweep.get("methods"):
        best = max(
            (
                (q["columns"]["clip"]["mean"], m["label"], q["nfe_per_image"])
                for m in sweep["methods"].values()
                for q in m["points"]
            ),
            key=lambda x: x[0],
        )
        rising = [
            m["label"]
            for m in sweep["methods"].values()
            if m["points"][-1]["columns"]["clip"]["mean"] > m["points"][0]["columns"]["clip"]["mean"]
        ]
        out.append(
            f"Fig. 5, 'inference-time methods buy CLIP score with NFEs': it rises from the base cost to the "
            f"largest budget for {len(rising)} of {len(sweep['methods'])} methods; the best is "
            f"{best[1]} at {best[2]:.0f} NFE with {best[0]:.3f} (base model {sweep['base']['columns']['clip']['mean']:.3f})."
        )
        for name, r in sweep.get("sharpened", {}).items():
            v, d = r["columns"]["clip"], r["vs_base"]["clip"]
            above = v["mean"] > best[0]
            out.append(
                f"Fig. 5, '{r['label']} at the base cost ({r['nfe_per_image']:.0f} NFE) is above the "
                f"inference-time methods': {v['mean']:.3f}, {'above' if above else 'below'} the best of them "
                f"({'holds' if above else 'does not hold'}); against the base model {_diff_verdict(d)} "
                f"({_ci_md(d)})."
            )
    base = _load("base_model_report.json")
    if base:
        cats = base["categories"]
        above = [c for c, v in cats.items() if v["all"] > v["chance"]]
        out.append(
            f"Base model, 'clearly better than chance and clearly imperfect on composition': above chance on "
            f"{len(above)} of {len(cats)} categories, overall parser score {base['overall']['score']:.3f} "
            f"(chance {base['overall']['chance']:.3f}, renders 1.0), exact on "
            f"{base['overall']['exact_share']:.0%} of prompts."
        )
    return out


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
                rows[f"{name}"] = {"test": f"{test} (Pearson r)", "model": v["pearson"], "n": v["n"]}
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


def training_table() -> pd.DataFrame | None:
    """Per fine-tuning run: steps, training NFEs, and the training reward at the start and at the end."""
    import csv

    runs = [
        "sft_sharpening",
        "rlhf_sharpening",
        "standard_finetune",
        "diffusion_dpo",
        "ddpo",
        "d3po",
        "iterpo",
        "draft",
    ]
    rows = {}
    for name in runs:
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


# ----------------------------------------------------------------------------- compute used by the last run
def compute_report() -> dict:
    """Seconds each stage of the last `dvc repro` took, from papermill's record in its executed notebook
    (executed/ is a DVC output: a stage restored from the cache keeps the duration of the run that made it).
    Written to results/compute.json by `python -m replication.report compute` (`make repro` runs it)."""
    import json

    import yaml

    root = paths.root()
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    lock = yaml.safe_load((root / "dvc.lock").read_text()) if (root / "dvc.lock").exists() else {}
    seconds, missing = {}, []
    for name, st in stages.items():
        nb = root / st["cmd"].split()[2]
        if not nb.exists():
            missing.append(name)
            continue
        seconds[name] = round(float(json.loads(nb.read_text())["metadata"]["papermill"]["duration"]), 1)
    if missing:
        raise FileNotFoundError(f"no executed notebook for stage(s) {missing}: run `dvc repro` first")
    profiles = {st.get("params", {}).get("params.yaml", {}).get("profile") for st in lock.get("stages", {}).values()}
    return {
        "profile": "/".join(sorted(str(p) for p in profiles - {None})) or None,
        "stages": seconds,
        "order": list(seconds),  # pipeline order (the JSON file sorts its keys)
        "total_seconds": round(sum(seconds.values()), 1),
        "machine": machine_info(),
    }


def machine_info(device=None) -> dict:
    """The machine a measurement ran on (the compute report and the benchmarks record it beside their numbers)."""
    import os
    import platform

    import diffusers
    import torch
    import transformers

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


def compute_table(comp: dict) -> pd.DataFrame:
    rows = {
        name: {
            "minutes": round(comp["stages"][name] / 60, 1),
            "share": f"{comp['stages'][name] / comp['total_seconds']:.0%}",
        }
        for name in comp.get("order", comp["stages"])
    }
    rows["all stages"] = {"minutes": round(comp["total_seconds"] / 60, 1), "share": "100%"}
    return pd.DataFrame(rows).T


def update_readme(path=None) -> bool:
    """Rewrite the README's results block; True if it changed."""
    path = path or paths.root() / "README.md"
    text = path.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{path}: no results block (the lines {BEGIN!r} and {END!r})")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{readme_block()}{END}{tail}"
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["readme"]:
        print("README.md: results block " + ("updated" if update_readme() else "already current"))
    elif sys.argv[1:] == ["compute"]:
        from .stages.common import write_json

        comp = compute_report()
        write_json(paths.results() / "compute.json", comp)
        print(f"results/compute.json: {comp['total_seconds'] / 60:.1f} minutes over {len(comp['stages'])} stages")
    else:
        print(
            "usage: python -m replication.report readme    rewrite README.md's results block from results/\n"
            "       python -m replication.report compute   write results/compute.json from executed/ (after dvc repro)"
        )
        raise SystemExit(2)
