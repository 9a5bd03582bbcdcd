"""replication/models.py: the tiny world's tokenizer, the micro SD/SDXL pipelines as stock diffusers
pipelines, and the T2IModel adapter against the pipelines' own prompt encoding, decoding and loops."""

from __future__ import annotations

import pytest
import torch

from replication import diffusion as D
from replication.models import Cond, T2IModel, build_tokenizer, load_pipeline, world_words

PROMPTS = ["a red circle", "two blue squares on a gray background"]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def first_unet_inputs(pipe) -> dict:
    """The keyword arguments of the first UNet forward the stock pipeline makes (one step, no guidance)."""
    seen = []

    def hook(module, args, kwargs):
        seen.append({"args": args, **kwargs})

    handle = pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    pipe.set_progress_bar_config(disable=True)
    try:
        pipe(PROMPTS, num_inference_steps=1, guidance_scale=1.0, output_type="latent")
    finally:
        handle.remove()
    return seen[0]


# ----------------------------------------------------------------------------- tokenizer
def test_world_words_are_single_tokens(tok):
    words = world_words()
    assert len(words) == len(set(words)) > 40 and words == sorted(words)
    for w in ("red", "circle", "circles", "striped", "left", "bigger", "background"):
        assert w in words
    for w in words:
        ids = tok(w).input_ids
        assert len(ids) == 3, (w, tok.convert_ids_to_tokens(ids))
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
        assert tok.convert_ids_to_tokens(ids[1]) == w + "</w>"
    # a whole caption: one token per word, case-insensitive
    cap = "Two Red circles to the left of a blue square"
    ids = tok(cap).input_ids
    assert len(ids) == len(cap.split()) + 2
    assert ids == tok(cap.lower()).input_ids


def test_unknown_words_tokenise_into_pieces(tok):
    for word in ("zebra", "xylophone", "quokka", "jazz", "wow!", "42"):
        ids = tok(word).input_ids
        inner = ids[1:-1]
        assert len(inner) > 1  # several sub-word pieces ...
        assert tok.unk_token_id not in inner  # ... none of them the unknown token
        # (punctuation and each digit are separate words, as in CLIP's pre-tokenisation)
        assert tok.decode(ids, skip_special_tokens=True).replace(" ", "") == word
    assert tok.decode(tok("xylophone").input_ids, skip_special_tokens=True) == "xylophone"
    assert tok.decode(tok("a zebra on the moon").input_ids, skip_special_tokens=True) == "a zebra on the moon"


def test_tokenizer_specials_and_length(tok):
    assert tok("").input_ids == [tok.bos_token_id, tok.eos_token_id]
    assert tok.model_max_length == 48
    padded = tok(["red", "a " * 100], padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
    assert [len(p) for p in padded] == [48, 48]
    assert padded[1][-1] == tok.eos_token_id  # truncation keeps the end token
    assert build_tokenizer(16).model_max_length == 16


def test_build_tokenizer_is_deterministic():
    vocabs = [build_tokenizer().get_vocab() for _ in range(3)]
    assert vocabs[0] == vocabs[1] == vocabs[2]


# ----------------------------------------------------------------------------- the saved micro SD pipeline
def test_micro_sd_loads_with_stock_diffusers_and_generates(micro_sd_dir):
    from diffusers import DDIMScheduler, DiffusionPipeline, StableDiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(micro_sd_dir))
    assert type(pipe) is StableDiffusionPipeline
    assert isinstance(pipe.scheduler, DDIMScheduler)
    pipe.set_progress_bar_config(disable=True)
    img = pipe(
        "a red circle", num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0)
    ).images
    assert img.shape == (1, 32, 32, 3)
    import numpy as np

    assert np.isfinite(img).all() and img.min() >= 0 and img.max() <= 1


def test_t2i_model_geometry_and_frozen_parts(micro_sd):
    assert micro_sd.kind == "sd"
    assert micro_sd.latent_shape == (4, 8, 8) and micro_sd.image_size == 32
    assert micro_sd.dtype == torch.float32
    assert all(not p.requires_grad for m in micro_sd.frozen_modules() for p in m.parameters())
    assert all(p.requires_grad for p in micro_sd.unet.parameters())
    # its scheduler is a copy with the pipeline's configuration
    assert micro_sd.scheduler is not micro_sd.pipe.scheduler
    assert dict(micro_sd.scheduler.config) == dict(micro_sd.pipe.scheduler.config)


