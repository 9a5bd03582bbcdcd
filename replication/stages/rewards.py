"""Stages of the rewards and the metric suite (issue 3).

feedback       judged image pairs of the base model (the simulated rater): generated/pickapic.npz (the
               Pick-a-Pic role, for Diffusion-DPO) and generated/feedback.npz (the pool the learned
               rewards are trained on), results/feedback_report.json
rewards        the learned rewards and their separate evaluator copies: models/compositional,
               models/image_reward(_evaluator), models/aesthetic(_evaluator), results/rewards_report.json
evaluate_base  every Table-1 column of the base model: results/base_model.json
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from .. import data, evaluate, paths
from ..config import Params
from ..feedback import FeedbackPool, PreferencePairs, agreement, generate_pairs, generate_pool
from ..world.rater import Rater, judge
from .common import device, model_source, write_json


def generated() -> Path:
    """Datasets a stage generates and others read (DVC-cached outputs)."""
    return paths.root() / "generated"


# ----------------------------------------------------------------------------- feedback
def feedback(p: Params, show_progress: bool = True) -> dict:
    """Stage feedback: base-model images judged by the simulated rater (Pick-a-Pic role + reward-training pool)."""
    from ..models import T2IModel

    f = p.feedback
    out_pick, out_pool = generated() / "pickapic.npz", generated() / "feedback.npz"
    if f.prompts not in data.PROMPT_SEEDS:
        raise ValueError(
            f"feedback.prompts must be a tiny-world prompt set ({', '.join(data.PROMPT_SEEDS)}): the "
            f"simulated rater judges tiny-world images only, got {f.prompts!r}"
        )
    if p.profile == "sdxl":  # the rater cannot judge SDXL images; the paper uses released data and checkpoints
        PreferencePairs([], np.zeros((0, 1, 1, 3), np.uint8), np.zeros((0, 1, 1, 3), np.uint8), []).save(out_pick)
        FeedbackPool([], 2, np.zeros((0, 1, 1, 3), np.uint8), np.zeros(0), np.zeros((0, 2)), [], np.zeros(0)).save(
            out_pool
        )
        report = {
            "skipped": "paper scale: the simulated rater judges tiny-world images only; Diffusion-DPO uses "
            "its released SDXL checkpoint and the rewards load released checkpoints"
        }
        write_json(paths.results() / "feedback_report.json", report)
        return report
    rows = data.load_prompts(f.prompts)
    need = f.pickapic_prompts + f.pool_prompts
    if need > len(rows):
        raise ValueError(
            f"feedback.pickapic_prompts + feedback.pool_prompts = {need} exceeds the {len(rows)} prompts of {f.prompts}"
        )
    prompts = [r["prompt"] for r in rows]
    model = T2IModel.from_pretrained(model_source(f.model), device=device())
    rater = Rater(**dataclasses.asdict(f.rater))
    pick = generate_pairs(
        model,
        prompts[: f.pickapic_prompts],
        seed=f.seed,
        num_steps=f.num_steps,
        guidance_choices=f.guidance_choices,
        rater=rater,
        batch_size=f.batch_size,
        show_progress=show_progress,
    )
    pick.save(out_pick)
    pool = generate_pool(
        model,
        prompts[f.pickapic_prompts : need],
        seed=f.seed + 1,
        k=f.images_per_prompt,
        num_steps=f.num_steps,
        guidance_choices=f.guidance_choices,
        rater=rater,
        batch_size=f.batch_size,
        show_progress=show_progress,
    )
    pool.save(out_pool)
    report = {
        "pickapic": pairs_report(pick),
        "pool": pool_report(pool),
        "rater": dataclasses.asdict(f.rater),
        "num_steps": f.num_steps,
        "guidance_choices": list(f.guidance_choices),
    }
    write_json(paths.results() / "feedback_report.json", report)
    return report


def pairs_report(pairs: PreferencePairs) -> dict:
    ua, ub = judge(pairs.images_a, pairs.prompts).utility, judge(pairs.images_b, pairs.prompts).utility
    return {
        "pairs": len(pairs),
        "ties": round(float((pairs.choice == 0).mean()), 4),
        "a_preferred": round(float((pairs.choice > 0).mean()), 4),
        "noise_ceiling": agreement(ua.numpy(), ub.numpy(), pairs.choice),
    }


def pool_report(pool: FeedbackPool) -> dict:
    view = judge(pool.images, [pool.prompts[g] for g in pool.group])
    u = view.utility.numpy()
    q = view.quality.numpy()
    return {
        "prompts": len(pool.prompts),
        "images": len(pool),
        "pairs": len(pool.pairs),
        "ties": round(float((pool.choice == 0).mean()), 4),
        "noise_ceiling": agreement(u[pool.pairs[:, 0]], u[pool.pairs[:, 1]], pool.choice),
        "alignment_mean": round(float(view.alignment.mean()), 4),
        "quality_mean": round(float(q.mean()), 4),
        "rating_mean": round(float(pool.ratings.mean()), 4),
        "rating_std": round(float(pool.ratings.std()), 4),
        "rating_quality_corr": round(float(np.corrcoef(pool.ratings, q)[0, 1]), 4),
    }


# ----------------------------------------------------------------------------- rewards
def _renders(n: int, shard: int) -> tuple[np.ndarray, list[dict]]:
    """n rendered training images with their specs (60% t2i2m, 30% journeydb, 10% pokemon), every other
    row from `shard`, so the two sides never share an image."""
    imgs, specs = [], []
    for name, share in (("t2i2m", 0.6), ("journeydb", 0.3), ("pokemon", 0.1)):
        ds = data.load_image_set(name)
        idx = np.arange(shard, len(ds), 2)[: max(1, round(n * share))]
        imgs.append(ds.images[idx])
        specs += [ds.specs[i] for i in idx]
    return np.concatenate(imgs), specs


@torch.no_grad()
def reconstruct(model, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Images passed through the base model's VAE: the softness every generated image has."""
    out = [
        evaluate.to_uint8(
            model.decode(model.encode(evaluate.to_float(images[s : s + batch], model.device), sample=False))
        )
        for s in range(0, len(images), batch)
    ]
    return np.concatenate(out) if out else images


