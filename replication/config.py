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
    evaluator: ClipModelParams = field(default_factory=lambda: ClipModelParams(
        datasets=("journeydb", "pokemon", "t2i2m"), train=TrainParams(steps=1500, batch_size=128, lr=1e-3, seed=1)))
    retrieval_pool: int = 100  # candidates per query when reporting retrieval accuracy


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
    train: TrainParams = field(default_factory=lambda: TrainParams(
        steps=200, batch_size=8, lr=1e-4, adam_beta1=0.0, adam_beta2=0.99, checkpoint_every=50))


@dataclass
class EvaluateParams:
    prompts: str = "drawbench"
    systems: tuple[str, ...] = ("base", "sft_ds_clip")
    generation: GenerationParams = field(default_factory=GenerationParams)
    seed: int = 0
    confidence: float = 0.95
    bootstrap: int = 2000


@dataclass
class FiguresParams:
    smoothing: int = 10  # moving-average window (steps) for training curves
    dpi: int = 200


@dataclass
class Params:
    profile: Literal["tiny", "smoke", "sdxl"] = "tiny"
    base_model: BaseModelParams = field(default_factory=BaseModelParams)
    clip: ClipParams = field(default_factory=ClipParams)
    sft_sharpening: SharpeningParams = field(default_factory=SharpeningParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    figures: FiguresParams = field(default_factory=FiguresParams)
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
