"""The tiny synthetic world: scene parser accuracy, scoring, prompt grammar, exact rendering,
held-out compositions, spatial relations, claim assignment, and robustness of the parser."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from replication.world import (
    STYLES,
    Obj,
    PromptError,
    Sampler,
    Scene,
    Spec,
    detect,
    parse_prompt,
    render,
    render_batch,
    sample_captioned,
    score,
    vocab,
)
from replication.world.parser import Detection, claims_satisfied, relation_holds
from replication.world.scene import extent, relation

N_PER_STYLE = 300
ATTRS = ("shape", "color", "texture", "size")


def nearest(dets, o: Obj):
    """The detection whose centre is nearest to the ground-truth object's centre (x2/2, y2/2 pixels)."""
    return min(dets, key=lambda d: (d.x - o.x2 / 2) ** 2 + (d.y - o.y2 / 2) ** 2)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The parser's small batched ops run faster on one thread than two (no sync overhead on a busy CPU)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def world(one_thread):
    """N_PER_STYLE scenes per caption style (held-out compositions allowed), rendered and detected once."""
    out = {}
    for k, style in enumerate(STYLES):
        s = Sampler(np.random.default_rng(1000 + k), allow_heldout=True)
        items = [sample_captioned(s, style) for _ in range(N_PER_STYLE)]
        out[style] = {"scenes": [i[0] for i in items], "texts": [i[1] for i in items], "specs": [i[2] for i in items]}
    images = render_batch([sc for v in out.values() for sc in v["scenes"]])
    dets = detect(images)  # one batched call for every style
    for k, v in enumerate(out.values()):
        v["images"] = images[k * N_PER_STYLE : (k + 1) * N_PER_STYLE]
        v["dets"] = dets[k * N_PER_STYLE : (k + 1) * N_PER_STYLE]
    return out


# ----------------------------------------------------------------------------- parser accuracy
@pytest.mark.parametrize("style", STYLES)
def test_parser_recovers_ground_truth(world, style):
    w = world[style]
    correct = dict.fromkeys(ATTRS, 0)
    n_obj = 0
    count_ok = 0
    for scene, dets in zip(w["scenes"], w["dets"]):
        count_ok += len(dets) == len(scene.objects)
        for o in scene.objects:
            n_obj += 1
            if not dets:
                continue
            d = nearest(dets, o)
            for a in ATTRS:
                correct[a] += getattr(d, a) == getattr(o, a)
    acc = {a: correct[a] / n_obj for a in ATTRS}
    acc["count"] = count_ok / len(w["scenes"])
    msg = f"parser accuracy, style {style!r} ({len(w['scenes'])} scenes, {n_obj} objects): " + ", ".join(
        f"{k}={v:.4f}" for k, v in acc.items()
    )
    print("\n" + msg)
    assert len(w["scenes"]) >= 300
    for k, v in acc.items():
        assert v >= 0.99, f"{k} accuracy {v:.4f} < 0.99; {msg}"


def test_score_matched_and_mismatched(world):
    # 80 per style (800 images) keeps the two extra detection passes fast
    imgs = np.concatenate([w["images"][:80] for w in world.values()])
    prompts = [t for w in world.values() for t in w["texts"][:80]]
    matched = score(imgs, prompts)
    perm = np.random.default_rng(0).permutation(len(prompts))
    deranged = [None] * len(prompts)
    for a, b in zip(perm, np.roll(perm, 1)):  # a cycle through a random order: nobody keeps its prompt
        deranged[a] = prompts[b]
    assert all(deranged[i] is not prompts[i] for i in range(len(prompts)))
    mismatched = score(imgs, deranged)
    ms, me = float(matched["score"].mean()), float(matched["exact"].mean())
    xs, xe = float(mismatched["score"].mean()), float(mismatched["exact"].mean())
    print(f"\nscore matched: score={ms:.4f} exact={me:.4f}; mismatched: score={xs:.4f} exact={xe:.4f}")
    assert ms >= 0.99, f"matched score mean {ms:.4f}"
    assert me >= 0.99, f"matched exact mean {me:.4f}"
    assert xs <= 0.25, f"mismatched score mean {xs:.4f}"
    assert xe <= 0.05, f"mismatched exact mean {xe:.4f}"
    for r in (matched, mismatched):
        assert r["score"].shape == r["exact"].shape == (len(prompts),)
        assert ((r["score"] >= 0) & (r["score"] <= 1)).all()
        assert torch.equal(r["exact"] == 1, r["score"] == 1)  # exact: every claim holds


def test_score_accepts_specs_and_checks_lengths(world):
    w = world["complex"]
    by_text = score(w["images"][:20], w["texts"][:20])
    by_spec = score(w["images"][:20], w["specs"][:20])
    assert torch.equal(by_text["score"], by_spec["score"])
    with pytest.raises(ValueError, match="20 images but 19 prompts"):
        score(w["images"][:20], w["texts"][:19])


