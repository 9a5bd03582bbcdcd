"""The learned rewards: composition pairs, Bradley-Terry preference models, the aesthetic MLP, the paper-scale
loaders (ImageReward/IterComp BLIP checkpoints, LAION's MLP) on tiny random configs built here, the registry."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from replication.methods.common import differentiable
from replication.models import build_tokenizer
from replication.rewards import pairs
from replication.rewards.aesthetic import AestheticScore, RatingRegression, load_laion, regression_report
from replication.rewards.base import ImagePreprocess, Weighted
from replication.rewards.clip import ClipArch, CLIPScore, ContrastiveTraining, Pairs, build_tiny_clip
from replication.rewards.fusion import FusionModel, FusionReward, convert_imagereward_state, load_imagereward
from replication.rewards.parts import PreferenceHead
from replication.rewards.preference import (
    PairwiseTraining,
    build_clip_preference,
    item_scores,
    load_preference,
    pairwise_accuracy,
)
from replication.rewards.registry import REGISTRY, load_reward
from replication.tensors import to_float
from replication.train import TrainParams, train
from replication.world import Sampler, render_batch, sample_captioned
from replication.world.caption import parse_prompt, spec_text
from replication.world.rater import Rater


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory, world_pairs):
    """A tiny CLIP trained briefly on single-object renders (the stage uses models/clip_reward)."""
    tok = build_tokenizer()
    images, captions = world_pairs
    method = ContrastiveTraining(
        build_tiny_clip(ClipArch(width=32, layers=2, heads=2, embed_dim=32), tok, seed=0),
        tok,
        ImagePreprocess(32),
        Pairs(images, captions),
        batch_size=64,
    )
    d = tmp_path_factory.mktemp("clip")
    train(
        method,
        TrainParams(steps=80, batch_size=64, lr=3e-3, checkpoint_every=1000),
        d / "run",
        d / "log.csv",
        out_dir=d / "model",
        show_progress=False,
    )
    return d / "model"


@pytest.fixture(scope="module")
def single_objects():
    s = Sampler(np.random.default_rng(11))
    items = [sample_captioned(s, "pokemon") for _ in range(320)]
    return render_batch([i[0] for i in items]), [i[2] for i in items]


def test_corruptions_change_one_detail_and_parse_back():
    rng = np.random.default_rng(0)
    s = Sampler(np.random.default_rng(1))
    for style in ("color", "spatial", "non_spatial", "complex", "numeracy", "texture"):
        for _ in range(10):
            _, _, spec = sample_captioned(s, style)
            bad = pairs.corrupt(spec, rng)
            if bad is None:
                continue
            assert bad != spec and len(bad.phrases) == len(spec.phrases)
            assert parse_prompt(spec_text(bad)) == bad


def test_training_corruptions_never_state_heldout_compositions():
    """Training negatives must not state held-out compositions: otherwise those appear in training only as the
    worse item, and a model learns to reject them (held-out accuracy fell below the CLIP's)."""
    rng = np.random.default_rng(0)
    s = Sampler(np.random.default_rng(2))
    specs = [
        sample_captioned(s, style, heldout=False)[2]
        for style in ("color", "complex", "texture", "spatial")
        for _ in range(60)
    ]
    free = [pairs.corrupt(sp, rng) for sp in specs]
    assert any(b is not None and b.heldout for b in free), "unrestricted corruptions do state held-out compositions"
    kept = [pairs.corrupt(sp, rng, allow_heldout=False) for sp in specs]
    assert all(b is None or not b.heldout for b in kept)
    assert sum(b is not None for b in kept) > 0.9 * len(specs)
    items = [sample_captioned(s, "complex", heldout=False) for _ in range(20)]
    comps = pairs.text_side(
        render_batch([i[0] for i in items]), [i[2] for i in items], rng, 2, allow_heldout=False, kinds=["relation"]
    )
    assert len(comps) > 0 and not any(parse_prompt(t).heldout for t in comps.texts)
    assert all(
        parse_prompt(comps.texts[w]).phrases == parse_prompt(comps.texts[l]).phrases
        for (_, w), (_, l) in zip(comps.win, comps.lose)
    ), "kinds=['relation'] changes relations only"


def test_temperature_calibration_fits_a_noisy_judge(clip_dir, single_objects):
    from replication.rewards.preference import bt_loss, calibrate_temperature

    images, specs = single_objects
    # a noisy judge between two renders of one prompt: the own render usually wins
    rng = np.random.default_rng(0)
    n = 120
    other = rng.permutation(n)
    texts = [spec_text(sp) for sp in specs[:n]]
    pool = np.concatenate([images[:n], images[other]])
    flip = rng.random(n) < 0.3
    a, b = np.arange(n), n + np.arange(n)
    win, lose = np.where(flip, b, a), np.where(flip, a, b)
    comps = pairs.Comparisons(
        pool, texts, np.stack([win, np.arange(n)], 1), np.stack([lose, np.arange(n)], 1), np.zeros(n, np.int8)
    )
    reward = build_clip_preference(clip_dir, "image_reward", quality_head=True)
    w0, l0 = item_scores(reward, comps)
    cal = calibrate_temperature(reward, comps)
    w1, l1 = item_scores(reward, comps)
    assert cal["calibrated_on"] == n and cal["bt_loss_after"] <= cal["bt_loss_before"] + 1e-9
    assert bt_loss(w1 - l1) == pytest.approx(cal["bt_loss_after"], abs=1e-3)
    assert ((w1 > l1) == (w0 > l0)).all(), "a temperature never changes the order"
    assert cal["temperature"] == pytest.approx(float(reward.model.log_scale.exp()), rel=1e-3)
    method = PairwiseTraining(reward, comps, 16, 0, images[:8], texts[:8], calibrate=True)
    assert method.calibration is not None and method.fingerprint()["calibrate"] is True
    assert PairwiseTraining(reward, comps, 16, 0, images[:8], texts[:8]).fingerprint()["calibrate"] is False


def test_text_side_labels_come_from_the_parser(single_objects):
    images, specs = single_objects
    comps = pairs.text_side(images[:40], specs[:40], np.random.default_rng(0), per_image=2)
    assert len(comps) > 40 and (comps.kind == 1).all()
    for (i, t_win), (j, _) in zip(comps.win, comps.lose):
        assert i == j
        assert parse_prompt(comps.texts[t_win]) == specs[i], "a render always fits its own prompt best"
    noisy = pairs.text_side(
        images[:40],
        specs[:40],
        np.random.default_rng(0),
        2,
        rater=Rater(temperature=0.3),
        gen=torch.Generator().manual_seed(0),
    )
    wrong = sum(parse_prompt(noisy.texts[t]) != specs[i] for i, t in noisy.win)
    assert 0 < wrong < len(noisy) / 2, "a noisy rater sometimes prefers the wrong prompt, mostly not"


def test_preference_model_learns_to_order_and_reloads(clip_dir, single_objects, tmp_path):
    images, specs = single_objects
    rng = np.random.default_rng(0)
    train_c = pairs.text_side(images[:240], specs[:240], rng, per_image=3)
    test_c = pairs.text_side(images[240:], specs[240:], rng, per_image=2)
    reward = build_clip_preference(clip_dir, "image_reward", quality_head=True)
    before = pairwise_accuracy(reward, test_c)["accuracy"]
    method = PairwiseTraining(reward, train_c, 64, 1, images[:64], [spec_text(s) for s in specs[:64]])
    train(
        method,
        TrainParams(steps=60, batch_size=64, lr=2e-3, checkpoint_every=1000),
        tmp_path / "run",
        tmp_path / "log.csv",
        out_dir=tmp_path / "model",
        show_progress=False,
    )
    loaded = load_preference(tmp_path / "model")
    after = pairwise_accuracy(loaded, test_c)["accuracy"]
    assert after >= 0.8 and after > before, (before, after)
    assert pairwise_accuracy(loaded, test_c.subset([])) == {"accuracy": None, "n": 0}, "no comparisons: no accuracy"
    w, l = item_scores(loaded, test_c.subset([]))
    assert w.shape == l.shape == (0,)
    z = loaded(to_float(images[:64]), [spec_text(s) for s in specs[:64]])
    assert abs(z.mean().item()) < 1e-3 and abs(z.std().item() - 1) < 1e-3, "z-scored on the normalisation set"
    assert torch.allclose(loaded(to_float(images[:8]), [spec_text(s) for s in specs[:8]]), z[:8], atol=1e-4)
    cfg = json.loads((tmp_path / "model" / "reward_config.json").read_text())
    assert cfg["format"] == "clip-preference" and cfg["quality_head"] is True


def blurred(images: np.ndarray) -> np.ndarray:
    x = to_float(images)
    return (
        (F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1) * 255)
        .round()
        .byte()
        .permute(0, 2, 3, 1)
        .numpy()
    )


