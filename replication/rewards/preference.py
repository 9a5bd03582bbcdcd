"""Learned preference rewards: `image_reward` (ImageReward's role) and `compositional` (IterComp's).

Both are Bradley-Terry models: a scalar score r(image, prompt), trained so that
P(item a is preferred to item b) = sigmoid(r(a) - r(b)) fits judged comparisons
(`rewards.pairs.Comparisons`), then z-scored (ImageReward reports (raw - mean) / std).

Tiny world (`CLIPPreference`): the CLIP towers of the `clip` stage fine-tuned on comparisons, the
design of PickScore and HPS v2 (CLIP fine-tuned on human preference pairs):

    r(image, prompt) = exp(s) * cos(image embedding, text embedding) + q(image embedding)

with a learned temperature s and, for the human-preference role, a prompt-free quality head q
(LAION's linear MLP), because people judge how an image is drawn as well as what it shows. The
lower vision layers stay frozen, as ImageReward freezes most of BLIP. A cross-attention fusion
model (ImageReward's own BLIP design, `rewards.fusion`) trained from scratch did not beat chance
within this stage's time budget on the tiny CPU, while the CLIP towers start from a model that
already aligns images and text.

Temperature: the CLIP's exp(s) is its contrastive one (a softmax over a batch of captions); on the simulated
rater's noisy pairs the Bradley-Terry optimum is several times smaller, and with a small learning rate s barely
moves in a short fine-tuning, so the first updates chase confidently mis-ordered pairs and the fine-tuned reward
can end below its CLIP on held-out rater pairs. `calibrate_temperature` fits s on the image-side training pairs
before fine-tuning (`PairwiseTraining(calibrate=True)`; the reward report records the loss before and after).

Paper scale: `load_preference` also reads ImageReward v1.0 / IterComp-style BLIP checkpoints
(`rewards.fusion.load_imagereward`), behind the same call.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import paths
from ..tensors import to_float, unwrap
from .base import ImagePreprocess
from .clip import _features
from .pairs import Comparisons
from .parts import PreferenceHead, ZScoredReward, freeze_vision, run_vision

FORMAT = "clip-preference"


class CLIPPreference(nn.Module):
    """r = exp(s) * cos(CLIP image, CLIP text) [+ q(image embedding)]."""

    def __init__(self, clip, quality_head: bool, head_dims: Sequence[int] = (256, 64, 16)):
        super().__init__()
        self.clip = clip
        self.log_scale = nn.Parameter(clip.logit_scale.detach().clone().float().reshape(()))
        self.quality = PreferenceHead(clip.config.projection_dim, head_dims) if quality_head else None
        if self.quality is not None:
            nn.init.zeros_(self.quality.layers[-1].weight)  # start as the CLIP score; learn quality from the pairs

    def trainable(self, trainable_vision_layers: int) -> CLIPPreference:
        self.requires_grad_(True)
        self.clip.logit_scale.requires_grad_(False)  # unused: the preference temperature is log_scale
        freeze_vision(self.clip.vision_model, trainable_vision_layers)
        if trainable_vision_layers <= 0:
            self.clip.visual_projection.requires_grad_(False)
        return self

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        v = self.clip.vision_model
        h = run_vision(v, pixel_values, clip_style=True)
        f = self.clip.visual_projection(v.post_layernorm(h[:, 0]))
        return f / f.norm(dim=-1, keepdim=True)

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        f = _features(self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask))
        return f / f.norm(dim=-1, keepdim=True)

    def score_encoded(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        r = self.log_scale.exp() * (images * self.encode_texts(input_ids, attention_mask)).sum(-1)
        return r if self.quality is None else r + self.quality(images)

    def forward(self, pixel_values, input_ids, attention_mask) -> torch.Tensor:
        return self.score_encoded(self.encode_images(pixel_values), input_ids, attention_mask)


class CLIPPreferenceReward(ZScoredReward):
    """The tiny world's learned preference reward, saved as a folder: clip/ (a CLIPModel with its tokenizer
    and preprocessing), preference.safetensors (temperature and quality head), reward_config.json."""

    def save(self, out_dir: str | Path, extra: dict | None = None) -> None:
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.clip.save_pretrained(str(out / "clip"))
        self.tokenizer.save_pretrained(str(out / "clip"))
        (out / "clip" / "preprocessor_config.json").write_text(json.dumps(self.preprocess.config(), indent=1))
        state = {"log_scale": self.model.log_scale.detach().reshape(1)}
        head_dims = []
        if self.model.quality is not None:
            state |= {f"quality.{k}": v.contiguous() for k, v in self.model.quality.state_dict().items()}
            head_dims = [m.out_features for m in self.model.quality.layers if isinstance(m, nn.Linear)][:-1]
        save_file(state, str(out / "preference.safetensors"))
        cfg = {
            "format": FORMAT,
            "name": self.name,
            "max_length": self.max_length,
            "mean": self.mean,
            "std": self.std,
            "quality_head": self.model.quality is not None,
            "head_dims": head_dims,
            **(extra or {}),
        }
        (out / "reward_config.json").write_text(json.dumps(cfg, indent=1, sort_keys=True))

    @classmethod
    def load_folder(cls, folder: Path, device=None) -> CLIPPreferenceReward:
        from safetensors.torch import load_file
        from transformers import AutoTokenizer, CLIPModel

        cfg = json.loads((folder / "reward_config.json").read_text())
        clip = CLIPModel.from_pretrained(str(folder / "clip"))
        model = CLIPPreference(clip, cfg["quality_head"], cfg["head_dims"] or (256, 64, 16))
        state = load_file(str(folder / "preference.safetensors"))
        with torch.no_grad():
            model.log_scale.copy_(state.pop("log_scale").reshape(()))
        if model.quality is not None:
            model.quality.load_state_dict({k[len("quality.") :]: v for k, v in state.items()})
        tok = AutoTokenizer.from_pretrained(str(folder / "clip"))
        pre = ImagePreprocess.from_folder(folder / "clip", clip.config.vision_config.image_size)
        return cls(model, tok, pre, cfg["name"], cfg["max_length"], cfg["mean"], cfg["std"], device)


def build_clip_preference(
    clip_dir: str | Path,
    name: str,
    quality_head: bool,
    device=None,
    head_dims: Sequence[int] = (256, 64, 16),
    seed: int = 0,
) -> CLIPPreferenceReward:
    """A preference reward initialised from a trained CLIP folder (the tiny world's `clip` stage output)."""
    from transformers import AutoTokenizer, CLIPModel

    folder = paths.resolve(clip_dir)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"no CLIP model at {folder}: run `dvc repro clip` first")
    torch.manual_seed(seed)
    clip = CLIPModel.from_pretrained(str(folder))
    tok = AutoTokenizer.from_pretrained(str(folder))
    pre = ImagePreprocess.from_folder(folder, clip.config.vision_config.image_size)
    return CLIPPreferenceReward(
        CLIPPreference(clip, quality_head, head_dims), tok, pre, name, tok.model_max_length, device=device
    )


