"""The simulated human rater of the tiny world: the ground truth behind every human judgement.

The paper's human-preference signals (ImageReward's training rankings, the aesthetic ratings
behind the LAION predictor, Pick-a-Pic's choices, D3PO's online feedback, the user study of
Fig. 7) all come from people. Here they come from one fixed, documented rater that judges an
image by two things a person looks at:

* **alignment** with the prompt: the share of the prompt's claims that hold in the image (the
  scene parser, exact);
* **quality**, independent of the prompt, in [0, 1]: the mean of four measurements of how
  cleanly an image is drawn (renders of the world score 1.0 on each):
  - ``crisp``: share of tinted pixels that are fully saturated (blurred or muddy edges are not);
  - ``clean``: the background is flat (1 minus its brightness deviation, scaled so that a
    deviation of 0.08 or more scores 0);
  - ``formed``: mean intersection-over-union of each object with the ideal shape it reads as;
  - ``pure``: colours sit on the palette (1 minus the mean hue distance of objects to the nearest
    palette hue, in units of half the palette spacing); stray fragments too small to be objects
    (under the parser's minimum area) cost 0.1 per 6 stray pixels (about one fragment), down to 0.

utility = ALIGNMENT_WEIGHT * alignment + (1 - ALIGNMENT_WEIGHT) * quality.

A judgement is noisy, as people are: comparing two images the rater perceives the utility
difference plus logistic noise of scale ``temperature`` (a Bradley-Terry chooser), and calls the
pair *comparable* when the perceived difference is within ``tie_band``. Aesthetic ratings are
1 + 9 * quality plus Gaussian noise (``rating_noise``), clipped to [1, 10] (the LAION scale).
All randomness comes from a torch.Generator the caller passes, so judgements are reproducible.

How the rater judges the base model's images (its alignment and quality, how many pairs it calls comparable,
the noise ceiling: how often its noiseless utility agrees with its own noisy choices, the ceiling for any learned
model of it) is measured by stage feedback into results/feedback_report.json; renders of the world score
alignment 1 and quality near 1 (tests/test_rater.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .caption import Spec, parse_prompt
from .parser import PALETTE_HUES, SAT_MIN, _hue_sat_val, as_float_images, claims_satisfied, detect

ALIGNMENT_WEIGHT = 0.65
CRISP_SAT = 0.6  # palette colours have saturation 0.73-0.87; edge blends with the background are below
TINT_SAT = 0.08  # pixels with any tint (the grey and white backgrounds have saturation 0)
CLEAN_SCALE = 0.08  # background brightness deviation that makes `clean` 0
FRAGMENT_COST = 0.1
HALF_SPACING = math.pi / len(PALETTE_HUES)  # half the hue distance between neighbouring palette colours


@dataclass
class Judgement:
    """Per-image parts of the rater's view (all (N,) float64 tensors in [0, 1])."""

    alignment: torch.Tensor
    crisp: torch.Tensor
    clean: torch.Tensor
    formed: torch.Tensor
    pure: torch.Tensor

    @property
    def quality(self) -> torch.Tensor:
        return (self.crisp + self.clean + self.formed + self.pure) / 4

    @property
    def utility(self) -> torch.Tensor:
        return ALIGNMENT_WEIGHT * self.alignment + (1 - ALIGNMENT_WEIGHT) * self.quality


def _specs(prompts: Sequence[str | Spec | dict]) -> list[Spec]:
    return [
        p if isinstance(p, Spec) else Spec.from_json(p) if isinstance(p, dict) else parse_prompt(p) for p in prompts
    ]


