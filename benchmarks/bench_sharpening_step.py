"""One optimiser step of SFT Diffusion-Sharpening: our batched implementation vs the released code's structure.

    python benchmarks/bench_sharpening_step.py [--batch 8 --n 3 --m 3 --steps 5 --warmup 1]

Reference ("released structure"), as train_sft_diffusion_sharpen_sdxl.py of Gen-Verse/Diffusion-Sharpening
does it for one caption at a time (it only works with batch size 1), looped over the captions of a batch
with gradient accumulation (each caption's loss / batch size, one backward per caption):

    noise = randn(n, C, H, W); x = add_noise(x0.repeat(n), noise, t)
    for k in range(min(m, 1 + t // 40)):
        pred = unet(x, t - 40k, prompt_embeds.repeat(n))          # graph kept for all n rows
        x, x0_pred = DDIMScheduler.step(pred, t - 40k, x)        # diffusers, scalar timestep
        images = decode(x0_pred)                                  # one VAE decode per step (grad enabled, as released)
        rewards_k = [reward(to_tensor(to_pil(img))[None], [caption]) for img in images]   # one image per call
        loss_k = mse(pred, noise) per row
    best = argmax(mean_k rewards_k); (mean_k loss_k[best] / B).backward()

The released code's decode divides by the VAE scaling factor *after* decoding; the reference decodes
correctly (before), so both implementations do the same math.

Ours: `SFTSharpening.loss` (n*m exploration rows in one no-grad batch, one batched decode and reward
call, per-caption argmax, then only the chosen trajectory re-run with gradients), backward, AdamW.

Both consume the same random draws for a step (data batch, VAE posterior sample, t, noise: the reference
draws them from the step generator in the order `SFTSharpening.loss` does), so before timing the script
checks that they pick the same trajectories and give the same loss and gradients.

Benchmarks are not tests: the ratio is what matters, absolute seconds depend on the machine.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
os.environ.setdefault("REPLICATION_ROOT", str(HERE.parent))

from PIL import Image  # noqa: E402

from replication import paths, quiet_hub_progress  # noqa: E402
from replication.methods import sharpening as sharpening_mod  # noqa: E402
from replication.methods.sharpening import SFTSharpening, SharpeningSpec  # noqa: E402
from replication.models import T2IModel  # noqa: E402
from replication.report import machine_info  # noqa: E402
from replication.sources import ImageTextSource  # noqa: E402
from replication.train import step_generator  # noqa: E402

LR, GRAD_CLIP = 1e-5, 1.0  # as the released script's defaults (max_grad_norm 1.0); the value is irrelevant to timing


# ----------------------------------------------------------------------------- setup
def load_model_and_reward(device):
    """The trained tiny base model and CLIP reward if the pipeline produced them, else random tiny ones."""
    from replication.rewards.clip import CLIPScore

    base, clip = paths.models() / "base", paths.models() / "clip_reward"
    if (base / "model_index.json").exists() and (clip / "config.json").exists():
        return (
            T2IModel.from_pretrained(base, device),
            CLIPScore.load(clip, device),
            f"trained tiny models ({base.relative_to(paths.root())}, {clip.relative_to(paths.root())})",
        )
    from replication.models import TinyArch, build_tiny_sd, build_tokenizer
    from replication.rewards.base import ImagePreprocess
    from replication.rewards.clip import ClipArch, build_tiny_clip

    arch, tok = ClipArch(), build_tokenizer()
    model = T2IModel(build_tiny_sd(TinyArch(), seed=0), device)
    reward = CLIPScore(build_tiny_clip(arch, tok, seed=0), tok, ImagePreprocess(arch.image_size), device)
    return model, reward, "RANDOM tiny models (models/base or models/clip_reward missing)"


def load_data() -> tuple[ImageTextSource, str]:
    if (paths.data() / "journeydb" / "images.npy").exists():
        from replication.data import load_image_set

        s = load_image_set("journeydb")
        return ImageTextSource(s.images, s.captions, "journeydb"), f"data/journeydb ({len(s.captions)} pairs)"
    from replication.world import Sampler, render_batch, sample_captioned

    sampler = Sampler(np.random.default_rng(0), 32)
    scenes, caps = [], []
    for _ in range(300):
        scene, text, _ = sample_captioned(sampler, "detailed", heldout=False)
        scenes.append(scene)
        caps.append(text)
    return ImageTextSource(render_batch(scenes), caps, "rendered"), "300 freshly rendered tiny-world scenes"


class CountingReward:
    """The shared reward model, with a per-implementation count of calls and images scored."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.calls = self.images = 0

    def __call__(self, images, prompts):
        self.calls += 1
        self.images += images.shape[0]
        return self.inner(images, prompts)


