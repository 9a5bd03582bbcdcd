"""Per-method tuning (issue 13, bar 5): one cell of a small search, scored on a validation prompt split.

A cell is a Table-1 fine-tuning method with its learning rate, training steps and (where it has one) beta
changed; everything else is the method's own section of params.yaml. The cell's model is trained as the method's
stage trains it and scored by the method's own training signal on validation prompts that no evaluation set, no
training prompt pool and no training image caption contains:

| method                         | own training signal on the validation prompts                           |
|--------------------------------|-------------------------------------------------------------------------|
| a method with a `reward`       | that reward (CLIP, aesthetic, compositional: the models it trained on)   |
| diffusion_dpo, d3po            | the simulated rater's noiseless utility (the judge of their pairs)       |
| standard_finetune              | minus its denoising error on renders of the validation prompts          |

`score` is the cell's mean, `delta` its paired difference against the base model with a bootstrap CI over
prompts. The search is a set of DVC experiments of `tuning/dvc.yaml` (outside the default `dvc repro`):
`make tune` queues the grid of `tune.grid`, runs it with `dvc queue start`, and `collect` writes the table
(results/tuning.csv) and each method's choice, the highest `score` (results/tuning.json).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import config, data, diffusion, experiments, paths, stats
from ..evaluate import GenerationParams, generate_rows
from ..models import T2IModel
from ..rewards import registry
from ..tables import FINETUNED
from ..tensors import default_device, to_float
from ..world import Sampler, render_batch, sample_captioned
from ..world.rater import judge

METHODS = FINETUNED  # the fine-tuning methods of Table 1
RATER_METHODS = ("diffusion_dpo", "d3po")  # learn from the simulated rater's choices
DENOISING_METHODS = ("standard_finetune",)  # no reward: the validation denoising error is their own objective


@dataclass
class SearchSpace:
    """The values tried for one method (params.yaml: tune.grid.<method>); empty: the method's own value only."""

    lr: tuple[float, ...] = ()
    steps: tuple[int, ...] = ()
    beta: tuple[float, ...] = ()

    def cells(self) -> list[dict]:
        axes = {k: v for k, v in (("lr", self.lr), ("steps", self.steps), ("beta", self.beta)) if v}
        cells = [{}]
        for key, values in axes.items():
            cells = [{**c, key: v} for c in cells for v in values]
        return cells


@dataclass
class TuneParams:
    """params.yaml: tune. `method`, `lr`, `steps` and `beta` name the cell (`dvc exp run -S tune.lr=...`);
    null keeps the method's own value."""

    method: str = "draft"
    lr: float | None = None
    steps: int | None = None
    beta: float | None = None
    prompts: int = 100  # validation prompts
    images_per_prompt: int = 2
    denoising_draws: int = 8  # standard_finetune: noise draws per validation render
    validation_seed: int = 41
    generation: GenerationParams = field(default_factory=GenerationParams)
    seed: int = 0
    confidence: float = 0.95
    bootstrap: int = 2000
    table: str = "results/tuning.csv"  # what `collect` writes; results/tuning.json holds each method's choice
    grid: dict = field(default_factory=dict)  # method -> SearchSpace (lr, steps, beta lists)

    def __post_init__(self):
        self.grid = {
            k: v if isinstance(v, SearchSpace) else config.build(SearchSpace, v or {}, f"tune.grid.{k}")
            for k, v in self.grid.items()
        }
        for name in [self.method, *self.grid]:
            if name not in METHODS:
                raise ValueError(f"tune: unknown method {name!r}; Table 1's fine-tuning methods: {', '.join(METHODS)}")
        if self.prompts < 2 or self.images_per_prompt < 1:
            raise ValueError("tune.prompts must be >= 2 and tune.images_per_prompt >= 1")

    def cell(self) -> dict:
        """The values this run changes (the experiment's name in the table)."""
        return {k: v for k, v in (("lr", self.lr), ("steps", self.steps), ("beta", self.beta)) if v is not None}

    def overrides(self, section) -> dict:
        """params overrides that put this cell into the method's section (`section`: its current values)."""
        if self.beta is not None and not hasattr(section, "beta"):
            raise ValueError(f"tune.beta is set but {self.method} has no beta; set tune.beta to null")
        cell = self.cell()
        train = {k: cell[k] for k in ("lr", "steps") if k in cell}
        if "steps" in cell:
            train["checkpoint_every"] = min(section.train.checkpoint_every, cell["steps"])
        out: dict = {"train": train} if train else {}
        if "beta" in cell:
            out["beta"] = cell["beta"]
        return {self.method: out}