@torch.no_grad()
def pixel_quality(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`crisp` and `clean` of float images (N, 3, H, W) in [0, 1], batched."""
    _, sat, val = _hue_sat_val(img)
    tinted = (sat > TINT_SAT).double()
    crisp_px = (sat > CRISP_SAT).double()
    crisp = crisp_px.sum((1, 2)) / tinted.sum((1, 2)).clamp_min(1)
    crisp = torch.where(tinted.sum((1, 2)) > 0, crisp, torch.zeros_like(crisp))
    bg = (sat <= TINT_SAT).double()
    n_bg = bg.sum((1, 2)).clamp_min(1)
    # the background's typical brightness: the mean over untinted pixels, then the mean absolute deviation
    mu = (val.double() * bg).sum((1, 2)) / n_bg
    dev = ((val.double() - mu[:, None, None]).abs() * bg).sum((1, 2)) / n_bg
    clean = (1 - dev / CLEAN_SCALE).clamp(0, 1)
    return crisp, clean


def _quality_parts(img: torch.Tensor, dets) -> dict[str, torch.Tensor]:
    crisp, clean = pixel_quality(img)
    formed = torch.tensor([sum(d.shape_iou for d in ds) / len(ds) if ds else 0.0 for ds in dets], dtype=torch.float64)
    return {"crisp": crisp, "clean": clean, "formed": formed, "pure": _palette_purity(img, dets)}


@torch.no_grad()
def quality(images) -> torch.Tensor:
    """The rater's prompt-free quality judgement in [0, 1] (noiseless)."""
    img = as_float_images(images)
    parts = _quality_parts(img, detect(img))
    return sum(parts.values()) / len(parts)


@torch.no_grad()
def judge(images, prompts: Sequence[str | Spec | dict]) -> Judgement:
    """The rater's noiseless view of each image against its prompt."""
    img = as_float_images(images)
    specs = _specs(prompts)
    if len(specs) != img.shape[0]:
        raise ValueError(f"rater got {img.shape[0]} images but {len(specs)} prompts")
    dets = detect(img)
    alignment = torch.tensor([claims_satisfied(s, d) / s.n_claims for s, d in zip(specs, dets)], dtype=torch.float64)
    return Judgement(alignment, **_quality_parts(img, dets))


def _palette_purity(img: torch.Tensor, dets) -> torch.Tensor:
    """1 - mean hue distance of the objects to the palette (half-spacing units), minus fragment costs."""
    hue, sat, _ = _hue_sat_val(img)
    fg = sat > SAT_MIN
    # the hue of every object pixel against its nearest palette hue; averaged per image over objects' pixels
    d = torch.remainder(hue[..., None] - PALETTE_HUES.to(hue) + math.pi, 2 * math.pi) - math.pi
    off = (d.abs().amin(-1) / HALF_SPACING).clamp(0, 1).double()
    n_fg = fg.sum((1, 2)).double()
    mean_off = (off * fg).sum((1, 2)) / n_fg.clamp_min(1)
    # fragments: foreground pixels not covered by any detected object (components under the minimum area)
    covered = torch.tensor([sum(x.area for x in ds) for ds in dets], dtype=torch.float64)
    stray = (n_fg - covered).clamp_min(0)
    n_fragments = torch.ceil(stray / 6)  # a fragment is a few pixels; cost by the mass of stray pixels
    pure = (1 - mean_off - FRAGMENT_COST * n_fragments).clamp(0, 1)
    return torch.where(n_fg > 0, pure, torch.zeros_like(pure))


PALETTE_SATURATION = 0.8  # the palette's saturations lie in 0.73-0.87 (half-brightness texture shades too)


@torch.no_grad()
def vividness(images) -> torch.Tensor:
    """Mean saturation of object pixels relative to the palette's (clipped to 1); 0 without objects. The
    tiny world's grader uses it for the rubric's 'emotional resonance' (a documented stand-in)."""
    _, sat, _ = _hue_sat_val(as_float_images(images))
    fg = (sat > SAT_MIN).double()
    v = ((sat.double() / PALETTE_SATURATION).clamp(max=1) * fg).sum((1, 2)) / fg.sum((1, 2)).clamp_min(1)
    return torch.where(fg.sum((1, 2)) > 0, v, torch.zeros_like(v))


def rating_scale(q):
    """A quality in [0, 1] on the LAION 1-10 rating scale (the noiseless rating; `Rater.rate` adds the noise)."""
    return 1 + 9 * q


@dataclass
class Rater:
    """A noisy human: pairwise choices with ties and 1-10 aesthetic ratings (see the module docstring)."""

    temperature: float = 0.05
    tie_band: float = 0.02
    rating_noise: float = 0.5

    def utility(self, images, prompts) -> torch.Tensor:
        return judge(images, prompts).utility

    def compare(self, images_a, images_b, prompts, gen: torch.Generator) -> torch.Tensor:
        """+1 where the rater prefers a, -1 where b, 0 where it calls the pair comparable (int64, (N,))."""
        return self.compare_utilities(self.utility(images_a, prompts), self.utility(images_b, prompts), gen)

    def compare_utilities(self, utility_a: torch.Tensor, utility_b: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """`compare` on utilities already computed (a pool of images judged once, compared in many pairs)."""
        diff = utility_a - utility_b
        u = torch.rand(diff.shape, generator=gen, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
        perceived = diff + self.temperature * torch.log(u / (1 - u))  # logistic noise: Bradley-Terry
        out = torch.sign(perceived).long()
        out[perceived.abs() <= self.tie_band] = 0
        return out

    def prefer(self, images_a, images_b, prompts, gen: torch.Generator) -> torch.Tensor:
        """Forced choice (no ties): True where a is preferred. P(a) = sigmoid(diff / temperature)."""
        diff = self.utility(images_a, prompts) - self.utility(images_b, prompts)
        return torch.rand(diff.shape, generator=gen, dtype=torch.float64) < torch.sigmoid(diff / self.temperature)

    def rate(self, images, gen: torch.Generator) -> torch.Tensor:
        """Aesthetic ratings on the LAION 1-10 scale (prompt-free)."""
        return self.rate_quality(quality(images), gen)

    def rate_quality(self, q: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """`rate` on qualities already computed (`judge(...).quality`)."""
        noise = torch.randn(q.shape, generator=gen, dtype=torch.float64) * self.rating_noise
        return (rating_scale(q) + noise).clamp(1, 10)


__all__ = ["Rater", "Judgement", "judge", "quality", "rating_scale", "pixel_quality", "vividness", "ALIGNMENT_WEIGHT"]
