"""The NFE sweep of Fig. 5: inference-time samplers over NFE budgets against the sharpened models at the base cost.

Each inference-time sampler (Best-of-N, Inference Scaling, Demon, Free2Guide) runs from the base cost to 100x it
on an evenly spaced subset of the DrawBench-like set, searching with a verifier (a training reward, never the
evaluator); the sharpened models generate at the base cost. Every point is scored on the DrawBench-set columns
with CIs and paired differences against the base model. Every run caches its samples under
.checkpoints/nfe_sweep/ (keyed by the model, verifier, prompts, seeds, the sampler's settings and code), so an
interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import data, evaluate, metrics, paths, stats
from ..digests import file_digest, source_digest
from ..evaluate import GENERATION_CODE
from ..methods.demon import DemonSpec
from ..methods.free2guide import Free2GuideSpec
from ..methods.inference_scaling import ZeroOrderSpec
from ..methods.inference_time import NoiseSearch, SamplerResult, Verifier
from ..methods.samplers import LABELS, make_sampler
from ..models import T2IModel
from ..progress import tqdm
from ..rewards.registry import load_reward, reward_models
from ..tensors import default_device, to_uint8


@dataclass
class NFESweepParams:
    """params.yaml: nfe_sweep."""

    model: str = "models/base"
    revision: str | None = None
    verifier: str = "clip"  # a reward name (rewards.registry.load_reward); never the evaluator
    prompts: str = "drawbench"
    n_prompts: int = 24  # evenly spaced over the set (every category)
    num_steps: int = 20  # base cost = num_steps x 2 NFE (CFG)
    guidance_scale: float = 5.0
    budgets: tuple[int, ...] = (1, 3, 10, 30, 100)  # multiples of the base cost
    methods: tuple[str, ...] = ("best_of_n", "inference_scaling", "demon", "free2guide")
    sharpened: tuple[str, ...] = ("models/sft_sharpening",)  # pipelines evaluated at the base cost
    columns: tuple[str, ...] = ("clip", "aesthetic", "image_reward")  # DrawBench-set metric columns
    seed: int = 0
    max_rows: int = 1024  # UNet rows per network call
    confidence: float = 0.95
    bootstrap: int = 2000
    demon: DemonSpec = field(default_factory=DemonSpec)
    free2guide: Free2GuideSpec = field(default_factory=Free2GuideSpec)
    inference_scaling: ZeroOrderSpec = field(default_factory=ZeroOrderSpec)

    def __post_init__(self):
        bad = [c for c in self.columns if c not in metrics.DRAWBENCH_COLUMNS]
        if bad:
            raise ValueError(
                f"nfe_sweep.columns {bad} are not DrawBench-set columns; choose from "
                f"{', '.join(metrics.DRAWBENCH_COLUMNS)}"
            )
        unknown = [m for m in self.methods if m not in LABELS]
        if unknown:
            raise ValueError(f"nfe_sweep.methods {unknown} are unknown; choose from {', '.join(LABELS)}")
        if not self.budgets or min(self.budgets) < 1:
            raise ValueError(f"nfe_sweep.budgets are multiples of the base cost, each >= 1; got {list(self.budgets)}")


SHARPENED_LABELS = {"sft_sharpening": "SFT Diffusion-Sharpening", "rlhf_sharpening": "RLHF Diffusion-Sharpening"}


def sweep_rows(prompt_set: str, n: int, seed: int) -> tuple[list[dict], list[int]]:
    """n prompts evenly spaced over the set (so every category is represented) and their evaluation seeds
    (seed * 100_000 + index in the set: the same images the evaluate stages make at the same settings)."""
    rows = data.load_prompts(prompt_set)
    if not 1 <= n <= len(rows):
        raise ValueError(f"nfe_sweep.n_prompts must be in 1..{len(rows)} (the size of {prompt_set}), got {n}")
    idx = sorted({int(i) for i in np.linspace(0, len(rows) - 1, n).round()})
    all_seeds = evaluate.seeds_for(len(rows), seed)
    return [{**rows[i], "set": "drawbench", "split": "all", "index": i} for i in idx], [all_seeds[i] for i in idx]


def sampler_options(s: NFESweepParams, method: str) -> dict:
    """A sampler's own options from its entry of the section (Best-of-N has none)."""
    sub = getattr(s, method, None)
    return dataclasses.asdict(sub) if dataclasses.is_dataclass(sub) else {}