class DecodeCounter:
    """Counts VAE decoder forwards (calls and rows) with a pre-hook on vae.decoder."""

    def __init__(self, vae):
        self.calls = self.rows = 0
        vae.decoder.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.calls += 1
        self.rows += args[0].shape[0]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- the two implementations
class Impl:
    """Shared plumbing: own model copy, optimiser, counters; `train_step` = loss, backward, clip, AdamW."""

    name = "?"

    def __init__(self, base: T2IModel, reward, source: ImageTextSource, batch: int, spec: SharpeningSpec):
        self.model = copy.deepcopy(base)
        self.model.nfe.reset()
        self.reward = CountingReward(reward)
        self.decodes = DecodeCounter(self.model.vae)
        self.source, self.batch, self.spec = source, batch, spec
        self.opt = torch.optim.AdamW(
            [p for p in self.model.unet.parameters() if p.requires_grad], lr=LR, weight_decay=1e-2
        )
        self.unet_calls = self.unet_rows = 0

    def counters(self) -> dict:
        return {
            "unet_calls": self.unet_calls,
            "unet_rows": self.unet_rows,
            "vae_decode_calls": self.decodes.calls,
            "vae_decode_rows": self.decodes.rows,
            "reward_calls": self.reward.calls,
            "reward_images": self.reward.images,
        }

    def loss_backward(self, step: int) -> tuple[float, dict]:
        raise NotImplementedError

    def train_step(self, step: int) -> float:
        self.model.unet.train()
        loss, _ = self.loss_backward(step)
        torch.nn.utils.clip_grad_norm_(self.model.unet.parameters(), GRAD_CLIP)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss


class Ours(Impl):
    name = "ours"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.method = SFTSharpening(self.model, self.reward, self.source, self.batch, self.spec)

    def counters(self) -> dict:
        self.unet_calls, self.unet_rows = self.model.nfe.calls, self.model.nfe.evals
        return super().counters()

    def loss_backward(self, step: int, record: bool = False):
        """With record=True the Exploration of the step is captured (t, eps, step rewards, scores)."""
        captured = {}
        orig = sharpening_mod.explore
        if record:

            def recording(*a, **kw):
                captured["ex"] = orig(*a, **kw)
                return captured["ex"]

            sharpening_mod.explore = recording
        try:
            loss, _ = self.method.loss(step, step_generator(0, step))
        finally:
            sharpening_mod.explore = orig
        loss.backward()
        info = {}
        if record:
            ex = captured["ex"]
            b, n = self.batch, self.spec.n
            info = {
                "t": ex.t.view(b, n)[:, 0].cpu(),
                "eps": ex.eps.cpu(),
                "best": ex.scores.argmax(1).cpu(),
                "step_rewards": ex.step_rewards.cpu(),
                "valid": ex.traj.valid.cpu(),
            }
        return loss.item(), info


