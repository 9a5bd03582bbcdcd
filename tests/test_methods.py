"""The fine-tuning methods of Table 1 (and DRaFT): each loss equals its formula on a hand-built case, one
optimiser step of the real training loop moves the method's objective the right way on a micro model, the
saved pipeline reloads with stock diffusers, and the RLHF variants differ in gradient exactly where the
released code departs from the paper (PAPER.md section 2)."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from replication import diffusion
from replication.feedback import PreferencePairs
from replication.methods.d3po import D3PO, D3POSpec, d3po_loss
from replication.methods.ddpo import DDPO, DDPOSpec, clipped_surrogate, per_prompt_advantages
from replication.methods.dpo import DiffusionDPO, DPOSpec, dpo_loss
from replication.methods.draft import BackpropSpec, RewardBackprop, backprop_images, reward_objective
from replication.methods.iterpo import IterPO
from replication.methods.sharpening import RLHFSharpening, RLHFSpec, SFTSharpening, SharpeningSpec, rlhf_loss
from replication.methods.standard import StandardFinetune
from replication.models import LoraSpec, T2IModel
from replication.sources import ImageTextSource, PairSource, PromptSource
from replication.train import TrainParams, step_generator, train
from replication.world.rater import Rater

PROMPTS = ["a red circle", "a blue square", "two green triangles", "a yellow star and a red square"]


def redness(images, prompts):
    """Differentiable stand-in reward with a known direction: mean red minus mean green and blue."""
    return 10 * (images[:, 0].mean((1, 2)) - images[:, 1:].mean((1, 2, 3)))


class RednessRater(Rater):
    """The simulated person of D3PO, judging by redness (the micro model draws no tiny-world scenes)."""

    def utility(self, images, prompts):
        return redness(images, prompts).double()


def one_step(lr: float = 2e-4, **kw) -> TrainParams:
    return TrainParams(steps=1, batch_size=4, lr=lr, max_grad_norm=0.0, checkpoint_every=1, **kw)


def unet_state(model: T2IModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.unet.state_dict().items()}


# ----------------------------------------------------------------------------- losses equal their formulas
def test_dpo_loss_formula():
    mse_w, mse_l = torch.tensor([0.10, 0.30]), torch.tensor([0.20, 0.10])
    ref_w, ref_l = torch.tensor([0.12, 0.30]), torch.tensor([0.18, 0.15])
    loss, z = dpo_loss(mse_w, mse_l, ref_w, ref_l, beta=10.0)
    want_z = 10.0 * torch.tensor([(0.12 - 0.10) - (0.18 - 0.20), (0.30 - 0.30) - (0.15 - 0.10)])
    torch.testing.assert_close(z, want_z)
    torch.testing.assert_close(loss, -torch.log(torch.sigmoid(want_z)).mean())


def rlhf_case():
    """Two prompts, m = 2 steps; the second prompt's trajectories stop after one step."""
    mse_w = torch.tensor([[0.10, 0.20], [0.30, 9.0]], requires_grad=True)
    mse_l = torch.tensor([[0.20, 0.25], [0.10, 9.0]], requires_grad=True)
    ref_w = torch.tensor([[0.15, 0.20], [0.20, 7.0]])
    ref_l = torch.tensor([[0.18, 0.30], [0.40, 7.0]])
    valid = torch.tensor([[True, True], [True, False]])
    margin = torch.tensor([0.5, 2.0])
    return mse_w, mse_l, ref_w, ref_l, valid, margin


def test_rlhf_loss_variants_equal_their_formulas():
    mse_w, mse_l, ref_w, ref_l, valid, margin = rlhf_case()
    beta = 3.0
    mean_valid = lambda v: torch.stack([v[:, 0].mean(), v[0, 1]])  # noqa: E731  (prompt 1 has one step)
    pw, pl, rw, rl = (mean_valid(v.detach()) for v in (mse_w, mse_l, ref_w, ref_l))
    z = beta * ((rw - pw) - (rl - pl))
    z_official = beta * ((ref_w[0] - pw) - (ref_l[0] - pl))  # the reference read at the first step only
    cases = {
        "paper": (-F.logsigmoid(z - margin)).mean(),
        "dpo": (-F.logsigmoid(z)).mean(),
        "official": (-F.logsigmoid(z_official) + margin).mean(),
    }
    for variant, want in cases.items():
        loss, got_z = rlhf_loss(variant, mse_w, mse_l, ref_w, ref_l, valid, valid, margin, beta)
        torch.testing.assert_close(loss, want, msg=variant)
        torch.testing.assert_close(got_z, z_official if variant == "official" else z)
    with pytest.raises(ValueError, match="unknown RLHF loss"):
        rlhf_loss("rebel", mse_w, mse_l, ref_w, ref_l, valid, valid, margin, beta)