def load_preference(source: str | Path, device=None, **kw):
    """A learned preference reward: a folder written by the `rewards` stage (tiny world), or an ImageReward /
    IterComp-style BLIP checkpoint (a .pt file, a folder holding one, or a hub id such as THUDM/ImageReward)."""
    from .fusion import FusionReward, load_imagereward

    local = paths.resolve(source) if str(source).startswith(("models", ".", "/")) else None
    if local is not None and (local / "reward_config.json").exists():
        fmt = json.loads((local / "reward_config.json").read_text()).get("format")
        if fmt == FORMAT:
            return CLIPPreferenceReward.load_folder(local, device)
        if fmt == "fusion-reward":
            return FusionReward.load_folder(local, device)
        raise ValueError(f"{local}/reward_config.json has unknown format {fmt!r}")
    if local is not None and not local.exists():
        raise FileNotFoundError(
            f"no reward model at {local}: run `dvc repro rewards` first (or give an ImageReward checkpoint / hub id)"
        )
    return load_imagereward(local if local is not None else str(source), device=device, **kw)


# ----------------------------------------------------------------------------- training and accuracy
def bt_loss(diff: np.ndarray) -> float:
    """Mean Bradley-Terry negative log-likelihood -log sigmoid(diff) of score differences (winner - loser)."""
    return float(np.logaddexp(0.0, -np.asarray(diff, dtype=np.float64)).mean()) if len(diff) else float("nan")