def _heldout_scenes(n: int, seed: int) -> tuple[np.ndarray, list]:
    """Rendered scenes whose prompts state compositions no training image shows."""
    from ..world import Sampler, render_batch, sample_captioned, vocab

    s = Sampler(np.random.default_rng([seed, 31]), allow_heldout=True)
    styles = [c for c in vocab.CATEGORIES if c != "shape"]  # shape prompts state no colour or texture
    items = [sample_captioned(s, styles[i % len(styles)], heldout=True) for i in range(n)]
    return render_batch([it[0] for it in items]), [it[2] for it in items]


def rewards(p: Params, show_progress: bool = True) -> dict:
    """Stage rewards: the learned rewards (training copies and evaluator copies) and their accuracies."""
    from ..models import T2IModel

    r = p.rewards
    dev = device()
    report: dict = {}
    tiny = [
        name
        for name in ("compositional", "image_reward", "image_reward_evaluator", "aesthetic", "aesthetic_evaluator")
        if getattr(r, name).source == "tiny"
    ]
    for name in ("compositional", "image_reward", "image_reward_evaluator", "aesthetic", "aesthetic_evaluator"):
        if name not in tiny:
            report[name] = _materialise(name, getattr(r, name).source, dev)
    if not tiny:
        write_json(paths.results() / "rewards_report.json", report)
        return report

    pool = FeedbackPool.load(generated() / "feedback.npz")
    base = T2IModel.from_pretrained(paths.models() / "base", device=dev)
    rng = np.random.default_rng(r.seed)
    halves = {s: pool.select_prompts(np.arange(s, len(pool.prompts), 2)) for s in (0, 1)}
    renders = {s: _renders(r.renders, s) for s in (0, 1)}
    recon = {s: reconstruct(base, renders[s][0]) for s in (0, 1)}
    rater = Rater(**dataclasses.asdict(p.feedback.rater))
    from ..world.parser import detect

    # the images each side's text-side comparisons use (VAE reconstructions of renders, then the pool half),
    # detected once: several rewards compare prompts against them
    side_images = {s: np.concatenate([recon[s], halves[s].images]) for s in (0, 1)}
    side_dets = {s: detect(side_images[s]) for s in (0, 1)}

    if "compositional" in tiny:
        report["compositional"] = _train_compositional(
            r, halves, side_images, side_dets, renders, rng, dev, base, show_progress
        )
    for name in ("image_reward", "image_reward_evaluator"):
        if name in tiny:
            report[name] = _train_image_reward(
                name, getattr(r, name), r, halves, side_images, side_dets, renders, rater, rng, dev, show_progress
            )
    for name in ("aesthetic", "aesthetic_evaluator"):
        if name in tiny:
            report[name] = _train_aesthetic(name, getattr(r, name), halves, dev, show_progress)
    write_json(paths.results() / "rewards_report.json", report)
    return report


def _materialise(name: str, source: str, dev) -> dict:
    """Paper scale: load a released checkpoint and save it where the tiny model would be."""
    if not source:
        raise ValueError(
            f"rewards.{name}.source is empty: no public checkpoint is known for this role (the paper's "
            f"code loads a placeholder path for IterComp's reward); give a folder, .pt file or hub id of "
            f"an ImageReward-format reward model, or 'tiny' to train one here"
        )
    target = paths.models() / name
    if name.startswith("aesthetic"):
        from ..rewards.aesthetic import AestheticScore

        AestheticScore.load(source, dev).save(target, {"source": source})
    else:
        from ..rewards.preference import load_preference

        load_preference(source, dev).save(target, {"source": source})
    return {"source": source}


