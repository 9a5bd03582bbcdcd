"""Scene parser: images -> detected objects -> how many of a prompt's claims hold.

This is the tiny world's exact evaluator (the role T2I-CompBench's BLIP-VQA and UniDet play
for real images). Detection is batched in torch:

1. foreground = saturated pixels (the background and only the background is grey/white);
2. connected components by max-label propagation over 8-neighbourhoods;
3. per-component statistics by scatter-add: bounding box (position, extent -> size), hue
   (saturation-weighted circular mean -> colour), intersection-over-union with each ideal shape
   drawn at the box (shape), and the brightness pattern of the interior (texture: flat = plain;
   dark rows = striped; dark in both directions = checkered).

Scoring matches the prompt's noun phrases to detections (injective, maximising the number of
satisfied claims); a phrase with a number claims exactly that many matching objects.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..tensors import to_float
from . import vocab
from .caption import Phrase, Spec, parse_prompt
from .render import shape_mask as shape_inside
from .scene import extent, holds

SAT_MIN = 0.3  # saturation above which a pixel belongs to an object (a 50/50 blend with the background is ~0.4)
# Coefficient of variation of the brightness inside an object above which it is textured: a crisp
# texture gives 0.33 (half the pixels at half brightness); plain objects decoded by the tiny VAE
# stay below 0.09 and textured ones above 0.10 (measured on 300 reconstructions).
VARIATION_MIN = 0.095


def _hue_sat_val(img: torch.Tensor):
    """img (N, 3, H, W) in [0, 1] -> hue in radians, saturation, value."""
    r, g, b = img[:, 0], img[:, 1], img[:, 2]
    mx, _ = img.max(1)
    mn, _ = img.min(1)
    c = mx - mn
    sat = c / mx.clamp_min(1e-6)
    cs = c.clamp_min(1e-6)
    h = torch.where(mx == r, ((g - b) / cs) % 6, torch.where(mx == g, (b - r) / cs + 2, (r - g) / cs + 4))
    return h * (math.pi / 3), sat, mx


def _palette_hues() -> torch.Tensor:
    rgb = torch.tensor([vocab.RGB[c] for c in vocab.COLORS], dtype=torch.float32).T[None, :, :, None] / 255
    h, _, _ = _hue_sat_val(rgb)
    return h[0, :, 0]


PALETTE_HUES = _palette_hues()


@dataclass(frozen=True)
class Detection:
    shape: str
    color: str
    texture: str
    size: str
    x: float  # centre of the bounding box, pixels (the renderer's notion of an object's position)
    y: float
    area: int
    extent: int
    shape_iou: float = 1.0  # intersection-over-union with the ideal shape read (how well-formed it is)


def as_float_images(images) -> torch.Tensor:
    """Accept uint8 (N, H, W, 3) arrays/tensors or float (N, 3, H, W) in [0, 1] on any device; return the latter
    on the host, where the world's parser and rater run (small images, data-dependent loops)."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    images = images.detach().cpu()
    if images.dtype == torch.uint8:
        if images.shape[-1] != 3:
            raise ValueError(f"uint8 images must be (N, H, W, 3), got {tuple(images.shape)}")
        return to_float(images)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"float images must be (N, 3, H, W) in [0, 1], got {tuple(images.shape)}")
    return images.float().clamp(0, 1)


def label_components(fg: torch.Tensor) -> torch.Tensor:
    """8-connected components of a (N, H, W) bool mask; labels are int64, 0 = background."""
    n, h, w = fg.shape
    lab = torch.arange(1, n * h * w + 1, dtype=torch.float64).view(n, h, w) * fg
    for _ in range(h * w):
        new = F.max_pool2d(lab[:, None], 3, stride=1, padding=1)[:, 0] * fg
        if torch.equal(new, lab):
            break
        lab = new
    return lab.long()


def image_of_components(inv: torch.Tensor, n: int, h: int, w: int, k: int) -> torch.Tensor:
    """Index of the image each component label belongs to."""
    return torch.zeros(k, dtype=torch.long).scatter_reduce(
        0, inv.reshape(-1), torch.arange(n).repeat_interleave(h * w), "amax", include_self=False
    )