def calibrate_temperature(
    reward, comps: Comparisons, kind: int | None = 0, max_comparisons: int = 4000, seed: int = 0
) -> dict:
    """Rescale a `CLIPPreference` reward's temperature exp(log_scale) to the Bradley-Terry optimum on training
    comparisons (those of `kind`, all if it has none), before fine-tuning.

    The CLIP's temperature is its contrastive one (a softmax over a batch of captions); on a noisy judge's
    pairs it is several times too sharp, so the loss starts far above its optimum and the first updates chase
    confidently mis-ordered pairs. The factor c minimises mean softplus(-c * (r_win - r_lose)), a convex
    function of c, by golden-section search on log c in [-4.6, 4.6]."""
    if not hasattr(reward.model, "log_scale"):
        raise TypeError(f"{type(reward.model).__name__} has no temperature (log_scale) to calibrate")
    idx = (
        np.nonzero(comps.kind == kind)[0] if kind is not None and (comps.kind == kind).any() else np.arange(len(comps))
    )
    if len(idx) > max_comparisons:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_comparisons, replace=False))
    w, l = item_scores(reward, comps.subset(idx))
    d = w - l
    lo, hi = -4.6, 4.6
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = bt_loss(np.exp(a) * d), bt_loss(np.exp(b) * d)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = bt_loss(np.exp(a) * d)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = bt_loss(np.exp(b) * d)
    log_c = (lo + hi) / 2
    model = reward.model
    before = float(model.log_scale.exp())
    with torch.no_grad():
        model.log_scale.add_(log_c)
    return {
        "temperature_before": round(before, 4),
        "temperature": round(float(model.log_scale.exp()), 4),
        "calibrated_on": len(idx),
        "bt_loss_before": round(bt_loss(d), 4),
        "bt_loss_after": round(bt_loss(np.exp(log_c) * d), 4),
    }


