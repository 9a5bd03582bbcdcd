"""The reward protocol and the CLIP reward: scale, ordering after training, errors, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from replication.models import build_tokenizer
from replication.rewards.base import ImagePreprocess, Weighted, check_batch, parse_weights
from replication.rewards.clip import (
    ClipArch,
    CLIPScore,
    ContrastiveTraining,
    Pairs,
    build_tiny_clip,
    retrieval_accuracy,
)
from replication.rewards.registry import load_reward
from replication.train import TrainParams, train
from replication.world import vocab


@pytest.fixture(scope="module")
def trained_clip(tmp_path_factory, world_pairs):
    """A tiny CLIP trained for a few hundred steps on single-object images (seconds)."""
    images, captions = world_pairs
    tok = build_tokenizer()
    arch = ClipArch(width=48, layers=2)
    method = ContrastiveTraining(
        build_tiny_clip(arch, tok, seed=0), tok, ImagePreprocess(32), Pairs(images, captions), batch_size=64
    )
    d = tmp_path_factory.mktemp("clip")
    train(
        method,
        TrainParams(steps=250, batch_size=64, lr=2e-3, checkpoint_every=1000),
        d / "run",
        d / "log.csv",
        out_dir=d / "model",
        show_progress=False,
    )
    return d / "model"


def swap_color(caption: str) -> str:
    for c in vocab.COLORS:
        if f" {c} " in f" {caption} ":
            other = vocab.COLORS[(vocab.COLORS.index(c) + 3) % len(vocab.COLORS)]
            return f" {caption} ".replace(f" {c} ", f" {other} ").strip()
    raise AssertionError(f"no colour in {caption!r}")


def test_score_is_100_times_cosine_and_batched(trained_clip, world_pairs):
    reward = CLIPScore.load(trained_clip)
    images = torch.from_numpy(world_pairs[0][:8]).permute(0, 3, 1, 2).float() / 255
    prompts = world_pairs[1][:8]
    r = reward(images, prompts)
    cos = reward.cosine(images, prompts)
    assert r.shape == (8,) and torch.allclose(r, 100 * cos)
    assert (cos.abs() <= 1 + 1e-6).all()
    single = torch.stack([reward(images[i : i + 1], prompts[i : i + 1])[0] for i in range(8)])
    assert torch.allclose(r, single, atol=1e-4), "batched and one-at-a-time scores must agree"


def test_trained_clip_prefers_the_true_colour(trained_clip, world_pairs):
    reward = CLIPScore.load(trained_clip)
    images = torch.from_numpy(world_pairs[0]).permute(0, 3, 1, 2).float() / 255
    true = reward(images, world_pairs[1])
    wrong = reward(images, [swap_color(c) for c in world_pairs[1]])
    share = (true > wrong).float().mean().item()
    assert share >= 0.8, f"the correct colour wins for only {share:.0%} of images"


def test_retrieval_accuracy_is_above_chance(trained_clip, world_pairs):
    reward = CLIPScore.load(trained_clip)
    acc = retrieval_accuracy(reward, Pairs(*world_pairs), pool=50)
    assert acc["queries"] == 200 and acc["chance"] == 0.02
    assert acc["image_to_text_top1"] > 5 * acc["chance"]


def test_bad_batches_fail_clearly():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        check_batch(torch.zeros(2, 32, 32, 3), ["a", "b"])
    with pytest.raises(ValueError, match="2 images but 3 prompts"):
        check_batch(torch.zeros(2, 3, 8, 8), ["a", "b", "c"])
    with pytest.raises(ValueError, match="NaN"):
        check_batch(torch.full((1, 3, 8, 8), float("nan")), ["a"])


def test_reward_names_and_weights():
    assert parse_weights("clip") == [("clip", 1.0)]
    assert parse_weights("clip:0.5, aesthetic:0.25") == [("clip", 0.5), ("aesthetic", 0.25)]
    with pytest.raises(ValueError, match="not a number"):
        parse_weights("clip:high")
    with pytest.raises(KeyError, match="available"):
        load_reward("telepathy")

    class Const:
        def __init__(self, v):
            self.name, self.v = f"c{v}", v

        def __call__(self, images, prompts):
            return torch.full((len(prompts),), float(self.v))

    w = Weighted([(Const(2), 0.5), (Const(10), 0.1)])
    assert torch.equal(w(torch.zeros(3, 3, 4, 4), ["a"] * 3), torch.full((3,), 2.0))


def test_missing_model_names_the_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="dvc repro clip"):
        CLIPScore.load(tmp_path / "models" / "nothing")


def test_preprocess_resizes_and_normalises():
    pre = ImagePreprocess(16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    out = pre(torch.ones(2, 3, 32, 48))
    assert out.shape == (2, 3, 16, 16) and torch.allclose(out, torch.ones_like(out), atol=1e-5)


def test_cli_prints_one_json_line_per_image(trained_clip, world_pairs, tmp_path):
    from PIL import Image

    imgdir = tmp_path / "imgs"
    imgdir.mkdir()
    for i in range(3):
        Image.fromarray(world_pairs[0][i]).save(imgdir / f"{i:02d}.png")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(world_pairs[1][:3]) + "\n")
    cmd = [
        sys.executable,
        "-m",
        "replication.rewards",
        "--reward",
        "clip",
        "--images",
        str(imgdir),
        "--prompts",
        str(prompts),
        "--source",
        str(trained_clip),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()
    rows = [json.loads(line) for line in out]
    assert [r["image"] for r in rows] == ["00.png", "01.png", "02.png"]
    reward = CLIPScore.load(trained_clip)
    images = torch.from_numpy(np.stack(world_pairs[0][:3])).permute(0, 3, 1, 2).float() / 255
    expected = reward(images, world_pairs[1][:3])
    assert np.allclose([r["score"] for r in rows], expected.numpy(), atol=1e-3)

    prompts.write_text("a red circle\na blue square\n")
    bad = subprocess.run(cmd, capture_output=True, text=True)
    assert bad.returncode != 0 and "3 images" in bad.stderr and "2 prompts" in bad.stderr
