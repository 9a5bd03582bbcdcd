"""Typed parameters: params.yaml -> validated dataclasses, with profiles.

params.yaml holds one section per stage plus ``profile`` (tiny | smoke | sdxl) and
``profiles``: per-profile overrides of the sections, merged on load. Every key is checked
against the schema below; a typo or a wrong type fails with the key's full path and the
valid alternatives, before any work starts.

Command line (used by the Makefile):
    python -m replication.config check              validate params.yaml (every profile)
    python -m replication.config set-profile smoke  set `profile:` in params.yaml in place
    python -m replication.config show [section]     print the effective parameters
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from . import paths
from .models import TinyArch

PROFILES = ("tiny", "smoke", "sdxl")


class ConfigError(ValueError):
    """params.yaml does not fit the schema; the message names the key and the fix."""


# ----------------------------------------------------------------------------- schema
@dataclass
class TrainParams:
    """The one training loop's knobs (replication.train)."""

    steps: int = 100
    batch_size: int = 8
    lr: float = 1e-4
    lr_warmup_steps: int = 0
    lr_schedule: Literal["constant", "cosine"] = "constant"  # cosine: decay to lr_min_ratio * lr at the last step
    lr_min_ratio: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    grad_accum: int = 1
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    checkpoint_every: int = 50
    log_every: int = 1
    seed: int = 0


@dataclass
class VAEParams:
    train: TrainParams = field(default_factory=lambda: TrainParams(steps=2000, batch_size=32, lr=1e-3))
    kl_weight: float = 1e-6


@dataclass
class UNetPretrainParams:
    train: TrainParams = field(default_factory=lambda: TrainParams(steps=3000, batch_size=64, lr=5e-4))
    cond_dropout: float = 0.1


@dataclass
class GenerationParams:
    """How images are generated for evaluation (the paper: DDIM 50 steps, CFG 5 = 100 NFE)."""

    num_steps: int = 50
    guidance_scale: float = 5.0
    batch_size: int = 256


@dataclass
class BaseModelParams:
    source: str = "tiny"  # "tiny": train the tiny model here; otherwise a hub id or folder to materialise
    revision: str | None = None
    dataset: str = "t2i2m"
    arch: TinyArch = field(default_factory=TinyArch)
    vae: VAEParams = field(default_factory=VAEParams)
    unet: UNetPretrainParams = field(default_factory=UNetPretrainParams)
    report_prompts: int = 256  # per CompBench-like category, for the base model's parser report
    generation: GenerationParams = field(default_factory=GenerationParams)


@dataclass
class ClipArch:
    image_size: int = 32
    patch_size: int = 4
    width: int = 64
    layers: int = 3
    heads: int = 4
    embed_dim: int = 64


@dataclass
class ClipModelParams:
    source: str = "tiny"  # "tiny": train contrastively here; otherwise a hub id (e.g. openai/clip-vit-large-patch14)
    revision: str | None = None
    datasets: tuple[str, ...] = ("t2i2m",)
    arch: ClipArch = field(default_factory=ClipArch)
    train: TrainParams = field(default_factory=lambda: TrainParams(steps=1500, batch_size=128, lr=1e-3))
    hard_negatives: float = 0.5  # share of each batch that is a scene's attribute-swapped twin


@dataclass
class ClipParams:
    reward: ClipModelParams = field(default_factory=ClipModelParams)
    evaluator: ClipModelParams = field(
        default_factory=lambda: ClipModelParams(
            datasets=("journeydb", "pokemon", "t2i2m"), train=TrainParams(steps=1500, batch_size=128, lr=1e-3, seed=1)
        )
    )
    retrieval_pool: int = 100  # candidates per query when reporting retrieval accuracy


@dataclass
class LoraParams:
    """LoRA on the UNet attention projections (peft); rank 0 = full fine-tuning. Saved merged."""

    rank: int = 0
    alpha: float = 0.0  # 0: alpha = rank


