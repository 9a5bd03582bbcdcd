"""Evaluation: images for a prompt set with fixed seeds (cached on disk), scored by separate evaluators.

Seeds are per prompt (seed * 100_000 + prompt index), the same for every system, so systems are
compared on identical prompts and starting noises (paired differences). Generated images are
cached under .cache/images/ keyed by the model's weights, the prompts, the seeds and the
sampler settings, so re-scoring with another metric never regenerates.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import data, paths, stats
from .config import GenerationParams
from .models import T2IModel
from .train import file_digest
from .world import Spec
from .world import parser as scene_parser


def seeds_for(n: int, seed: int) -> list[int]:
    return [seed * 100_000 + i for i in range(n)]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def to_float(images: np.ndarray, device="cpu") -> torch.Tensor:
    return torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float() / 255


def generate_cached(model_dir: Path, prompts: Sequence[str], seeds: Sequence[int], g: GenerationParams,
                    device="cpu", model: T2IModel | None = None) -> tuple[np.ndarray, float]:
    """(N, H, W, 3) uint8 images and the NFEs spent per image (DDIM, classifier-free guidance)."""
    settings = {"model": file_digest(model_dir), "prompts": list(prompts), "seeds": list(map(int, seeds)),
                "num_steps": g.num_steps, "guidance_scale": g.guidance_scale}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]
    cache = paths.cache()
    npy, meta = cache / f"{key}.npy", cache / f"{key}.json"
    if npy.exists() and meta.exists():
        return np.load(npy), json.loads(meta.read_text())["nfe_per_image"]
    model = model or T2IModel.from_pretrained(model_dir, device=device)
    model.unet.eval()
    model.nfe.reset()
    images = model.generate(prompts, seeds, num_steps=g.num_steps, guidance_scale=g.guidance_scale,
                            batch_size=g.batch_size)
    nfe = model.nfe.per_image(len(prompts))
    arr = to_uint8(images)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(npy, arr)
    meta.write_text(json.dumps({"nfe_per_image": nfe, "model_dir": str(model_dir), "n": len(prompts),
                                "num_steps": g.num_steps, "guidance_scale": g.guidance_scale}))
    return arr, nfe


def parser_scores(images: np.ndarray, specs: Sequence[dict | Spec]) -> np.ndarray:
    """Share of each prompt's claims that hold in its image (the tiny world's exact evaluator)."""
    specs = [s if isinstance(s, Spec) else Spec.from_json(s) for s in specs]
    return scene_parser.score(images, specs)["score"].numpy()


def chance_scores(images: np.ndarray, specs: Sequence[dict], groups: Sequence[str]) -> np.ndarray:
    """Scores of images against another prompt of the same group (a cyclic shift): the chance level."""
    groups = np.asarray(groups)
    shifted = list(specs)
    for gname in np.unique(groups):
        idx = np.nonzero(groups == gname)[0]
        for a, b in zip(idx, np.roll(idx, 1)):
            shifted[a] = specs[b]
    return parser_scores(images, shifted)


def summarise(values: np.ndarray, confidence: float, n_boot: int, seed: int = 0) -> dict:
    return {k: (round(v, 6) if isinstance(v, float) else v)
            for k, v in stats.mean_ci(values, confidence, n_boot, seed).items()}


# ----------------------------------------------------------------------------- the metric suite
# Table 1's columns (plus numeracy). Which prompts each column scores: the CLIP score and the learned /
# graded metrics use the DrawBench-like set (the paper: DrawBench); the CompBench-like columns use that
# category's prompts of the CompBench-like set.
COLUMNS = ("clip", "color", "shape", "texture", "spatial", "non_spatial", "complex", "aesthetic", "image_reward",
           "mllm", "numeracy")
PARSER_COLUMNS = ("color", "shape", "texture", "spatial", "non_spatial", "complex", "numeracy")
DRAWBENCH_COLUMNS = ("clip", "aesthetic", "image_reward", "mllm")


def evaluation_rows(per_category: int | None = None, drawbench: str = "drawbench",
                    compbench: str = "compbench") -> list[dict]:
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


class MetricSuite:
    """Per-image scores of Table 1's columns for generated images (uint8 (N, H, W, 3)) and their rows.

    `scorers` maps a column to fn(images, rows) -> np.ndarray of that many scores, called only on the
    rows the column applies to; `score` returns every column as an (N,) array with NaN elsewhere.
    """

    def __init__(self, scorers: dict):
        unknown = [c for c in scorers if c not in COLUMNS]
        if unknown:
            raise KeyError(f"unknown metric column(s) {unknown}; columns: {', '.join(COLUMNS)}")
        self.scorers = scorers

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(c for c in COLUMNS if c in self.scorers)

    @classmethod
    def load(cls, columns: Sequence[str] = ("clip",) + PARSER_COLUMNS, device="cpu") -> "MetricSuite":
        """The evaluators of the given columns (the tiny world's; see README for which model scores what)."""
        scorers = {}
        for col in columns:
            if col == "clip":
                from .rewards.clip import CLIPScore

                clip = CLIPScore.load(paths.models() / "clip_evaluator", device)
                scorers[col] = lambda im, rows, clip=clip: clip.cosine(
                    to_float(im, clip.device), [r["prompt"] for r in rows]).cpu().numpy()
            elif col in PARSER_COLUMNS:
                scorers[col] = lambda im, rows: parser_scores(im, [r["spec"] for r in rows])
            else:
                raise KeyError(f"no evaluator for column {col!r} yet; available: clip, {', '.join(PARSER_COLUMNS)}")
        return cls(scorers)

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


def summarise_columns(per_image: dict[str, np.ndarray], confidence: float = 0.95, n_boot: int = 2000,
                      seed: int = 0) -> dict[str, dict]:
    """Mean and bootstrap CI of every column over the rows it scored."""
    return {col: summarise(v[~np.isnan(v)], confidence, n_boot, seed) for col, v in per_image.items()
            if (~np.isnan(v)).any()}


def clip_evaluation(systems: dict[str, Path], prompt_set: str, g: GenerationParams, evaluator, seed: int = 0,
                    confidence: float = 0.95, n_boot: int = 2000, device="cpu", limit: int | None = None) -> dict:
    """CLIP score (cosine, the paper's 0-1 scale) of each system on a prompt set, with CIs and paired
    differences against the first system."""
    rows = data.load_prompts(prompt_set)[:limit]
    prompts = [r["prompt"] for r in rows]
    seeds = seeds_for(len(prompts), seed)
    out: dict = {"prompt_set": prompt_set, "n_prompts": len(prompts), "seed": seed,
                 "generation": {"num_steps": g.num_steps, "guidance_scale": g.guidance_scale}, "systems": {}}
    per_image = {}
    for name, model_dir in systems.items():
        images, nfe = generate_cached(model_dir, prompts, seeds, g, device)
        cos = evaluator.cosine(to_float(images, evaluator.device), prompts).cpu().numpy()
        per_image[name] = cos
        cats = sorted({r.get("category", "all") for r in rows})
        out["systems"][name] = {
            "clip": summarise(cos, confidence, n_boot, seed),
            "nfe_per_image": nfe,
            "by_category": {c: round(float(cos[[r.get("category", "all") == c for r in rows]].mean()), 6) for c in cats},
        }
    base = next(iter(systems))
    out["vs_" + base] = {name: {k: (round(v, 6) if isinstance(v, float) else v)
                                for k, v in stats.paired_diff(per_image[name], per_image[base], confidence, n_boot,
                                                              seed).items()}
                         for name in systems if name != base}
    return out


def base_model_report(model_dir: Path, g: GenerationParams, per_split: int, device="cpu", seed: int = 0) -> dict:
    """How good the base model is on the CompBench-like set, next to chance and to the VAE's ceiling."""
    rows = data.load_prompts("compbench")
    picked: list[dict] = []
    for key in sorted({(r["category"], r["split"]) for r in rows}):
        picked += [r for r in rows if (r["category"], r["split"]) == key][:per_split]
    images, nfe = generate_cached(model_dir, [r["prompt"] for r in picked], seeds_for(len(picked), seed), g, device)
    specs = [r["spec"] for r in picked]
    score = parser_scores(images, specs)
    chance = chance_scores(images, specs, [r["category"] for r in picked])
    report: dict = {"n_prompts": len(picked), "nfe_per_image": nfe, "categories": {}}
    for cat in sorted({r["category"] for r in picked}):
        entry = {}
        for split in ("seen", "heldout"):
            m = np.array([(r["category"], r["split"]) == (cat, split) for r in picked])
            if m.any():
                entry[split] = round(float(score[m].mean()), 4)
        m = np.array([r["category"] == cat for r in picked])
        entry["all"] = round(float(score[m].mean()), 4)
        entry["chance"] = round(float(chance[m].mean()), 4)
        report["categories"][cat] = entry
    report["overall"] = {"score": round(float(score.mean()), 4), "chance": round(float(chance.mean()), 4),
                         "exact_share": round(float((score == 1).mean()), 4)}
    # the latent space's ceiling: parser score of VAE reconstructions of real renders
    model = T2IModel.from_pretrained(model_dir, device=device)
    ds = data.load_image_set("journeydb")
    real = to_float(ds.images[-256:], device)
    with torch.no_grad():
        rec = model.decode(model.encode(real, sample=False))
    report["ceiling"] = {
        "renders": round(float(parser_scores(ds.images[-256:], ds.specs[-256:]).mean()), 4),
        "vae_reconstructions": round(float(parser_scores(to_uint8(rec), ds.specs[-256:]).mean()), 4),
    }
    return report
