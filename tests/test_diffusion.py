"""The sampling math of replication/diffusion.py against diffusers' DDIMScheduler and the stock
StableDiffusionPipeline, plus the analytic cases (point-mass and Gaussian data) where the exact
denoiser and the exact probability-flow ODE solution are known."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler

from replication import diffusion as D
from replication.models import sd_scheduler_config

VARIANTS = {
    "sd": {},
    "v_prediction": dict(prediction_type="v_prediction"),
    "sample": dict(prediction_type="sample"),
    "clip_sample": dict(clip_sample=True),
    "alpha_to_one": dict(set_alpha_to_one=True),
}
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def make_scheduler(**overrides) -> DDIMScheduler:
    return DDIMScheduler(**{**sd_scheduler_config(), **overrides})


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def abar(scheduler, t, like):
    """alpha-bar straight from the scheduler's table (independent of diffusion.alpha_bar)."""
    vals = [
        float(scheduler.alphas_cumprod[i]) if i >= 0 else float(scheduler.final_alpha_cumprod)
        for i in torch.as_tensor(t).reshape(-1).tolist()
    ]
    return torch.tensor(vals, dtype=like.dtype).view(-1, *([1] * (like.ndim - 1)))


def point_mass_output(scheduler, x_star):
    """The exact model output (in the scheduler's prediction type) for data concentrated at x_star."""

    def fn(x, t):
        a = abar(scheduler, t, x)
        eps = (x - a.sqrt() * x_star) / (1 - a).sqrt()
        return D.target_for(scheduler, x_star.expand_as(x), eps, t)

    return fn


class Counting:
    """Wraps an eps_fn and records every call (rows and timesteps)."""

    def __init__(self, fn):
        self.fn, self.calls, self.rows, self.ts = fn, 0, 0, []

    def __call__(self, x, t):
        self.calls += 1
        self.rows += x.shape[0]
        self.ts.append(t.clone())
        return self.fn(x, t)


# ----------------------------------------------------------------------------- ddim_step
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("k", [5, 10])
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_step_equals_diffusers_scalar(variant, k, eta):
    sched = make_scheduler(**VARIANTS[variant])
    sched.set_timesteps(k)
    s = sched.config.num_train_timesteps // k
    grid = sched.timesteps.tolist()
    assert grid[-1] - s < 0  # the last step goes "to the end" (final alpha-bar)
    for j, t in enumerate(grid):
        x = rand(2, 4, 8, 8, seed=3 * j) * 2
        out = rand(2, 4, 8, 8, seed=3 * j + 1) * 2
        noise = rand(2, 4, 8, 8, seed=3 * j + 2)
        ref = sched.step(out, t, x, eta=eta, variance_noise=noise if eta > 0 else None)
        ours = D.ddim_step(sched, out, t, x, t - s, eta=eta, noise=noise)
        torch.testing.assert_close(ours.prev, ref.prev_sample, atol=1e-6, rtol=0)
        torch.testing.assert_close(ours.x0, ref.pred_original_sample, atol=1e-6, rtol=0)
        if eta == 0:
            assert torch.equal(ours.prev, ours.mean) and torch.all(ours.std == 0)
        elif t - s >= 0 or not sched.config.set_alpha_to_one:
            assert torch.all(ours.std > 0)


def test_ddim_step_noise_from_generator_is_reproducible():
    sched = make_scheduler()
    x, out = rand(3, 4, 8, 8, seed=1), rand(3, 4, 8, 8, seed=2)
    t = torch.tensor([801, 601, 401])
    a = D.ddim_step(sched, out, t, x, t - 200, eta=1.0, generator=torch.Generator().manual_seed(7))
    b = D.ddim_step(sched, out, t, x, t - 200, eta=1.0, generator=torch.Generator().manual_seed(7))
    c = D.ddim_step(sched, out, t, x, t - 200, eta=1.0, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.prev, b.prev) and not torch.allclose(a.prev, c.prev)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a.prev, a.mean + a.std.view(-1, 1, 1, 1) * noise)