def grads_of(variant, margin, ref_w=None, ref_l=None):
    mse_w, mse_l, rw, rl, valid, _ = rlhf_case()
    loss, _ = rlhf_loss(
        variant, mse_w, mse_l, rw if ref_w is None else ref_w, rl if ref_l is None else ref_l, valid, valid, margin, 3.0
    )
    loss.backward()
    return torch.cat([mse_w.grad.flatten(), mse_l.grad.flatten()])


def test_official_margin_is_outside_the_gradient_and_paper_margin_inside():
    """PAPER.md: the released code adds R(w) - R(l) outside the log-sigmoid (no effect on gradients)."""
    small, large = torch.tensor([0.0, 0.0]), torch.tensor([5.0, -3.0])
    torch.testing.assert_close(grads_of("official", small), grads_of("official", large))
    assert not torch.allclose(grads_of("paper", small), grads_of("paper", large))
    torch.testing.assert_close(grads_of("paper", small), grads_of("dpo", large))  # margin 0: plain DPO
    # steps without a trajectory (prompt 2, step 2) get no gradient in any variant
    for v in ("paper", "official", "dpo"):
        g = grads_of(v, large).view(2, 2, 2)
        assert g[:, 1, 1].abs().max() == 0


def test_official_reads_the_reference_at_the_first_step_only():
    """The reference enters `official` through its first step: with every later step equal to the first it is
    plain DPO; changing a later reference step changes `dpo` and leaves `official` alone."""
    _, _, ref_w, ref_l, _, margin = rlhf_case()
    flat_w, flat_l = ref_w[:1].expand(2, 2).clone(), ref_l[:1].expand(2, 2).clone()
    torch.testing.assert_close(grads_of("official", margin, flat_w, flat_l), grads_of("dpo", margin, flat_w, flat_l))
    moved_w = flat_w.clone()
    moved_w[1, 0] += 1.0
    torch.testing.assert_close(
        grads_of("official", margin, moved_w, flat_l), grads_of("official", margin, flat_w, flat_l)
    )
    assert not torch.allclose(grads_of("dpo", margin, moved_w, flat_l), grads_of("dpo", margin, flat_w, flat_l))


def test_ddpo_surrogate_and_advantages_formulas():
    new, old = torch.tensor([0.0, 0.2, -0.2]), torch.zeros(3)
    adv = torch.tensor([1.0, 1.0, -2.0])
    loss, frac = clipped_surrogate(new, old, adv, clip_range=0.1)
    ratio = torch.exp(new)
    want = torch.maximum(-adv * ratio, -adv * ratio.clamp(0.9, 1.1)).mean()
    torch.testing.assert_close(loss, want)
    assert frac.item() == pytest.approx(2 / 3)
    r = torch.tensor([1.0, 3.0, 10.0, 10.0, 0.0, 20.0])
    a = per_prompt_advantages(r, k=2, clip=5.0)
    torch.testing.assert_close(a, torch.tensor([-1.0, 1.0, 0.0, 0.0, -1.0, 1.0]), atol=1e-5, rtol=0)


def test_d3po_loss_formula():
    lp_w, lp_l = torch.tensor([0.05, -0.5]), torch.tensor([0.0, 0.02])
    ref_w, ref_l = torch.tensor([0.0, 0.0]), torch.tensor([0.03, 0.0])
    got = d3po_loss(lp_w, lp_l, ref_w, ref_l, beta=0.1, ratio_clip=0.1)
    lo, hi = math.log(0.9), math.log(1.1)
    rw = (lp_w - ref_w).clamp(lo, hi)
    rl = (lp_l - ref_l).clamp(lo, hi)
    torch.testing.assert_close(got, -F.logsigmoid(0.1 * rw - 0.1 * rl).mean())


def test_reward_objectives_formulas():
    r = torch.tensor([1.0, 3.0])
    lin = BackpropSpec(objective="linear", reward_scale=0.5)
    hinge = BackpropSpec(mode="refl", objective="hinge", margin=2.0, reward_scale=0.5)
    assert reward_objective(r, lin).item() == pytest.approx(-0.5 * 2.0)
    assert reward_objective(r, hinge).item() == pytest.approx(0.5 * (1.0 + 0.0) / 2)