def _digest(src) -> str:
    return file_digest(src) if isinstance(src, Path) else str(src)


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _save_run(path: Path, results: dict[int, SamplerResult], seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for b, r in results.items():
        arrays[f"latents_{b}"] = r.latents.float().cpu().numpy()
        arrays[f"scores_{b}"] = r.scores.float().cpu().numpy()
    meta = {
        str(b): {
            "nfe_per_image": r.nfe_per_image,
            "verifier_images_per_image": r.verifier_images_per_image,
            "info": r.info,
        }
        for b, r in results.items()
    }
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, meta=np.array(json.dumps({"runs": meta, "seconds": seconds})), **arrays)
    tmp.replace(path)


def _load_run(path: Path) -> tuple[dict[int, SamplerResult], float]:
    z = np.load(path)
    meta = json.loads(str(z["meta"]))
    out = {}
    for b, m in meta["runs"].items():
        out[int(b)] = SamplerResult(  # host: cached results; moved where they meet a model
            torch.from_numpy(z[f"latents_{b}"]),
            torch.from_numpy(z[f"scores_{b}"]),
            int(b),
            m["nfe_per_image"],
            m["verifier_images_per_image"],
            m["info"],
        )
    return out, meta["seconds"]


def _run_cached(sampler, model, prompts, seeds, budgets, fingerprint: dict) -> tuple[dict[int, SamplerResult], float]:
    """sampler.sample_budgets, or its cached result from an earlier (interrupted) run of the same settings."""
    key = _key({**fingerprint, "budgets": budgets, "code": source_digest(sampler, *GENERATION_CODE)})
    path = paths.checkpoints() / "nfe_sweep" / f"{sampler.name}-{key}.npz"
    if path.exists():
        return _load_run(path)
    t0 = time.perf_counter()
    res = sampler.sample_budgets(model, prompts, seeds, budgets)
    seconds = time.perf_counter() - t0
    _save_run(path, res, seconds)
    return res, seconds


def _score(suite, model, latents: torch.Tensor, rows) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    with torch.no_grad():
        images = to_uint8(model.decode(latents.to(model.device, model.dtype)))
    return images, suite.score(images, rows)


def _summary(per_image: dict, base: dict | None, s) -> dict:
    out = {"columns": metrics.summarise_columns(per_image, s.confidence, s.bootstrap, s.seed)}
    if base is not None:
        out["vs_base"] = {
            c: {
                k: (round(v, 6) if isinstance(v, float) else v)
                for k, v in stats.paired_diff(per_image[c], base[c], s.confidence, s.bootstrap, s.seed).items()
            }
            for c in per_image
        }
    return out


