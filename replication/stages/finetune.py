"""Stages of the fine-tuning methods of Table 1 (and DRaFT beyond it): one stage per method.

Each stage reads its params.yaml section, builds the method from `replication.methods`, trains it with
the one training loop (checkpoints under .checkpoints/<stage>, resumed after a crash), and publishes
`models/<stage>` (a diffusers pipeline; LoRA runs are saved merged) and `results/train/<stage>.csv`
(per-step loss, reward mean/std where a reward exists, training NFEs).
"""

from __future__ import annotations

import csv
from pathlib import Path

from .. import data, paths
from ..config import Params
from ..feedback import PreferencePairs
from ..methods.common import PromptSource
from ..methods.d3po import D3PO, D3POSpec
from ..methods.ddpo import DDPO, DDPOSpec
from ..methods.dpo import DiffusionDPO, PairSource
from ..methods.draft import BackpropSpec, RewardBackprop
from ..methods.iterpo import IterPO
from ..methods.sharpening import RLHFSharpening, RLHFSpec, SharpeningSpec
from ..methods.standard import StandardFinetune
from ..rewards import load_reward, parse_weights
from ..train import file_digest, train
from ..world.rater import Rater
from .common import device, image_text_source, load_model, lora_spec, reward_fingerprint


# ----------------------------------------------------------------------------- shared plumbing
def prompt_source(name: str) -> PromptSource:
    """A tiny-world prompt set by name, or a text file with one prompt per line (paper scale)."""
    if name in data.PROMPT_SEEDS:
        return PromptSource([r["prompt"] for r in data.load_prompts(name)], name)
    path = paths.resolve(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"prompts {name!r}: not a tiny-world prompt set ({', '.join(data.PROMPT_SEEDS)}) and no such text file"
        )
    return PromptSource([ln.strip() for ln in path.read_text().splitlines() if ln.strip()], path.name)


def log_summary(log: Path) -> dict:
    """Training NFEs in total and per step, and the first/last logged reward, from the metrics CSV."""
    with log.open() as f:
        rows = list(csv.DictReader(f))
    out = {"train_nfe": sum(float(r["nfe"]) for r in rows), "logged_steps": len(rows)}
    out["nfe_per_step"] = out["train_nfe"] / max(1, len(rows))
    if rows and "reward_mean" in rows[0]:
        out["reward_first"], out["reward_last"] = float(rows[0]["reward_mean"]), float(rows[-1]["reward_mean"])
    return out


def run(name: str, method, sec, show_progress: bool) -> dict:
    log = paths.train_logs() / f"{name}.csv"
    fit = train(
        method, sec.train, paths.checkpoints() / name, log, out_dir=paths.models() / name, show_progress=show_progress
    )
    return {**fit, **log_summary(log)}


# ----------------------------------------------------------------------------- one builder per method
# build_<stage>(p) makes the method exactly as its stage trains it (benchmarks/bench_methods.py times these).
def build_standard_finetune(p: Params):
    s = p.standard_finetune
    model, fp = load_model(s)
    return StandardFinetune(
        model,
        image_text_source(s.dataset, model.image_size),
        s.train.batch_size,
        fingerprint={**fp, "dataset": s.dataset},
        lora=lora_spec(s),
    )


def build_rlhf_sharpening(p: Params):
    s = p.rlhf_sharpening
    model, fp = load_model(s)
    spec = SharpeningSpec(
        n=s.n, m=s.m, infer_steps=s.infer_steps, aggregate=s.aggregate, x0=s.x0, ode_steps=s.ode_steps
    )
    rl = RLHFSpec(
        loss=s.loss, beta=s.beta, margin_scale=s.margin_scale, gen_steps=s.gen_steps, gen_guidance=s.gen_guidance
    )
    return RLHFSharpening(
        model,
        load_reward(s.reward, device()),
        prompt_source(s.prompts),
        s.train.batch_size,
        spec,
        rl,
        lora=lora_spec(s),
        fingerprint={**fp, **reward_fingerprint(s.reward), "prompts": s.prompts},
    )


def build_diffusion_dpo(p: Params):
    s = p.diffusion_dpo
    model, fp = load_model(s)
    pairs_path = paths.resolve(s.pairs)
    if not pairs_path.exists():
        raise FileNotFoundError(f"diffusion_dpo.pairs: {pairs_path} is missing; run `dvc repro feedback` first")
    pairs = PairSource(PreferencePairs.load(pairs_path), pairs_path.name)
    return DiffusionDPO(
        model,
        pairs,
        s.train.batch_size,
        s.beta,
        lora=lora_spec(s),
        fingerprint={**fp, "pairs": file_digest(pairs_path)},
    )