# ----------------------------------------------------------------------------- one optimiser step, each method
@pytest.fixture
def source(world_pairs):
    images, captions = world_pairs
    return ImageTextSource(images, captions, "pairs")


@pytest.fixture
def pairs_data(world_pairs):
    images, captions = world_pairs
    choice = np.where(np.arange(40) % 5 == 0, 0, np.where(np.arange(40) % 2 == 0, 1, -1))
    return PreferencePairs(captions[:40], images[:40], images[40:80], choice)


@pytest.fixture
def pairs(pairs_data):
    return PairSource(pairs_data, "pairs")


def build(name: str, model: T2IModel, source, pairs, lora: LoraSpec | None = None, updates: int = 2):
    prompts = PromptSource(PROMPTS, "prompts")
    if name == "standard":
        return StandardFinetune(model, source, 4, lora=lora)
    if name == "sft_sharpening":
        return SFTSharpening(model, redness, source, 4, SharpeningSpec(n=3, m=2), lora=lora)
    if name == "rlhf_sharpening":
        return RLHFSharpening(
            model,
            redness,
            prompts,
            4,
            RLHFSpec(n=3, m=2, x0="ode", ode_steps=2, beta=50.0, gen_steps=4),
            lora=lora,
        )
    if name == "diffusion_dpo":
        return DiffusionDPO(model, pairs, 4, DPOSpec(beta=50.0), lora=lora)
    if name == "ddpo":
        return DDPO(
            model,
            redness,
            prompts,
            4,
            DDPOSpec(sample_steps=4, images_per_prompt=2, clip_range=1.0, updates_per_sample=updates),
            lora=lora,
        )
    if name == "d3po":
        return D3PO(
            model,
            prompts,
            4,
            D3POSpec(sample_steps=4, beta=1.0, ratio_clip=0.5, updates_per_sample=updates, rater=RednessRater()),
            lora=lora,
        )
    if name == "draft":
        return RewardBackprop(model, redness, prompts, 4, BackpropSpec(k=2, sample_steps=4), lora=lora)
    if name == "iterpo":
        return IterPO(
            model,
            [(redness, 1.0)],
            prompts,
            4,
            BackpropSpec(mode="refl", objective="hinge", margin=5.0, stop_range=2, sample_steps=4),
            lora=lora,
        )
    raise KeyError(name)


def transition_log_probs(model: T2IModel, buf: dict, rows: torch.Tensor, spec) -> torch.Tensor:
    """Summed log-probability under `model` of every recorded transition of the given trajectories."""
    steps, n = buf["latents"].shape[0] - 1, len(rows)
    prompts = [buf["prompts"][int(r) % len(buf["prompts"])] for r in rows]
    cond = model.encode_prompts(prompts * steps)
    lp = diffusion.step_log_prob(
        model.denoiser(cond, spec.guidance),
        model.scheduler,
        buf["latents"][:-1, rows].flatten(0, 1),
        buf["timesteps"].repeat_interleave(n),
        buf["latents"][1:, rows].flatten(0, 1),
        diffusion.stride(model.scheduler, spec.sample_steps),
        spec.eta,
    )
    return lp.view(steps, n).sum(0)