def test_aesthetic_mlp_ranks_clean_above_blurred(clip_dir, single_objects, tmp_path):
    from transformers import CLIPModel

    images, _ = single_objects
    both = np.concatenate([images, blurred(images)])
    ratings = Rater(rating_noise=0.3).rate(both, torch.Generator().manual_seed(0))
    clip = CLIPModel.from_pretrained(str(clip_dir))
    scorer = AestheticScore(clip, PreferenceHead(clip.config.projection_dim), ImagePreprocess(32))
    train_idx = np.r_[0:240, 320:560]
    emb = scorer.embed(to_float(both))
    method = RatingRegression(scorer, emb[train_idx], ratings[train_idx], 128)
    train(
        method,
        TrainParams(steps=150, batch_size=128, lr=2e-3, checkpoint_every=1000),
        tmp_path / "run",
        tmp_path / "log.csv",
        out_dir=tmp_path / "aes",
        show_progress=False,
    )
    aes = AestheticScore.load(tmp_path / "aes")
    clean, blur = aes(to_float(images[240:])), aes(to_float(blurred(images[240:])))
    assert (clean > blur).float().mean() >= 0.75 and (clean - blur).mean() > 0
    held = np.r_[240:320, 560:640]
    rep = regression_report(aes(to_float(both[held])).numpy(), ratings[held].numpy())
    assert rep["pearson"] > 0.15 and abs(aes(to_float(both[held])).mean() - ratings[held].mean()) < 0.3, rep