# ----------------------------------------------------------------------------- prompt encoding
def test_encode_prompts_sd_equals_pipeline(micro_sd):
    pipe = micro_sd.pipe
    with torch.no_grad():
        cond = micro_sd.encode_prompts(PROMPTS)
        ref, neg = pipe.encode_prompt(PROMPTS, "cpu", 1, do_classifier_free_guidance=False)
    assert neg is None and cond.added == {}
    assert cond.hidden.shape == (2, 48, 32)
    torch.testing.assert_close(cond.hidden, ref, atol=1e-6, rtol=0)
    # what the stock pipeline feeds its UNet (no guidance)
    seen = first_unet_inputs(pipe)
    torch.testing.assert_close(seen["encoder_hidden_states"], cond.hidden, atol=1e-6, rtol=0)
    # different prompts, different rows
    assert not torch.allclose(cond.hidden[0], cond.hidden[1])


def test_encode_uncond_sd_is_empty_prompt(micro_sd):
    with torch.no_grad():
        unc = micro_sd.encode_uncond(3)
        empty = micro_sd.encode_prompts([""])
        _, neg = micro_sd.pipe.encode_prompt(["x"] * 3, "cpu", 1, do_classifier_free_guidance=True)
    assert len(unc) == 3
    torch.testing.assert_close(unc.hidden, empty.hidden.expand(3, -1, -1), atol=0, rtol=0)
    torch.testing.assert_close(unc.hidden, neg, atol=1e-6, rtol=0)
    assert unc.hidden.abs().sum() > 0


def test_encode_prompts_sdxl_equals_pipeline(micro_sdxl):
    pipe = micro_sdxl.pipe
    with torch.no_grad():
        cond = micro_sdxl.encode_prompts(PROMPTS)
        emb, _, pooled, _ = pipe.encode_prompt(
            PROMPTS, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False
        )
    assert set(cond.added) == {"text_embeds", "time_ids"}
    assert cond.hidden.shape == (2, 48, 64) and cond.added["text_embeds"].shape == (2, 16)
    torch.testing.assert_close(cond.hidden, emb, atol=1e-6, rtol=0)
    torch.testing.assert_close(cond.added["text_embeds"], pooled, atol=1e-6, rtol=0)
    ids = pipe._get_add_time_ids(
        (32, 32),
        (0, 0),
        (32, 32),
        dtype=emb.dtype,
        text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim,
    )
    torch.testing.assert_close(cond.added["time_ids"], ids.repeat(2, 1), atol=0, rtol=0)
    assert cond.added["time_ids"][0].tolist() == [32, 32, 0, 0, 32, 32]
    # what the stock SDXL pipeline feeds its UNet (no guidance, default size)
    seen = first_unet_inputs(pipe)
    torch.testing.assert_close(seen["encoder_hidden_states"], cond.hidden, atol=1e-6, rtol=0)
    for k in ("text_embeds", "time_ids"):
        torch.testing.assert_close(
            seen["added_cond_kwargs"][k].to(cond.added[k].dtype), cond.added[k], atol=1e-6, rtol=0
        )


def test_encode_uncond_sdxl_is_zeros(micro_sdxl):
    pipe = micro_sdxl.pipe
    assert pipe.config.force_zeros_for_empty_prompt
    with torch.no_grad():
        unc = micro_sdxl.encode_uncond(3)
        cond = micro_sdxl.encode_prompts(["a red circle"])
        _, neg, _, neg_pooled = pipe.encode_prompt(["x"] * 3, device="cpu", do_classifier_free_guidance=True)
    assert len(unc) == 3 and unc.hidden.shape == (3, 48, 64)
    assert torch.all(unc.hidden == 0) and torch.all(unc.added["text_embeds"] == 0)
    torch.testing.assert_close(unc.hidden, neg, atol=0, rtol=0)
    torch.testing.assert_close(unc.added["text_embeds"], neg_pooled, atol=0, rtol=0)
    # the time ids are the real ones, not zeroed
    torch.testing.assert_close(unc.added["time_ids"], cond.added["time_ids"].expand(3, -1), atol=0, rtol=0)