def build_ddpo(p: Params):
    s = p.ddpo
    model, fp = load_model(s)
    spec = DDPOSpec(
        sample_steps=s.sample_steps,
        eta=s.eta,
        guidance=s.guidance,
        images_per_prompt=s.images_per_prompt,
        updates_per_sample=s.updates_per_sample,
        clip_range=s.clip_range,
        adv_clip=s.adv_clip,
        timestep_fraction=s.timestep_fraction,
    )
    return DDPO(
        model,
        load_reward(s.reward, device()),
        prompt_source(s.prompts),
        s.train.batch_size,
        spec,
        lora=lora_spec(s),
        fingerprint={**fp, **reward_fingerprint(s.reward), "prompts": s.prompts},
    )


def build_d3po(p: Params):
    s = p.d3po
    model, fp = load_model(s)
    spec = D3POSpec(
        sample_steps=s.sample_steps,
        eta=s.eta,
        guidance=s.guidance,
        updates_per_sample=s.updates_per_sample,
        beta=s.beta,
        ratio_clip=s.ratio_clip,
        timestep_fraction=s.timestep_fraction,
    )
    rater = Rater(temperature=s.rater.temperature, tie_band=s.rater.tie_band, rating_noise=s.rater.rating_noise)
    return D3PO(
        model,
        prompt_source(s.prompts),
        s.train.batch_size,
        spec,
        rater=rater,
        lora=lora_spec(s),
        fingerprint={**fp, "prompts": s.prompts},
    )


def backprop_spec(s) -> BackpropSpec:
    return BackpropSpec(
        mode=s.mode,
        k=s.k,
        stop_range=s.stop_range,
        sample_steps=s.sample_steps,
        guidance=s.guidance,
        objective=s.objective,
        margin=s.margin,
        reward_scale=s.reward_scale,
    )


def build_iterpo(p: Params):
    s = p.iterpo
    model, fp = load_model(s)
    rewards = [(load_reward(name, device()), w) for name, w in parse_weights(s.reward)]
    return IterPO(
        model,
        rewards,
        prompt_source(s.prompts),
        s.train.batch_size,
        backprop_spec(s),
        lora=lora_spec(s),
        fingerprint={**fp, **reward_fingerprint(s.reward), "prompts": s.prompts},
    )


def build_draft(p: Params):
    s = p.draft
    model, fp = load_model(s)
    return RewardBackprop(
        model,
        load_reward(s.reward, device()),
        prompt_source(s.prompts),
        s.train.batch_size,
        backprop_spec(s),
        lora=lora_spec(s),
        fingerprint={**fp, **reward_fingerprint(s.reward), "prompts": s.prompts},
    )


BUILDERS = {
    "standard_finetune": build_standard_finetune,
    "rlhf_sharpening": build_rlhf_sharpening,
    "diffusion_dpo": build_diffusion_dpo,
    "ddpo": build_ddpo,
    "d3po": build_d3po,
    "iterpo": build_iterpo,
    "draft": build_draft,
}


# ----------------------------------------------------------------------------- one stage per method
def standard_finetune(p: Params, show_progress: bool = True) -> dict:
    """Stage standard_finetune: epsilon-MSE fine-tuning on the SFT sharpening data (Fig. 4's baseline)."""
    return run("standard_finetune", build_standard_finetune(p), p.standard_finetune, show_progress)


def rlhf_sharpening(p: Params, show_progress: bool = True) -> dict:
    """Stage rlhf_sharpening: RLHF Diffusion-Sharpening (Algorithm 2) on prompts only."""
    return run("rlhf_sharpening", build_rlhf_sharpening(p), p.rlhf_sharpening, show_progress)


def diffusion_dpo(p: Params, show_progress: bool = True) -> dict:
    """Stage diffusion_dpo: Diffusion-DPO on the Pick-a-Pic-like judged pairs."""
    return run("diffusion_dpo", build_diffusion_dpo(p), p.diffusion_dpo, show_progress)


def ddpo(p: Params, show_progress: bool = True) -> dict:
    """Stage ddpo: DDPO (PPO over stochastic DDIM) with the configured reward (paper: aesthetic)."""
    return run("ddpo", build_ddpo(p), p.ddpo, show_progress)


def d3po(p: Params, show_progress: bool = True) -> dict:
    """Stage d3po: D3PO with online choices of the simulated rater (no reward model)."""
    return run("d3po", build_d3po(p), p.d3po, show_progress)


def iterpo(p: Params, show_progress: bool = True) -> dict:
    """Stage iterpo: IterComp's feedback learning (ReFL on the compositional reward), see methods/iterpo.py."""
    return run("iterpo", build_iterpo(p), p.iterpo, show_progress)


def draft(p: Params, show_progress: bool = True) -> dict:
    """Stage draft: DRaFT-K (or ReFL, mode: refl) with a differentiable reward; beyond the paper's table."""
    return run("draft", build_draft(p), p.draft, show_progress)


FINETUNE_STAGES = {
    "standard_finetune": standard_finetune,
    "rlhf_sharpening": rlhf_sharpening,
    "diffusion_dpo": diffusion_dpo,
    "ddpo": ddpo,
    "d3po": d3po,
    "iterpo": iterpo,
    "draft": draft,
}