def probe(name: str, method, start: T2IModel, pairs_data: PreferencePairs) -> float:
    """The quantity the method's update must raise, on the draws of training step 1, computed here from the
    definitions (which image the rater preferred, which trajectory scored best), not from the method's loss."""
    gen = step_generator(0, 1)
    model = method.model
    with torch.no_grad():
        if name in ("standard", "sft_sharpening"):
            return -method.loss(1, gen)[0].item()  # lower loss on the batch (the chosen trajectories)
        if name == "rlhf_sharpening":  # epsilon-MSE likelihood ratio to the start, best over worst trajectory
            if not hasattr(method, "_probe"):
                method._probe = method.select(gen)
            ex, spec = method._probe, method.spec
            b = ex.scores.shape[0]
            rows = torch.arange(b) * spec.n
            fit = {}
            for who, m in (("policy", model), ("start", start)):
                for side, pick in (("best", rows + ex.scores.argmax(1)), ("worst", rows + ex.scores.argmin(1))):
                    tr = diffusion.rollout(
                        m.denoiser(ex.cond[pick]),
                        m.scheduler,
                        ex.x_t[pick],
                        ex.t[pick],
                        spec.m,
                        diffusion.stride(m.scheduler, spec.infer_steps),
                    )
                    err = (tr.out - ex.eps[pick][None]).pow(2).mean((2, 3, 4))
                    fit[who, side] = (err * tr.valid).sum(0) / tr.valid.sum(0)
            return (
                ((fit["start", "best"] - fit["policy", "best"]) - (fit["start", "worst"] - fit["policy", "worst"]))
                .mean()
                .item()
            )
        if name == "diffusion_dpo":  # the same on the batch's rater winners and losers, with the batch's draws
            xw, xl, prompts = method.pairs.batch(method.batch_size, gen, model.device)
            d = pairs_data
            truth = {
                (
                    d.prompts[i],
                    (d.images_a if c > 0 else d.images_b)[i].tobytes(),
                    (d.images_b if c > 0 else d.images_a)[i].tobytes(),
                )
                for i, c in enumerate(d.choice)
                if c
            }
            as_bytes = lambda x: (x.permute(1, 2, 0) * 255).round().byte().numpy().tobytes()  # noqa: E731
            assert all((p, as_bytes(xw[i]), as_bytes(xl[i])) in truth for i, p in enumerate(prompts)), (
                "PairSource must hand out the rater's winners and losers"
            )
            z0 = model.encode(torch.cat([xw, xl]), gen)
            b = len(prompts)
            t = torch.randint(0, 1000, (b,), generator=gen).repeat(2)
            eps = torch.randn((b, *z0.shape[1:]), generator=gen).repeat(2, 1, 1, 1)
            x_t = diffusion.add_noise(model.scheduler, z0, eps, t)
            cond = model.encode_prompts(prompts + prompts)
            err = {who: (m.eps(x_t, t, cond) - eps).pow(2).mean((1, 2, 3)) for who, m in (("p", model), ("s", start))}
            gain = err["s"] - err["p"]
            return (gain[:b] - gain[b:]).mean().item()
        if name in ("ddpo", "d3po") and method._buf is None:
            method.loss(1, step_generator(0, 1))  # sample the round exactly as training step 1 does
        if name == "ddpo":  # advantage-weighted log-probability of the round's transitions
            b = method._buf
            rows = torch.arange(b["latents"].shape[1])
            return (transition_log_probs(model, b, rows, method.spec) * b["adv"]).mean().item()
        if name == "d3po":  # log-ratio to the start of the transitions the rater preferred minus the others
            b, g = method._buf, method.group
            a = torch.arange(g)
            pref, rej = torch.where(b["a_wins"], a, a + g), torch.where(b["a_wins"], a + g, a)
            ratio = {
                k: transition_log_probs(model, b, r, method.spec) - transition_log_probs(start, b, r, method.spec)
                for k, r in (("pref", pref), ("rej", rej))
            }
            return (ratio["pref"] - ratio["rej"]).mean().item()
        if name in ("draft", "iterpo"):
            prompts = method.prompts.batch(method.batch_size, gen)
            return redness(backprop_images(model, prompts, method.spec, gen), prompts).mean().item()
    raise KeyError(name)


METHODS = ["standard", "sft_sharpening", "rlhf_sharpening", "diffusion_dpo", "ddpo", "d3po", "draft", "iterpo"]