@pytest.mark.parametrize("variant", ["sd", "v_prediction", "sample", "clip_sample"])
@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_step_vector_timesteps_equal_per_sample_calls(variant, eta):
    sched = make_scheduler(**VARIANTS[variant])
    t = torch.tensor([999, 801, 400, 37, 1, 0])
    t_prev = t - torch.tensor([100, 200, 50, 20, 200, 1])  # includes t_prev < 0
    x, out, noise = (rand(len(t), 4, 8, 8, seed=s) for s in (10, 11, 12))
    batched = D.ddim_step(sched, out, t, x, t_prev, eta=eta, noise=noise)
    for i in range(len(t)):
        one = D.ddim_step(
            sched, out[i : i + 1], int(t[i]), x[i : i + 1], int(t_prev[i]), eta=eta, noise=noise[i : i + 1]
        )
        for name in ("prev", "x0", "eps", "mean", "std"):
            torch.testing.assert_close(getattr(batched, name)[i : i + 1], getattr(one, name), atol=1e-6, rtol=0)
    # the per-sample entries really differ (a broadcasting bug that used t[0] everywhere would not)
    assert len({round(float(v), 6) for v in D.alpha_bar(sched, t)}) == len(t)


def test_diffusers_step_rejects_vector_timesteps():
    """The released code's crash that motivates ddim_step: DDIMScheduler.step takes one scalar
    timestep; a per-sample vector makes it fail (diffusers 0.42: RuntimeError on the
    `prev_timestep >= 0` truth test of a multi-element tensor)."""
    sched = make_scheduler()
    sched.set_timesteps(5)
    x, out = rand(3, 4, 8, 8, seed=1), rand(3, 4, 8, 8, seed=2)
    with pytest.raises(RuntimeError, match="ambiguous"):
        sched.step(out, torch.tensor([801, 601, 401]), x)
    # ours accepts it
    assert (
        D.ddim_step(sched, out, torch.tensor([801, 601, 401]), x, torch.tensor([601, 401, 201])).prev.shape == x.shape
    )