def test_linear_readout_ceiling_finds_a_linear_signal_and_nothing_else():
    """The aesthetic report's bound: a target linear in the features is read out almost perfectly on held-out rows,
    a target unrelated to them (or only a nonlinear function of them) is not."""
    from replication.recipes.rewards import linear_readout_ceiling

    rng = np.random.default_rng(0)
    x, x_test = rng.normal(size=(600, 64)), rng.normal(size=(600, 64))
    w = rng.normal(size=64)
    linear = linear_readout_ceiling(x, x @ w, x_test, x_test @ w)
    assert linear["pearson"] > 0.99 and linear["n"] == 600 and linear["ridge"] in (1e-3, 1e-2, 1e-1, 1.0)
    unrelated = linear_readout_ceiling(x, rng.normal(size=600), x_test, rng.normal(size=600))
    assert abs(unrelated["pearson"]) < 0.15
    parity = linear_readout_ceiling(x, np.sign(x[:, 0] * x[:, 1]), x_test, np.sign(x_test[:, 0] * x_test[:, 1]))
    assert abs(parity["pearson"]) < 0.15  # an interaction no linear head can express


def test_laion_format_loader(clip_dir, tmp_path, single_objects):
    from transformers import CLIPModel

    head = PreferenceHead(32)
    torch.save(head.state_dict(), tmp_path / "sac+logos+ava1-l14-linearMSE.pth")
    aes = load_laion(clip=str(clip_dir), mlp=str(tmp_path / "sac+logos+ava1-l14-linearMSE.pth"))
    x = to_float(single_objects[0][:4])
    clip = CLIPModel.from_pretrained(str(clip_dir))
    f = clip.get_image_features(pixel_values=ImagePreprocess.from_folder(clip_dir, 32)(x))
    f = f if isinstance(f, torch.Tensor) else f.pooler_output
    with torch.no_grad():
        expected = head.eval()(f / f.norm(dim=-1, keepdim=True))
    assert torch.allclose(aes(x), expected, atol=1e-5)
    torch.save(PreferenceHead(768).state_dict(), tmp_path / "big.pth")
    with pytest.raises(ValueError, match="ViT-L/14"):
        load_laion(clip=str(clip_dir), mlp=str(tmp_path / "big.pth"))


