"""Rewards behind one protocol: ``reward(images, prompts) -> Tensor[B]`` (images in [0, 1], batched).

| name          | paper's reward            | tiny world (trained by a stage)               | paper scale                     |
|---------------|---------------------------|-----------------------------------------------|---------------------------------|
| clip          | CLIP ViT-L/14, 100 x cos  | tiny CLIP (stage clip)                        | openai/clip-vit-large-patch14   |
| compositional | IterComp reward           | CLIP + Bradley-Terry on parser-judged pairs   | IterComp-style BLIP checkpoint  |
| image_reward  | ImageReward v1.0          | CLIP + Bradley-Terry on the rater's choices   | THUDM/ImageReward (BLIP)        |
| aesthetic     | LAION aesthetic predictor | MLP on tiny-CLIP embeddings, rater's ratings  | LAION MLP on CLIP ViT-L/14      |
| mllm          | GPT-4o, 5-aspect rubric   | local grader over the chat-completions API    | any OpenAI-compatible endpoint  |

``load_reward("clip")`` or a weighted mix ``load_reward("clip:0.5,aesthetic:0.5")``. Each name
reads the model folder its stage writes under ``models/`` (trained here in the tiny world,
downloaded from the hub at paper scale); ``sources={"clip": "openai/clip-vit-large-patch14"}``
points a name at another folder or hub id.
"""

from __future__ import annotations

from collections.abc import Callable

from .aesthetic import AestheticScore
from .base import ImagePreprocess, Reward, Weighted, check_batch, parse_weights
from .clip import CLIPScore
from .mllm import MLLMGrader
from .preference import load_preference

# name -> (loader(source, device), default source). The defaults are the folders the pipeline's
# stages write: trained here in the tiny world, materialised from released checkpoints at paper scale
# (stage `rewards`). `mllm` defaults to the tiny world's grader, started on a loopback port on load;
# give `sources={"mllm": "gpt-4o@https://api.openai.com/v1"}` (key from $OPENAI_API_KEY) for GPT-4o.
REGISTRY: dict[str, tuple[Callable[..., Reward], str]] = {
    "clip": (CLIPScore.load, "models/clip_reward"),
    "compositional": (load_preference, "models/compositional"),
    "image_reward": (load_preference, "models/image_reward"),
    "aesthetic": (AestheticScore.load, "models/aesthetic"),
    "mllm": (MLLMGrader.load, "local"),
}


def load_reward(spec: str, device="cpu", sources: dict[str, str] | None = None) -> Reward:
    """A reward by name, or a weighted sum 'name:w,name:w'; `sources` overrides a model folder/hub id."""
    parts = []
    for name, w in parse_weights(spec):
        if name not in REGISTRY:
            raise KeyError(f"unknown reward {name!r}; available: {', '.join(REGISTRY)}")
        loader, default = REGISTRY[name]
        parts.append((loader((sources or {}).get(name) or default, device=device), w))
    return parts[0][0] if len(parts) == 1 and parts[0][1] == 1.0 else Weighted(parts)


__all__ = [
    "Reward",
    "REGISTRY",
    "load_reward",
    "CLIPScore",
    "AestheticScore",
    "MLLMGrader",
    "load_preference",
    "ImagePreprocess",
    "Weighted",
    "check_batch",
    "parse_weights",
]