def nfe_sweep(s: NFESweepParams, mllm=None, show_progress: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    """Inference-time samplers over NFE budgets and the sharpened models at the base cost: the result (every
    column per budget with CIs, NFEs from the model's counter) and the arrays of generated/nfe_sweep.npz (the
    images and verifier scores). `mllm`: the grader's settings when the columns include it."""
    missing = [m for m in s.sharpened if not (paths.resolve(m) / "model_index.json").exists()]
    if missing:
        raise FileNotFoundError(
            f"nfe_sweep.sharpened: no pipeline at {missing}; run the stage that trains it "
            f"(e.g. `dvc repro sft_sharpening`) or remove it from nfe_sweep.sharpened"
        )
    dev = default_device()
    rows, seeds = sweep_rows(s.prompts, s.n_prompts, s.seed)
    prompts = [r["prompt"] for r in rows]
    src = paths.model_source(s.model)
    model = T2IModel.from_pretrained(src, device=dev, revision=s.revision)
    model.unet.eval()
    verifier = Verifier(load_reward(s.verifier, dev))
    base_cost = s.num_steps * (1 if s.guidance_scale == 1.0 else 2)
    budgets = sorted({int(m * base_cost) for m in s.budgets})
    fp = {
        "model": _digest(src),
        "verifier": s.verifier,
        "prompts": prompts,
        "seeds": seeds,
        "num_steps": s.num_steps,
        "guidance_scale": s.guidance_scale,
        "verifier_models": reward_models(s.verifier),
    }
    t_start = time.perf_counter()
    sources = {"mllm": mllm} if "mllm" in s.columns else None
    suite = metrics.MetricSuite.load(s.columns, dev, sources)
    npz: dict[str, np.ndarray] = {}
    try:
        # the base model (plain DDIM at the base cost): every curve's first point and the paired reference
        model.nfe.reset()
        with torch.no_grad():
            base_lat = model.generate_latents(prompts, seeds, num_steps=s.num_steps, guidance_scale=s.guidance_scale)
        base_nfe = model.nfe.per_image(len(prompts))
        images, base_per = _score(suite, model, base_lat, rows)
        npz["images/base"] = images
        base_ver = verifier(model, base_lat, prompts).cpu().numpy()
        out: dict = {
            "base": {
                "label": "Base model (DDIM)",
                "pipeline": s.model,
                "nfe_per_image": base_nfe,
                "verifier": evaluate.summarise(base_ver, s.confidence, s.bootstrap, s.seed),
                **_summary(base_per, None, s),
            },
            "methods": {},
            "sharpened": {},
        }
        units = sum(1 if m in ("best_of_n", "inference_scaling") else len(budgets) for m in s.methods)
        bar = tqdm(total=units + len(s.sharpened), desc="nfe sweep", disable=not show_progress)
        for method in s.methods:
            opts = sampler_options(s, method)
            sampler = make_sampler(method, verifier, s.num_steps, s.guidance_scale, s.max_rows, **opts)
            mfp = {**fp, "method": method, "options": opts}
            groups = [budgets] if isinstance(sampler, NoiseSearch) else [[b] for b in budgets]
            points = []
            for group in groups:
                bar.set_postfix_str(f"{method} {group[-1]} NFE")
                res, seconds = _run_cached(sampler, model, prompts, seeds, group, mfp)
                for b in group:
                    r = res[b]
                    images, per = _score(suite, model, r.latents, rows)
                    npz[f"images/{method}@{b}"] = images
                    npz[f"verifier/{method}@{b}"] = r.scores.cpu().numpy()
                    points.append(
                        {
                            "budget_multiple": b / base_cost,
                            "nfe_budget": b,
                            "nfe_per_image": r.nfe_per_image,
                            "verifier_images_per_image": r.verifier_images_per_image,
                            "info": r.info,
                            "seconds": round(seconds / len(group), 2),
                            "same_as_base": bool(torch.equal(r.latents.cpu(), base_lat.cpu())),
                            "verifier": evaluate.summarise(r.scores.cpu().numpy(), s.confidence, s.bootstrap, s.seed),
                            **_summary(per, base_per, s),
                        }
                    )
                bar.update(1)
            out["methods"][method] = {"label": LABELS[method], "options": opts, "points": points}
        for folder in s.sharpened:
            name = Path(folder).name
            bar.set_postfix_str(name)
            sm = T2IModel.from_pretrained(paths.resolve(folder), device=dev)
            sm.unet.eval()
            with torch.no_grad():
                lat = sm.generate_latents(prompts, seeds, num_steps=s.num_steps, guidance_scale=s.guidance_scale)
            nfe = sm.nfe.per_image(len(prompts))
            images, per = _score(suite, sm, lat, rows)
            ver = verifier(sm, lat, prompts).cpu().numpy()
            npz[f"images/{name}"] = images
            out["sharpened"][name] = {
                "label": SHARPENED_LABELS.get(name, name),
                "pipeline": folder,
                "nfe_per_image": nfe,
                "verifier": evaluate.summarise(ver, s.confidence, s.bootstrap, s.seed),
                **_summary(per, base_per, s),
            }
            bar.update(1)
        bar.close()
    finally:
        suite.close()
    out["settings"] = {
        "model": s.model,
        "verifier": s.verifier,
        "evaluators": {c: metrics.EVALUATORS[c][0] for c in s.columns},
        "prompts": s.prompts,
        "n_prompts": len(prompts),
        "prompt_indices": [r["index"] for r in rows],
        "seed": s.seed,
        "num_steps": s.num_steps,
        "guidance_scale": s.guidance_scale,
        "base_cost": base_cost,
        "budgets": budgets,
        "columns": list(s.columns),
        "confidence": s.confidence,
        "device": dev,
        "nfe_source": "T2IModel.nfe (every UNet row; CFG counts 2 per latent per step)",
    }
    out["seconds_total"] = round(time.perf_counter() - t_start, 1)
    return out, {"prompts": np.array(prompts), "seeds": np.array(seeds), **npz}
