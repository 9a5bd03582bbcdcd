"""Seconds per training step of the default pipeline's three largest trainers, and what memory layout and
oneDNN do to them on this machine.

The default `make repro` is dominated by three trainings (base_model's VAE and UNet, clip's two CLIPs) and by
evaluation generation. This script times one optimiser step of each at the batch size params.yaml gives,
on the committed models' shapes (random weights of the same configuration are as fast), and projects each
stage's training minutes from the step counts in params.yaml. Variants, printed as ratios to the default:

* `channels_last`: UNet and VAE convolutions in NHWC memory format;
* `no_mkldnn`: oneDNN convolutions off (torch's native kernels).

    python benchmarks/bench_train_steps.py
    python benchmarks/bench_train_steps.py --repeats 20 --json benchmarks/results/train_steps.json

Compare machines by the ratios, not the seconds (the same kind of machine varied by 2x on convolutions).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml

from replication import paths
from replication.report import machine_info


def _time(step, repeats: int) -> float:
    step()  # warm-up (allocations, oneDNN primitive creation)
    t = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - t) / repeats


def unet_step(model, batch: int, channels_last: bool):
    unet = model.unet.train().requires_grad_(True)
    if channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    c = unet.config
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, c.in_channels, c.sample_size, c.sample_size, generator=g)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    t = torch.randint(0, 1000, (batch,), generator=g)
    ctx = torch.randn(batch, model.pipe.tokenizer.model_max_length, c.cross_attention_dim, generator=g)
    opt = torch.optim.AdamW(unet.parameters(), 1e-4)

    def step():
        loss = unet(x, t, encoder_hidden_states=ctx).sample.pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()

    return step


def vae_step(model, batch: int, channels_last: bool):
    vae = model.vae.train().requires_grad_(True)
    if channels_last:
        vae = vae.to(memory_format=torch.channels_last)
    size = model.unet.config.sample_size * model.pipe.vae_scale_factor
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(vae.parameters(), 1e-4)

    def step():
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        loss = (rec - x).abs().mean() + (rec - x).pow(2).mean() + 1e-6 * post.kl().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()

    return step


def clip_step(folder: Path, batch: int):
    from transformers import AutoTokenizer, CLIPModel

    clip = CLIPModel.from_pretrained(str(folder)).train()
    tok = AutoTokenizer.from_pretrained(str(folder))
    size = clip.config.vision_config.image_size
    g = torch.Generator().manual_seed(0)
    px = torch.randn(batch, 3, size, size, generator=g)
    ids = tok(["a red cube left of a blue sphere"] * batch, padding="max_length", return_tensors="pt")
    opt = torch.optim.AdamW(clip.parameters(), 1e-3)

    def step():
        out = clip(input_ids=ids.input_ids, attention_mask=ids.attention_mask, pixel_values=px, return_loss=True)
        out.loss.backward()
        opt.step()
        opt.zero_grad()

    return step


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    from replication.models import T2IModel

    prm = yaml.safe_load((paths.root() / "params.yaml").read_text())
    bm, cl = prm["base_model"], prm["clip"]
    model = T2IModel.from_pretrained(paths.models() / "base", device="cpu")
    rows = {}
    for name, batch, steps, make in (
        ("vae", bm["vae"]["train"]["batch_size"], bm["vae"]["train"]["steps"], vae_step),
        ("unet", bm["unet"]["train"]["batch_size"], bm["unet"]["train"]["steps"], unet_step),
    ):
        base = _time(make(model, batch, False), a.repeats)
        rows[name] = {"batch": batch, "steps": steps, "seconds_per_step": round(base, 4)}
        rows[name]["projected_minutes"] = round(base * steps / 60, 1)
        rows[name]["channels_last_ratio"] = round(_time(make(model, batch, True), a.repeats) / base, 3)
        model = T2IModel.from_pretrained(paths.models() / "base", device="cpu")  # back to the default layout
        with torch.backends.mkldnn.flags(enabled=False):
            rows[name]["no_mkldnn_ratio"] = round(_time(make(model, batch, False), a.repeats) / base, 3)
    clip_steps = cl["reward"]["train"]["steps"] + cl["evaluator"]["train"]["steps"]
    batch = cl["reward"]["train"]["batch_size"]
    sec = _time(clip_step(paths.models() / "clip_reward", batch), a.repeats)
    rows["clip (both)"] = {"batch": batch, "steps": clip_steps, "seconds_per_step": round(sec, 4)}
    rows["clip (both)"]["projected_minutes"] = round(sec * clip_steps / 60, 1)
    out = {"trainers": rows}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, r in rows.items():
        extra = "".join(f"  {k} x{r[k]:.2f}" for k in ("channels_last_ratio", "no_mkldnn_ratio") if k in r)
        cost = f"{r['seconds_per_step']:.4f} s/step, {r['steps']} steps -> {r['projected_minutes']:.1f} min"
        print(f"{name:12s} batch {r['batch']:4d}: {cost}{extra}")
    if a.json:
        paths.write_json(a.json, {**out, "machine": machine_info("cpu")})
    return out


if __name__ == "__main__":
    main()
