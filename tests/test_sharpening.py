"""SFT Diffusion-Sharpening: exact equality with the released code's formulation, per-caption
selection for batches above one, the m cap, and the aggregation options."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from replication import diffusion
from replication.methods.sharpening import SFTSharpening, SharpeningSpec, explore
from replication.sources import ImageTextSource
from replication.train import step_generator


class RedReward:
    """A deterministic stand-in reward: mean red minus mean blue, signed by prompt (so the best
    trajectory differs between captions of one batch)."""

    name = "red"

    def __call__(self, images, prompts):
        sign = torch.tensor([1.0 if "red" in p else -1.0 for p in prompts])
        return 100 * sign * (images[:, 0].mean((1, 2)) - images[:, 2].mean((1, 2)))


@pytest.fixture
def source(world_pairs):
    images, captions = world_pairs
    return ImageTextSource(images, captions, "pairs")


def released_code_loss(model, reward, source, batch, spec, gen):
    """The released script's formulation, one caption at a time: all n trajectories with the
    autograd graph kept, per-step losses against the original noise, mean over steps, the best
    trajectory's loss backpropagated. Draws randomness in the same order as SFTSharpening.loss."""
    images, prompts = source.batch(batch, gen, model.device)
    with torch.no_grad():
        x0 = model.encode(images, gen)
    b, n, s = x0.shape[0], spec.n, diffusion.stride(model.scheduler, spec.infer_steps)
    t_all = torch.randint(0, 1000, (b,), generator=gen)
    eps_all = torch.randn((b * n, *x0.shape[1:]), generator=gen)
    total = 0.0
    for i in range(b):
        t = int(t_all[i])
        m = min(spec.m, 1 + t // s)  # the released code's cap
        eps = eps_all[i * n : (i + 1) * n]
        x = diffusion.add_noise(model.scheduler, x0[i : i + 1].repeat(n, 1, 1, 1), eps, torch.full((n,), t))
        cond = model.encode_prompts([prompts[i]] * n)
        rewards, losses = [], []
        for k in range(m):
            tk = torch.full((n,), t - k * s)
            pred = model.eps(x, tk, cond)
            step = diffusion.ddim_step(model.scheduler, pred, tk, x, tk - s)
            x = step.prev
            with torch.no_grad():
                rewards.append(reward(model.decode(step.x0), [prompts[i]] * n))
            losses.append((pred - eps).pow(2).mean(dim=(1, 2, 3)))
        best = torch.stack(rewards).mean(0).argmax()
        total = total + torch.stack(losses).mean(0)[best] / b
    return total


def grads(model):
    return {k: p.grad.clone() for k, p in model.unet.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("grad_pass", ["rerun", "keep"])
@pytest.mark.parametrize("batch", [1, 3])
def test_loss_and_gradient_equal_the_released_formulation(micro_sd, source, batch, grad_pass):
    """Both ways of getting gradients for the chosen trajectories: the re-run and the kept graph."""
    spec = SharpeningSpec(n=3, m=3, grad_pass=grad_pass)
    ours = SFTSharpening(micro_sd, RedReward(), source, batch, spec)
    ref_model = copy.deepcopy(micro_sd)

    loss, metrics = ours.loss(7, step_generator(0, 7))
    loss.backward()
    ref = released_code_loss(ref_model, RedReward(), source, batch, spec, step_generator(0, 7))
    ref.backward()

    assert torch.allclose(loss, ref, rtol=1e-5, atol=1e-7), (loss.item(), ref.item())
    g1, g2 = grads(micro_sd), grads(ref_model)
    assert g1.keys() == g2.keys() and len(g1) > 10
    scale = max(g.abs().max().item() for g in g2.values())
    worst = max((g1[k] - g2[k]).abs().max().item() for k in g1) / scale  # relative to the gradient's scale
    assert worst < 1e-4, f"largest gradient difference {worst:.2e} of the largest gradient entry"
    rerun = batch * spec.m if grad_pass == "rerun" else 0  # m more with gradients, or none (graph kept)
    assert metrics["nfe"] == batch * spec.n * spec.m + rerun


def test_selection_is_per_caption(micro_sd, source):
    """With opposite rewards for two captions of one batch, each picks its own best trajectory."""
    x0 = torch.randn(2, *micro_sd.latent_shape)
    spec = SharpeningSpec(n=4, m=2)
    ex = explore(micro_sd, RedReward(), x0, ["a red circle", "a blue circle"], spec, step_generator(0, 1))
    assert ex.scores.shape == (2, 4)
    per_traj = ex.step_rewards.nansum(0).view(2, 4)
    assert torch.equal(ex.scores, per_traj)
    # picking over the flattened batch (the released code) would choose one trajectory for both
    assert ex.scores.argmax(1).tolist() == [int(per_traj[0].argmax()), int(per_traj[1].argmax())]


def test_steps_beyond_t_are_capped_and_ignored(micro_sd):
    spec = SharpeningSpec(n=2, m=3)
    x0 = torch.randn(64, *micro_sd.latent_shape)
    ex = explore(micro_sd, RedReward(), x0, ["a red circle"] * 64, spec, step_generator(5, 5))
    expected = torch.stack([ex.t - 40 * k >= 0 for k in range(3)])
    assert torch.equal(ex.traj.valid, expected)
    assert torch.equal(torch.isnan(ex.step_rewards), ~expected)
    assert (ex.t < 80).any(), "the draw should include early timesteps to exercise the cap"


def test_mean_and_sum_aggregation_pick_the_same_trajectories(micro_sd):
    x0 = torch.randn(6, *micro_sd.latent_shape)
    prompts = ["a red square"] * 6
    a = explore(micro_sd, RedReward(), x0, prompts, SharpeningSpec(aggregate="sum"), step_generator(1, 1))
    b = explore(micro_sd, RedReward(), x0, prompts, SharpeningSpec(aggregate="mean"), step_generator(1, 1))
    assert torch.equal(a.scores.argmax(1), b.scores.argmax(1))
    steps = a.traj.valid.sum(0).view(6, 3).float()
    assert torch.allclose(a.scores / steps, b.scores)


def test_ode_x0_costs_ode_steps_evaluations_per_scored_step(micro_sd, source):
    spec = SharpeningSpec(n=2, m=2, x0="ode", ode_steps=3)
    method = SFTSharpening(micro_sd, RedReward(), source, 2, spec)
    _, metrics = method.loss(1, step_generator(0, 1))
    # exploration: per step one evaluation + (ode_steps - 1) more for the ODE; plus m with gradients
    assert metrics["nfe"] == 2 * 2 * 2 * 3 + 2 * 2


def test_metrics_describe_the_trajectory_rewards(micro_sd, source):
    method = SFTSharpening(micro_sd, RedReward(), source, 4, SharpeningSpec())
    _, m = method.loss(3, step_generator(0, 3))
    assert m["reward_worst"] <= m["reward_mean"] <= m["reward_best"]
    assert m["reward_std"] >= m["reward_std_within"] - 1e-9 or np.isclose(m["reward_std"], m["reward_std_within"])


def test_invalid_spec_is_refused():
    with pytest.raises(ValueError, match="n >= 1"):
        SharpeningSpec(n=0)
    with pytest.raises(ValueError, match="aggregate"):
        SharpeningSpec(aggregate="max")
    with pytest.raises(ValueError, match="grad_pass"):
        SharpeningSpec(grad_pass="both")


def test_v_prediction_targets_follow_each_steps_timestep(micro_sd, source):
    """A v-prediction model that is exact (it outputs the v of the true clean latent at every x and t) has zero
    sharpening loss: the DDIM rollout stays on the (x0, noise) line and the target is that line's v at each step's
    own timestep. A target fixed at the start timestep would give a positive loss from the second step on."""
    from diffusers import DDIMScheduler

    from replication.methods.sharpening import step_targets

    micro_sd.scheduler = DDIMScheduler.from_config(micro_sd.scheduler.config, prediction_type="v_prediction")
    b, spec = 3, SharpeningSpec(n=2, m=3)
    gen = step_generator(0, 1)  # the method's first draws: the batch, then the posterior sample
    images, _ = source.batch(b, gen, "cpu")
    with torch.no_grad():
        x0 = micro_sd.encode(images, gen)
    alphas = micro_sd.scheduler.alphas_cumprod

    def exact_v(x, t, cond, unet=None):
        clean = x0.repeat_interleave(spec.n, 0) if len(x) == b * spec.n else x0
        a = alphas[t].view(-1, 1, 1, 1)
        return (a.sqrt() * x - clean) / (1 - a).sqrt()

    micro_sd.eps = exact_v
    loss, _ = SFTSharpening(micro_sd, RedReward(), source, b, spec).loss(1, step_generator(0, 1))
    assert loss.item() < 1e-8

    eps = torch.randn_like(x0)
    t = torch.tensor([[600, 300, 900], [560, 260, 860]])  # (m, B): two steps of stride 40
    v = step_targets(micro_sd.scheduler, x0, eps, t)
    assert v.shape == (2, *x0.shape)
    assert (v[0] - v[1]).abs().max() > 1e-2, "a v target depends on the timestep"
    micro_sd.scheduler = DDIMScheduler.from_config(micro_sd.scheduler.config, prediction_type="epsilon")
    assert torch.equal(step_targets(micro_sd.scheduler, x0, eps, t), torch.stack([eps, eps]))
