"""The README's results block, the verdicts on the paper's claims, and the compute report, all rendered from the
committed result files (results/*.json, results/train/*.csv).

    python -m replication.report readme    rewrite README.md's results block from results/
    python -m replication.report compute   write results/compute.json from executed/ (after dvc repro)
"""

from __future__ import annotations

from . import paths
from .claims import claims
from .tables import (
    base_model_table,
    clip_table,
    compute_table,
    controls_table,
    markdown_table,
    reward_summary,
    training_table,
)

# ----------------------------------------------------------------------------- README results block
# The README's results section is rendered from the committed result files by `python -m replication.report readme`
# (`make repro` runs it after the tiny profile), and tests/test_readme.py checks that it is current: every number in
# it is one the pipeline produced. The paper's numbers next to ours are copied from the paper (PAPER.md, section 4).
BEGIN, END = "<!-- results:begin (python -m replication.report readme) -->", "<!-- results:end -->"


def _load(name: str) -> dict | None:
    import json

    path = paths.results() / name
    return json.loads(path.read_text()) if path.exists() else None


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
            markdown_table(df.round(3)),
            "",
        ]
    clip = _load("clip_report.json")
    if clip:
        out += [
            "**CLIP reward and evaluator** (`clip`): held-out top-1 retrieval among 100 candidates.",
            "",
            markdown_table(clip_table(clip).drop(columns=["train pairs"], errors="ignore").round(3)),
            "",
        ]
    rew = _load("rewards_report.json")
    if rew:
        out += [
            "**Learned rewards** (`rewards`): held-out pairwise accuracy of each preference model and of the "
            "CLIP it starts from (the noise ceiling: how often the rater's noiseless utility agrees with its own "
            "noisy choices); Pearson r of the aesthetic predictors with the rater's noiseless rating, and in "
            "their 'starting CLIP' column the best any linear head on the frozen CLIP embedding reaches when "
            "fitted to the noiseless rating itself (ridge regression; LAION's head is linear).",
            "",
            markdown_table(reward_summary(rew)),
            "",
        ]
    con = _load("controls.json")
    if con:
        out += [
            f"**Controls** (`controls`): paired differences against the base model on {con['n_prompts']} held-out "
            f"prompts ({con['images_per_prompt']} images each, {con['generation']['num_steps']} DDIM steps; "
            f"best-of-N: {con['best_of_n_candidates']} candidates for each of the first "
            f"{con['best_of_n_images_per_prompt']} image(s)); "
            "`parser` is the scene-parser score of every CompBench-like prompt. Positive controls must rise "
            "(CI above 0), the noise reward's must stay flat (CI, Bonferroni over its columns, contains 0).",
            "",
            markdown_table(controls_table(con)),
            "",
        ]
    verdicts = [c.sentence() for c in claims()]
    if verdicts:
        out += [
            "**Does the paper's claim hold here?** (each sentence is computed from the result files; the tables "
            "behind them, Table 1's base row, the CLIP scores of the fine-tuned systems, Figs. 4, 5 and 7, are in "
            "[paper_figures/REPORT.md](paper_figures/REPORT.md))",
            "",
        ]
        out += [f"- {v}" for v in verdicts] + [""]
    ver = _load("verify.json")
    if ver:
        s = ver["summary"]
        out += [
            f"**Reproducibility** (`results/verify.json`, `make verify`): this run against the results of commit "
            f"`{ver['reference']}`: {s['estimates']} estimates with a CI, {s['estimates_identical']} identical, "
            f"{s['estimates_outside']} moved more than {ver['tolerance']['ci_half_widths']:g} CI half-width "
            f"(median shift {s['median_shift_in_half_widths'] or 0:.2f}, largest {s['max_shift_in_half_widths'] or 0:.2f} "
            f"half-widths); {s['numbers']} other numbers, {s['numbers_outside']} moved more than "
            f"{ver['tolerance']['rtol']:.0%}; {s['verdicts_changed']} of {s['verdicts']} verdicts changed"
            + (
                ": " + "; ".join(f"{v['id']} {v['committed']} -> {v['fresh']}" for v in ver["verdicts_changed"])
                if ver["verdicts_changed"]
                else ""
            )
            + ".",
            "",
        ]
    comp = _load("compute.json")
    if comp:
        m = comp["machine"]
        out += [
            f"**Compute** (`results/compute.json`): wall time of each stage of the last `dvc repro` on the "
            f"`{comp['profile']}` profile, from papermill's record, on {m['cpu_count']} CPU cores "
            f"({m['gpu'] or 'no GPU'}, torch {m['torch']}); * ran side by side with another stage (queued DVC "
            f"experiments, the cores shared out), so the sum of the stages exceeds the run's wall time.",
            "",
            markdown_table(compute_table(comp)),
            "",
        ]
    ft = training_table()
    if ft is not None:
        out += [
            "**Fine-tuning runs** (one stage each): training cost and the logged training reward (first and "
            "last 10% of the steps; each method's own reward, so rows are not comparable with each other).",
            "",
            markdown_table(ft),
            "",
        ]
    return "\n".join(out).rstrip() + "\n"


# ----------------------------------------------------------------------------- compute used by the last run
def compute_report() -> dict:
    """Seconds each stage of the last `dvc repro` took, from papermill's record in its executed notebook
    (executed/ is a DVC output: a stage restored from the cache keeps the duration of the run that made it).
    Written to results/compute.json by `python -m replication.report compute` (`make repro` runs it)."""
    import json
    from datetime import datetime

    import yaml

    root = paths.root()
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    lock = yaml.safe_load((root / "dvc.lock").read_text()) if (root / "dvc.lock").exists() else {}
    seconds, spans, missing = {}, {}, []
    for name, st in stages.items():
        nb = root / st["cmd"].split()[2]
        if not nb.exists():
            missing.append(name)
            continue
        pm = json.loads(nb.read_text())["metadata"]["papermill"]
        seconds[name] = round(float(pm["duration"]), 1)
        spans[name] = (datetime.fromisoformat(pm["start_time"]), datetime.fromisoformat(pm["end_time"]))
    if missing:
        raise FileNotFoundError(f"no executed notebook for stage(s) {missing}: run `dvc repro` first")
    profiles = {st.get("params", {}).get("params.yaml", {}).get("profile") for st in lock.get("stages", {}).values()}
    return {
        "profile": "/".join(sorted(str(p) for p in profiles - {None})) or None,
        "stages": seconds,
        "order": list(seconds),  # pipeline order (the JSON file sorts its keys)
        "total_seconds": round(sum(seconds.values()), 1),
        # the first stage's start to the last one's end: the run's wall time when every stage ran in one
        # `make repro` (stages restored from the cache keep the dates of the run that made them)
        "span_seconds": round(
            (max(e for _, e in spans.values()) - min(s for s, _ in spans.values())).total_seconds(), 1
        ),
        # stages that ran while another did (queued experiments, `make repro JOBS=N`)
        "side_by_side": sorted(
            a for a, (s, e) in spans.items() if any(b != a and s < f and t < e for b, (t, f) in spans.items())
        ),
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
        print(
            f"results/compute.json: {comp['total_seconds'] / 60:.1f} minutes over {len(comp['stages'])} stages, "
            f"{comp['span_seconds'] / 60:.1f} from the first start to the last end"
        )
    else:
        print(
            "usage: python -m replication.report readme    rewrite README.md's results block from results/\n"
            "       python -m replication.report compute   write results/compute.json from executed/ (after dvc repro)"
        )
        raise SystemExit(2)