# ----------------------------------------------------------------------------- prompt grammar
@pytest.mark.parametrize("style", STYLES)
def test_parse_prompt_inverts_captioner(world, style):
    w = world[style]
    assert len(w["texts"]) >= 300
    for text, spec in zip(w["texts"], w["specs"]):
        assert parse_prompt(text) == spec, text
        assert Spec.from_json(spec.to_json()) == spec


def test_parse_prompt_examples():
    spec = parse_prompt(
        "a picture of three big red striped circles to the left of a blue square "
        "with a checkered pattern on a gray background"
    )
    assert [p.count for p in spec.phrases] == [3, None]
    assert spec.phrases[0].shape == "circle" and spec.phrases[0].size == "big"
    assert spec.phrases[0].color == "red" and spec.phrases[0].texture == "striped"
    assert spec.phrases[1].texture == "checkered" and spec.phrases[1].color == "blue"
    assert spec.relations == ((0, "to the left of", 1),)
    assert spec.n_claims == 3
    assert parse_prompt("A Red, Circle!") == parse_prompt("a red circle")


@pytest.mark.parametrize(
    "text, word",
    [
        ("a red dog", "dog"),
        ("two red circle", "circle"),
        ("a red circle above", "above"),
        ("a circle with stripes with stripes", "with"),
    ],
)
def test_parse_prompt_errors_name_the_word(text, word):
    with pytest.raises(PromptError) as e:
        parse_prompt(text)
    assert repr(word) in str(e.value), str(e.value)


def test_parse_prompt_error_details():
    with pytest.raises(PromptError, match="number and noun disagree"):
        parse_prompt("two red circle")
    with pytest.raises(PromptError, match="number and noun disagree"):
        parse_prompt("a red circles")
    with pytest.raises(PromptError, match="no object after it"):
        parse_prompt("a red circle above")
    with pytest.raises(PromptError, match="between two objects"):
        parse_prompt("above a red circle")
    for empty in ("", "   ", "a picture of"):
        with pytest.raises(PromptError, match="no object"):
            parse_prompt(empty)
    assert issubclass(PromptError, ValueError)


# ----------------------------------------------------------------------------- exact rendering
# The md5 of a fixed scene pins the renderer's bytes. data/ (pinned by data.dvc) is made of such
# renders: if this hash changes, the regenerated data's hash changes too, and data.dvc must be
# re-recorded (`dvc add data`) deliberately, not by accident.
FIXED_SCENE = Scene(
    (
        Obj("triangle", "red", "striped", "big", 20, 22),
        Obj("circle", "blue", "checkered", "small", 46, 18),
        Obj("diamond", "green", "plain", "small", 16, 48),
        Obj("square", "purple", "checkered", "small", 46, 46),
    ),
    32,
    "gray",
)
FIXED_SCENE_MD5 = "5df4dc10ef0970af2f886c9fa667b5db"


def test_fixed_scene_md5():
    img = render(FIXED_SCENE)
    assert img.dtype == np.uint8 and img.shape == (32, 32, 3)
    assert hashlib.md5(img.tobytes()).hexdigest() == FIXED_SCENE_MD5
    assert hashlib.md5(render(Scene.from_json(FIXED_SCENE.to_json())).tobytes()).hexdigest() == FIXED_SCENE_MD5
    dets = detect(img[None])[0]
    assert sorted((d.shape, d.color, d.texture, d.size) for d in dets) == sorted(o.key for o in FIXED_SCENE.objects)


@pytest.mark.parametrize("background", sorted(vocab.BACKGROUNDS))
def test_background_exact(background):
    rgb = np.array(vocab.BACKGROUNDS[background], np.uint8)
    empty = render(Scene((), 32, background))
    assert (empty == rgb).all()
    img = render(Scene((Obj("circle", "cyan", "plain", "small", 32, 32),), 32, background))
    is_bg = (img == rgb).all(-1)
    is_obj = (img == np.array(vocab.RGB["cyan"], np.uint8)).all(-1)
    assert (is_bg | is_obj).all()  # no anti-aliasing or blending: every pixel is one or the other
    assert is_bg[0, 0] and is_obj[16, 16]
    assert vocab.BACKGROUNDS == {"gray": (224, 224, 224), "white": (255, 255, 255)}