def test_standard_finetune_loss_is_the_epsilon_mse_of_its_draws(micro_sd, source):
    """The diffusers example's objective: one timestep and noise per pair, MSE to the noise, batch mean."""
    method = StandardFinetune(micro_sd, source, 4)
    with torch.no_grad():
        loss, metrics = method.loss(1, step_generator(0, 1))
        gen = step_generator(0, 1)  # the same draws, in the method's order: batch, latents, t, noise
        images, captions = source.batch(4, gen, "cpu")
        x0 = micro_sd.encode(images, gen)
        t = torch.randint(0, 1000, (4,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        a = micro_sd.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        out = micro_sd.unet(
            a.sqrt() * x0 + (1 - a).sqrt() * eps, t, encoder_hidden_states=micro_sd.encode_prompts(captions).hidden
        ).sample
    torch.testing.assert_close(loss, ((out - eps) ** 2).mean(dim=(1, 2, 3)).mean())
    assert metrics["nfe"] == 4.0  # one evaluation per pair


def test_latent_cache_draws_what_encode_draws(micro_sd, source):
    """The cached posterior gives the same latents as encoding the batch, from the same generator state."""
    from replication.sources import LatentCache

    cache = LatentCache(micro_sd, source, chunk=7)  # chunks that do not divide the set
    assert cache.mean.shape[0] == len(source)
    idx = np.array([3, 0, 11, 3, len(source) - 1])
    with torch.no_grad():
        want = micro_sd.encode(source.pixels(idx, "cpu"), torch.Generator().manual_seed(5))
    got = cache.latents(idx, torch.Generator().manual_seed(5))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert not torch.equal(got[0], got[3])  # the same image twice: two posterior draws


@pytest.mark.parametrize("name", METHODS)
def test_one_step_moves_the_objective_and_the_pipeline_reloads(micro_sd, source, pairs, pairs_data, name, tmp_path):
    from diffusers import DiffusionPipeline, StableDiffusionPipeline

    before_w = unet_state(micro_sd)
    start = copy.deepcopy(micro_sd)
    method = build(name, micro_sd, source, pairs)
    before = probe(name, method, start, pairs_data)
    fit = train(
        method, one_step(), tmp_path / "run", tmp_path / "log.csv", out_dir=tmp_path / "out", show_progress=False
    )
    assert fit["done"]
    after = probe(name, method, start, pairs_data)
    assert after > before, f"{name}: {before:.6g} -> {after:.6g}"

    log = (tmp_path / "log.csv").read_text().splitlines()
    assert "nfe" in log[0].split(",") and float(log[1].split(",")[log[0].split(",").index("nfe")]) > 0
    pipe = DiffusionPipeline.from_pretrained(str(tmp_path / "out"))
    assert isinstance(pipe, StableDiffusionPipeline)
    reloaded = T2IModel.from_pretrained(tmp_path / "out")
    trained = unet_state(method.model)
    for k, v in reloaded.unet.state_dict().items():
        torch.testing.assert_close(v, trained[k], rtol=0, atol=0)
    assert any(not torch.equal(trained[k], before_w[k]) for k in before_w), "the step changed nothing"


def test_nfe_counts_follow_each_methods_structure(micro_sd, source, pairs):
    b = 4
    _, m = build("diffusion_dpo", micro_sd, source, pairs).loss(1, step_generator(0, 1))
    assert m["nfe"] == 2 * b + 2 * b  # policy and reference on winners and losers
    _, m = build("standard", micro_sd, source, pairs).loss(1, step_generator(0, 1))
    assert m["nfe"] == b
    _, m = build("draft", micro_sd, source, pairs).loss(1, step_generator(0, 1))
    assert m["nfe"] == b * 4 * 2  # 4 guided DDIM steps
    ddpo = build("ddpo", micro_sd, source, pairs)
    _, m1 = ddpo.loss(1, step_generator(0, 1))
    _, m2 = ddpo.loss(2, step_generator(0, 2))
    group = b * ddpo.spec.updates_per_sample
    assert m1["nfe"] == group * 4 * 2 + b * 4 * 2  # the round's sampling, then b trajectories x 4 steps, guided
    assert m2["nfe"] == b * 4 * 2  # the round's second step reuses its samples


def test_rlhf_variants_on_a_model_differ_only_where_the_code_does(micro_sd):
    """End to end on the micro model: with m = 1 the reference's first step is all of it, so `official` and
    `dpo` give the same gradient, and `paper` without a margin is `dpo` as well; with the margin it differs."""
    prompts = PromptSource(PROMPTS, "prompts")

    def grad(loss: str, margin_scale: float, m: int = 1):
        model = copy.deepcopy(micro_sd)
        method = RLHFSharpening(
            model,
            redness,
            prompts,
            3,
            RLHFSpec(n=3, m=m, x0="tweedie", loss=loss, beta=50.0, gen_steps=3, margin_scale=margin_scale),
        )
        loss_value, _ = method.loss(1, step_generator(3, 1))
        loss_value.backward()
        return torch.cat([p.grad.flatten() for p in model.unet.parameters() if p.grad is not None])

    g_dpo = grad("dpo", 1.0)
    torch.testing.assert_close(grad("official", 1.0), g_dpo, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(grad("paper", 0.0), g_dpo, rtol=1e-5, atol=1e-9)
    assert not torch.allclose(grad("paper", 1.0), g_dpo, rtol=1e-3, atol=0)
    assert not torch.allclose(grad("official", 1.0, m=3), grad("dpo", 1.0, m=3), rtol=1e-3, atol=0)


@pytest.mark.parametrize("x0", ["tweedie", "ode"])
def test_rlhf_kept_graph_equals_the_rerun(micro_sd, x0):
    """grad_pass keep backpropagates the explored best and worst rows; rerun rolls them out again with gradients.
    Same pair, same loss and gradient (up to the rounding of another batch size), m*2B fewer UNet calls."""
    prompts = PromptSource(PROMPTS, "prompts")

    def run(grad_pass: str):
        model = copy.deepcopy(micro_sd)
        spec = RLHFSpec(n=3, m=2, x0=x0, ode_steps=2, beta=50.0, gen_steps=3, grad_pass=grad_pass)
        value, metrics = RLHFSharpening(model, redness, prompts, 2, spec).loss(1, step_generator(4, 1))
        value.backward()
        return value, metrics, torch.cat([p.grad.flatten() for p in model.unet.parameters() if p.grad is not None])

    l_rerun, m_rerun, g_rerun = run("rerun")
    l_keep, m_keep, g_keep = run("keep")
    torch.testing.assert_close(l_keep, l_rerun, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g_keep, g_rerun, rtol=1e-4, atol=1e-4 * g_rerun.abs().max().item())
    assert m_keep["reward_margin"] == m_rerun["reward_margin"]
    assert m_rerun["nfe"] - m_keep["nfe"] == 2 * 2 * 2  # the pair's m steps for each of the 2 prompts


# ----------------------------------------------------------------------------- LoRA
def test_lora_trains_adapters_saves_merged_and_references_the_base(micro_sd, source, pairs, tmp_path):
    from diffusers import UNet2DConditionModel

    base = unet_state(micro_sd)
    x = torch.randn(2, *micro_sd.latent_shape)
    t = torch.tensor([500, 100])
    cond = micro_sd.encode_prompts(PROMPTS[:2])
    with torch.no_grad():
        base_out = micro_sd.eps(x, t, cond)
    method = build("diffusion_dpo", micro_sd, source, pairs, lora=LoraSpec(rank=4))
    trainable = [n for n, p in micro_sd.unet.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in n for n in trainable)
    train(
        method, one_step(lr=1e-2), tmp_path / "run", tmp_path / "log.csv", out_dir=tmp_path / "out", show_progress=False
    )
    with torch.no_grad():
        torch.testing.assert_close(method.ref_denoiser(cond)(x, t), base_out)  # adapters off = the start
        assert not torch.allclose(micro_sd.eps(x, t, cond), base_out)
    merged = UNet2DConditionModel.from_pretrained(str(tmp_path / "out" / "unet"))
    assert not any("lora" in k for k in merged.state_dict())
    assert any(not torch.equal(v, base[k]) for k, v in merged.state_dict().items())
    with torch.no_grad():
        torch.testing.assert_close(
            merged(x, t, encoder_hidden_states=cond.hidden).sample, micro_sd.eps(x, t, cond), rtol=1e-4, atol=1e-5
        )


# ----------------------------------------------------------------------------- resume with method state
@pytest.mark.parametrize("name", ["ddpo", "d3po"])
def test_resume_inside_a_sampling_round_equals_an_uninterrupted_run(micro_sd, source, pairs, name, tmp_path):
    cfg = replace(one_step(lr=1e-3), steps=4, checkpoint_every=10)
    whole = build(name, copy.deepcopy(micro_sd), source, pairs)  # two optimiser steps per round of samples
    train(whole, cfg, tmp_path / "a", tmp_path / "a.csv", show_progress=False)
    first = build(name, copy.deepcopy(micro_sd), source, pairs)
    train(first, cfg, tmp_path / "b", tmp_path / "b.csv", show_progress=False, stop_after=1)  # mid-round
    again = build(name, copy.deepcopy(micro_sd), source, pairs)  # a new process: no samples in memory
    train(again, cfg, tmp_path / "b", tmp_path / "b.csv", show_progress=False)
    a, b = unet_state(whole.model), unet_state(again.model)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


@pytest.mark.parametrize("name", ["ddpo", "d3po"])
def test_sampled_rounds_refuse_gradient_accumulation(micro_sd, source, pairs, name, tmp_path):
    """A second micro-step of one optimiser step would reuse the step's rows: refused with the fix."""
    with pytest.raises(ValueError, match="grad_accum"):
        train(
            build(name, micro_sd, source, pairs),
            replace(one_step(), grad_accum=2),
            tmp_path / "r",
            tmp_path / "r.csv",
            show_progress=False,
        )