@dataclass
class SharpeningParams:
    model: str = "models/base"
    revision: str | None = None
    reward: str = "clip"
    dataset: str = "journeydb"
    n: int = 3  # trajectories (noise samples) per image
    m: int = 3  # denoising steps per trajectory
    infer_steps: int = 25  # grid of the rollout: stride = 1000 // infer_steps timesteps
    aggregate: Literal["sum", "mean"] = "sum"  # trajectory score: paper Eq. 8 sums, the code averages
    x0: Literal["tweedie", "ode"] = "tweedie"
    ode_steps: int = 4
    lora: LoraParams = field(default_factory=LoraParams)
    train: TrainParams = field(
        default_factory=lambda: TrainParams(
            steps=200, batch_size=8, lr=1e-4, adam_beta1=0.0, adam_beta2=0.99, checkpoint_every=50
        )
    )


@dataclass
class EvaluateParams:
    prompts: str = "drawbench"
    limit: int | None = None  # first N prompts of the set (None: all)
    systems: tuple[str, ...] = ("base", "sft_sharpening", "standard_finetune", "rlhf_sharpening")
    generation: GenerationParams = field(default_factory=GenerationParams)
    seed: int = 0
    confidence: float = 0.95
    bootstrap: int = 2000

    def __post_init__(self):
        if self.limit is not None and self.limit < 2:
            raise ValueError(f"limit is {self.limit}; a confidence interval needs at least 2 prompts (null: all)")


@dataclass
class FiguresParams:
    smoothing: int = 10  # moving-average window (steps) for training curves
    dpi: int = 200


@dataclass
class RaterParams:
    """The simulated human (replication/world/rater.py): Bradley-Terry temperature, tie band, rating noise."""

    temperature: float = 0.05
    tie_band: float = 0.02
    rating_noise: float = 0.5


@dataclass
class FeedbackParams:
    """Judged image pairs from the base model: the Pick-a-Pic-role set and the reward-training pool."""

    model: str = "models/base"
    prompts: str = "rlhf_pool"
    pickapic_prompts: int = 400  # one judged pair per prompt (Diffusion-DPO's data)
    pool_prompts: int = 300  # the next prompts: images_per_prompt images each, every pair judged
    images_per_prompt: int = 4
    num_steps: int = 10  # DDIM steps of the feedback images (evaluation uses 50)
    guidance_choices: tuple[float, ...] = (2.0, 3.5, 5.0, 7.5)  # drawn per image, as Pick-a-Pic's varied samplers
    batch_size: int = 256
    seed: int = 0
    rater: RaterParams = field(default_factory=RaterParams)


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
    compositional: PreferenceModelParams = field(
        default_factory=lambda: PreferenceModelParams(quality_head=False, calibrate_temperature=False)
    )
    image_reward: PreferenceModelParams = field(default_factory=PreferenceModelParams)
    image_reward_evaluator: PreferenceModelParams = field(
        default_factory=lambda: PreferenceModelParams(
            init="models/clip_evaluator",
            shard=1,
            train=TrainParams(steps=100, batch_size=64, lr=1e-4, weight_decay=0.01, checkpoint_every=100, seed=1),
        )
    )
    aesthetic: AestheticModelParams = field(default_factory=AestheticModelParams)
    aesthetic_evaluator: AestheticModelParams = field(
        default_factory=lambda: AestheticModelParams(
            clip="models/clip_evaluator",
            shard=1,
            train=TrainParams(steps=600, batch_size=256, lr=3e-3, checkpoint_every=600, seed=1),
        )
    )
    renders: int = 2400  # rendered training images per side, passed through the base model's VAE
    corruptions_per_image: int = 2  # text-side comparisons per image
    heldout_scenes: int = 200  # scenes with held-out compositions for the compositional accuracy
    seed: int = 0


@dataclass
class MLLMParams:
    """The MLLM grader (replication/rewards/mllm.py). base_url 'local' starts the tiny world's grader on
    127.0.0.1; otherwise any OpenAI-compatible endpoint, its key read from the environment variable
    `api_key_env` (never written here)."""

    base_url: str = "local"
    model: str = "gpt-4o"
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 60.0
    max_retries: int = 3
    backoff: float = 1.0
    concurrency: int = 8
    max_requests: int = 100_000


@dataclass
class MetricsParams:
    """Table 1's columns for one pipeline (stage evaluate_base: the base model)."""

    model: str = "models/base"
    per_category: int = 100  # CompBench-like prompts per category and split (base_model.report_prompts reuses them)
    drawbench_limit: int | None = None  # first N DrawBench-like prompts (None: all 200)
    generation: GenerationParams = field(default_factory=GenerationParams)
    seed: int = 0
    confidence: float = 0.95
    bootstrap: int = 2000
    evaluators: dict = field(default_factory=dict)  # column -> model folder / hub id (paper scale)


