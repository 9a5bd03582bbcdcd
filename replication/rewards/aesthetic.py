"""Aesthetic score: an MLP on normalised CLIP image embeddings (LAION's improved aesthetic predictor).

The LAION predictor (used by the paper's evaluation and by DDPO as a reward) regresses people's 1-10
ratings from the L2-normalised CLIP ViT-L/14 image embedding with the same linear MLP ImageReward
uses as its head (`layers.0` ... `layers.7`, no activations) and an MSE loss. The prompt is ignored.

* tiny world: the CLIP is the tiny CLIP of the `clip` stage (frozen), the MLP is trained here on the
  simulated rater's 1-10 ratings (`world.rater.Rater.rate`), saved as a self-contained folder.
* paper scale: `load_laion` puts LAION's released MLP (`sac+logos+ava1-l14-linearMSE.pth`: a local
  file, an https URL or `repo_id:filename` on the hub) on `openai/clip-vit-large-patch14` from the hub.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import paths
from ..tensors import resolve_device, unwrap
from .base import ImagePreprocess, check_batch
from .clip import _features
from .parts import PreferenceHead

FORMAT = "aesthetic-mlp"
LAION_MLP_URL = (
    "https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/sac%2Blogos%2Bava1-l14-linearMSE.pth"
)


class AestheticScore:
    """reward(images, prompts) = MLP(normalised CLIP image embedding), on the 1-10 rating scale."""

    name = "aesthetic"

    def __init__(self, clip, mlp: PreferenceHead, preprocess: ImagePreprocess, device=None, batch_size: int = 256):
        device = resolve_device(device)
        self.clip = clip.to(device).eval().requires_grad_(False)
        self.mlp = mlp.to(device).eval().requires_grad_(False)
        self.preprocess, self.device, self.batch_size = preprocess, torch.device(device), batch_size

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for s in range(0, images.shape[0], self.batch_size):
            px = self.preprocess(images[s : s + self.batch_size].to(self.device, torch.float32))
            f = _features(self.clip.get_image_features(pixel_values=px)).float()
            out.append(f / f.norm(dim=-1, keepdim=True))
        return torch.cat(out)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        if prompts is not None:
            check_batch(images, prompts)
        return self.mlp(self.embed(images))

    def with_grad(self, images: torch.Tensor, prompts: Sequence[str] | None = None) -> torch.Tensor:
        """The same score with gradients flowing back to the images (DRaFT, ReFL); one batch."""
        if prompts is not None:
            check_batch(images, prompts)
        f = _features(self.clip.get_image_features(pixel_values=self.preprocess(images.float()))).float()
        return self.mlp(f / f.norm(dim=-1, keepdim=True))

    def save(self, out_dir: str | Path, extra: dict | None = None) -> None:
        save_aesthetic(out_dir, self.clip, self.mlp, self.preprocess, extra)

    @classmethod
    def load(cls, source: str | Path = "models/aesthetic", device=None, **kw) -> AestheticScore:
        """A folder this class saved (tiny world); `laion` (or `laion:<mlp source>`) for LAION's predictor."""
        s = str(source)
        if s == "laion" or s.startswith("laion:"):
            return load_laion(mlp=s.partition(":")[2] or LAION_MLP_URL, device=device, **kw)
        folder = paths.resolve(source)
        if not (folder / "aesthetic_config.json").exists():
            raise FileNotFoundError(
                f"no aesthetic model at {folder}: run `dvc repro rewards` first "
                f"(or use source 'laion' for LAION's predictor on CLIP ViT-L/14)"
            )
        from safetensors.torch import load_file
        from transformers import CLIPModel

        cfg = json.loads((folder / "aesthetic_config.json").read_text())
        clip = CLIPModel.from_pretrained(str(folder / "clip"))
        mlp = PreferenceHead(clip.config.projection_dim, cfg["head_dims"])
        mlp.load_state_dict(load_file(str(folder / "mlp.safetensors")))
        pre = ImagePreprocess.from_folder(folder / "clip", clip.config.vision_config.image_size)
        return cls(clip, mlp, pre, device)


