"""The simulated rater: ordering, degradation, Bradley-Terry choice probabilities, ties, ratings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from replication.rewards.pairs import corrupt
from replication.world import Sampler, render_batch, sample_captioned
from replication.world.caption import spec_text
from replication.world.rater import ALIGNMENT_WEIGHT, Rater, judge, quality, rating_scale, vividness


@pytest.fixture(scope="module")
def scenes():
    s = Sampler(np.random.default_rng(7))
    items = [sample_captioned(s, style) for style in ("color", "spatial", "texture", "non_spatial", "complex") * 8]
    return render_batch([i[0] for i in items]), [i[2] for i in items]


def blur(images: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return x.round().byte().permute(0, 2, 3, 1).numpy()


def test_renders_are_judged_perfect(scenes):
    images, specs = scenes
    view = judge(images, specs)
    assert torch.all(view.alignment == 1.0)
    assert view.quality.min() > 0.97, "renders are the world's ideal drawings"


def test_a_correct_render_beats_a_wrong_prompt(scenes):
    images, specs = scenes
    rng = np.random.default_rng(0)
    wrong = [corrupt(s, rng) for s in specs]
    keep = [i for i, w in enumerate(wrong) if w is not None]
    u_true = Rater().utility(images[keep], [specs[i] for i in keep])
    u_wrong = Rater().utility(images[keep], [spec_text(wrong[i]) for i in keep])
    assert (u_true > u_wrong).float().mean() >= 0.95
    assert torch.all(u_true >= u_wrong)


def test_degraded_images_score_lower(scenes):
    images, _ = scenes
    q = quality(images)
    q_blur = quality(blur(images))
    noisy = np.clip(images.astype(np.int16) + np.random.default_rng(0).integers(-40, 41, images.shape), 0, 255)
    q_noise = quality(noisy.astype(np.uint8))
    assert (q_blur < q).float().mean() >= 0.95 and (q_noise < q).float().mean() >= 0.95
    grey = images.mean(-1, keepdims=True).repeat(3, -1).astype(np.uint8)
    assert torch.all(vividness(grey) == 0) and vividness(images).min() > 0.9


def test_choices_follow_bradley_terry_with_ties():
    r = Rater(temperature=0.05, tie_band=0.02)
    n = 40_000
    for d in (0.0, 0.03, 0.1):
        c = r.compare_utilities(
            torch.full((n,), d, dtype=torch.float64),
            torch.zeros(n, dtype=torch.float64),
            torch.Generator().manual_seed(1),
        )
        sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
        p_a = sig((d - r.tie_band) / r.temperature)
        p_tie = sig((d + r.tie_band) / r.temperature) - p_a
        se = math.sqrt(0.25 / n)
        assert abs((c == 1).double().mean().item() - p_a) < 4 * se
        assert abs((c == 0).double().mean().item() - p_tie) < 4 * se
    forced = r.prefer(
        np.zeros((1, 8, 8, 3), np.uint8).repeat(4000, 0),
        np.zeros((4000, 8, 8, 3), np.uint8),
        ["a red circle"] * 4000,
        torch.Generator().manual_seed(2),
    )
    assert abs(forced.double().mean().item() - 0.5) < 4 * math.sqrt(0.25 / 4000), "equal images: a coin flip"


def test_ratings_are_laion_scale_and_track_quality(scenes):
    images, _ = scenes
    r = Rater(rating_noise=0.5)
    q = quality(images)
    ratings = r.rate(images, torch.Generator().manual_seed(0))
    assert ratings.min() >= 1 and ratings.max() <= 10
    assert abs((ratings - (1 + 9 * q)).mean().item()) < 0.3
    noiseless = Rater(rating_noise=0.0).rate(blur(images), torch.Generator().manual_seed(0))
    assert torch.allclose(noiseless, 1 + 9 * quality(blur(images)))
    assert torch.equal(noiseless, rating_scale(quality(blur(images)))), "the rewards report's noiseless rating"


def test_utility_is_the_documented_mix(scenes):
    images, specs = scenes
    v = judge(images[:5], specs[:5])
    assert torch.allclose(v.utility, ALIGNMENT_WEIGHT * v.alignment + (1 - ALIGNMENT_WEIGHT) * v.quality)
    assert torch.allclose(v.quality, (v.crisp + v.clean + v.formed + v.pure) / 4)