class Reference(Impl):
    """The released script's structure, looped over captions (batch size 1 each, gradients accumulated)."""

    name = "reference"

    def __init__(self, *a, reward_mode: str = "per-image", decode_grad: bool = True, **kw):
        super().__init__(*a, **kw)
        from diffusers import DDIMScheduler

        self.sched = DDIMScheduler.from_config(self.model.scheduler.config)
        self.sched.set_timesteps(self.spec.infer_steps)  # stride num_train_timesteps // 25 = 40 in .step
        self.stride = self.sched.config.num_train_timesteps // self.spec.infer_steps
        self.reward_mode, self.decode_grad = reward_mode, decode_grad
        self.pil_round_trip = True  # False only in the exactness check: score the float images themselves

    @staticmethod
    def to_pil(img: torch.Tensor) -> Image.Image:
        """torchvision's ToPILImage on a float CHW tensor: mul(255).byte() (truncation), HWC uint8, RGB."""
        return Image.fromarray(img.detach().mul(255).byte().permute(1, 2, 0).cpu().numpy(), mode="RGB")

    @staticmethod
    def from_pil(pil: Image.Image) -> torch.Tensor:
        """torchvision's ToTensor: HWC uint8 -> CHW float in [0, 1]."""
        return torch.from_numpy(np.array(pil, dtype=np.uint8)).permute(2, 0, 1).float().div(255)

    def score(self, images: torch.Tensor, caption: str) -> torch.Tensor:
        if self.pil_round_trip:
            tensors = [self.from_pil(self.to_pil(img)) for img in images]  # PIL round trip of every image
        else:
            tensors = list(images.detach())
        dev = self.reward.inner.device
        if self.reward_mode == "per-image":  # one reward call per image
            r = [self.reward(x[None].to(dev), [caption]) for x in tensors]
            return torch.cat(r).float().cpu()
        # "stacked": per-image preprocessing, one reward call per step (the released CLIPScoreReward)
        return self.reward(torch.stack(tensors).to(dev), [caption] * len(tensors)).float().cpu()

    def loss_backward(self, step: int, record: bool = False):
        model, spec, n, sched = self.model, self.spec, self.spec.n, self.sched
        dev = model.device
        gen = step_generator(0, step)
        # the random draws, in the order SFTSharpening.loss makes them
        images, prompts = self.source.batch(self.batch, gen, dev)
        with torch.no_grad():
            x0 = model.encode(images, gen)
        b = x0.shape[0]
        t_all = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=gen)
        eps_all = torch.randn((b * n, *x0.shape[1:]), generator=gen).to(dev, x0.dtype)
        sf = model.vae.config.scaling_factor
        total, bests, rewards_all = 0.0, [], []
        for i in range(b):  # the released code: one caption per optimiser (micro-)step
            t = int(t_all[i])
            m = min(spec.m, 1 + t // self.stride)
            noise = eps_all[i * n : (i + 1) * n]
            x = sched.add_noise(x0[i : i + 1].repeat(n, 1, 1, 1), noise, torch.full((n,), t, device=dev))
            prompt_embeds = model.encode_prompts([prompts[i]]).hidden
            rewards_list, loss_list = [], []
            for k in range(m):
                tk = t - k * self.stride
                pred = model.unet(
                    x,
                    torch.full((n,), tk, device=dev),
                    encoder_hidden_states=prompt_embeds.repeat(n, 1, 1),
                    return_dict=False,
                )[0]
                self.unet_calls += 1
                self.unet_rows += n
                out = sched.step(pred, tk, x)  # diffusers DDIM, scalar timestep, eta 0
                x = out.prev_sample
                with torch.set_grad_enabled(self.decode_grad and torch.is_grad_enabled()):
                    dec = model.vae.decode(out.pred_original_sample / sf, return_dict=False)[0]
                dec = (dec / 2 + 0.5).clamp(0, 1)
                rewards_list.append(self.score(dec, prompts[i]))
                loss_list.append(F.mse_loss(pred.float(), noise.float(), reduction="none").mean(dim=(1, 2, 3)))
            rewards = torch.stack(rewards_list).mean(0)
            best = int(rewards.argmax())
            loss = torch.stack(loss_list).mean(0)[best] / b
            loss.backward()
            total += loss.item()
            bests.append(best)
            rewards_all.append(torch.stack(rewards_list))
        info = {}
        if record:
            info = {"t": t_all, "eps": eps_all.cpu(), "best": torch.tensor(bests), "rewards": rewards_all}
        return total, info


# ----------------------------------------------------------------------------- checks and measurements
def grads(model: T2IModel) -> dict[str, torch.Tensor]:
    return {k: p.grad.detach().clone() for k, p in model.unet.named_parameters() if p.grad is not None}


def compare(io: dict, ir: dict, go: dict, gr: dict, lo: float, lr_: float, spec: SharpeningSpec, b: int) -> dict:
    n = spec.n
    # step rewards of ours (m, B*n) vs the reference's per-caption (m_i, n), over the existing steps
    sr = io["step_rewards"].view(spec.m, b, n)
    rdiff, margins = 0.0, []
    for i, r in enumerate(ir["rewards"]):
        mi = r.shape[0]
        assert io["valid"].view(spec.m, b, n)[:, i, 0].sum().item() == mi, "step caps differ"
        rdiff = max(rdiff, (sr[:mi, i] - r).abs().max().item())
        top = r.mean(0).sort(descending=True).values
        margins.append((top[0] - top[1]).item() if n > 1 else float("inf"))
    common = sorted(set(go) & set(gr))
    return {
        "loss_ours": lo,
        "loss_reference": lr_,
        "loss_abs_diff": abs(lo - lr_),
        "chosen_ours": io["best"].tolist(),
        "chosen_reference": ir["best"].tolist(),
        "chosen_agree": bool(torch.equal(io["best"], ir["best"])),
        "step_reward_max_abs_diff": rdiff,
        "min_best_vs_second_margin": min(margins),
        "grad_params": len(common),
        "grad_keys_match": set(go) == set(gr),
        "grad_max_abs_diff": max((go[k] - gr[k]).abs().max().item() for k in common),
        "grad_max_abs": max(gr[k].abs().max().item() for k in common),
        "grad_max_rel_diff": max(
            (go[k] - gr[k]).abs().max().item() / (gr[k].abs().max().item() + 1e-20) for k in common
        ),
    }


def equivalence(ours: Ours, ref: Reference, step: int, spec: SharpeningSpec) -> dict:
    """One loss + backward of each on identical weights with identical draws; gradients left zeroed.

    The reference runs twice: `exact` scores the float images (same math as ours, so any difference is
    the recompute trick's), `pil` with the uint8 PIL round trip it is timed with (rewards move by the
    quantisation, so a near tie between trajectories can flip)."""
    lo, io = ours.loss_backward(step, record=True)
    go = grads(ours.model)
    ours.opt.zero_grad(set_to_none=True)
    out = {"step": step, "start_t": io["t"].tolist()}
    for variant, pil in (("exact", False), ("pil", True)):
        ref.pil_round_trip = pil
        try:
            lr_, ir = ref.loss_backward(step, record=True)
        finally:
            ref.pil_round_trip = True
        gr = grads(ref.model)
        ref.opt.zero_grad(set_to_none=True)
        out["draws_identical"] = bool(torch.equal(io["t"], ir["t"]) and torch.equal(io["eps"], ir["eps"]))
        out[variant] = compare(io, ir, go, gr, lo, lr_, spec, ours.batch)
    return out


def agrees(c: dict) -> bool:
    return (
        c["chosen_agree"]
        and c["loss_abs_diff"] <= 1e-5 * max(1.0, abs(c["loss_reference"]))
        and c["grad_max_rel_diff"] < 1e-3
    )


def _proc_status(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_memory(impl: Impl, step: int, device) -> dict:
    """Peak memory of one training step (not timed). CUDA: max_memory_allocated above the start.
    CPU/Linux: free heap returned to the OS (malloc_trim), peak-RSS mark reset (/proc/self/clear_refs 5), then
    VmHWM - VmRSS at the start. Also the growth of getrusage's ru_maxrss (monotonic over the process: it only
    moves when the step exceeds every earlier peak, so 0 does not mean 'no memory')."""
    out = {}
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        impl.train_step(step)
        torch.cuda.synchronize()
        out["cuda_peak_allocated_above_start_bytes"] = torch.cuda.max_memory_allocated() - start
        return out
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    reset = False
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        pass
    rss0 = _proc_status("VmRSS")
    ru0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    impl.train_step(step)
    ru1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if reset and rss0 is not None:
        out["peak_rss_above_start_bytes"] = _proc_status("VmHWM") - rss0
    out["ru_maxrss_growth_bytes"] = ru1 - ru0
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8, help="captions per optimiser step")
    ap.add_argument("--n", type=int, default=3, help="trajectories per caption")
    ap.add_argument("--m", type=int, default=3, help="DDIM steps per trajectory (capped at 1 + t // 40)")
    ap.add_argument("--steps", type=int, default=5, help="timed optimiser steps per implementation")
    ap.add_argument("--warmup", type=int, default=1, help="untimed optimiser steps per implementation first")
    ap.add_argument("--check-steps", type=int, default=3, help="steps (draws) used for the equivalence check")
    ap.add_argument(
        "--ref-reward",
        choices=("per-image", "stacked"),
        default="per-image",
        help="reference reward: one call per image (default), or the per-image PIL preprocessing "
        "stacked into one call per step as the released CLIPScoreReward does",
    )
    ap.add_argument(
        "--ref-decode-no-grad",
        action="store_true",
        help="decode under no_grad in the reference (the released code builds the VAE graph)",
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(HERE / "results" / "sharpening_step.json"))
    args = ap.parse_args(argv)

    quiet_hub_progress()
    device = torch.device(args.device)
    t0 = time.perf_counter()
    base, reward, which = load_model_and_reward(device)
    source, data_desc = load_data()
    spec = SharpeningSpec(n=args.n, m=args.m)
    ours = Ours(base, reward, source, args.batch, spec)
    ref = Reference(
        base, reward, source, args.batch, spec, reward_mode=args.ref_reward, decode_grad=not args.ref_decode_no_grad
    )
    del base
    print(
        f"models: {which}\ndata:   {data_desc}\ndevice: {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads\nsettings: batch {args.batch}, n {args.n}, m {args.m}, "
        f"steps {args.steps}, warmup {args.warmup}, reference reward {args.ref_reward}"
        f"{', decode no_grad' if args.ref_decode_no_grad else ''}  (setup {time.perf_counter() - t0:.1f}s)\n"
    )

    # ---- equivalence on the identical starting weights (no optimiser step taken yet)
    checks = [equivalence(ours, ref, 10_000 + s, spec) for s in range(args.check_steps)]
    print("equivalence (identical weights and draws, one loss + backward each):")
    for c in checks:
        print(f"  draws {c['step']}: t={c['start_t']}  draws identical {c['draws_identical']}")
        for variant, what in (("exact", "float images"), ("pil", "uint8 PIL round trip, as timed")):
            e = c[variant]
            print(
                f"    reference on {what}:\n"
                f"      chosen ours {e['chosen_ours']}  reference {e['chosen_reference']}  agree {e['chosen_agree']}\n"
                f"      loss ours {e['loss_ours']:.8g}  reference {e['loss_reference']:.8g}  "
                f"|diff| {e['loss_abs_diff']:.2e}\n"
                f"      grads: {e['grad_params']} tensors, max |diff| {e['grad_max_abs_diff']:.2e} "
                f"(max |g| {e['grad_max_abs']:.2e}; worst per-tensor relative {e['grad_max_rel_diff']:.2e})\n"
                f"      step rewards max |diff| {e['step_reward_max_abs_diff']:.2e}; "
                f"smallest best-vs-second margin of the reference {e['min_best_vs_second_margin']:.2e}"
            )
    ok = all(c["draws_identical"] and agrees(c["exact"]) for c in checks)
    pil_ok = sum(agrees(c["pil"]) for c in checks)
    print(
        f"  => recompute-only-the-chosen trajectory vs all-n-with-graph: "
        f"{'EQUAL to float tolerance' if ok else 'NOT EQUAL: see above'}"
        f"\n  => with the PIL round trip: {pil_ok}/{len(checks)} draws pick the same trajectories "
        f"(a disagreement is a near tie reordered by uint8 quantisation)\n"
    )

    # ---- timing: alternate which implementation goes first so drift affects both alike
    impls = {"ours": ours, "reference": ref}
    for im in impls.values():
        im.model.nfe.reset()
        im.model.unet.zero_grad(set_to_none=True)
    times = {k: [] for k in impls}
    counts0 = {}
    for s in range(args.warmup + args.steps):
        if s == args.warmup:
            counts0 = {k: im.counters() for k, im in impls.items()}
        order = ["ours", "reference"] if s % 2 == 0 else ["reference", "ours"]
        for k in order:
            sync(device)
            a = time.perf_counter()
            impls[k].train_step(s)
            sync(device)
            if s >= args.warmup:
                times[k].append(time.perf_counter() - a)
    per_step = {}
    for k, im in impls.items():
        c1 = im.counters()
        per_step[k] = {key: (c1[key] - counts0[k][key]) / max(1, args.steps) for key in c1}

    # ---- memory (one extra, untimed step each)
    mem = {"ours": peak_memory(ours, 20_000, device), "reference": peak_memory(ref, 20_000, device)}

    # ---- report
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["reference"] / med["ours"]
    paired = statistics.median(r / o for r, o in zip(times["reference"], times["ours"]))
    ratio_min = min(times["reference"]) / min(times["ours"])
    spread = max(max(v) / min(v) for v in times.values())
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"timing: {args.steps} optimiser steps each after {args.warmup} warm-up (loss, backward, clip, AdamW)")
    hdr = (
        f"{'':10s} {'median s':>9s} {'mean s':>8s} {'min s':>8s} {'UNet rows':>10s} {'UNet calls':>10s} "
        f"{'VAE decodes':>11s} {'decoded':>8s} {'reward calls':>12s} {'scored':>7s}"
    )
    print(hdr)
    for k in impls:
        p = per_step[k]
        print(
            f"{k:10s} {med[k]:9.3f} {statistics.mean(times[k]):8.3f} {min(times[k]):8.3f} {p['unet_rows']:10.1f} "
            f"{p['unet_calls']:10.1f} {p['vae_decode_calls']:11.1f} {p['vae_decode_rows']:8.1f} "
            f"{p['reward_calls']:12.1f} {p['reward_images']:7.1f}"
        )
    print("(per optimiser step; UNet rows = network evaluations of one latent each, decoded/scored = images)")
    for k in impls:
        label = ", ".join(f"{name.replace('_bytes', '')} {v / 2**20:.1f} MiB" for name, v in mem[k].items())
        print(f"memory {k:9s}: {label}")
    if device.type == "cpu":
        print(
            "  (CPU: peak RSS above the step's starting RSS, after malloc_trim and a VmHWM reset; "
            "ru_maxrss growth is monotonic over the process and only a lower bound)"
        )
    print(f"other estimates: median of per-step paired ratios {paired:.2f}, ratio of fastest steps {ratio_min:.2f}")
    if spread > 2.0:
        print(
            f"WARNING: noisy timings (slowest/fastest step up to {spread:.1f}x; load average "
            f"{', '.join(f'{x:.1f}' for x in load) if load else '?'}): something else used the CPU; "
            f"rerun on a quiet machine or with more --steps"
        )
    print(f"ratio reference/ours = {ratio:.2f}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "sft-sharpening optimiser step: released-code structure vs ours",
        "settings": {
            "batch": args.batch,
            "n": args.n,
            "m": args.m,
            "steps": args.steps,
            "warmup": args.warmup,
            "infer_steps": spec.infer_steps,
            "check_steps": args.check_steps,
            "ref_reward": args.ref_reward,
            "ref_decode_grad": not args.ref_decode_no_grad,
            "lr": LR,
            "grad_clip": GRAD_CLIP,
        },
        "models": which,
        "data": data_desc,
        "machine": machine_info(device),
        "equivalence": {"exact_ok": ok, "pil_agreeing_draws": pil_ok, "checks": checks},
        "seconds_per_step": {
            k: {"median": med[k], "mean": statistics.mean(times[k]), "min": min(times[k]), "all": times[k]}
            for k in impls
        },
        "per_step_counts": per_step,
        "memory": mem,
        "ratio_reference_over_ours": ratio,
        "ratio_estimates": {"median_over_median": ratio, "median_of_paired_steps": paired, "min_over_min": ratio_min},
        "timing_spread_max_over_min": spread,
        "load_average_after": load,
    }
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out.relative_to(paths.root()) if out.is_relative_to(paths.root()) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
