"""Stages of the spine: base model, CLIP reward and evaluator, SFT sharpening, CLIP evaluation, Fig. 6."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from .. import data, evaluate, figures, paths
from ..config import Params
from ..methods.sharpening import SFTSharpening, SharpeningSpec
from ..models import build_tokenizer
from ..pretrain import train_base_model
from ..rewards import load_reward
from ..rewards.base import ImagePreprocess
from ..rewards.clip import CLIPScore, ContrastiveTraining, build_tiny_clip, retrieval_accuracy, split_pairs
from ..train import train
from .common import device, image_text_source, load_model, lora_spec, reward_fingerprint, write_json


def base_model(p: Params, show_progress: bool = True) -> dict:
    """Stage base_model: train (tiny) or materialise (sdxl) models/base and report its quality."""
    torch.manual_seed(0)
    fit = train_base_model(p.base_model, show_progress=show_progress)
    report = {"training": fit}
    if p.base_model.source == "tiny":
        report.update(
            evaluate.base_model_report(
                paths.models() / "base", p.base_model.generation, p.base_model.report_prompts, device()
            )
        )
    write_json(paths.results() / "base_model_report.json", report)
    return report


def clip(p: Params, show_progress: bool = True) -> dict:
    """Stage clip: the reward CLIP and the separate evaluator CLIP (trained here in the tiny world)."""
    out = {}
    for role, cp in (("reward", p.clip.reward), ("evaluator", p.clip.evaluator)):
        target = paths.models() / f"clip_{role}"
        if cp.source != "tiny":
            from huggingface_hub import hf_hub_download
            from transformers import AutoTokenizer, CLIPModel

            CLIPModel.from_pretrained(cp.source, revision=cp.revision).save_pretrained(str(target))
            AutoTokenizer.from_pretrained(cp.source, revision=cp.revision).save_pretrained(str(target))
            shutil.copy(
                hf_hub_download(cp.source, "preprocessor_config.json", revision=cp.revision),
                target / "preprocessor_config.json",
            )
            out[role] = {"source": cp.source, "revision": cp.revision}
            continue
        sets = [data.load_image_set(n) for n in cp.datasets]
        shard = 0 if role == "reward" else 1  # disjoint halves of the data for the two models
        train_pairs, held_out = split_pairs(sets, shard)
        tok = build_tokenizer()
        model = build_tiny_clip(cp.arch, tok, seed=cp.train.seed)
        pre = ImagePreprocess(cp.arch.image_size)
        method = ContrastiveTraining(
            model,
            tok,
            pre,
            train_pairs,
            cp.train.batch_size,
            name=f"clip-{role}",
            fingerprint={"arch": vars(cp.arch), "datasets": list(cp.datasets), "shard": shard},
        )
        train(
            method,
            cp.train,
            paths.checkpoints() / f"clip_{role}",
            paths.train_logs() / f"clip_{role}.csv",
            out_dir=target,
            show_progress=show_progress,
        )
        scorer = CLIPScore.load(target, device())
        out[role] = {
            "datasets": list(cp.datasets),
            "shard": shard,
            "train_pairs": len(train_pairs),
            "retrieval_heldout": retrieval_accuracy(scorer, held_out, p.clip.retrieval_pool),
        }
    write_json(paths.results() / "clip_report.json", out)
    return out


def build_sft_sharpening(p: Params) -> SFTSharpening:
    """SFT Diffusion-Sharpening of the configured model, reward and data, as the stage trains it."""
    s = p.sft_sharpening
    model, fp = load_model(s)
    spec = SharpeningSpec(
        n=s.n, m=s.m, infer_steps=s.infer_steps, aggregate=s.aggregate, x0=s.x0, ode_steps=s.ode_steps
    )
    return SFTSharpening(
        model,
        load_reward(s.reward, device()),
        image_text_source(s.dataset, model.image_size),
        s.train.batch_size,
        spec,
        fingerprint={**fp, **reward_fingerprint(s.reward), "dataset": s.dataset},
        lora=lora_spec(s),
    )


def sft_sharpening(p: Params, show_progress: bool = True) -> dict:
    """Stage sft_sharpening: SFT Diffusion-Sharpening of models/base with the configured reward."""
    return train(
        build_sft_sharpening(p),
        p.sft_sharpening.train,
        paths.checkpoints() / "sft_sharpening",
        paths.train_logs() / "sft_sharpening.csv",
        out_dir=paths.models() / "sft_sharpening",
        show_progress=show_progress,
    )


def evaluate_clip(p: Params) -> dict:
    """Stage evaluate: CLIP score (separate evaluator CLIP) of the systems on the DrawBench-like set."""
    e = p.evaluate
    systems = {name: paths.models() / name for name in e.systems}
    evaluator = CLIPScore.load(paths.models() / "clip_evaluator", device())
    res = evaluate.clip_evaluation(
        systems, e.prompts, e.generation, evaluator, e.seed, e.confidence, e.bootstrap, device(), limit=e.limit
    )
    res["evaluator"] = "models/clip_evaluator"
    write_json(paths.results() / "eval_clip.json", res)
    return res


def fig6(p: Params) -> list[Path]:
    """Stage fig6: training reward mean +/- std against steps, SFT and RLHF sharpening, from the training logs only."""
    runs = {
        "SFT Diffusion-Sharpening": paths.train_logs() / "sft_sharpening.csv",
        "RLHF Diffusion-Sharpening": paths.train_logs() / "rlhf_sharpening.csv",
    }
    missing = [str(v) for v in runs.values() if not v.exists()]
    if missing:
        raise FileNotFoundError(
            f"fig6 needs the training logs {missing}: run `dvc repro sft_sharpening rlhf_sharpening`"
        )
    rewards = {p.sft_sharpening.reward, p.rlhf_sharpening.reward}
    label = "CLIP, 100 x cos" if rewards == {"clip"} else " / ".join(sorted(rewards))
    fig = figures.reward_curve(runs, smoothing=p.figures.smoothing, ylabel=f"training reward ({label})")
    return figures.save(fig, "fig6_reward_curve", dpi=p.figures.dpi)
