"""Evaluation images: generated for a prompt set with fixed seeds (cached on disk), scored by the exact parser.

Seeds are per prompt (seed * 100_000 + prompt index), the same for every system, so systems are compared on
identical prompts and starting noises (paired differences). Generated images are cached under .cache/images/
keyed by the model's weights, the prompts, the seeds, the sampler settings and the code that generates them, so
re-scoring with another metric never regenerates. `clip_evaluation` scores systems by CLIP score alone;
`base_model_report` is the base model's quality against chance and the VAE's ceiling. Table 1's whole metric
suite is `replication.metrics`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import data, paths, stats
from .digests import candidate_seed, file_digest, source_digest
from .models import T2IModel
from .progress import tqdm
from .tensors import to_float, to_uint8
from .world import Scene, Spec, render_batch
from .world import parser as scene_parser


def seeds_for(n: int, seed: int) -> list[int]:
    return [seed * 100_000 + i for i in range(n)]


@dataclass
class GenerationParams:
    """How images are generated for evaluation (the paper: DDIM 50 steps, CFG 5 = 100 NFE)."""

    num_steps: int = 50
    guidance_scale: float = 5.0
    batch_size: int = 256


# the code that makes an image from a pipeline: a cached image made by other code is never reused
GENERATION_CODE = ("replication.diffusion", "replication.models")


def generate_cached(
    model_dir: Path,
    prompts: Sequence[str],
    seeds: Sequence[int],
    g: GenerationParams,
    device=None,
    model: T2IModel | None = None,
) -> tuple[np.ndarray, float]:
    """(N, H, W, 3) uint8 images and the NFEs spent per image (DDIM, classifier-free guidance)."""
    settings = {
        "model": file_digest(model_dir),
        "prompts": list(prompts),
        "seeds": list(map(int, seeds)),
        "num_steps": g.num_steps,
        "guidance_scale": g.guidance_scale,
        "code": source_digest(*GENERATION_CODE),
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:24]
    cache = paths.cache()
    npy, meta = cache / f"{key}.npy", cache / f"{key}.json"
    if npy.exists() and meta.exists():
        return np.load(npy), json.loads(meta.read_text())["nfe_per_image"]
    model = model or T2IModel.from_pretrained(model_dir, device=device)
    model.unet.eval()
    model.nfe.reset()
    images = model.generate(
        prompts, seeds, num_steps=g.num_steps, guidance_scale=g.guidance_scale, batch_size=g.batch_size
    )
    nfe = model.nfe.per_image(len(prompts))
    arr = to_uint8(images)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(npy, arr)
    meta.write_text(
        json.dumps(
            {
                "nfe_per_image": nfe,
                "model_dir": str(model_dir),
                "n": len(prompts),
                "num_steps": g.num_steps,
                "guidance_scale": g.guidance_scale,
            }
        )
    )
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
    return {
        k: (round(v, 6) if isinstance(v, float) else v)
        for k, v in stats.mean_ci(values, confidence, n_boot, seed).items()
    }


def generate_rows(
    model_dir: Path,
    rows: Sequence[dict],
    g: GenerationParams,
    seed: int = 0,
    device=None,
    model: T2IModel | None = None,
    candidate: int = 0,
) -> tuple[np.ndarray, float]:
    """Images for evaluation rows: each prompt set is generated (and cached) on its own with seeds
    seed * 100_000 + index within the set, so the CompBench-like images are the very ones the base_model
    stage's report and every other stage generate for the same prompts. `candidate` j > 0 gives best-of-N's
    j-th candidate instead: the noise `methods.inference_time.initial_noise` derives from the seed."""
    sets = [s for s in dict.fromkeys(r["set"] for r in rows)]
    out = None
    nfe_total = 0.0
    for name in sets:
        idx = np.array([i for i, r in enumerate(rows) if r["set"] == name])
        seeds = [candidate_seed(s, candidate) for s in seeds_for(len(idx), seed)]
        imgs, nfe = generate_cached(model_dir, [rows[i]["prompt"] for i in idx], seeds, g, device, model)
        if out is None:
            out = np.zeros((len(rows), *imgs.shape[1:]), dtype=np.uint8)
        out[idx] = imgs
        nfe_total += nfe * len(idx)
    return out, nfe_total / max(1, len(rows))


def clip_evaluation(
    systems: dict[str, Path],
    prompt_set: str,
    g: GenerationParams,
    evaluator,
    seed: int = 0,
    confidence: float = 0.95,
    n_boot: int = 2000,
    device=None,
    limit: int | None = None,
    show_progress: bool = False,
) -> dict:
    """CLIP score (cosine, the paper's 0-1 scale) of each system on a prompt set, with CIs and paired
    differences against the first system."""
    rows = data.load_prompts(prompt_set)[:limit]
    prompts = [r["prompt"] for r in rows]
    seeds = seeds_for(len(prompts), seed)
    out: dict = {
        "prompt_set": prompt_set,
        "n_prompts": len(prompts),
        "seed": seed,
        "generation": {"num_steps": g.num_steps, "guidance_scale": g.guidance_scale},
        "systems": {},
    }
    per_image = {}
    for name, model_dir in tqdm(systems.items(), desc="evaluate", unit="system", disable=not show_progress):
        images, nfe = generate_cached(model_dir, prompts, seeds, g, device)
        cos = evaluator.cosine(to_float(images, evaluator.device), prompts).cpu().numpy()
        per_image[name] = cos
        cats = sorted({r.get("category", "all") for r in rows})
        out["systems"][name] = {
            "clip": summarise(cos, confidence, n_boot, seed),
            "nfe_per_image": nfe,
            "by_category": {
                c: round(float(cos[[r.get("category", "all") == c for r in rows]].mean()), 6) for c in cats
            },
        }

    def diff(a, b):
        return {
            k: (round(v, 6) if isinstance(v, float) else v)
            for k, v in stats.paired_diff(per_image[a], per_image[b], confidence, n_boot, seed).items()
        }

    names = list(systems)
    out["vs_" + names[0]] = {name: diff(name, names[0]) for name in names[1:]}
    # every other pair too (e.g. SFT sharpening against standard fine-tuning on the same data, Table 1's claim)
    out["paired"] = {f"{a} - {b}": diff(a, b) for i, a in enumerate(names[1:], 1) for b in names[i + 1 :]}
    return out


def base_model_report(model_dir: Path, g: GenerationParams, per_split: int, device=None, seed: int = 0) -> dict:
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
    report["overall"] = {
        "score": round(float(score.mean()), 4),
        "chance": round(float(chance.mean()), 4),
        "exact_share": round(float((score == 1).mean()), 4),
    }
    # the latent space's ceiling: the parser score of VAE reconstructions of each prompt's own render
    report["ceiling"] = vae_ceiling(model_dir, picked, device)
    for cat, entry in report["categories"].items():
        entry["vae_ceiling"] = report["ceiling"]["categories"][cat]
    return report


def oracle_renders(rows: Sequence[dict]) -> np.ndarray:
    """(N, H, W, 3) uint8 renders of the scenes the prompts were drawn from: images that satisfy them exactly."""
    return render_batch([Scene.from_json(r["scene"]) for r in rows])


@torch.no_grad()
def vae_ceiling(model_dir: Path, rows: Sequence[dict], device=None, batch_size: int = 256) -> dict:
    """Parser scores of each prompt's render before and after the model's autoencoder (encode the posterior
    mean, decode): what a perfect diffusion model in this latent space could reach, overall and per category."""
    model = T2IModel.from_pretrained(model_dir, device=device)
    renders = oracle_renders(rows)
    rec = np.concatenate(
        [
            to_uint8(model.decode(model.encode(to_float(chunk, model.device), sample=False)))
            for chunk in np.array_split(renders, max(1, -(-len(renders) // batch_size)))
        ]
    )
    specs = [r["spec"] for r in rows]
    exact, through = parser_scores(renders, specs), parser_scores(rec, specs)
    cats = np.array([r["category"] for r in rows])
    return {
        "renders": round(float(exact.mean()), 4),
        "vae_reconstructions": round(float(through.mean()), 4),
        "categories": {c: round(float(through[cats == c].mean()), 4) for c in sorted(set(cats))},
    }
