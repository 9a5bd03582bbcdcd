"""The CLIP reward and the separate CLIP evaluator: trained contrastively here (tiny world) or materialised.

The two tiny CLIPs learn from disjoint halves of the image-caption sets (shard 0: the reward, shard 1: the
evaluator) with different seeds, so a method cannot raise the evaluation's CLIP score by fooling its own reward.
Each is reported by its top-1 retrieval among `retrieval_pool` held-out pairs. At paper scale a hub id is
materialised into the same folder (the reward: openai/clip-vit-large-patch14).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import data, paths
from ..models import build_tokenizer
from ..rewards.base import ImagePreprocess
from ..rewards.clip import ClipArch, CLIPScore, ContrastiveTraining, build_tiny_clip, retrieval_accuracy, split_pairs
from ..tensors import default_device
from ..train import TrainParams, train_named


@dataclass
class ClipModelParams:
    """One CLIP (params.yaml: clip.reward, clip.evaluator)."""

    source: str = "tiny"  # "tiny": train contrastively here; otherwise a hub id (e.g. openai/clip-vit-large-patch14)
    revision: str | None = None
    datasets: tuple[str, ...] = ("t2i2m",)
    arch: ClipArch = field(default_factory=ClipArch)
    train: TrainParams = field(default_factory=lambda: TrainParams(steps=1500, batch_size=128, lr=1e-3))


@dataclass
class ClipParams:
    """params.yaml: clip."""

    reward: ClipModelParams = field(default_factory=ClipModelParams)
    evaluator: ClipModelParams = field(  # other half of the data, other seed
        default_factory=lambda: ClipModelParams(train=replace(ClipModelParams().train, seed=1))
    )
    retrieval_pool: int = 100  # candidates per query when reporting retrieval accuracy


def materialise(source: str, revision: str | None, target: Path) -> dict:
    """A hub CLIP (model, tokenizer, preprocessing) saved into `target`, as a trained one would be."""
    from huggingface_hub import hf_hub_download
    from transformers import AutoTokenizer, CLIPModel

    CLIPModel.from_pretrained(source, revision=revision).save_pretrained(str(target))
    AutoTokenizer.from_pretrained(source, revision=revision).save_pretrained(str(target))
    shutil.copy(
        hf_hub_download(source, "preprocessor_config.json", revision=revision), target / "preprocessor_config.json"
    )
    paths.strip_local_paths(target)
    return {"source": source, "revision": revision}


def train_clip(cp: ClipModelParams, role: str, shard: int, pool: int, show_progress: bool = True) -> dict:
    """One tiny CLIP on shard `shard` of its data sets, saved to models/clip_<role>, and its held-out retrieval."""
    sets = [data.load_image_set(n) for n in cp.datasets]
    train_pairs, held_out = split_pairs(sets, shard)
    tok = build_tokenizer()
    method = ContrastiveTraining(
        build_tiny_clip(cp.arch, tok, seed=cp.train.seed),
        tok,
        ImagePreprocess(cp.arch.image_size),
        train_pairs,
        cp.train.batch_size,
        name=f"clip-{role}",
        fingerprint={"arch": vars(cp.arch), "datasets": list(cp.datasets), "shard": shard},
    )
    train_named(f"clip_{role}", method, cp.train, show_progress=show_progress)
    scorer = CLIPScore.load(paths.models() / f"clip_{role}", default_device())
    return {
        "datasets": list(cp.datasets),
        "shard": shard,
        "train_pairs": len(train_pairs),
        "retrieval_heldout": retrieval_accuracy(scorer, held_out, pool),
    }


def clips(p: ClipParams, show_progress: bool = True) -> dict:
    """The reward CLIP (shard 0) and the evaluator CLIP (shard 1): trained or materialised, and reported."""
    out = {}
    for shard, (role, cp) in enumerate((("reward", p.reward), ("evaluator", p.evaluator))):
        if cp.source != "tiny":
            out[role] = materialise(cp.source, cp.revision, paths.models() / f"clip_{role}")
        else:
            out[role] = train_clip(cp, role, shard, p.retrieval_pool, show_progress)
    return out