def _pool_items(pool: FeedbackPool) -> tuple[np.ndarray, list[str]]:
    return pool.images, [pool.prompts[g] for g in pool.group]


def _train(method, tp, name: str, show_progress: bool) -> dict:
    from ..train import train

    fit = train(
        method,
        tp,
        paths.checkpoints() / name,
        paths.train_logs() / f"{name}.csv",
        out_dir=paths.models() / name,
        show_progress=show_progress,
    )
    return {"steps": fit["steps"], "seconds": round(fit["seconds"], 1)}


def _train_compositional(r, halves, side_images, side_dets, renders, rng, dev, base, show_progress) -> dict:
    """IterComp's role: CLIP fine-tuned on composition pairs judged by the scene parser."""
    from ..rewards import pairs
    from ..rewards.clip import CLIPScore
    from ..rewards.preference import PairwiseTraining, build_clip_preference, load_preference, pairwise_accuracy
    from ..train import file_digest

    cp = r.compositional
    s = cp.shard
    pool = halves[s]
    images, prompts = _pool_items(pool)
    # no corrupted prompt states a held-out composition (else those appear only as the worse item and the model
    # learns to reject them: held-out accuracy fell below the CLIP's)
    text = pairs.text_side(
        side_images[s], renders[s][1] + prompts, rng, r.corruptions_per_image, dets=side_dets[s], allow_heldout=False
    )
    align = judge(images, prompts).alignment.numpy()
    choice = np.sign(align[pool.pairs[:, 0]] - align[pool.pairs[:, 1]]).astype(np.int8)
    comps = pairs.Comparisons.concat([text, pairs.image_side(images, pool.group, pool.prompts, pool.pairs, choice)])
    reward = build_clip_preference(cp.init, "compositional", cp.quality_head, dev, seed=cp.train.seed)
    method = PairwiseTraining(
        reward,
        comps,
        cp.train.batch_size,
        cp.trainable_vision_layers,
        images,
        prompts,
        name="compositional",
        fingerprint={"init": file_digest(paths.resolve(cp.init))},
        extra_config={"role": "compositional (IterComp)", "judge": "scene parser"},
        calibrate=cp.calibrate_temperature,
    )
    fit = _train(method, cp.train, "compositional", show_progress)
    if method.calibration:
        fit["calibration"] = method.calibration

    # held out: compositions no training image shows (renders and their VAE reconstructions), the training
    # compositions on the other side's reconstructed renders (other images and prompts), and the other half of
    # the pool's image pairs (parser-judged)
    ho_img, ho_specs = _heldout_scenes(r.heldout_scenes, r.seed)
    ho_all = np.concatenate([ho_img, reconstruct(base, ho_img)])
    heldout = pairs.text_side(ho_all, list(ho_specs) * 2, np.random.default_rng([r.seed, 5]), 1)
    other = halves[1 - s]
    o_img, o_prompts = _pool_items(other)
    o_align = judge(o_img, o_prompts).alignment.numpy()
    o_choice = np.sign(o_align[other.pairs[:, 0]] - o_align[other.pairs[:, 1]]).astype(np.int8)
    img_side = pairs.image_side(o_img, other.group, other.prompts, other.pairs, o_choice)
    n_id = min(len(renders[1 - s][1]), r.heldout_scenes * 4)
    seen = pairs.text_side(
        side_images[1 - s][:n_id],
        renders[1 - s][1][:n_id],
        np.random.default_rng([r.seed, 6]),
        1,
        dets=side_dets[1 - s][:n_id],
        allow_heldout=False,
    )
    trained = load_preference(paths.models() / "compositional", dev)
    clip = CLIPScore.load(cp.init, dev)
    return {
        "train": fit,
        "comparisons": comps.counts(),
        "heldout_compositions": {
            "model": pairwise_accuracy(trained, heldout),
            "clip_reward_baseline": pairwise_accuracy(clip, heldout),
        },
        "heldout_renders": {
            "model": pairwise_accuracy(trained, seen),
            "clip_reward_baseline": pairwise_accuracy(clip, seen),
        },
        "heldout_pool_pairs": {
            "model": pairwise_accuracy(trained, img_side),
            "clip_reward_baseline": pairwise_accuracy(clip, img_side),
        },
    }