@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_sdxl_sample_reproduces_stock_pipeline(micro_sdxl, guidance):
    pipe = micro_sdxl.pipe
    pipe.set_progress_bar_config(disable=True)
    latents = torch.randn(2, *micro_sdxl.latent_shape, generator=torch.Generator().manual_seed(3))
    ref = pipe(
        PROMPTS, num_inference_steps=4, guidance_scale=guidance, latents=latents.clone(), output_type="latent"
    ).images
    with torch.no_grad():
        ours = D.sample(
            micro_sdxl.denoiser(micro_sdxl.encode_prompts(PROMPTS), guidance), micro_sdxl.scheduler, latents.clone(), 4
        )
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- pixels <-> latents
def test_encode_decode_shapes_and_range(micro_sd):
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = micro_sd.encode(images, sample=False)
        assert z.shape == (3, *micro_sd.latent_shape)
        vae = micro_sd.vae
        torch.testing.assert_close(z, vae.encode(images * 2 - 1).latent_dist.mode() * vae.config.scaling_factor)
        out = micro_sd.decode(z)
        z1 = micro_sd.encode(images, torch.Generator().manual_seed(1))
        z2 = micro_sd.encode(images, torch.Generator().manual_seed(1))
    assert out.shape == images.shape
    assert out.min() >= 0 and out.max() <= 1 and torch.isfinite(out).all()
    assert torch.equal(z1, z2) and not torch.allclose(z1, z)  # posterior samples: reproducible, not the mode


def test_decode_in_chunks_equals_one_go(micro_sd):
    z = torch.randn(5, *micro_sd.latent_shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = micro_sd.decode(z)
        calls = []
        orig = micro_sd.vae.decode

        def counting(x, *a, **k):
            calls.append(x.shape[0])
            return orig(x, *a, **k)

        micro_sd.vae.decode = counting
        try:
            micro_sd.decode_chunk = 2
            chunked = micro_sd.decode(z)
        finally:
            del micro_sd.vae.decode
    assert calls == [2, 2, 1]
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)  # batch-size-dependent kernels: ~1e-6 noise


def test_decode_matches_pipeline_postprocessing(micro_sd):
    pipe = micro_sd.pipe
    pipe.set_progress_bar_config(disable=True)
    latents = torch.randn(1, *micro_sd.latent_shape, generator=torch.Generator().manual_seed(4))
    lat = pipe("a red circle", num_inference_steps=2, latents=latents.clone(), output_type="latent").images
    img = pipe("a red circle", num_inference_steps=2, latents=latents.clone(), output_type="pt").images
    with torch.no_grad():
        torch.testing.assert_close(micro_sd.decode(lat), img, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- generation
def test_initial_latents_depend_only_on_seed(micro_sd):
    one = micro_sd.initial_latents([5])
    batch = micro_sd.initial_latents([3, 5, 9])
    again = micro_sd.initial_latents([3, 5, 9])
    assert one.shape == (1, 4, 8, 8) and batch.shape == (3, 4, 8, 8)
    assert torch.equal(batch, again)
    assert torch.equal(batch[1], one[0])
    assert torch.equal(micro_sd.initial_latents([9, 5])[1], one[0])
    assert not torch.allclose(batch[0], batch[1]) and not torch.allclose(batch[1], batch[2])
    want = torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(5)) * micro_sd.scheduler.init_noise_sigma
    assert torch.equal(one[0], want)


def test_generate_is_per_sample_independent_of_batching(micro_sd):
    a = micro_sd.generate_latents(PROMPTS, [0, 1], num_steps=3, guidance_scale=5.0)
    b = micro_sd.generate_latents(PROMPTS, [0, 1], num_steps=3, guidance_scale=5.0, batch_size=1)
    c = micro_sd.generate_latents(PROMPTS[1:], [1], num_steps=3, guidance_scale=5.0)
    # equal up to batch-size-dependent float32 kernels (latents are O(10))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a[1:], c, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a[0], a[1], atol=1e-3)


@pytest.mark.parametrize("where", ["absolute", "relative"])
def test_load_pipeline_missing_local_folder(tmp_path, where, monkeypatch):
    if where == "absolute":
        target = tmp_path / "no_such_pipeline"
    else:
        monkeypatch.chdir(tmp_path)
        target = "models/no_such_pipeline"
    with pytest.raises(FileNotFoundError, match=r"dvc repro base_model"):
        load_pipeline(target)
    with pytest.raises(FileNotFoundError, match=r"no_such_pipeline"):
        T2IModel.from_pretrained(target)
    # a folder that exists but holds no pipeline fails the same way
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"dvc repro"):
        load_pipeline(tmp_path / "empty")