# ----------------------------------------------------------------------------- forward process
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_add_noise_equals_diffusers(variant):
    sched = make_scheduler(**VARIANTS[variant])
    x0, eps = rand(5, 4, 8, 8, seed=1), rand(5, 4, 8, 8, seed=2)
    t = torch.tensor([0, 1, 250, 777, 999])
    ref = sched.add_noise(x0, eps, t)
    torch.testing.assert_close(D.add_noise(sched, x0, eps, t), ref, atol=1e-6, rtol=0)
    # a scalar t is broadcast to every sample
    torch.testing.assert_close(
        D.add_noise(sched, x0, eps, 500), sched.add_noise(x0, eps, torch.full((5,), 500)), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize("kind", PREDICTION_TYPES)
def test_to_x0_eps_inverts_add_noise(kind):
    sched = make_scheduler(prediction_type=kind)
    x0, eps = rand(5, 4, 8, 8, seed=1, dtype=torch.float64), rand(5, 4, 8, 8, seed=2, dtype=torch.float64)
    t = torch.tensor([0, 3, 400, 900, 999])
    x_t = D.add_noise(sched, x0, eps, t)
    out = D.target_for(sched, x0, eps, t)
    x0_hat, eps_hat = D.to_x0_eps(sched, out, x_t, t)
    torch.testing.assert_close(x0_hat, x0, atol=1e-9, rtol=0)
    torch.testing.assert_close(eps_hat, eps, atol=1e-9, rtol=0)


def test_target_for_each_prediction_type():
    x0, eps = rand(4, 4, 8, 8, seed=1), rand(4, 4, 8, 8, seed=2)
    t = torch.tensor([0, 100, 500, 999])
    a = abar(make_scheduler(), t, x0)
    assert torch.equal(D.target_for(make_scheduler(prediction_type="epsilon"), x0, eps, t), eps)
    assert torch.equal(D.target_for(make_scheduler(prediction_type="sample"), x0, eps, t), x0)
    v_sched = make_scheduler(prediction_type="v_prediction")
    v = D.target_for(v_sched, x0, eps, t)
    torch.testing.assert_close(v, a.sqrt() * eps - (1 - a).sqrt() * x0, atol=1e-6, rtol=0)
    torch.testing.assert_close(v, v_sched.get_velocity(x0, eps, t), atol=1e-6, rtol=0)
    with pytest.raises(ValueError):
        D.target_for(make_scheduler(prediction_type="nonsense"), x0, eps, t)


def test_alpha_bar_final_for_negative_t():
    for one in (False, True):
        sched = make_scheduler(set_alpha_to_one=one)
        got = D.alpha_bar(sched, torch.tensor([-1, -200, 0, 999]))
        want = torch.tensor(
            [1.0 if one else float(sched.alphas_cumprod[0])] * 2
            + [float(sched.alphas_cumprod[0]), float(sched.alphas_cumprod[999])]
        )
        torch.testing.assert_close(got, want)


# ----------------------------------------------------------------------------- predict_x0
@pytest.mark.parametrize("kind", PREDICTION_TYPES)
def test_predict_x0_tweedie_and_one_step_ode_equal_ddim_x0(kind):
    sched = make_scheduler(prediction_type=kind)
    torch.manual_seed(0)
    net = torch.nn.Conv2d(4, 4, 3, padding=1)

    def eps_fn(x, t):
        return net(x) * (1 + t.float().view(-1, 1, 1, 1) / 1000)

    x = rand(3, 4, 8, 8, seed=4)
    t = torch.tensor([900, 420, 17])
    with torch.no_grad():
        want = D.ddim_step(sched, eps_fn(x, t), t, x, t - 50).x0
        tw = D.predict_x0(eps_fn, sched, x, t, "tweedie")
        ode1 = D.predict_x0(eps_fn, sched, x, t, "ode", ode_steps=1)
        ode3 = D.predict_x0(eps_fn, sched, x, t, "ode", ode_steps=3)
    torch.testing.assert_close(tw, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(ode1, tw, atol=1e-6, rtol=0)
    assert not torch.allclose(ode3, tw, atol=1e-3)  # a generic denoiser: more ODE steps change the answer
    with pytest.raises(ValueError):
        D.predict_x0(eps_fn, sched, x, t, "euler")


@pytest.mark.parametrize("kind", PREDICTION_TYPES)
@pytest.mark.parametrize("ode_steps", [1, 2, 3, 7])
def test_predict_x0_ode_recovers_point_mass(kind, ode_steps):
    sched = make_scheduler(prediction_type=kind)
    x_star = rand(1, 4, 8, 8, seed=9, dtype=torch.float64)
    t = torch.tensor([999, 640, 301, 40, 5, 0])
    x_t = D.add_noise(sched, x_star.expand(len(t), -1, -1, -1), rand(len(t), 4, 8, 8, seed=1, dtype=torch.float64), t)
    fn = Counting(point_mass_output(sched, x_star))
    got = D.predict_x0(fn, sched, x_t, t, "ode", ode_steps=ode_steps)
    torch.testing.assert_close(got, x_star.expand_as(got), atol=1e-8, rtol=0)
    # NFE: ode_steps evaluations per sample, all batched
    assert fn.calls == ode_steps and fn.rows == ode_steps * len(t)
    assert torch.equal(fn.ts[0], t)  # the first evaluation is at the sample's own time
    stacked = torch.stack(fn.ts)
    assert torch.all(stacked[1:] <= stacked[:-1])  # per-sample grid descends towards 0
    # a precomputed model output saves the first evaluation
    fn2 = Counting(point_mass_output(sched, x_star))
    got2 = D.predict_x0(fn2, sched, x_t, t, "ode", ode_steps=ode_steps, model_output=fn.fn(x_t, t))
    torch.testing.assert_close(got2, got, atol=1e-10, rtol=0)
    assert fn2.rows == (ode_steps - 1) * len(t)


def test_predict_x0_ode_integrates_gaussian_flow():
    """For data N(0, s^2 I) the exact eps is sqrt(1-a) x / (a s^2 + 1 - a) and the probability-flow
    ODE maps x_t to s x_t / sqrt(a s^2 + 1 - a), while Tweedie gives the posterior mean
    sqrt(a) s^2 x_t / (a s^2 + 1 - a). The ODE estimate must approach the former as steps grow."""
    sched = make_scheduler()
    sig = 0.5

    def eps_fn(x, t):
        a = abar(sched, t, x)
        return (1 - a).sqrt() * x / (a * sig**2 + 1 - a)

    x = rand(3, 4, 8, 8, seed=2, dtype=torch.float64)
    t = torch.tensor([999, 500, 200])
    a = abar(sched, t, x)
    exact = sig * x / (a * sig**2 + 1 - a).sqrt()

    def rel(e):
        return (e - exact).flatten(1).norm(dim=1) / exact.flatten(1).norm(dim=1)

    errs = [rel(D.predict_x0(eps_fn, sched, x, t, "ode", ode_steps=n)) for n in (1, 4, 16, 64)]
    torch.testing.assert_close(
        D.predict_x0(eps_fn, sched, x, t, "tweedie"), a.sqrt() * sig**2 * x / (a * sig**2 + 1 - a)
    )
    for lo, hi in zip(errs[1:], errs[:-1]):
        assert torch.all(lo < hi)
    assert torch.all(errs[-1] < 0.06) and torch.all(errs[0] > 0.3)


# ----------------------------------------------------------------------------- rollout
def test_rollout_caps_carries_and_uses_stride():
    sched = make_scheduler()
    s, m = 100, 3
    t = torch.tensor([900, 150, 30, 200])
    net = torch.nn.Conv2d(4, 4, 3, padding=1)
    fn = Counting(lambda x, tt: net(x) * (1 + tt.float().view(-1, 1, 1, 1) / 1000))
    x_t = rand(len(t), 4, 8, 8, seed=5)
    with torch.no_grad():
        tr = D.rollout(fn, sched, x_t, t, m, s)
    assert tr.t.shape == (m, len(t)) and tr.x.shape == (m, *x_t.shape)
    assert torch.equal(tr.t, torch.tensor([[900, 150, 30, 200], [800, 50, 0, 100], [700, 0, 0, 0]]))
    assert torch.equal(
        tr.valid, torch.tensor([[True, True, True, True], [True, True, False, True], [True, False, False, True]])
    )
    assert torch.equal(tr.valid, torch.arange(m)[:, None] < torch.clamp(1 + t // s, max=m)[None])
    assert fn.calls == m and all(torch.equal(c, tr.t[k]) for k, c in enumerate(fn.ts))
    assert torch.equal(tr.x[0], x_t)
    # each valid step is one DDIM step from t to t - s; an invalid one carries the latent unchanged
    with torch.no_grad():
        for k in range(m - 1):
            step = D.ddim_step(sched, tr.out[k], tr.t[k], tr.x[k], tr.t[k] - s)
            torch.testing.assert_close(tr.x0[k], step.x0)
            for i in range(len(t)):
                want = step.prev[i] if tr.valid[k, i] else tr.x[k, i]
                torch.testing.assert_close(tr.x[k + 1, i], want, atol=1e-6, rtol=0)
    # sample 2 (t=30) has one valid step (to the end); its latent stays put afterwards
    assert torch.equal(tr.x[2, 2], tr.x[1, 2]) and not torch.allclose(tr.x[1, 2], tr.x[0, 2])
    # sample 1 (t=150): its second step (50 -> end) is valid, so its latent moves once more
    assert not torch.allclose(tr.x[2, 1], tr.x[1, 1])


def test_rollout_ode_x0_mode_and_point_mass():
    sched = make_scheduler()
    x_star = rand(1, 4, 8, 8, seed=3, dtype=torch.float64)
    t = torch.tensor([700, 120])
    x_t = D.add_noise(sched, x_star.expand(2, -1, -1, -1), rand(2, 4, 8, 8, seed=4, dtype=torch.float64), t)
    fn = Counting(point_mass_output(sched, x_star))
    tr = D.rollout(fn, sched, x_t, t, m=3, step_stride=100, x0_mode="ode", ode_steps=3)
    torch.testing.assert_close(tr.x0, x_star.expand_as(tr.x0), atol=1e-8, rtol=0)
    # per step: 1 evaluation for the DDIM step, 2 more for the 3-step ODE (the first is shared)
    assert fn.rows == 3 * (1 + 2) * len(t)


def test_rollout_gradients_flow_through_unrolled_steps():
    sched = make_scheduler()
    s = 100
    t = torch.tensor([800, 500])
    x_t = rand(2, 4, 8, 8, seed=6, dtype=torch.float64)
    w = torch.nn.Parameter(torch.tensor(0.3, dtype=torch.float64))

    def eps_fn(x, tt):
        return w * x + 0.1 * torch.sin(x)

    def loss_of(wv):
        with torch.no_grad():
            w.copy_(torch.as_tensor(wv, dtype=torch.float64))
        return D.rollout(eps_fn, sched, x_t, t, m=2, step_stride=s).x0[1].pow(2).sum()

    w.grad = None
    tr = D.rollout(eps_fn, sched, x_t, t, m=2, step_stride=s)
    assert tr.x0.requires_grad and tr.x[1].requires_grad
    tr.x0[1].pow(2).sum().backward()
    g_full = w.grad.clone()
    # the same step-2 loss with step 1's output detached: only the direct dependence on w
    w.grad = None
    x1 = tr.x[1].detach()
    t1 = tr.t[1]
    D.ddim_step(sched, eps_fn(x1, t1), t1, x1, t1 - s).x0.pow(2).sum().backward()
    g_local = w.grad.clone()
    assert abs(float(g_full - g_local)) > 1e-3 * abs(float(g_full))
    # and the full gradient is the true derivative (central finite difference)
    h = 1e-6
    fd = (loss_of(0.3 + h) - loss_of(0.3 - h)) / (2 * h)
    loss_of(0.3)
    torch.testing.assert_close(g_full, fd.detach(), rtol=1e-5, atol=1e-8)
    # no graph when grad is disabled
    with torch.no_grad():
        assert not D.rollout(eps_fn, sched, x_t, t, m=2, step_stride=s).x0.requires_grad


# ----------------------------------------------------------------------------- sampling loop
def test_inference_grid_and_stride():
    sched = make_scheduler()
    assert D.inference_timesteps(sched, 5).tolist() == [801, 601, 401, 201, 1]
    assert D.stride(sched, 5) == 200 and D.stride(sched, 50) == 20


@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_sample_reproduces_stock_sd_pipeline(micro_sd, guidance):
    prompts = ["a red circle", "two blue squares on a gray background"]
    latents = rand(2, *micro_sd.latent_shape, seed=11)
    pipe = micro_sd.pipe
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(
        prompts, num_inference_steps=5, guidance_scale=guidance, latents=latents.clone(), output_type="latent"
    ).images
    micro_sd.nfe.reset()
    with torch.no_grad():
        ours = D.sample(
            micro_sd.denoiser(micro_sd.encode_prompts(prompts), guidance), micro_sd.scheduler, latents.clone(), 5
        )
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    assert micro_sd.nfe.evals == 5 * 2 * (2 if guidance != 1.0 else 1)
    assert not torch.allclose(ours, latents, atol=1e-2)


def test_ddim_grid_is_the_schedulers_grid_per_sample():
    """The one grid loop every sampler runs: the scheduler's own timesteps, one per sample, t_prev a stride below."""
    sched = make_scheduler()
    grid = D.ddim_grid(sched, 5)
    assert len(grid) == 5 and grid.stride == 200
    steps = [(i, t.tolist(), t_prev.tolist()) for i, t, t_prev in grid.steps(2)]
    assert steps == [(i, [t, t], [t - 200, t - 200]) for i, t in enumerate([801, 601, 401, 201, 1])]
    assert steps[-1][2][0] < 0  # the last step goes to the end (final alpha-bar)


def test_sample_lands_on_point_mass_data():
    sched = make_scheduler(set_alpha_to_one=True)  # the last step lands exactly on alpha-bar = 1
    x_star = rand(1, 4, 8, 8, seed=2)
    fn = Counting(point_mass_output(sched, x_star))
    x = rand(2, 4, 8, 8, seed=3)
    # point-mass data: the deterministic sampler lands on x* whatever the start
    torch.testing.assert_close(D.sample(fn, sched, x, 5), x_star.expand_as(x), atol=1e-5, rtol=0)
    assert fn.calls == 5


# ----------------------------------------------------------------------------- NFE accounting
@pytest.mark.parametrize("guidance,expected", [(5.0, 24), (1.0, 12)])
def test_nfe_counter_counts_generation(micro_sd, guidance, expected):
    micro_sd.nfe.reset()
    micro_sd.generate_latents(
        ["a red circle", "a blue square", "two green triangles"], [0, 1, 2], num_steps=4, guidance_scale=guidance
    )
    assert micro_sd.nfe.evals == expected
    assert micro_sd.nfe.calls == 4
    assert micro_sd.nfe.per_image(3) == expected / 3
    assert micro_sd.nfe.by_tag == {"unet": expected}


def test_nfe_counter_unit():
    c = D.NFECounter()
    c.add(4)
    c.add(2, tag="reward")
    c.add(3)
    assert (c.calls, c.evals, c.by_tag) == (3, 9, {"unet": 7, "reward": 2})
    assert c.per_image(3) == 3.0 and c.per_image(0) == 9.0
    c.reset()
    assert (c.calls, c.evals, c.by_tag) == (0, 0, {})


# ----------------------------------------------------------------------------- stochastic DDIM log-probabilities
def test_ddim_log_prob_is_the_gaussian_density_per_element():
    sched = make_scheduler()
    x, out = rand(3, 4, 8, 8, seed=1), rand(3, 4, 8, 8, seed=2)
    t = torch.tensor([801, 401, 41])
    step = D.ddim_step(sched, out, t, x, t - 40, eta=1.0, noise=torch.zeros_like(x))
    x_prev = rand(3, 4, 8, 8, seed=3)
    std = step.std.view(-1, 1, 1, 1).expand_as(x_prev)
    want = torch.distributions.Normal(step.mean, std).log_prob(x_prev).flatten(1).mean(1)
    torch.testing.assert_close(D.ddim_log_prob(step, x_prev), want)
    with pytest.raises(ValueError, match="eta > 0"):
        D.ddim_log_prob(D.ddim_step(sched, out, t, x, t - 40, eta=0.0), x_prev)


def test_recorded_log_probs_equal_recomputed_ones_on_policy():
    """DDPO's importance ratio is exactly 1 before the first update: the sampler's recorded log-probabilities
    equal step_log_prob recomputed on the recorded transitions in one batched call."""
    sched = make_scheduler()
    w = rand(4, 4, 1, 1, seed=5) * 0.1

    def eps_fn(x, t):
        return torch.einsum("oc,bchw->bohw", w[..., 0, 0], x) + (t.float() / 1000).view(-1, 1, 1, 1)

    gen = torch.Generator().manual_seed(0)
    tr = D.sample_with_log_probs(eps_fn, sched, rand(2, 4, 8, 8, seed=6), num_steps=5, eta=1.0, generator=gen)
    steps = len(tr.timesteps)
    assert tr.latents.shape[0] == steps + 1 and tr.log_probs.shape == (steps, 2)
    again = D.step_log_prob(
        eps_fn,
        sched,
        tr.latents[:-1].flatten(0, 1),
        tr.timesteps.repeat_interleave(2),
        tr.latents[1:].flatten(0, 1),
        D.stride(sched, 5),
        eta=1.0,
    ).view(steps, 2)
    torch.testing.assert_close(again, tr.log_probs, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(
        D.step_log_prob(
            lambda x, t: eps_fn(x, t) + 0.3,
            sched,
            tr.latents[:-1].flatten(0, 1),
            tr.timesteps.repeat_interleave(2),
            tr.latents[1:].flatten(0, 1),
            D.stride(sched, 5),
            eta=1.0,
        ).view(steps, 2),
        tr.log_probs,
    )