# ----------------------------------------------------------------------------- the validation split
def excluded_prompts() -> set[str]:
    """Every evaluation prompt, every prompt of the RLHF pool and every training caption."""
    out = {r["prompt"] for name in data.PROMPT_SEEDS for r in data.load_prompts(name)}
    for name in data.IMAGE_SETS:
        out |= set(data.load_image_set(name).captions)
    return out


def validation_rows(n: int, seed: int) -> list[dict]:
    """n prompts of the RLHF pool's styles (seen compositions) that no evaluation set, prompt pool or training
    caption holds, each with its spec and the scene it was drawn from."""
    s = Sampler(np.random.default_rng([seed, 17]), data.CANVAS)
    exclude, rows = excluded_prompts(), []
    for _ in range(50 * n):
        if len(rows) == n:
            break
        scene, text, claims = sample_captioned(s, s.choice(data.RLHF_STYLES), heldout=False)
        if text in exclude:
            continue
        exclude.add(text)
        rows.append({"id": len(rows), "set": "validation", "prompt": text, "spec": claims.to_json(), "scene": scene})
    if len(rows) < n:
        raise RuntimeError(f"only {len(rows)} validation prompts apart from every other set (asked {n})")
    return rows


# ----------------------------------------------------------------------------- scoring
@torch.no_grad()
def denoising_scores(model: T2IModel, images: np.ndarray, prompts: list[str], draws: int, seed: int) -> np.ndarray:
    """Minus the epsilon-MSE of standard fine-tuning per (image, prompt), averaged over `draws` noise and
    timestep draws that are the same for every model (a paired comparison)."""
    x0 = model.encode(to_float(images, model.device), sample=False)
    cond = model.encode_prompts(prompts)
    total = torch.zeros(len(prompts), device=model.device)
    steps = model.scheduler.config.num_train_timesteps
    for d in range(draws):
        gen = torch.Generator().manual_seed(seed * 1_000 + d)
        t = torch.randint(0, steps, (len(prompts),), generator=gen).to(model.device)  # CPU generator: one stream
        eps = torch.randn(x0.shape, generator=gen).to(x0.device, x0.dtype)
        out = model.eps(diffusion.add_noise(model.scheduler, x0, eps, t), t, cond)
        target = diffusion.target_for(model.scheduler, x0, eps, t)
        total += (out.float() - target.float()).pow(2).flatten(1).mean(1)
    return (-total / draws).cpu().numpy()


def own_scores(method: str, section, model_dir: Path, rows: list[dict], t: TuneParams) -> np.ndarray:
    """The method's own training signal per validation prompt (mean over its images)."""
    dev = default_device()
    prompts = [r["prompt"] for r in rows]
    if method in DENOISING_METHODS:
        model = T2IModel.from_pretrained(model_dir, device=dev)
        return denoising_scores(model, render_batch([r["scene"] for r in rows]), prompts, t.denoising_draws, t.seed)
    images = [generate_rows(model_dir, rows, t.generation, t.seed + k, dev)[0] for k in range(t.images_per_prompt)]
    if method in RATER_METHODS:
        specs = [r["spec"] for r in rows]
        return np.mean([judge(im, specs).utility.numpy() for im in images], axis=0)
    reward = registry.load_reward(section.reward, dev)
    return np.mean([reward(to_float(im, reward.device), prompts).float().cpu().numpy() for im in images], axis=0)


def signal_name(method: str, section) -> str:
    if method in DENOISING_METHODS:
        return "-denoising error"
    return "rater utility" if method in RATER_METHODS else f"reward {section.reward}"


def validate(t: TuneParams, section, model_dir: Path, base_dir: Path) -> dict:
    """The cell's score on the validation prompts and its paired difference against the base model."""
    rows = validation_rows(t.prompts, t.validation_seed)
    mine, base = (own_scores(t.method, section, d, rows, t) for d in (model_dir, base_dir))
    d = stats.paired_diff(mine, base, t.confidence, t.bootstrap, t.seed)
    return {
        "method": t.method,
        **{k: getattr(section.train, k) for k in ("lr", "steps")},
        "beta": getattr(section, "beta", None),
        "signal": signal_name(t.method, section),
        "score": round(float(mine.mean()), 6),
        "base": round(float(base.mean()), 6),
        "delta": round(d["mean"], 6),
        "ci_low": round(d["ci_low"], 6),  # scalars: dvc exp show drops lists (and nulls) from metrics files
        "ci_high": round(d["ci_high"], 6),
        "n": int(d["n"]),
    }