# ----------------------------------------------------------------------------- fine-tuning methods (Table 1)
def _ft_train(**kw) -> TrainParams:
    base = dict(steps=100, batch_size=8, lr=1e-4, adam_beta1=0.9, adam_beta2=0.999, checkpoint_every=25)
    return TrainParams(**{**base, **kw})


@dataclass
class StandardFinetuneParams:
    """Standard fine-tuning (the diffusers SDXL example's objective) on the SFT sharpening data."""

    model: str = "models/base"
    revision: str | None = None
    dataset: str = "journeydb"
    lora: LoraParams = field(default_factory=LoraParams)
    train: TrainParams = field(default_factory=_ft_train)


@dataclass
class RLHFSharpeningParams:
    """RLHF Diffusion-Sharpening (Algorithm 2); defaults follow the paper (Eq. 11, PF-ODE x0, CFG)."""

    model: str = "models/base"
    revision: str | None = None
    reward: str = "clip"
    prompts: str = "rlhf_pool"  # a tiny-world prompt set, or a text file with one prompt per line
    n: int = 3
    m: int = 3
    infer_steps: int = 25
    aggregate: Literal["sum", "mean"] = "sum"
    x0: Literal["tweedie", "ode"] = "ode"
    ode_steps: int = 4
    loss: Literal["paper", "official", "dpo"] = "paper"
    beta: float = 5000.0
    margin_scale: float = 0.1  # units of the reward margin in Eq. 11 (params.yaml explains)
    gen_steps: int = 25
    gen_guidance: float = 5.0  # 1.0 = the released code (no classifier-free guidance)
    lora: LoraParams = field(default_factory=LoraParams)
    train: TrainParams = field(default_factory=lambda: _ft_train(adam_beta1=0.0, adam_beta2=0.99))


@dataclass
class DiffusionDPOParams:
    model: str = "models/base"
    revision: str | None = None
    pairs: str = "generated/pickapic.npz"
    beta: float = 2500.0  # ours = Wallace et al.'s beta / 2 (their SDXL 5000)
    lora: LoraParams = field(default_factory=LoraParams)
    train: TrainParams = field(default_factory=_ft_train)


@dataclass
class DDPOParams:
    model: str = "models/base"
    revision: str | None = None
    reward: str = "aesthetic"
    prompts: str = "rlhf_pool"
    sample_steps: int = 20
    eta: float = 1.0
    guidance: float = 5.0
    images_per_prompt: int = 4
    updates_per_sample: int = 2
    clip_range: float = 1.0e-4
    adv_clip: float = 5.0
    timestep_fraction: float = 1.0
    lora: LoraParams = field(default_factory=LoraParams)
    train: TrainParams = field(default_factory=_ft_train)


@dataclass
class D3POParams:
    model: str = "models/base"
    revision: str | None = None
    prompts: str = "rlhf_pool"
    sample_steps: int = 20
    eta: float = 1.0
    guidance: float = 5.0
    updates_per_sample: int = 1
    beta: float = 0.1
    ratio_clip: float = 0.1
    timestep_fraction: float = 1.0
    rater: RaterParams = field(default_factory=RaterParams)  # the person giving the online feedback
    lora: LoraParams = field(default_factory=LoraParams)
    train: TrainParams = field(default_factory=_ft_train)


@dataclass
class RewardBackpropParams:
    """Shared by DRaFT/ReFL (`draft`) and IterPO (`iterpo`): gradients of a differentiable reward."""

    model: str = "models/base"
    revision: str | None = None
    reward: str = "clip"
    prompts: str = "rlhf_pool"
    mode: Literal["draft", "refl"] = "draft"
    k: int = 1
    stop_range: int = 10
    sample_steps: int = 20
    guidance: float = 5.0
    objective: Literal["linear", "hinge"] = "linear"
    margin: float = 2.0
    reward_scale: float = 1.0
    lora: LoraParams = field(default_factory=LoraParams)
    train: TrainParams = field(default_factory=_ft_train)


