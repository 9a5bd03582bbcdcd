"""The README's results block, the verdicts on the paper's claims, and the compute report, all rendered from the
committed result files (results/*.json, results/train/*.csv).

    python -m replication.report readme    rewrite README.md's results block from results/
    python -m replication.report compute   write results/compute.json from executed/ (after dvc repro)
"""

from __future__ import annotations

import pandas as pd

from . import paths
from .tables import (
    base_model_table,
    clip_table,
    compute_table,
    controls_table,
    eval_table,
    nfe_table,
    reward_summary,
    training_table,
)

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
            f"(a random image of the world), and the VAE's ceiling: the score of each prompt's own render "
            f"after encoding and decoding (renders score {base['ceiling']['renders']}).",
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
    con = _load("controls.json")
    if con:
        out += [
            f"**Controls** (`controls`): paired differences against the base model on {con['n_prompts']} held-out "
            f"prompts ({con['images_per_prompt']} images each, {con['generation']['num_steps']} DDIM steps); "
            "`parser` is the scene-parser score of every CompBench-like prompt. Positive controls must rise "
            "(CI above 0), the noise reward's must stay flat (CI, Bonferroni over its columns, contains 0).",
            "",
            _md(controls_table(con)),
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
        for r in sweep.get("sharpened", {}).values():
            v, d = r["columns"]["clip"], r["vs_base"]["clip"]
            above = v["mean"] > best[0]
            out.append(
                f"Fig. 5, '{r['label']} at the base cost ({r['nfe_per_image']:.0f} NFE) is above the "
                f"inference-time methods': {v['mean']:.3f}, {'above' if above else 'below'} the best of them "
                f"({'holds' if above else 'does not hold'}); against the base model {_diff_verdict(d)} "
                f"({_ci_md(d)})."
            )
    con = _load("controls.json")
    if con:
        failed = [k for k, ok in con["passed"].items() if not ok]
        out.append(
            f"Controls, 'this laboratory can see an effect': {sum(con['passed'].values())} of {len(con['passed'])} "
            "controls pass"
            + (f"; failing: {', '.join(failed)} (a verdict that leans on these is uninformative)." if failed else ".")
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
        comp = compute_report()
        paths.write_json(paths.results() / "compute.json", comp)
        print(f"results/compute.json: {comp['total_seconds'] / 60:.1f} minutes over {len(comp['stages'])} stages")
    else:
        print(
            "usage: python -m replication.report readme    rewrite README.md's results block from results/\n"
            "       python -m replication.report compute   write results/compute.json from executed/ (after dvc repro)"
        )
        raise SystemExit(2)