@torch.no_grad()
def detect(images, canvas: int | None = None) -> list[list[Detection]]:
    img = as_float_images(images)
    n, _, h, w = img.shape
    canvas = canvas or h
    hue, sat, val = _hue_sat_val(img)
    fg = sat > SAT_MIN
    lab = label_components(fg)
    ids, inv = torch.unique(lab.view(-1), return_inverse=True)  # ids[0] == 0 is the background
    k = len(ids)
    inv = inv.view(n, h, w)
    flat_inv = inv.reshape(-1)

    def ssum(x, where=None):
        x = x.double() if where is None else (x.double() * where)
        return torch.zeros(k, dtype=torch.float64).index_add_(0, flat_inv, x.reshape(-1))

    def sreduce(x, how):
        init = torch.full((k,), float("inf") if how == "amin" else float("-inf"), dtype=torch.float64)
        return init.scatter_reduce(0, flat_inv, x.reshape(-1).double(), how)

    ys = torch.arange(h, dtype=torch.float64)[None, :, None].expand(n, h, w)
    xs = torch.arange(w, dtype=torch.float64)[None, None, :].expand(n, h, w)
    area = ssum(torch.ones(n, h, w))
    x0, x1, y0, y1 = sreduce(xs, "amin"), sreduce(xs, "amax"), sreduce(ys, "amin"), sreduce(ys, "amax")
    ext = torch.maximum(x1 - x0 + 1, y1 - y0 + 1)

    # shape: intersection-over-union with each ideal shape drawn at the component's box (renderer math)
    # (templates are drawn in a window around each box; pixel-grid effects make a shape's box 1 px
    # wider or narrower than its extent, so d = box - 1, box, box + 1 are tried)
    comps = torch.arange(1, k)
    r = int(ext[1:].max().item()) // 2 + 2 if k > 1 else 1
    off = torch.arange(-r, r + 1)
    cx2, cy2 = (x0 + x1 + 1)[1:], (y0 + y1 + 1)[1:]  # box centres, half-pixel units
    px = (cx2.floor().long() // 2)[:, None, None] + off[None, None, :]  # (K-1, 1, W)
    py = (cy2.floor().long() // 2)[:, None, None] + off[None, :, None]  # (K-1, W, 1)
    inside_img = (px >= 0) & (px < w) & (py >= 0) & (py < h)
    img_idx = image_of_components(inv, n, h, w, k)[1:, None, None]
    member = inside_img & (inv[img_idx, py.clamp(0, h - 1), px.clamp(0, w - 1)] == comps[:, None, None])
    u = (2 * px + 1 - cx2[:, None, None]).double()
    v = (2 * py + 1 - cy2[:, None, None]).double()
    iou = []
    for name in vocab.SHAPES:
        best = torch.zeros(k - 1, dtype=torch.float64)
        for delta in (-1, 0, 1):
            t = shape_inside(name, u, v, (ext[1:] + delta).clamp_min(1)[:, None, None])
            inter = (t & member).sum((1, 2)).double()
            best = torch.maximum(best, inter / (t | member).sum((1, 2)).clamp_min(1).double())
        iou.append(torch.cat([torch.zeros(1, dtype=torch.float64), best]))
    iou = torch.stack(iou, 1)
    shape_idx = iou.argmax(1)
    shape_iou = iou.amax(1)

    # colour: saturation-weighted circular mean of the hue, nearest palette hue
    comp_hue = torch.atan2(ssum(sat * torch.sin(hue)), ssum(sat * torch.cos(hue)))
    dist = torch.remainder(comp_hue[:, None] - PALETTE_HUES[None].double() + math.pi, 2 * math.pi) - math.pi
    color_idx = dist.abs().argmin(1)

    # texture, from the interior (pixels whose 4 neighbours are in the same component; edges blend
    # with the background): plain if the brightness barely varies, else the dark pixels (below the
    # interior's mean brightness) alternate by rows (striped) or both ways (checkered)
    pad = F.pad(inv, (1, 1, 1, 1), value=-1)
    interior = (
        fg
        & (pad[:, :-2, 1:-1] == inv)
        & (pad[:, 2:, 1:-1] == inv)
        & (pad[:, 1:-1, :-2] == inv)
        & (pad[:, 1:-1, 2:] == inv)
    )
    n_int = ssum(interior)
    v_mean = ssum(val, interior) / n_int.clamp_min(1)
    v_std = (ssum(val**2, interior) / n_int.clamp_min(1) - v_mean**2).clamp_min(0).sqrt()
    variation = torch.where(n_int >= 4, v_std / v_mean.clamp_min(1e-6), torch.zeros_like(v_mean))
    dark = interior & (val < v_mean[inv])
    pair_h = interior[:, :, 1:] & interior[:, :, :-1] & (inv[:, :, 1:] == inv[:, :, :-1])
    pair_v = interior[:, 1:, :] & interior[:, :-1, :] & (inv[:, 1:, :] == inv[:, :-1, :])

    def rate(pair, a, b, owner):
        changes = torch.zeros(k, dtype=torch.float64).index_add_(0, owner[pair], (a != b)[pair].double())
        return changes / torch.zeros(k, dtype=torch.float64).index_add_(
            0, owner[pair], torch.ones(int(pair.sum()), dtype=torch.float64)
        ).clamp_min(1)

    rate_h = rate(pair_h, dark[:, :, 1:], dark[:, :, :-1], inv[:, :, 1:])
    rate_v = rate(pair_v, dark[:, 1:, :], dark[:, :-1, :], inv[:, 1:, :])

    size_cut = (extent("small", canvas) + extent("big", canvas)) / 2
    min_area = max(4.0, 12.0 * (canvas / 32) ** 2)
    image_of = image_of_components(inv, n, h, w, k)

    out: list[list[Detection]] = [[] for _ in range(n)]
    for c in range(1, k):
        if area[c] < min_area:
            continue
        if variation[c] < VARIATION_MIN:
            texture = "plain"
        elif rate_h[c] < 0.3 * rate_v[c]:  # reconstructed stripes stay below 0.3, checks mostly above
            texture = "striped"
        else:
            texture = "checkered"
        out[int(image_of[c])].append(
            Detection(
                shape=vocab.SHAPES[int(shape_idx[c])],
                color=vocab.COLORS[int(color_idx[c])],
                texture=texture,
                size="big" if ext[c] > size_cut else "small",
                x=float(x0[c] + x1[c] + 1) / 2,
                y=float(y0[c] + y1[c] + 1) / 2,
                area=int(area[c]),
                extent=int(ext[c]),
                shape_iou=round(float(shape_iou[c]), 6),
            )
        )
    for dets in out:
        dets.sort(key=lambda d: (d.y, d.x))
    return out


def relation_holds(a: Detection, rel: str, b: Detection) -> bool:
    return holds(a, rel, b, position=lambda d: (d.x, d.y))


def claims_satisfied(spec: Spec, dets: list[Detection]) -> int:
    """Largest number of the spec's claims that one assignment of phrases to detections satisfies."""
    counted = {i for i, p in enumerate(spec.phrases) if p.count is not None}
    base = sum(sum(p.matches(d) for d in dets) == p.count for i, p in enumerate(spec.phrases) if i in counted)
    singular = [i for i in range(len(spec.phrases)) if i not in counted]
    options = [[None] + [j for j, d in enumerate(dets) if spec.phrases[i].matches(d)] for i in singular]
    best = 0
    for choice in itertools.product(*options):
        used = [c for c in choice if c is not None]
        if len(used) != len(set(used)):
            continue
        assign = dict(zip(singular, choice))
        sat = len(used)
        for i, rel, j in spec.relations:
            a, b = assign.get(i), assign.get(j)
            if a is not None and b is not None and relation_holds(dets[a], rel, dets[b]):
                sat += 1
            elif i in counted or j in counted:  # relation of a counted group: every member must satisfy it
                left = (
                    [d for d in dets if spec.phrases[i].matches(d)]
                    if i in counted
                    else ([dets[a]] if a is not None else [])
                )
                right = (
                    [d for d in dets if spec.phrases[j].matches(d)]
                    if j in counted
                    else ([dets[b]] if b is not None else [])
                )
                if left and right and all(relation_holds(x, rel, y) for x in left for y in right):
                    sat += 1
        best = max(best, sat)
    return base + best


def score(images, prompts, canvas: int | None = None) -> dict[str, torch.Tensor]:
    """Per-image fraction of satisfied claims (`score`) and all-claims-hold indicator (`exact`).

    `prompts` are strings or `Spec`s, one per image.
    """
    specs = [p if isinstance(p, Spec) else parse_prompt(p) for p in prompts]
    dets = detect(images, canvas)
    if len(specs) != len(dets):
        raise ValueError(f"{len(dets)} images but {len(specs)} prompts")
    sat = torch.tensor([claims_satisfied(s, d) for s, d in zip(specs, dets)], dtype=torch.float64)
    n = torch.tensor([s.n_claims for s in specs], dtype=torch.float64)
    return {"score": sat / n, "exact": (sat == n).double()}


__all__ = ["Detection", "Phrase", "detect", "score", "claims_satisfied", "relation_holds", "label_components"]
