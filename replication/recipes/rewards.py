"""The learned rewards and their separate evaluator copies, each the counterpart of a paper reward.

| name                     | role (paper)                 | learns from                                          |
|--------------------------|------------------------------|------------------------------------------------------|
| compositional            | IterComp's reward            | parser-judged pool pairs and corrupted prompts       |
| image_reward (evaluator) | ImageReward                  | the simulated rater's choices (the other pool half)  |
| aesthetic (evaluator)    | LAION's aesthetic predictor  | the rater's 1-10 ratings of base-model images        |

Each starts from a tiny CLIP of the `clip` stage (the evaluator copies from the evaluator CLIP, on the other
half of the feedback pool, with another seed) and is reported on held-out comparisons next to the CLIP it
started from. At paper scale a released checkpoint is materialised into the same folder instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .. import data, paths
from ..digests import file_digest
from ..feedback import FeedbackPool, agreement
from ..models import T2IModel
from ..rewards import pairs
from ..rewards.aesthetic import AestheticScore, RatingRegression, regression_report
from ..rewards.base import ImagePreprocess
from ..rewards.clip import CLIPScore
from ..rewards.parts import PreferenceHead
from ..rewards.preference import PairwiseTraining, build_clip_preference, load_preference, pairwise_accuracy
from ..tensors import default_device, to_float, to_uint8
from ..train import TrainParams, train_named
from ..world import Sampler, render_batch, sample_captioned, vocab
from ..world.parser import detect
from ..world.rater import Rater, judge, quality, rating_scale


@dataclass
class PreferenceModelParams:
    """A learned preference reward (tiny: CLIP fine-tuned with Bradley-Terry; else a checkpoint to use)."""

    source: str = "tiny"  # tiny: trained here; else an ImageReward-style checkpoint (folder, .pt or hub id)
    init: str = "models/clip_reward"  # the CLIP the tiny model starts from
    shard: int = 0  # which half of the feedback pool and of the renders it learns from
    quality_head: bool = True
    trainable_vision_layers: int = 0  # 0: the vision tower stays frozen (its embeddings are computed once)
    # rescale the CLIP's contrastive temperature to the Bradley-Terry optimum on the image-side training pairs
    # before fine-tuning (rewards.preference.calibrate_temperature); it is several times too sharp for a noisy judge
    calibrate_temperature: bool = True
    train: TrainParams = field(
        default_factory=lambda: TrainParams(steps=100, batch_size=64, lr=1e-4, weight_decay=0.01, checkpoint_every=100)
    )


@dataclass
class AestheticModelParams:
    """An aesthetic predictor (tiny: MLP on a tiny CLIP's embeddings; 'laion' or 'laion:<mlp>' at paper scale)."""

    source: str = "tiny"
    clip: str = "models/clip_reward"
    shard: int = 0
    train: TrainParams = field(
        default_factory=lambda: TrainParams(steps=600, batch_size=256, lr=3e-3, checkpoint_every=600)
    )


@dataclass
class RewardsParams:
    """params.yaml: rewards."""

    compositional: PreferenceModelParams = field(
        default_factory=lambda: PreferenceModelParams(quality_head=False, calibrate_temperature=False)
    )
    image_reward: PreferenceModelParams = field(default_factory=PreferenceModelParams)
    image_reward_evaluator: PreferenceModelParams = field(  # other CLIP, other half, other seed
        default_factory=lambda: PreferenceModelParams(
            init="models/clip_evaluator", shard=1, train=replace(PreferenceModelParams().train, seed=1)
        )
    )
    aesthetic: AestheticModelParams = field(default_factory=AestheticModelParams)
    aesthetic_evaluator: AestheticModelParams = field(
        default_factory=lambda: AestheticModelParams(
            clip="models/clip_evaluator", shard=1, train=replace(AestheticModelParams().train, seed=1)
        )
    )
    renders: int = 2400  # rendered training images per side, passed through the base model's VAE
    corruptions_per_image: int = 2  # text-side comparisons per image
    heldout_scenes: int = 200  # scenes with held-out compositions for the compositional accuracy
    seed: int = 0


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
        to_uint8(model.decode(model.encode(to_float(images[s : s + batch], model.device), sample=False)))
        for s in range(0, len(images), batch)
    ]
    return np.concatenate(out) if out else images