@dataclass
class DemonParams:
    """Demon (replication/methods/demon.py): noise candidates per step weighted by their rewards."""

    kind: Literal["tanh", "boltzmann"] = "tanh"
    tau: float | None = None  # None: adaptive (the candidates' reward std)
    eta: float = 1.0  # stochasticity of the demon steps (1.0: DDPM's posterior variance)
    x0_steps: int = 4  # PF-ODE DDIM steps for each candidate's clean estimate (1: one-step Tweedie)


@dataclass
class Free2GuideParams:
    """Free2Guide (replication/methods/free2guide.py): path guidance on a random subset of steps."""

    fraction: float = 0.1  # share of the DDIM steps that are guided (paper: 5 of 50)
    eta: float = 1.0
    temperature: float = 0.0  # 0: keep the best candidate (the released code); > 0: softmax(r / T) draw
    seed: int = 0  # which steps are guided


@dataclass
class ZeroOrderParams:
    """Inference Scaling's zero-order search (replication/methods/inference_scaling.py)."""

    candidates: int = 4  # noises per round around the pivot
    step: float = 0.5  # neighbourhood: sqrt(1 - step^2) pivot + step eps (1: random search)


@dataclass
class NFESweepParams:
    """Fig. 5: inference-time methods over NFE budgets vs sharpened models at the base cost."""

    model: str = "models/base"
    revision: str | None = None
    verifier: str = "clip"  # a reward name (replication.rewards.load_reward); never the evaluator
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
    demon: DemonParams = field(default_factory=DemonParams)
    free2guide: Free2GuideParams = field(default_factory=Free2GuideParams)
    inference_scaling: ZeroOrderParams = field(default_factory=ZeroOrderParams)


