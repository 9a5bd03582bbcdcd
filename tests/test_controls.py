"""The laboratory's controls (replication/recipes/controls.py) and the noise reward of the negative control."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from replication import data, evaluate
from replication.recipes import controls as ctl
from replication.rewards import registry
from replication.rewards.noise import NoiseReward
from replication.tensors import default_device
from replication.train import TrainParams, train
from replication.world import Spec, parse_prompt


def test_noise_reward_is_seeded_fresh_per_call_and_differentiable():
    images = torch.rand(4, 3, 8, 8)
    a, b = NoiseReward(seed=3), NoiseReward(seed=3)
    first = a(images, ["x"] * 4)
    assert torch.equal(first, b(images, ["x"] * 4))  # same seed, same call count: same scores
    assert not torch.equal(first, a(images, ["x"] * 4))  # the next call draws another direction
    assert first.abs().max() <= 100.0 + 1e-4
    x = images.clone().requires_grad_(True)
    NoiseReward(seed=0).with_grad(x, ["x"] * 4).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert isinstance(registry.load_reward("noise"), NoiseReward)
    assert registry.load_reward("noise").seed == 0
    # callers put images on reward.device: a noise reward built without one follows the default device
    assert NoiseReward().device == default_device()
    assert registry.load_reward("noise", "meta").device == torch.device("meta")


def test_noise_reward_gradient_has_no_direction():
    """A fixed direction's gradients add up; the noise reward's average to nearly nothing (the negative control
    gives the trainer no consistent signal)."""
    images = torch.rand(1, 3, 8, 8).requires_grad_(True)
    reward, total = NoiseReward(seed=1), torch.zeros_like(images)
    for _ in range(400):
        (g,) = torch.autograd.grad(reward.with_grad(images, ["x"]).sum(), images)
        total += g / g.norm()
    assert total.norm() / 400 < 0.1  # unit vectors in 192 dimensions: ~ 1 / sqrt(400) = 0.05


def test_noise_reward_source_must_be_a_seed():
    with pytest.raises(ValueError, match="integer seed"):
        NoiseReward.load("models/noise")


def test_verdicts():
    rise = {"delta": 0.04, "ci": [0.01, 0.07], "confidence": 0.95, "n": 100}
    assert ctl.verdict("draft", "clip", rise, "rise", 0.03)["pass"]
    assert not ctl.verdict("draft", "clip", rise, "rise", 0.05)["pass"]  # gain below the bar
    assert not ctl.verdict("draft", "clip", {**rise, "ci": [-0.01, 0.09]}, "rise")["pass"]
    assert ctl.verdict("noise", "clip", {**rise, "ci": [-0.01, 0.09]}, "flat")["pass"]
    assert not ctl.verdict("noise", "clip", rise, "flat")["pass"]


def test_paired_difference_and_family_confidence():
    rng = np.random.default_rng(0)
    b = rng.normal(size=300)
    a = b + 0.5 + rng.normal(scale=0.1, size=300)
    a[:10] = np.nan  # rows a column does not score are left out
    s = ctl.ControlsParams(bootstrap=1000)
    one, four = ctl.paired(a, b, s), ctl.paired(a, b, s, family=4)
    assert one["n"] == 290 and abs(one["delta"] - 0.5) < 0.03
    assert four["confidence"] == pytest.approx(0.9875)
    assert four["ci"][0] < one["ci"][0] < one["ci"][1] < four["ci"][1]  # Bonferroni widens the interval


def test_best_of_candidates_keeps_each_rows_best():
    """A verifier that likes bright images picks, per row and image slot, the brightest candidate."""

    class Brightness:
        name, device = "brightness", torch.device("cpu")

        def __call__(self, images, prompts):
            return images.mean(dim=(1, 2, 3))

    brightness = Brightness()

    rng = np.random.default_rng(0)
    pools = [[rng.integers(0, 256, size=(5, 4, 4, 3), dtype=np.uint8) for _ in range(2)] for _ in range(3)]
    rows = [{"prompt": f"p{i}"} for i in range(5)]
    picked = ctl.best_of_candidates(brightness, pools, rows)
    for k in range(2):
        means = np.stack([pool[k].reshape(5, -1).mean(1) for pool in pools])  # (candidates, rows)
        assert np.array_equal(picked[k], np.stack(pools)[means.argmax(0), k, np.arange(5)])


def test_oracle_set_renders_its_captions_and_avoids_evaluation_prompts():
    held = {r["prompt"] for r in data.load_prompts("compbench")}
    src = ctl.oracle_set(60, seed=31, exclude=held)
    assert len(src) == 60 and not held & set(src.captions)
    # every claim of a caption holds in its render (a caption parses back to its claims)
    specs = [parse_prompt(c) for c in src.captions]
    assert np.all(evaluate.parser_scores(src.images, specs) == 1.0)


def test_compbench_prompts_carry_their_scene_and_renders_satisfy_them():
    rows = data.load_prompts("compbench")[::50]
    renders = evaluate.oracle_renders(rows)
    assert renders.shape == (len(rows), data.CANVAS, data.CANVAS, 3)
    assert np.all(evaluate.parser_scores(renders, [Spec.from_json(r["spec"]) for r in rows]) == 1.0)


def test_vae_ceiling_reports_every_category(micro_sd_dir):
    rows = [r for r in data.load_prompts("compbench") if r["split"] == "seen"][::40]
    ceiling = evaluate.vae_ceiling(micro_sd_dir, rows)
    assert ceiling["renders"] == 1.0
    assert set(ceiling["categories"]) == {r["category"] for r in rows}
    assert 0.0 <= ceiling["vae_reconstructions"] < 1.0  # a random autoencoder loses what the parser checks


def test_controls_params_are_validated():
    with pytest.raises(ValueError, match="verifiers"):
        ctl.BestOfNControl(verifiers=("clip", "mllm"))
    with pytest.raises(ValueError, match="budget"):
        ctl.BestOfNControl(budget=1)
    with pytest.raises(ValueError, match="must be 'noise'"):
        ctl.ControlsParams(noise=ctl.BackpropControl(reward="clip"))
    # best-of-N pools a subset of the image slots, never more than the stage generates per prompt
    assert ctl.ControlsParams(images_per_prompt=2, best_of_n=ctl.BestOfNControl(images_per_prompt=1))
    for k in (0, 3):
        with pytest.raises(ValueError, match=r"best_of_n.images_per_prompt must be null or in 1..2"):
            ctl.ControlsParams(images_per_prompt=2, best_of_n=ctl.BestOfNControl(images_per_prompt=k))


def test_oracle_run_takes_its_dropout_and_text_encoder_choice(micro_sd, tmp_path):
    assert ctl.OracleControl().cond_dropout > 0  # without it, oracle data did not raise the parser score
    c = ctl.OracleControl(
        scenes=8, train_text_encoder=True, train=TrainParams(steps=2, batch_size=4, lr=1e-3, checkpoint_every=2)
    )
    method = ctl.oracle_method(micro_sd, ctl.oracle_set(8, seed=31, exclude=set()), c, {"model": "micro"})
    assert set(method.modules()) == {"unet", "text_encoder"} and method.cond_dropout == c.cond_dropout
    before = [p.detach().clone() for p in micro_sd.pipe.text_encoder.parameters()]
    train(method, c.train, tmp_path / "ckpt", tmp_path / "log.csv", show_progress=False)
    after = list(micro_sd.pipe.text_encoder.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before))