def _train_image_reward(name, cp, r, halves, side_images, side_dets, renders, rater, rng, dev, show_progress) -> dict:
    """ImageReward's role: Bradley-Terry on the simulated rater's choices."""
    from ..rewards import pairs
    from ..rewards.preference import PairwiseTraining, build_clip_preference, load_preference, pairwise_accuracy
    from ..train import file_digest

    s = cp.shard
    pool = halves[s]
    images, prompts = _pool_items(pool)
    gen = torch.Generator().manual_seed(int(cp.train.seed) * 7 + 3)
    chosen = pairs.image_side(images, pool.group, pool.prompts, pool.pairs, pool.choice)
    text = pairs.text_side(
        side_images[s],
        renders[s][1] + prompts,
        rng,
        r.corruptions_per_image,
        dets=side_dets[s],
        rater=rater,
        gen=gen,
        allow_heldout=False,
    )
    comps = pairs.Comparisons.concat([chosen, text])
    reward = build_clip_preference(cp.init, "image_reward", cp.quality_head, dev, seed=cp.train.seed)
    other = halves[1 - s]
    heldout = pairs.image_side(other.images, other.group, other.prompts, other.pairs, other.choice)
    before = pairwise_accuracy(reward, heldout)
    method = PairwiseTraining(
        reward,
        comps,
        cp.train.batch_size,
        cp.trainable_vision_layers,
        images,
        prompts,
        name=name,
        fingerprint={"init": file_digest(paths.resolve(cp.init)), "shard": s},
        extra_config={"role": "image_reward (ImageReward)", "judge": "simulated rater"},
        calibrate=cp.calibrate_temperature,
    )
    fit = _train(method, cp.train, name, show_progress)
    if method.calibration:
        fit["calibration"] = method.calibration
    trained = load_preference(paths.models() / name, dev)
    o_view = judge(other.images, [other.prompts[g] for g in other.group]).utility.numpy()
    return {
        "train": fit,
        "comparisons": comps.counts(),
        "shard": s,
        "heldout_rater_pairs": {
            "model": pairwise_accuracy(trained, heldout),
            "clip_init": before,
            "noise_ceiling": agreement(o_view[other.pairs[:, 0]], o_view[other.pairs[:, 1]], other.choice),
        },
    }


def _train_aesthetic(name, cp, halves, dev, show_progress) -> dict:
    """The LAION predictor's role: MLP on a frozen CLIP's embeddings regressing the rater's 1-10 ratings."""
    from transformers import CLIPModel

    from ..rewards.aesthetic import AestheticScore, RatingRegression, regression_report
    from ..rewards.base import ImagePreprocess
    from ..rewards.fusion import PreferenceHead
    from ..train import file_digest

    s = cp.shard
    folder = paths.resolve(cp.clip)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"no CLIP model at {folder}: run `dvc repro clip` first")
    clip = CLIPModel.from_pretrained(str(folder))
    scorer = AestheticScore(
        clip,
        PreferenceHead(clip.config.projection_dim),
        ImagePreprocess.from_folder(folder, clip.config.vision_config.image_size),
        dev,
    )
    # the rater's ratings of base-model images (LAION's raters rated real images; adding the world's renders,
    # far sharper than any generation, made the predictor worse on generated images)
    images, ratings = halves[s].images, halves[s].ratings
    emb = scorer.embed(evaluate.to_float(images, dev))
    method = RatingRegression(
        scorer,
        emb,
        torch.from_numpy(ratings),
        cp.train.batch_size,
        name=name,
        seed=cp.train.seed,
        fingerprint={"clip": file_digest(folder), "shard": s},
        extra_config={"role": "aesthetic (LAION predictor)", "clip_source": cp.clip},
    )
    fit = _train(method, cp.train, name, show_progress)
    trained = AestheticScore.load(paths.models() / name, dev)
    other = halves[1 - s]
    pred = trained(evaluate.to_float(other.images, dev)).cpu().numpy()
    from ..world.rater import quality

    return {
        "train": fit,
        "train_images": len(images),
        "shard": s,
        "heldout_pool_images": {
            "vs_ratings": regression_report(pred, other.ratings),
            "vs_noiseless_rating": regression_report(pred, 1 + 9 * quality(other.images).numpy()),
        },
    }


# ----------------------------------------------------------------------------- evaluate_base
def evaluate_base(p: Params) -> dict:
    """Stage evaluate_base: every Table-1 column of the base model, with confidence intervals."""
    e = p.evaluate_base
    sources = {**e.evaluators, "mllm": p.mllm}
    res = evaluate.evaluate_pipeline(
        model_source(e.model),
        "table1",
        evaluate.COLUMNS,
        e.generation,
        e.seed,
        e.per_category,
        e.drawbench_limit,
        e.confidence,
        e.bootstrap,
        device(),
        sources,
    )
    write_json(paths.results() / "base_model.json", res)
    return res


__all__ = ["feedback", "rewards", "evaluate_base", "generated", "reconstruct"]