@dataclass
class Params:
    profile: Literal["tiny", "smoke", "sdxl"] = "tiny"
    base_model: BaseModelParams = field(default_factory=BaseModelParams)
    clip: ClipParams = field(default_factory=ClipParams)
    sft_sharpening: SharpeningParams = field(default_factory=SharpeningParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    figures: FiguresParams = field(default_factory=FiguresParams)
    feedback: FeedbackParams = field(default_factory=FeedbackParams)
    rewards: RewardsParams = field(default_factory=RewardsParams)
    mllm: MLLMParams = field(default_factory=MLLMParams)
    evaluate_base: MetricsParams = field(default_factory=MetricsParams)
    standard_finetune: StandardFinetuneParams = field(default_factory=StandardFinetuneParams)
    rlhf_sharpening: RLHFSharpeningParams = field(default_factory=RLHFSharpeningParams)
    diffusion_dpo: DiffusionDPOParams = field(default_factory=DiffusionDPOParams)
    ddpo: DDPOParams = field(default_factory=DDPOParams)
    d3po: D3POParams = field(default_factory=D3POParams)
    iterpo: RewardBackpropParams = field(
        default_factory=lambda: RewardBackpropParams(reward="compositional", mode="refl", objective="hinge", margin=2.0)
    )
    draft: RewardBackpropParams = field(default_factory=RewardBackpropParams)
    nfe_sweep: NFESweepParams = field(default_factory=NFESweepParams)
    profiles: dict = field(default_factory=dict)


SECTIONS = [f.name for f in dataclasses.fields(Params) if f.name not in ("profile", "profiles")]


# ----------------------------------------------------------------------------- building
def _fmt(where: str) -> str:
    return where or "<top level>"


def _build(cls, data: Any, where: str, base=None):
    """Build dataclass `cls` from `data` over `base` (default: the class defaults), key by key."""
    if not isinstance(data, dict):
        raise ConfigError(f"params: '{_fmt(where)}' must be a mapping of keys to values, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        k = unknown[0]
        path = f"{where}.{k}" if where else k
        raise ConfigError(f"params: unknown key '{path}'. Valid keys under '{_fmt(where)}': {', '.join(names)}")
    base = base if base is not None else cls()
    kwargs = {}
    for name, value in data.items():
        path = f"{where}.{name}" if where else name
        current = getattr(base, name)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            kwargs[name] = _build(type(current), value, path, current)  # nested sections merge over defaults
        else:
            kwargs[name] = _coerce(hints[name], value, path)
    try:
        return dataclasses.replace(base, **kwargs)
    except ValueError as e:  # a __post_init__ check
        raise ConfigError(f"params: '{_fmt(where)}': {e}") from None


def _coerce(tp, v, where: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return _coerce(a, v, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if origin is Literal:
        if v not in args:
            raise ConfigError(f"params: '{where}' is {v!r}; choose one of {', '.join(map(repr, args))}")
        return v
    if dataclasses.is_dataclass(tp):
        return _build(tp, v, where)
    if tp is bool:
        if not isinstance(v, bool):
            raise ConfigError(f"params: '{where}' must be true or false, got {v!r}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"params: '{where}' must be a whole number, got {v!r}")
        return v
    if tp is float:
        if isinstance(v, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(v)
            except ValueError:
                pass
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"params: '{where}' must be a number, got {v!r}")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            raise ConfigError(f"params: '{where}' must be a string, got {v!r}")
        return v
    if origin is tuple:
        if not isinstance(v, (list, tuple)):
            raise ConfigError(f"params: '{where}' must be a list, got {v!r}")
        item = args[0]
        return tuple(_coerce(item, x, f"{where}[{i}]") for i, x in enumerate(v))
    if tp is dict or origin is dict:
        if not isinstance(v, dict):
            raise ConfigError(f"params: '{where}' must be a mapping, got {v!r}")
        return v
    raise TypeError(f"schema type {tp} at {where} is not supported")


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load(path: str | Path | None = None, profile: str | None = None, overrides: dict | None = None) -> Params:
    """Validated parameters with the active profile's overrides applied.

    `profile` (default: the file's `profile`) and `overrides` (a nested dict, applied last)
    let a notebook's parameters cell change a run without editing the file.
    """
    path = Path(path) if path else paths.root() / "params.yaml"
    if not path.exists():
        raise ConfigError(f"params: {path} does not exist; run from the repository (or pass its params.yaml)")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"params: {path} must be a mapping at the top level")
    prof = profile or raw.get("profile", "tiny")
    if prof not in PROFILES:
        raise ConfigError(f"params: profile {prof!r} is unknown; choose one of {', '.join(PROFILES)}")
    profiles = raw.get("profiles") or {}
    unknown = [p for p in profiles if p not in PROFILES]
    if unknown:
        raise ConfigError(f"params: 'profiles.{unknown[0]}' is not a profile; choose one of {', '.join(PROFILES)}")
    merged = deep_merge(raw, profiles.get(prof) or {})
    merged = deep_merge(merged, overrides or {})
    merged["profile"] = prof
    try:
        # validate every profile's overrides too, so a typo under an inactive profile is caught now
        for name, over in profiles.items():
            bad = [k for k in (over or {}) if k in ("profile", "profiles")]
            if bad:
                raise ConfigError(f"params: 'profiles.{name}.{bad[0]}' cannot be overridden by a profile")
            _build(Params, over or {}, f"profiles.{name}")
            _build(Params, deep_merge(raw, over or {}), "")
        return _build(Params, merged, "")
    except ConfigError as e:
        raise ConfigError(f"{e} (in {path.name}, profile {prof!r})") from None


def as_dict(obj) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(obj), default=str))


def describe(p: Params, section: str) -> str:
    """The effective parameters of one section as YAML (what a stage will use)."""
    return yaml.safe_dump({section: as_dict(getattr(p, section))}, sort_keys=False)


def set_profile(profile: str, path: str | Path | None = None) -> None:
    """Rewrite the `profile:` line of params.yaml, keeping comments and layout."""
    if profile not in PROFILES:
        raise ConfigError(f"profile {profile!r} is unknown; choose one of {', '.join(PROFILES)}")
    path = Path(path) if path else paths.root() / "params.yaml"
    text = path.read_text()
    new, n = re.subn(r"(?m)^profile:\s*\S+", f"profile: {profile}", text, count=1)
    if n != 1:
        raise ConfigError(f"params: no top-level 'profile:' line in {path}")
    if new != text:
        path.write_text(new)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd, rest = argv[0], argv[1:]
    try:
        if cmd == "check":
            for prof in PROFILES:
                load(profile=prof)
            print("params.yaml: valid for profiles " + ", ".join(PROFILES))
        elif cmd == "set-profile":
            set_profile(rest[0])
            print(f"params.yaml: profile = {rest[0]}")
        elif cmd == "show":
            p = load()
            sections = rest or SECTIONS
            print("".join(describe(p, s) for s in sections))
        else:
            print(f"unknown command {cmd!r}\n{__doc__}", file=sys.stderr)
            return 2
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
