"""Judged image pairs: seeds and guidance as documented, deterministic judgements, files that round-trip."""

from __future__ import annotations

import numpy as np
import torch

from replication.feedback import FeedbackPool, PreferencePairs, agreement, generate_pairs, generate_pool
from replication.tensors import to_uint8
from replication.world.rater import Rater, judge

PROMPTS = ["a red circle", "a blue square to the left of a green triangle", "two yellow diamonds"]


def test_pool_images_seeds_pairs_and_judgements(micro_sd, tmp_path):
    pool = generate_pool(micro_sd, PROMPTS, seed=5, k=3, num_steps=2, guidance_choices=(1.0, 4.0))
    assert pool.images.shape == (9, 32, 32, 3) and pool.images.dtype == np.uint8
    assert pool.pairs.tolist()[:3] == [[0, 1], [0, 2], [1, 2]] and len(pool.pairs) == 9
    assert set(np.unique(pool.guidance)) <= {1.0, 4.0}
    # image j of prompt i uses seed seed*1_000_003 + k*i + j and its own guidance scale
    i, j = 1, 2
    idx = i * 3 + j
    ref = micro_sd.generate([PROMPTS[i]], [5 * 1_000_003 + idx], num_steps=2, guidance_scale=float(pool.guidance[idx]))
    assert np.abs(to_uint8(ref)[0].astype(int) - pool.images[idx].astype(int)).max() <= 1
    assert set(np.unique(pool.choice)) <= {-1, 0, 1} and ((pool.ratings >= 1) & (pool.ratings <= 10)).all()
    again = generate_pool(micro_sd, PROMPTS, seed=5, k=3, num_steps=2, guidance_choices=(1.0, 4.0))
    assert np.array_equal(again.images, pool.images) and np.array_equal(again.choice, pool.choice)
    assert np.array_equal(again.ratings, pool.ratings)

    loaded = FeedbackPool.load(pool.save(tmp_path / "pool.npz"))
    assert loaded.prompts == pool.prompts and np.array_equal(loaded.images, pool.images)
    sub = loaded.select_prompts([2])
    assert sub.prompts == [PROMPTS[2]] and np.array_equal(sub.images, pool.images[6:9])
    assert sub.pairs.tolist() == [[0, 1], [0, 2], [1, 2]] and np.array_equal(sub.choice, pool.choice[6:9])
    pairs = pool.as_pairs()
    assert len(pairs) == 9 and np.array_equal(pairs.images_b[2], pool.images[2])


def test_generate_pairs_keeps_its_seed_formula(micro_sd, tmp_path):
    pairs = generate_pairs(micro_sd, PROMPTS[:2], seed=3, num_steps=2, guidance_scales=(2.0, 6.0))
    a = micro_sd.generate(PROMPTS[:2], [3 * 1_000_003 + 0, 3 * 1_000_003 + 2], num_steps=2, guidance_scale=2.0)
    b = micro_sd.generate(PROMPTS[:2], [3 * 1_000_003 + 1, 3 * 1_000_003 + 3], num_steps=2, guidance_scale=6.0)
    assert np.abs(to_uint8(a).astype(int) - pairs.images_a.astype(int)).max() <= 1
    assert np.abs(to_uint8(b).astype(int) - pairs.images_b.astype(int)).max() <= 1
    loaded = PreferencePairs.load(pairs.save(tmp_path / "p.npz"))
    assert loaded.prompts == PROMPTS[:2] and np.array_equal(loaded.choice, pairs.choice)
    # the choices are the rater's, drawn with a generator seeded by `seed`
    u_a, u_b = judge(pairs.images_a, PROMPTS[:2]).utility, judge(pairs.images_b, PROMPTS[:2]).utility
    expected = Rater().compare_utilities(u_a, u_b, torch.Generator().manual_seed(3))
    assert np.array_equal(expected.numpy(), pairs.choice)


def test_agreement_is_the_noise_ceiling():
    ua = np.array([1.0, 0.5, 0.2, 0.3, 0.9])
    ub = np.array([0.0, 0.6, 0.2, 0.1, 0.1])
    choice = np.array([1, 1, -1, 0, -1])
    # decided pairs: +1 agrees, +1 disagrees, equal utilities count half, the tie is skipped, -1 disagrees
    assert agreement(ua, ub, choice) == round((1 + 0 + 0.5 + 0) / 4, 4)