def _blip_original_keys(vision_sd: dict, text_sd: dict, head_sd: dict) -> dict:
    """ImageReward's checkpoint layout, written out independently of the loader: BLIP's timm ViT names,
    BLIP's BERT names, and ImageReward's `mlp.layers.*`."""
    out = {}
    names = {
        "embeddings.class_embedding": "cls_token",
        "embeddings.position_embedding": "pos_embed",
        "embeddings.patch_embedding.weight": "patch_embed.proj.weight",
        "embeddings.patch_embedding.bias": "patch_embed.proj.bias",
        "post_layernorm.weight": "norm.weight",
        "post_layernorm.bias": "norm.bias",
    }
    for k, v in vision_sd.items():
        if k in names:
            new = names[k]
        else:
            _, _, i, *rest = k.split(".")
            rest = (
                ".".join(rest)
                .replace("layer_norm1", "norm1")
                .replace("layer_norm2", "norm2")
                .replace("self_attn.qkv", "attn.qkv")
                .replace("self_attn.projection", "attn.proj")
            )
            new = f"blocks.{i}.{rest}"
        out["blip.visual_encoder." + new] = v
    out |= {"blip.text_encoder." + k: v for k, v in text_sd.items()}
    out["blip.text_encoder.embeddings.position_ids"] = torch.arange(16)[None]
    out["blip.vision_proj.weight"] = torch.zeros(8, 32)
    out |= {"mlp." + k: v for k, v in head_sd.items()}
    return out


def test_imagereward_checkpoint_loader(tmp_path, single_objects):
    from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

    tok = build_tokenizer()
    tok.save_pretrained(str(tmp_path / "tok"))
    torch.manual_seed(0)
    vision = BlipVisionModel(
        BlipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            layer_norm_eps=1e-6,
        )
    )
    med = {
        "vocab_size": len(tok) + 2,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 48,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
        "pad_token_id": tok.pad_token_id,
        "add_cross_attention": True,
        "encoder_width": 32,
    }
    text = BlipTextModel(
        BlipTextConfig(
            vocab_size=med["vocab_size"],
            hidden_size=32,
            encoder_hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=48,
            pad_token_id=tok.pad_token_id,
        ),
        add_pooling_layer=False,
    )
    head = PreferenceHead(32, (64, 16, 8))
    state = _blip_original_keys(vision.state_dict(), text.state_dict(), head.state_dict())
    torch.save(state, tmp_path / "ImageReward.pt")
    (tmp_path / "med_config.json").write_text(json.dumps(med))

    ir = load_imagereward(tmp_path, tokenizer=str(tmp_path / "tok"), vision_heads=2, mean=0.5, std=2.0, max_length=48)
    images, specs = single_objects
    prompts = [spec_text(s) for s in specs[:6]]
    x = to_float(images[:6])
    expected_model = FusionModel(vision, text, head, "blip").eval()
    ids = tok(prompts, padding="longest", return_tensors="pt")
    with torch.no_grad():
        raw = expected_model(ImagePreprocess(32)(x), ids.input_ids, ids.attention_mask)
    assert torch.allclose(ir(x, prompts), (raw - 0.5) / 2.0, atol=1e-5)
    # the folder format the rewards stage writes at paper scale reloads to the same scores
    ir.save(tmp_path / "saved")
    again = load_preference(tmp_path / "saved")
    assert isinstance(again, FusionReward) and torch.allclose(again(x, prompts), ir(x, prompts), atol=1e-5)
    with pytest.raises(KeyError, match="ImageReward-style"):
        convert_imagereward_state({"visual_encoder.cls_token": torch.zeros(1, 1, 4)})
    with pytest.raises(FileNotFoundError, match="rewards"):
        load_preference(tmp_path / "models" / "nothing")