class PairwiseTraining:
    """Bradley-Terry on comparisons (ImageReward's and PickScore's loss): -log sigmoid(r(win) - r(lose)).

    Each step draws `batch_size` comparisons; an image shared by several items of the batch is encoded
    once. `save` z-scores the reward on `norm_images`/`norm_prompts` (the base model's generations) and
    writes the folder. `calibrate=True` first rescales the temperature on the image-side comparisons
    (`calibrate_temperature`; the result is in `self.calibration`).
    """

    def __init__(
        self,
        reward: ZScoredReward,
        comps: Comparisons,
        batch_size: int,
        trainable_vision_layers: int,
        norm_images: np.ndarray,
        norm_prompts: Sequence[str],
        name: str | None = None,
        fingerprint: dict | None = None,
        extra_config: dict | None = None,
        calibrate: bool = False,
    ):
        if len(comps) == 0:
            raise ValueError(f"{name or reward.name}: no comparisons to train on (was every pair a tie?)")
        self.reward, self.comps, self.batch_size = reward, comps, batch_size
        self.name = name or reward.name
        self.trainable_vision_layers = trainable_vision_layers
        self.norm_images, self.norm_prompts = norm_images, list(norm_prompts)
        self._fp, self.extra = dict(fingerprint or {}), dict(extra_config or {})
        self.calibrate = bool(calibrate)
        self.calibration = calibrate_temperature(reward, comps) if self.calibrate else None
        tok = reward.tokenizer(
            list(comps.texts), padding="max_length", truncation=True, max_length=reward.max_length, return_tensors="pt"
        )
        self.ids, self.mask = tok.input_ids, tok.attention_mask
        self.model = reward.model.trainable(trainable_vision_layers)
        self._encoded: torch.Tensor | None = None  # every pool image, encoded once when the vision side is frozen

    def modules(self):
        return {"reward": self.model}

    def bind(self, prepared):
        self.model = prepared["reward"]

    def fingerprint(self) -> dict:
        c = self.comps
        h = hashlib.md5(np.ascontiguousarray(c.images).tobytes())
        h.update(json.dumps(c.texts).encode())
        h.update(c.win.tobytes() + c.lose.tobytes())
        return {
            "kind": "pairwise-bt",
            "batch": self.batch_size,
            "data": h.hexdigest(),
            "trainable_vision_layers": self.trainable_vision_layers,
            "calibrate": self.calibrate,
            **self._fp,
        }

    def loss(self, step: int, gen: torch.Generator):
        m = unwrap(self.model)
        dev = next(m.parameters()).device
        idx = torch.randint(len(self.comps), (self.batch_size,), generator=gen).numpy()
        items = np.concatenate([self.comps.win[idx], self.comps.lose[idx]])
        if self.trainable_vision_layers == 0:
            if self._encoded is None:
                self._encoded = self._encode_pool(m, dev)
            enc = self._encoded[torch.from_numpy(items[:, 0]).to(dev)]
        else:
            uniq, inv = np.unique(items[:, 0], return_inverse=True)
            px = to_float(self.comps.images[uniq], dev)
            enc = m.encode_images(self.reward.preprocess(px))[torch.from_numpy(inv.reshape(-1)).to(dev)]
        ids, mask = self.ids[items[:, 1]], self.mask[items[:, 1]]
        width = int(mask.sum(1).max())
        r = m.score_encoded(enc, ids[:, :width].to(dev), mask[:, :width].to(dev))
        diff = r[: len(idx)] - r[len(idx) :]
        loss = F.softplus(-diff).mean()
        hit = (diff > 0).float()
        kind = torch.from_numpy(self.comps.kind[idx]).to(dev)
        metrics = {"batch_acc": hit.mean().item()}
        for k, label in ((0, "acc_image_side"), (1, "acc_text_side")):
            sel = kind == k
            metrics[label] = hit[sel].mean().item() if sel.any() else float("nan")
        return loss, metrics

    @torch.no_grad()
    def _encode_pool(self, m, dev) -> torch.Tensor:
        out = []
        for s in range(0, len(self.comps.images), 512):
            px = to_float(self.comps.images[s : s + 512], dev)
            out.append(m.encode_images(self.reward.preprocess(px)))
        return torch.cat(out)

    def save(self, out_dir: Path) -> None:
        self.reward.model = unwrap(self.model).eval().requires_grad_(False)
        x = to_float(self.norm_images)
        raw = self.reward.raw(x, self.norm_prompts)
        self.reward.mean, self.reward.std = float(raw.mean()), float(raw.std().clamp_min(1e-6))
        self.reward.save(out_dir, {"normalised_on": len(self.norm_prompts), **self.extra})


@torch.no_grad()
def item_scores(reward, comps: Comparisons, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The reward of every compared item: (scores of the preferred items, scores of the others); empty
    arrays for no comparisons."""
    if len(comps) == 0:
        return np.zeros(0), np.zeros(0)
    items = np.concatenate([comps.win, comps.lose])
    uniq, inv = np.unique(items, axis=0, return_inverse=True)
    scores = []
    for s in range(0, len(uniq), batch_size):
        chunk = uniq[s : s + batch_size]
        px = to_float(comps.images[chunk[:, 0]])
        scores.append(torch.as_tensor(reward(px.to(reward.device), [comps.texts[t] for t in chunk[:, 1]])).cpu())
    r = torch.cat(scores).double().numpy()[inv.reshape(-1)]
    return r[: len(comps)], r[len(comps) :]


def pairwise_accuracy(reward, comps: Comparisons) -> dict:
    """Share of comparisons the reward orders as the judge did, overall and per kind (exact ties count half).
    No comparisons (a judge that tied every pair of a small set): accuracy None, n 0."""
    if len(comps) == 0:
        return {"accuracy": None, "n": 0}
    w, l = item_scores(reward, comps)
    hit = (w > l) + 0.5 * (w == l)
    out = {"accuracy": round(float(hit.mean()), 4), "n": len(comps)}
    for k, label in ((0, "image_side"), (1, "text_side")):
        sel = comps.kind == k
        if sel.any():
            out[label] = {"accuracy": round(float(hit[sel].mean()), 4), "n": int(sel.sum())}
    return out