@pytest.mark.parametrize("texture", vocab.TEXTURES)
@pytest.mark.parametrize("color", vocab.COLORS)
def test_texture_shades_exact(color, texture):
    rgb = np.array(vocab.RGB[color], np.uint8)
    img = render(Scene((Obj("square", color, texture, "big", 32, 32),), 32, "white"))
    obj = img[~(img == 255).all(-1)]
    values = {tuple(int(c) for c in p) for p in obj}
    light, dark = tuple(int(c) for c in rgb), tuple(int(c) for c in rgb // 2)
    assert dark == tuple(c // 2 for c in vocab.RGB[color])
    if texture == "plain":
        assert values == {light}
    else:
        assert values == {light, dark}
        n_dark = sum((obj == rgb // 2).all(-1))
        assert 0.3 < n_dark / len(obj) < 0.7


def test_striped_rows_checkered_both():
    img = render(Scene((Obj("square", "red", "striped", "big", 32, 32),), 32, "white"))
    obj = img[12:20, 12:20]  # inside the 14-pixel square centred at (16, 16)
    assert all(len({tuple(p) for p in row}) == 1 for row in obj)  # stripes: each row uniform
    assert len({tuple(p) for p in obj[:, 0]}) == 2
    img = render(Scene((Obj("square", "red", "checkered", "big", 32, 32),), 32, "white"))
    obj = img[12:20, 12:20]
    assert len({tuple(p) for p in obj[0]}) == 2 and len({tuple(p) for p in obj[:, 0]}) == 2


def test_render_batch_checks_canvas():
    with pytest.raises(ValueError, match="one canvas size"):
        render_batch([Scene((), 32), Scene((), 64)])
    assert render_batch([Scene((), 32)] * 2).shape == (2, 32, 32, 3)


def test_render_batch_empty():
    assert render_batch([]).shape == (0, 32, 32, 3)


# ----------------------------------------------------------------------------- held-out compositions
def test_sampler_without_heldout_never_draws_them():
    s = Sampler(np.random.default_rng(5), allow_heldout=False)
    objs = [s.obj() for _ in range(3000)]
    for style in STYLES:
        for _ in range(100):
            scene, text, spec = sample_captioned(s, style)
            objs += scene.objects
            assert not spec.heldout, text
    bad = [o for o in objs if vocab.is_heldout(o.color, o.shape, o.texture)]
    assert not bad, bad[:5]
    # the same draws with held-out compositions allowed do produce them (the check can fail)
    s = Sampler(np.random.default_rng(5), allow_heldout=True)
    assert sum(vocab.is_heldout(o.color, o.shape, o.texture) for o in (s.obj() for _ in range(3000))) > 100


@pytest.mark.parametrize("style", [s for s in STYLES if s != "shape"])
def test_sample_captioned_heldout(style):
    s = Sampler(np.random.default_rng(9), allow_heldout=True)
    for _ in range(20):
        scene, text, spec = sample_captioned(s, style, heldout=True)
        assert spec.heldout, text
        assert parse_prompt(text).heldout
        assert any(vocab.is_heldout(o.color, o.shape, o.texture) for o in scene.objects)
        _, text, spec = sample_captioned(s, style, heldout=False)
        assert not spec.heldout, text


def test_is_heldout():
    assert vocab.is_heldout("red", "triangle", None)
    assert vocab.is_heldout(None, "circle", "checkered")
    assert vocab.is_heldout("blue", "circle", "plain")
    assert not vocab.is_heldout("red", "circle", "striped")
    assert not vocab.is_heldout(None, "triangle", None)


# ----------------------------------------------------------------------------- spatial relations
def test_spatial_captions_hold_on_rendered_images(world):
    w = world["spatial"]
    held, rels = 0, set()
    for scene, spec, dets in zip(w["scenes"], w["specs"], w["dets"]):
        assert len(scene.objects) == 2 and len(spec.relations) == 1
        i, rel, j = spec.relations[0]
        assert (i, j) == (0, 1) and rel in vocab.SPATIAL
        assert relation(scene.objects[0], scene.objects[1]) == rel  # the caption is true of the scene
        a, b = nearest(dets, scene.objects[0]), nearest(dets, scene.objects[1])
        assert a is not b
        held += relation_holds(a, rel, b)
        rels.add(rel)
    assert rels == set(vocab.SPATIAL)
    assert held / len(w["scenes"]) >= 0.99, f"spatial relation holds in {held}/{len(w['scenes'])}"


def test_relation_holds_both_directions():
    a = Detection("circle", "red", "plain", "small", x=5.0, y=16.0, area=50, extent=8)
    b = Detection("square", "blue", "plain", "big", x=25.0, y=18.0, area=150, extent=13)
    assert relation_holds(a, "to the left of", b) and relation_holds(b, "to the right of", a)
    assert not relation_holds(a, "to the right of", b) and not relation_holds(a, "above", b)
    c = Detection("square", "red", "plain", "big", x=6.0, y=28.0, area=150, extent=13)
    assert relation_holds(a, "above", c) and relation_holds(c, "below", a)
    assert relation_holds(b, "bigger than", a) and relation_holds(a, "smaller than", b)
    assert relation_holds(a, "the same color as", c) and not relation_holds(a, "the same color as", b)
    with pytest.raises(ValueError):
        relation_holds(a, "near", b)


# ----------------------------------------------------------------------------- claims and assignment
def det(shape="circle", color="red", x=5.0, y=5.0, size="small", texture="plain"):
    return Detection(shape, color, texture, size, x, y, area=50, extent=extent(size, 32))


def test_count_phrase_needs_exact_count():
    spec = parse_prompt("three red circles")
    assert spec.n_claims == 1
    positions = [(5, 5), (20, 5), (5, 20), (20, 20)]
    for k in range(5):
        dets = [det(x=x, y=y) for x, y in positions[:k]]
        assert claims_satisfied(spec, dets) == (1 if k == 3 else 0), k
    # other objects do not count towards the phrase
    three = [det(x=x, y=y) for x, y in positions[:3]]
    assert claims_satisfied(spec, three + [det(color="blue", x=28, y=28), det("square", x=12, y=28)]) == 1
    assert claims_satisfied(spec, three[:2] + [det(color="blue", x=28, y=28)]) == 0


def test_injective_assignment():
    spec = parse_prompt("a red circle and a red circle")
    assert spec.n_claims == 2
    assert claims_satisfied(spec, [det()]) == 1  # one object cannot satisfy both phrases
    assert claims_satisfied(spec, [det(), det(x=20)]) == 2
    assert claims_satisfied(spec, []) == 0
    # an unqualified "a" means at least one: extra matching objects do no harm
    assert claims_satisfied(parse_prompt("a red circle"), [det(), det(x=20), det(x=28)]) == 1


def test_assignment_maximises_claims_with_relations():
    spec = parse_prompt("a red circle to the left of a blue square")
    assert spec.n_claims == 3
    sq = det("square", "blue", x=16, y=16)
    left, right = det(x=4, y=16), det(x=28, y=16)
    assert claims_satisfied(spec, [right, sq]) == 2  # both objects, relation false
    assert claims_satisfied(spec, [right, left, sq]) == 3  # picks the red circle that makes it true
    assert claims_satisfied(spec, [left]) == 1
    counted = parse_prompt("two red circles to the left of a blue square")
    assert claims_satisfied(counted, [det(x=2, y=10), det(x=4, y=24), sq]) == 3
    assert claims_satisfied(counted, [det(x=2, y=10), det(x=28, y=24), sq]) == 2  # every member must hold


# ----------------------------------------------------------------------------- input formats and blur
def test_float_and_uint8_inputs_agree(world):
    w = world["complex"]
    u8 = w["images"][:100]
    f = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255  # (N, 3, H, W) in [0, 1]
    assert f.shape == (100, 3, 32, 32)
    assert detect(f) == w["dets"][:100]  # the fixture's detections came from uint8 (N, H, W, 3)
    assert detect(torch.from_numpy(u8[:20])) == w["dets"][:20]  # uint8 torch tensors too
    s = score(f[:50], w["texts"][:50])["score"]
    assert float(s.mean()) >= 0.99
    with pytest.raises(ValueError):
        detect(u8.transpose(0, 3, 1, 2))  # uint8 must be channels-last
    with pytest.raises(ValueError):
        detect(f.permute(0, 2, 3, 1))  # float must be channels-first


N_BLUR = 150


@pytest.fixture(scope="module")
def blurred(world):
    """Colour-style renders under a 3x3 box blur (float, (N, 3, H, W))."""
    w = world["color"]
    x = torch.from_numpy(w["images"][:N_BLUR]).permute(0, 3, 1, 2).float() / 255
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def test_blur_keeps_colours_and_counts(world, blurred):
    """Under a 3x3 box blur the colour and the number of objects are still read without error."""
    scenes = world["color"]["scenes"][:N_BLUR]
    assert not torch.equal(blurred, torch.from_numpy(world["color"]["images"][:N_BLUR]).permute(0, 3, 1, 2) / 255)
    dets = detect(blurred)
    n = sum(len(s.objects) for s in scenes)
    count = sum(len(d) == len(s.objects) for s, d in zip(scenes, dets)) / len(dets)
    color = sum(nearest(d, o).color == o.color for s, d in zip(scenes, dets) for o in s.objects) / n
    print(f"\nblurred colour-style renders: count accuracy {count:.4f}, colour accuracy {color:.4f}")
    assert count >= 0.99 and color >= 0.99, (count, color)


def test_blur_tolerated_by_score(world, blurred):
    """A 3x3 box blur is harsh for 9-pixel objects (a small diamond really does look round after it);
    the parser still credits most claims. Measured: about 0.83 over all styles, see below."""
    s = score(blurred, world["color"]["texts"][:N_BLUR])
    mean = float(s["score"].mean())
    print(f"\nblurred colour-style renders: score mean {mean:.4f}")
    assert mean >= 0.8, f"blurred colour-style score mean {mean:.4f} < 0.8"
