"""Fig. 7, the user study: the simulated rater judges RLHF Diffusion-Sharpening against the six systems of the
paper's figure (SDXL, DDPO, D3PO, Demon, Diffusion-DPO, Free2Guide) on the same prompts and seeds.

The prompts, seeds and sampler are stage nfe_sweep's (its DrawBench-like prompts, its DDIM steps and guidance):
RLHF-DS, the base model and the inference-time methods at `budget_multiple` times the base cost are read from
generated/nfe_sweep.npz, and the fine-tuned baselines are generated here with the same prompts, seeds and
sampler. Each pair (one prompt, one seed, two systems) is judged by `raters` independent draws of the simulated
rater (`world.rater.Rater`: noisy utility difference, 'comparable' within its tie band), as a study shows each
pair to several people. Per system: the shares of 'RLHF-DS preferred' / 'comparable' / 'other preferred' with
bootstrap CIs over prompts, and the paired difference preferred - other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from .. import paths, stats
from ..evaluate import GenerationParams, generate_cached
from ..tensors import default_device
from ..world.rater import Rater

LABELS = {
    "base": "Base model (SDXL's role)",
    "ddpo": "DDPO",
    "d3po": "D3PO",
    "diffusion_dpo": "Diffusion-DPO",
    "demon": "Demon",
    "free2guide": "Free2Guide",
}
# the paper's Fig. 7 (PAPER.md; the bar-to-method mapping is inferred there): preferred / comparable / other, %
PAPER_FIG7 = {
    "base": (63.2, 23.3, 14.5),
    "ddpo": (44.7, 32.9, 23.4),
    "d3po": (68.4, 15.0, 17.6),
    "demon": (65.3, 20.0, 15.7),
    "diffusion_dpo": (60.1, 24.0, 16.9),
    "free2guide": (54.6, 22.0, 24.4),
}


@dataclass
class UserStudyParams:
    """params.yaml: user_study."""

    reference: str = "rlhf_sharpening"  # one of nfe_sweep.sharpened
    trained: tuple[str, ...] = ("base", "ddpo", "d3po", "diffusion_dpo")  # models/<name>
    inference_time: tuple[str, ...] = ("demon", "free2guide")  # read from generated/nfe_sweep.npz
    budget_multiple: float = 10.0  # the inference-time methods' budget, in multiples of the base cost
    raters: int = 5  # independent judgements per pair
    seed: int = 0
    confidence: float = 0.95
    bootstrap: int = 2000

    def __post_init__(self):
        if self.raters < 1:
            raise ValueError(f"user_study.raters is {self.raters}; at least one judgement per pair is needed")


def _sweep() -> tuple[dict, dict]:
    npz_path, json_path = paths.generated() / "nfe_sweep.npz", paths.results() / "nfe_sweep.json"
    if not (npz_path.exists() and json_path.exists()):
        raise FileNotFoundError("the user study uses stage nfe_sweep's prompts and images: run `dvc repro nfe_sweep`")
    with np.load(npz_path) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads(json_path.read_text())


def user_study(u: UserStudyParams, rater: Rater, show_progress: bool = True) -> dict:
    arrays, sweep = _sweep()
    prompts = [str(p) for p in arrays["prompts"]]
    seeds = [int(s) for s in arrays["seeds"]]
    st = sweep["settings"]
    ref_key = f"images/{u.reference}"
    if ref_key not in arrays:
        raise KeyError(f"user_study.reference {u.reference!r} is not among nfe_sweep.sharpened: add it there")
    images = {u.reference: arrays[ref_key]}
    g = GenerationParams(num_steps=st["num_steps"], guidance_scale=st["guidance_scale"])
    for name in u.trained:
        if name == "base":
            images[name] = arrays["images/base"]
            continue
        folder = paths.models() / name
        if not folder.exists():
            raise FileNotFoundError(f"user_study.trained: no models/{name}; run `dvc repro {name}`")
        images[name] = generate_cached(folder, prompts, seeds, g, default_device())[0]
    budget = int(round(u.budget_multiple * st["base_cost"]))
    for name in u.inference_time:
        key = f"images/{name}@{budget}"
        if key not in arrays:
            have = sorted(k for k in arrays if k.startswith(f"images/{name}@"))
            raise KeyError(f"nfe_sweep has no {key}: set user_study.budget_multiple to one of its budgets ({have})")
        images[name] = arrays[key]
    utility = {k: rater.utility(v, prompts) for k, v in images.items()}
    gen = torch.Generator().manual_seed(u.seed)
    out = {
        "reference": u.reference,
        "n_prompts": len(prompts),
        "raters": u.raters,
        "budget_nfe": budget,
        "sampler": {"num_steps": st["num_steps"], "guidance_scale": st["guidance_scale"]},
        "systems": {},
    }
    for name in (*u.trained, *u.inference_time):
        votes = torch.stack(
            [rater.compare_utilities(utility[u.reference], utility[name], gen) for _ in range(u.raters)]
        ).numpy()  # (raters, prompts): +1 reference preferred, 0 comparable, -1 the other
        share = {k: (votes == v).mean(0) for k, v in (("preferred", 1), ("comparable", 0), ("other", -1))}
        row = {k: stats.mean_ci(v, u.confidence, u.bootstrap, u.seed) for k, v in share.items()}
        row["preferred - other"] = stats.paired_diff(
            share["preferred"], share["other"], u.confidence, u.bootstrap, u.seed
        )
        row["label"] = LABELS.get(name, name)
        if name in PAPER_FIG7:
            row["paper"] = dict(zip(("preferred", "comparable", "other"), PAPER_FIG7[name]))
        out["systems"][name] = row
    return out


__all__ = ["UserStudyParams", "user_study", "LABELS", "PAPER_FIG7"]