def test_sdxl_save_reload_generate(micro_sdxl, tmp_path):
    assert micro_sdxl.kind == "sdxl"
    import copy

    out = tmp_path / "sdxl"
    unet = copy.deepcopy(micro_sdxl.unet)
    with torch.no_grad():
        next(unet.parameters()).add_(0.25)  # a "fine-tuned" UNet, a different module from the pipeline's
    micro_sdxl.save(out, unet=unet)
    assert micro_sdxl.pipe.unet is unet
    re = T2IModel.from_pretrained(out)
    assert re.kind == "sdxl" and re.latent_shape == micro_sdxl.latent_shape and re.image_size == 32
    for (n1, p1), (n2, p2) in zip(unet.state_dict().items(), re.unet.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    micro_sdxl.unet = unet  # generate with the fine-tuned UNet on the original adapter too
    kw = dict(num_steps=3, guidance_scale=5.0)
    img = re.generate(PROMPTS, [0, 1], **kw)
    assert img.shape == (2, 3, 32, 32)
    assert torch.isfinite(img).all() and img.min() >= 0 and img.max() <= 1
    torch.testing.assert_close(img, micro_sdxl.generate(PROMPTS, [0, 1], **kw), atol=1e-5, rtol=0)
    assert re.nfe.evals == 3 * 2 * 2


# ----------------------------------------------------------------------------- Cond
def tagged_cond(rows: int, offset: float = 0.0) -> Cond:
    r = torch.arange(rows, dtype=torch.float32) + offset
    return Cond(
        r.view(-1, 1, 1).expand(rows, 3, 4).clone(),
        {
            "text_embeds": (10 * r).view(-1, 1).expand(rows, 5).clone(),
            "time_ids": (100 * r).view(-1, 1).expand(rows, 6).clone(),
        },
    )


def row_tags(c: Cond) -> list[tuple[float, float, float]]:
    return [
        (float(c.hidden[i, 0, 0]), float(c.added["text_embeds"][i, 0]) / 10, float(c.added["time_ids"][i, 0]) / 100)
        for i in range(len(c))
    ]


def test_cond_operations_keep_rows_aligned():
    c = tagged_cond(2)
    assert len(c) == 2
    rep = c.repeat_interleave(3)
    assert len(rep) == 6
    assert row_tags(rep) == [(b, b, b) for b in (0, 0, 0, 1, 1, 1)]  # row b*n + i is prompt b
    sel = rep[torch.tensor([5, 0, 3])]
    assert row_tags(sel) == [(1, 1, 1), (0, 0, 0), (1, 1, 1)]
    assert row_tags(rep[2:4]) == [(0, 0, 0), (1, 1, 1)]
    cat = Cond.cat([c, tagged_cond(3, offset=7)])
    assert len(cat) == 5 and set(cat.added) == {"text_embeds", "time_ids"}
    assert row_tags(cat) == [(v, v, v) for v in (0, 1, 7, 8, 9)]
    plain = Cond.cat([Cond(torch.zeros(1, 2)), Cond(torch.ones(2, 2))])
    assert plain.added == {} and plain.hidden.tolist() == [[0, 0], [1, 1], [1, 1]]


def test_cond_operations_on_real_sdxl_conditioning(micro_sdxl):
    with torch.no_grad():
        both = micro_sdxl.encode_prompts(PROMPTS)
        second = micro_sdxl.encode_prompts(PROMPTS[1:])
    row = both.repeat_interleave(2)[3:4]
    torch.testing.assert_close(row.hidden, second.hidden, atol=1e-6, rtol=0)
    for k in second.added:
        torch.testing.assert_close(row.added[k], second.added[k], atol=1e-6, rtol=0)
    joined = Cond.cat([micro_sdxl.encode_uncond(2), both])
    assert len(joined) == 4 and torch.all(joined.hidden[:2] == 0)
    torch.testing.assert_close(joined.added["text_embeds"][2:], both.added["text_embeds"], atol=0, rtol=0)


def test_saved_pipeline_is_the_same_bytes_wherever_its_source_lived(micro_sd_dir, tmp_path):
    """A model folder's DVC hash must not depend on the checkout's path (diffusers and transformers record
    the folder a component was loaded from as `_name_or_path`)."""
    import shutil

    from replication import paths

    saved = {}
    for where in ("checkout_a", "deeper/checkout_b"):
        src = tmp_path / where / "base"
        shutil.copytree(micro_sd_dir, src)
        out = tmp_path / where / "finetuned"
        T2IModel.from_pretrained(src).save(out)
        assert any(str(src) in f.read_text() for f in out.rglob("*.json"))  # the defect being fixed
        paths.strip_local_paths(out)
        saved[where] = {str(f.relative_to(out)): f.read_bytes() for f in sorted(out.rglob("*")) if f.is_file()}
    assert saved["checkout_a"] == saved["deeper/checkout_b"]
