"""Rewards by name: `load_reward("clip")`, or a weighted mix `load_reward("clip:0.5,aesthetic:0.5")`.

Each name reads the model folder its stage writes under ``models/`` (trained here in the tiny world,
materialised from released checkpoints at paper scale); ``sources={"clip": "openai/clip-vit-large-patch14"}``
points a name at another folder or hub id. `mllm` defaults to the tiny world's grader, started on a loopback
port on load; give ``sources={"mllm": "gpt-4o@https://api.openai.com/v1"}`` (key from $OPENAI_API_KEY) for GPT-4o.
"""

from __future__ import annotations

from collections.abc import Callable

from .. import paths
from ..digests import file_digest
from .aesthetic import AestheticScore
from .base import Reward, Weighted, parse_weights
from .clip import CLIPScore
from .mllm import MLLMGrader
from .noise import NoiseReward
from .preference import load_preference

# name -> (loader(source, device), default source)
REGISTRY: dict[str, tuple[Callable[..., Reward], str]] = {
    "clip": (CLIPScore.load, "models/clip_reward"),
    "compositional": (load_preference, "models/compositional"),
    "image_reward": (load_preference, "models/image_reward"),
    "aesthetic": (AestheticScore.load, "models/aesthetic"),
    "mllm": (MLLMGrader.load, "local"),
    "noise": (NoiseReward.load, "0"),  # the negative control: no model, the source is a seed
}


def load_reward(spec: str, device=None, sources: dict[str, str] | None = None) -> Reward:
    """A reward by name, or a weighted sum 'name:w,name:w'; `sources` overrides a model folder/hub id."""
    parts = []
    for name, w in parse_weights(spec):
        if name not in REGISTRY:
            raise KeyError(f"unknown reward {name!r}; available: {', '.join(REGISTRY)}")
        loader, default = REGISTRY[name]
        parts.append((loader((sources or {}).get(name) or default, device=device), w))
    return parts[0][0] if len(parts) == 1 and parts[0][1] == 1.0 else Weighted(parts)


def reward_models(spec: str) -> dict[str, str]:
    """The digests of the model folders behind a reward spec that exist here (retraining a reward model
    changes what a method trained on it, so its fingerprint must change)."""
    out = {}
    for name, _ in parse_weights(spec):
        if name in REGISTRY:
            folder = paths.resolve(REGISTRY[name][1])
            if folder.exists():
                out[name] = file_digest(folder)
    return out


def fingerprint(spec: str) -> dict:
    """A reward spec and the digests of its model folders, for a method's fingerprint."""
    return {"reward": spec, "reward_models": reward_models(spec)}