# ----------------------------------------------------------------------------- the search's table
COLUMNS = ("method", "lr", "steps", "beta", "signal", "score", "base", "delta", "ci_low", "ci_high", "n", "chosen")


def cells_of_exp_show(exps: list[dict], metrics: str = "results/tuning/cell.json") -> list[dict]:
    """Every experiment's cell result from `dvc exp show --json` (baselines and experiments alike; a cell run
    twice counts once, its newest result)."""
    out: dict[tuple, dict] = {}

    def visit(rev: dict):
        m = ((rev.get("data") or {}).get("metrics") or {}).get(metrics)
        if m and "data" in m and "method" in m["data"]:
            cell = {**m["data"], "beta": m["data"].get("beta")}  # DVC leaves null values out
            out[(cell["method"], cell["lr"], cell["steps"], cell["beta"])] = cell

    for entry in exps:
        visit(entry)
        for exp in entry.get("experiments") or []:
            for rev in exp.get("revs") or []:
                visit(rev)
    return list(out.values())


def table(cells: list[dict]) -> tuple[list[dict], dict[str, dict]]:
    """Rows sorted by method and score (best first) and each method's choice: its highest score."""
    rows = sorted(cells, key=lambda c: (METHODS.index(c["method"]), -c["score"]))
    chosen = {}
    for c in rows:
        chosen.setdefault(c["method"], c)
    flat = [{**{k: c[k] for k in COLUMNS[:-1]}, "chosen": chosen[c["method"]] is c} for c in rows]
    keep = ("lr", "steps", "beta", "signal", "score", "delta", "ci_low", "ci_high")
    return flat, {m: {k: c[k] for k in keep} for m, c in chosen.items()}


def write_table(cells: list[dict], path: Path) -> dict[str, dict]:
    rows, chosen = table(cells)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    paths.write_json(path.with_suffix(".json"), {"chosen": chosen, "cells": len(rows)})
    return chosen


def queue_commands(t: TuneParams) -> list[list[str]]:
    """The `dvc exp run --queue` command of every cell of the grid."""
    cmds = []
    for method, space in t.grid.items():
        for cell in space.cells():
            sets = [f"tune.method={method}"] + [f"tune.{k}={cell.get(k, 'null')}" for k in ("lr", "steps", "beta")]
            name = "-".join([method.replace("_", "-")] + [f"{k}{v}" for k, v in cell.items()])
            sets = [a for s in sets for a in ("-S", s)]
            # -s: only the cell's stage runs (the models it starts from are the current pipeline's)
            cmds.append(["dvc", "exp", "run", "--queue", "-s", "-n", name, *sets, "tuning/dvc.yaml:tune"])
    return cmds


# ----------------------------------------------------------------------------- make tune
def queue(t: TuneParams) -> int:
    """Queue every cell of the grid as a DVC experiment of tuning/dvc.yaml (`dvc queue start` runs them)."""
    cmds = queue_commands(t)
    for cmd in cmds:
        experiments.dvc(*cmd[1:])
    return len(cmds)


def collect(t: TuneParams) -> dict[str, dict]:
    """The table of every finished cell (from `dvc exp show --json`) and each method's choice."""
    # -A: experiments of every commit (commits made while the queue ran move HEAD away from the cells' baseline)
    cells = cells_of_exp_show(json.loads(experiments.dvc("exp", "show", "--json", "-A").stdout))
    if not cells:
        raise RuntimeError(
            "no tuning cell has finished: run `make tune` (dvc exp show lists no results/tuning/cell.json)"
        )
    return write_table(cells, paths.resolve(t.table))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m replication.recipes.tuning", description=__doc__.split("\n")[0])
    ap.add_argument("cmd", choices=("queue", "wait", "collect"))
    a = ap.parse_args(argv)
    t = config.load({"tune": TuneParams}).tune
    if a.cmd == "queue":
        print(f"queued {queue(t)} experiments of tuning/dvc.yaml (run them: dvc queue start -j N)")
    elif a.cmd == "wait":
        print(f"experiment queue done: {experiments.wait()}")
    else:
        for method, c in collect(t).items():
            print(
                f"{method}: lr {c['lr']} steps {c['steps']} beta {c['beta']}: score {c['score']} (delta {c['delta']})"
            )
        print(f"wrote {t.table} and {Path(t.table).with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