def _heldout_scenes(n: int, seed: int) -> tuple[np.ndarray, list]:
    """Rendered scenes whose prompts state compositions no training image shows."""
    s = Sampler(np.random.default_rng([seed, 31]), allow_heldout=True)
    styles = [c for c in vocab.CATEGORIES if c != "shape"]  # shape prompts state no colour or texture
    items = [sample_captioned(s, styles[i % len(styles)], heldout=True) for i in range(n)]
    return render_batch([it[0] for it in items]), [it[2] for it in items]


def reward_models(r: RewardsParams, rater: Rater, show_progress: bool = True) -> dict:
    """The learned rewards (training copies and evaluator copies) and their held-out accuracies; `rater` is the
    simulated person whose judgements the feedback pool holds (the text-side comparisons are judged by it too)."""
    dev = default_device()
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
        return report

    pool = FeedbackPool.load(paths.generated() / "feedback.npz")
    base = T2IModel.from_pretrained(paths.models() / "base", device=dev)
    rng = np.random.default_rng(r.seed)
    halves = {s: pool.select_prompts(np.arange(s, len(pool.prompts), 2)) for s in (0, 1)}
    renders = {s: _renders(r.renders, s) for s in (0, 1)}
    recon = {s: reconstruct(base, renders[s][0]) for s in (0, 1)}
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
        AestheticScore.load(source, dev).save(target, {"source": source})
    else:
        load_preference(source, dev).save(target, {"source": source})
    return {"source": source}


def _pool_items(pool: FeedbackPool) -> tuple[np.ndarray, list[str]]:
    return pool.images, [pool.prompts[g] for g in pool.group]


def _train(method, tp, name: str, show_progress: bool) -> dict:
    fit = train_named(name, method, tp, show_progress=show_progress)
    return {"steps": fit["steps"], "seconds": round(fit["seconds"], 1)}


def _train_compositional(r, halves, side_images, side_dets, renders, rng, dev, base, show_progress) -> dict:
    """IterComp's role: CLIP fine-tuned on composition pairs judged by the scene parser."""
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
    emb = scorer.embed(to_float(images, dev))
    method = RatingRegression(  # host: the regression keeps its data on the host
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
    pred = trained(to_float(other.images, dev)).cpu().numpy()
    noiseless = {h: rating_scale(quality(halves[h].images)).numpy() for h in (s, 1 - s)}
    readout = linear_readout_ceiling(
        emb.cpu().numpy(), noiseless[s], scorer.embed(to_float(other.images, dev)).cpu().numpy(), noiseless[1 - s]
    )
    return {
        "train": fit,
        "train_images": len(images),
        "shard": s,
        "heldout_pool_images": {
            "vs_ratings": regression_report(pred, other.ratings),
            "vs_noiseless_rating": regression_report(pred, noiseless[1 - s]),
            "frozen_embedding_readout": readout,
        },
    }


def linear_readout_ceiling(
    x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, lambdas=(1e-3, 1e-2, 1e-1, 1.0)
) -> dict:
    """How well any linear head on these (frozen) features can predict y: ridge regression fitted to the noiseless
    target on the training half, its strength chosen on the last fifth of it, scored on the held-out half (Pearson
    r). LAION's MLP has no activations, so this bounds what the predictor's head can learn from its CLIP's
    embedding even with noise-free ratings."""
    mu, sd = x.mean(0), x.std(0) + 1e-8

    def design(a):
        return np.c_[(a - mu) / sd, np.ones(len(a))]

    def fit(a, b, lam):
        d = design(a)
        return np.linalg.solve(d.T @ d + lam * len(b) * np.eye(d.shape[1]), d.T @ b)

    cut = len(y) * 4 // 5
    val = {lam: float(np.corrcoef(design(x[cut:]) @ fit(x[:cut], y[:cut], lam), y[cut:])[0, 1]) for lam in lambdas}
    lam = max(val, key=val.get)
    r = float(np.corrcoef(design(x_test) @ fit(x, y, lam), y_test)[0, 1])
    return {"pearson": round(r, 4), "ridge": lam, "n": int(len(y_test)), "target": "noiseless rating"}