def save_aesthetic(
    out_dir: str | Path, clip, mlp: PreferenceHead, preprocess: ImagePreprocess, extra: dict | None = None
) -> None:
    """A self-contained folder: clip/ (the CLIPModel it reads), mlp.safetensors, aesthetic_config.json."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clip.save_pretrained(str(out / "clip"))
    (out / "clip" / "preprocessor_config.json").write_text(json.dumps(preprocess.config(), indent=1))
    mlp = unwrap(mlp)
    save_file({k: v.contiguous() for k, v in mlp.state_dict().items()}, str(out / "mlp.safetensors"))
    dims = [m.out_features for m in mlp.layers if isinstance(m, torch.nn.Linear)][:-1]
    cfg = {"format": FORMAT, "head_dims": dims, **(extra or {})}
    (out / "aesthetic_config.json").write_text(json.dumps(cfg, indent=1, sort_keys=True))


def _fetch(source: str) -> Path:
    """A local file, an https URL (downloaded once into ~/.cache/replication) or 'repo_id:filename'."""
    if Path(source).exists():
        return Path(source)
    if source.startswith(("http://", "https://")):
        from urllib.parse import unquote

        target = Path.home() / ".cache" / "replication" / unquote(source.rsplit("/", 1)[-1])
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(source, str(target))
        return target
    if ":" in source:
        from huggingface_hub import hf_hub_download

        repo, _, filename = source.partition(":")
        return Path(hf_hub_download(repo, filename))
    raise FileNotFoundError(f"aesthetic MLP {source!r} is neither a file, an https URL nor 'repo_id:filename'")


def load_laion(
    clip: str = "openai/clip-vit-large-patch14", mlp: str = LAION_MLP_URL, device=None, revision: str | None = None
) -> AestheticScore:
    """LAION's improved aesthetic predictor: its MLP (a state dict with keys layers.0 ... layers.7) on the
    normalised image embedding of `clip` (a hub id or a local CLIPModel folder)."""
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(str(clip), revision=revision)
    state = torch.load(str(_fetch(mlp)), map_location="cpu", weights_only=True)
    first = state["layers.0.weight"]
    if first.shape[1] != model.config.projection_dim:
        raise ValueError(
            f"the aesthetic MLP expects {first.shape[1]}-d embeddings but {clip} gives "
            f"{model.config.projection_dim}-d ones (LAION's MLP is for CLIP ViT-L/14)"
        )
    dims = [state[k].shape[0] for k in sorted(state, key=lambda k: int(k.split(".")[1])) if k.endswith("weight")][:-1]
    head = PreferenceHead(first.shape[1], dims)
    head.load_state_dict(state)
    folder = Path(str(clip)) if Path(str(clip)).is_dir() else None
    pre = ImagePreprocess.from_folder(folder, model.config.vision_config.image_size)
    return AestheticScore(model, head, pre, device)


class RatingRegression:
    """LAION's recipe: MSE between MLP(normalised CLIP embedding) and the 1-10 rating. The CLIP is frozen, so
    the embeddings are computed once and a step is a few matrix products. `save` writes the whole folder."""

    def __init__(
        self,
        scorer: AestheticScore,
        embeddings: torch.Tensor,
        ratings: torch.Tensor,
        batch_size: int,
        name: str = "aesthetic",
        seed: int = 0,
        fingerprint: dict | None = None,
        extra_config: dict | None = None,
    ):
        if len(embeddings) != len(ratings):
            raise ValueError(f"{len(embeddings)} embeddings but {len(ratings)} ratings")
        torch.manual_seed(seed)
        dims = [m.out_features for m in scorer.mlp.layers if isinstance(m, torch.nn.Linear)][:-1]
        self.mlp = PreferenceHead(embeddings.shape[1], dims)
        with torch.no_grad():  # start at the mean rating: the steps learn the ordering, not the offset
            self.mlp.layers[-1].bias.fill_(float(ratings.mean()))
        self.scorer, self.x, self.y = scorer, embeddings.float().cpu(), ratings.float().cpu()
        self.batch_size, self.name = batch_size, name
        self._fp, self.extra = dict(fingerprint or {}), dict(extra_config or {})

    def modules(self):
        return {"mlp": self.mlp}

    def bind(self, prepared):
        self.mlp = prepared["mlp"]

    def fingerprint(self) -> dict:
        import hashlib

        h = hashlib.md5(self.x.numpy().tobytes() + self.y.numpy().tobytes()).hexdigest()
        return {"kind": "rating-mse", "batch": self.batch_size, "data": h, **self._fp}

    def loss(self, step: int, gen: torch.Generator):
        idx = torch.randint(len(self.y), (self.batch_size,), generator=gen)  # host: indexes host data
        dev = next(self.mlp.parameters()).device
        loss = F.mse_loss(self.mlp(self.x[idx].to(dev)), self.y[idx].to(dev))
        return loss, {"rmse": loss.sqrt().item()}

    def save(self, out_dir: Path) -> None:
        mlp = unwrap(self.mlp).eval()
        self.scorer.mlp = mlp.to(self.scorer.device).requires_grad_(False)
        self.scorer.save(out_dir, {"train_images": len(self.y), **self.extra})


def regression_report(pred: np.ndarray, target: np.ndarray) -> dict:
    """Pearson and Spearman correlation and RMSE of predictions against targets."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)

    def ranks(x):
        r = np.empty(len(x))
        r[np.argsort(x, kind="stable")] = np.arange(len(x))
        return r

    pearson = float(np.corrcoef(pred, target)[0, 1])
    spearman = float(np.corrcoef(ranks(pred), ranks(target))[0, 1])
    return {
        "pearson": round(pearson, 4),
        "spearman": round(spearman, 4),
        "rmse": round(float(np.sqrt(np.mean((pred - target) ** 2))), 4),
        "n": int(len(pred)),
    }