def test_registry_names_mixes_and_speed(clip_dir, single_objects, tmp_path):
    from transformers import CLIPModel

    assert {"clip", "compositional", "image_reward", "aesthetic", "mllm"} <= set(REGISTRY)
    pref = build_clip_preference(clip_dir, "image_reward", quality_head=True)
    pref.save(tmp_path / "ir")
    clip = CLIPModel.from_pretrained(str(clip_dir))
    AestheticScore(clip, PreferenceHead(32), ImagePreprocess(32)).save(tmp_path / "aes")
    sources = {
        "clip": str(clip_dir),
        "image_reward": str(tmp_path / "ir"),
        "compositional": str(tmp_path / "ir"),
        "aesthetic": str(tmp_path / "aes"),
    }
    images, specs = single_objects
    x, prompts = to_float(images[:64]), [spec_text(s) for s in specs[:64]]
    for name in ("clip", "compositional", "image_reward", "aesthetic", "mllm"):
        reward = load_reward(name, sources=sources)
        t0 = time.perf_counter()
        out = reward(x, prompts)
        elapsed = time.perf_counter() - t0
        assert out.shape == (64,) and torch.isfinite(out).all(), name
        assert elapsed < 2.0, f"{name}: 64 images took {elapsed:.2f} s"
        if hasattr(reward, "close"):
            reward.close()
    mix = load_reward("image_reward:0.5,aesthetic:0.25", sources=sources)
    assert isinstance(mix, Weighted)
    parts = [
        load_reward("image_reward", sources=sources)(x, prompts),
        load_reward("aesthetic", sources=sources)(x, prompts),
    ]
    assert torch.allclose(mix(x, prompts), 0.5 * parts[0] + 0.25 * parts[1], atol=1e-5)


def test_frozen_vision_uses_cached_embeddings_with_the_same_loss(clip_dir, single_objects):
    images, specs = single_objects
    comps = pairs.text_side(images[:64], specs[:64], np.random.default_rng(0), per_image=2)
    losses = []
    for layers in (0, 1):
        reward = build_clip_preference(clip_dir, "c", quality_head=True, seed=0)
        method = PairwiseTraining(reward, comps, 32, layers, images[:8], [spec_text(s) for s in specs[:8]])
        if layers == 1:  # the same frozen tower, but encoded every step
            method.model.clip.vision_model.requires_grad_(False)
            method.model.clip.visual_projection.requires_grad_(False)
        method.model.eval()
        loss, _ = method.loss(1, torch.Generator().manual_seed(0))
        losses.append(loss.item())
        trainable = {n for n, p in method.model.named_parameters() if p.requires_grad}
        assert not any(n.startswith("clip.vision_model") or n.startswith("clip.visual_projection") for n in trainable)
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)


def test_learned_rewards_offer_gradients_to_the_images(clip_dir, single_objects):
    from transformers import CLIPModel

    images, specs = single_objects
    prompts = [spec_text(s) for s in specs[:4]]
    pref = build_clip_preference(clip_dir, "image_reward", quality_head=True)
    clip = CLIPModel.from_pretrained(str(clip_dir))
    aes = AestheticScore(clip, PreferenceHead(32), ImagePreprocess(32))
    score = CLIPScore.load(clip_dir)
    for reward in (pref, aes, score, Weighted([(pref, 0.5), (score, 2.0)])):
        x = to_float(images[:4]).requires_grad_(True)
        r = differentiable(reward)(x, prompts)
        assert torch.allclose(r.detach(), reward(x.detach(), prompts), atol=1e-5)
        r.sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0


def test_a_reward_without_gradients_is_refused_by_name(clip_dir):
    class Graded:  # scores under no_grad and offers no with_grad, as the MLLM grader
        name = "grader"

        def __call__(self, images, prompts):
            return torch.ones(len(prompts))

    images = torch.rand(2, 3, 8, 8, requires_grad=True)
    with pytest.raises(TypeError, match="'grader' gives no gradient"):
        differentiable(Graded())(images, ["a", "b"])
    mix = Weighted([(Graded(), 1.0), (CLIPScore.load(clip_dir), 1.0)])
    assert mix.with_grad is None
    with pytest.raises(TypeError, match="mixes in a reward without gradients"):
        differentiable(mix)
