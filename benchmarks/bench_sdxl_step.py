"""One optimiser step of SFT and RLHF Diffusion-Sharpening at SDXL size, ours against the released code's structure.

    python benchmarks/bench_sdxl_step.py                      # CUDA: full SDXL size; CPU: the same code, small
    python benchmarks/bench_sdxl_step.py --size full --resolution 512 --batch 1 4 8 --checkpointing
    python benchmarks/bench_sdxl_step.py --size small --batch 1 --steps 1   # what `make test` runs

Models come from SDXL's own configurations with random weights (nothing is downloaded): the UNet of
stable-diffusion-xl-base-1.0 (2.57 B parameters), its two text encoders (CLIP ViT-L/14 text, 768 wide, and
OpenCLIP bigG text, 1280 wide, with projection) and its VAE; the reward is a CLIP ViT-L/14-shaped CLIPScore.
The tokenizer is the tiny world's (the released vocabulary cannot be fetched here), so the text encoders'
embedding tables are smaller than SDXL's: a lookup, no FLOPs. `--size small` shrinks every width and depth
(same structure) so the code runs on a CPU in seconds.

Implementations, at the same n, m, resolution and batch B (B captions per optimiser step):
- ours, grad_pass rerun: `SFTSharpening` / `RLHFSharpening` as trained by the pipeline: n*m exploration rows in
  one no-grad batch, one batched decode and reward call, then only the chosen trajectories again with gradients;
- ours, grad_pass keep: the exploration keeps its graph and the chosen rows are backpropagated (m fewer UNet calls);
- released (SFT only, as the released script): per caption, n rows kept with graph for m steps, a VAE decode
  with gradients enabled per step, a PIL round trip and one reward call per image, one backward per caption.
Every implementation runs its UNet through accelerate (`--mixed-precision`, bf16 by default on CUDA) with
optional gradient checkpointing, AdamW and gradient clipping, as `replication.train` does.

Printed per configuration: seconds per step (median of --steps after --warmup), peak memory, FLOPs per step
(torch's FlopCounterMode over one step as run: recomputation included when checkpointing), achieved FLOP/s, MFU
against the GPU's dense bf16 peak (H100/H200: 989 TFLOP/s; --peak-tflops for others), and the number of aten ops
dispatched per step, which is what a launch-bound step's time follows. Benchmarks are not tests: compare the
ratios printed in one run; absolute seconds depend on the machine.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

HERE = Path(__file__).resolve().parent
os.environ.setdefault("REPLICATION_ROOT", str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_sharpening_step import Reference  # noqa: E402  (the PIL round trip of the released script)

from replication import quiet_hub_progress  # noqa: E402
from replication.methods.sharpening import RLHFSharpening, RLHFSpec, SFTSharpening, SharpeningSpec  # noqa: E402
from replication.models import T2IModel, build_tokenizer, sd_scheduler_config  # noqa: E402
from replication.report import machine_info  # noqa: E402
from replication.sources import ImageTextSource, PromptSource  # noqa: E402
from replication.tensors import default_device  # noqa: E402
from replication.train import step_generator  # noqa: E402

DENSE_BF16_PEAK = {"H100": 989e12, "H200": 989e12, "GH200": 989e12, "A100": 312e12, "L40S": 362e12}
CAPTIONS = [
    "a red circle to the left of a blue square",
    "two green triangles on a white table",
    "a striped yellow star above a checkered purple heart",
    "three small orange circles and a large blue square",
]


# ----------------------------------------------------------------------------- SDXL-shaped components
@dataclass(frozen=True)
class Size:
    """Widths and depths of every component; `full` is SDXL base 1.0's configuration."""

    unet_channels: tuple[int, ...] = (320, 640, 1280)
    unet_transformer_layers: tuple[int, ...] = (1, 2, 10)
    unet_head_dim: tuple[int, ...] = (5, 10, 20)  # SDXL's config names heads per block `attention_head_dim`
    time_embed_dim: int = 256
    te1: tuple[int, int, int] = (768, 12, 12)  # width, layers, heads (CLIP ViT-L/14 text)
    te2: tuple[int, int, int] = (1280, 32, 20)  # (OpenCLIP ViT-bigG/14 text, with projection)
    vae_channels: tuple[int, ...] = (128, 256, 512, 512)
    reward_vision: tuple[int, int, int, int] = (1024, 24, 16, 224)  # width, layers, heads, image size (ViT-L/14)
    reward_text: tuple[int, int, int] = (768, 12, 12)
    reward_embed: int = 768


SIZES = {
    "full": Size(),
    "small": Size(
        unet_channels=(32, 64, 64),
        unet_transformer_layers=(1, 1, 1),
        unet_head_dim=(2, 2, 4),
        time_embed_dim=8,
        te1=(32, 1, 2),
        te2=(48, 1, 2),
        vae_channels=(8, 16, 16, 16),
        reward_vision=(32, 1, 2, 56),
        reward_text=(32, 1, 2),
        reward_embed=32,
    ),
}


def text_encoder(width, layers, heads, tok, projection: bool, act: str):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=tok.model_max_length,
        projection_dim=width,
        hidden_act=act,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def build_sdxl(size: Size, resolution: int, device) -> T2IModel:
    """An SDXL pipeline from SDXL's configuration with random weights, built directly on `device`."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    tok = build_tokenizer(77)
    with torch.device(device):
        te1 = text_encoder(*size.te1, tok, projection=False, act="quick_gelu")
        te2 = text_encoder(*size.te2, tok, projection=True, act="gelu")
        unet = UNet2DConditionModel(
            sample_size=resolution // 8,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=size.unet_channels,
            layers_per_block=2,
            transformer_layers_per_block=size.unet_transformer_layers,
            attention_head_dim=size.unet_head_dim,
            cross_attention_dim=size.te1[0] + size.te2[0],
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=size.time_embed_dim,
            projection_class_embeddings_input_dim=size.te2[0] + 6 * size.time_embed_dim,
            norm_num_groups=32 if min(size.unet_channels) >= 32 else 8,
        )
        n = len(size.vae_channels)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=size.vae_channels,
            layers_per_block=2,
            latent_channels=4,
            norm_num_groups=32 if min(size.vae_channels) >= 32 else 8,
            sample_size=resolution,
            scaling_factor=0.13025,
        )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=te1,
        text_encoder_2=te2,
        tokenizer=tok,
        tokenizer_2=tok,
        unet=unet,
        scheduler=DDIMScheduler(**sd_scheduler_config()),
        force_zeros_for_empty_prompt=True,
    )
    return T2IModel(pipe, device)


def build_reward(size: Size, device):
    """A CLIPScore with a ViT-L/14-shaped CLIP (random weights)."""
    from transformers import CLIPConfig, CLIPModel

    from replication.rewards.base import ImagePreprocess
    from replication.rewards.clip import CLIPScore

    tok = build_tokenizer(77)
    vw, vl, vh, image = size.reward_vision
    tw, tl, th = size.reward_text
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=tw,
            intermediate_size=4 * tw,
            num_hidden_layers=tl,
            num_attention_heads=th,
            max_position_embeddings=77,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        ),
        vision_config=dict(
            hidden_size=vw,
            intermediate_size=4 * vw,
            num_hidden_layers=vl,
            num_attention_heads=vh,
            image_size=image,
            patch_size=14,
        ),  # fmt: skip
        projection_dim=size.reward_embed,
    )
    with torch.device(device):
        clip = CLIPModel(cfg)
    return CLIPScore(clip, tok, ImagePreprocess(image), device)


# ----------------------------------------------------------------------------- the implementations
class Step:
    """One optimiser step through accelerate: loss, backward, clipping, AdamW, as `replication.train`."""

    def __init__(self, model: T2IModel, method, acc, checkpointing: bool):
        self.model, self.method, self.acc = model, method, acc
        unet = model.unet
        if checkpointing:
            unet.enable_gradient_checkpointing()
        unet.train()
        opt = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-6, weight_decay=1e-2)
        unet, self.opt = acc.prepare(unet, opt)
        method.bind({"unet": unet})

    def __call__(self, step: int) -> float:
        loss = self.loss(step)
        self.acc.clip_grad_norm_(self.model.unet.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss

    def loss(self, step: int) -> float:
        loss, _ = self.method.loss(step, step_generator(0, step))
        self.acc.backward(loss)
        return loss.item()


class Released:
    """The released SFT script's structure for SDXL, one caption at a time (gradients accumulated over B)."""

    def __init__(self, model: T2IModel, reward, source: ImageTextSource, batch: int, spec: SharpeningSpec, acc):
        self.model, self.reward, self.source, self.batch, self.spec = model, reward, source, batch, spec
        self.stride = model.scheduler.config.num_train_timesteps // spec.infer_steps
        self.acc = acc  # backpropagates each caption but the last, as the released script's accumulation

    def bind(self, prepared):
        self.model.unet = prepared["unet"]

    def score(self, images: torch.Tensor, caption: str) -> torch.Tensor:
        dev = self.reward.device
        return torch.cat(
            [self.reward(Reference.from_pil(Reference.to_pil(x))[None].to(dev), [caption]) for x in images]
        )

    def loss(self, step: int, gen: torch.Generator):
        from replication import diffusion

        model, spec, n = self.model, self.spec, self.spec.n
        dev = model.device
        images, prompts = self.source.batch(self.batch, gen, dev)
        with torch.no_grad():
            x0 = model.encode(images, gen)
        t_all = torch.randint(0, model.scheduler.config.num_train_timesteps, (len(prompts),), generator=gen)
        total = 0.0
        for i, caption in enumerate(prompts):
            t = int(t_all[i])
            noise = torch.randn((n, *x0.shape[1:]), generator=gen).to(dev, x0.dtype)
            x = diffusion.add_noise(
                model.scheduler, x0[i : i + 1].repeat(n, 1, 1, 1), noise, torch.full((n,), t, device=dev)
            )
            cond = model.encode_prompts([caption] * n)
            rewards, losses = [], []
            for k in range(min(spec.m, 1 + t // self.stride)):
                tk = torch.full((n,), t - k * self.stride, device=dev)
                pred = model.eps(x, tk, cond)  # graph kept for all n rows
                out = diffusion.ddim_step(model.scheduler, pred, tk, x, tk - self.stride)
                x = out.prev
                rewards.append(self.score(model.decode(out.x0), caption))  # decode with gradients enabled
                losses.append(F.mse_loss(pred.float(), noise.float(), reduction="none").mean(dim=(1, 2, 3)))
            best = int(torch.stack(rewards).mean(0).argmax())
            loss = torch.stack(losses).mean(0)[best] / len(prompts)
            if i < len(prompts) - 1:
                self.acc.backward(loss)  # one backward per caption; the caller runs the last one
            total = total + loss.detach()
        # the value is the batch's loss, the graph only the last caption's (the others are backpropagated)
        return loss + (total - loss.detach()), {}


def make(kind: str, base: T2IModel, reward, batch: int, args, acc):
    """A fresh copy of the (host-resident) base model on the device, and the implementation `kind` on it."""
    model = copy.deepcopy(base)  # the copy's unet and vae are its pipe's (deepcopy keeps the sharing)
    model.pipe.to(model.device)
    common = dict(n=args.n, m=args.m)
    if kind == "released":
        method = Released(model, reward, sft_source(base.image_size), batch, SharpeningSpec(**common), acc)
    elif kind.startswith("sft"):
        spec = SharpeningSpec(**common, grad_pass=kind.split("-")[1])
        method = SFTSharpening(model, reward, sft_source(base.image_size), batch, spec)
    else:  # rlhf-<x0>-<grad_pass>
        _, x0, grad_pass = kind.split("-")
        spec = RLHFSpec(**common, x0=x0, grad_pass=grad_pass, gen_steps=args.gen_steps)
        method = RLHFSharpening(model, reward, PromptSource(CAPTIONS, "captions"), batch, spec)
    return Step(model, method, acc, args.checkpointing)


@functools.cache
def sft_source(resolution: int) -> ImageTextSource:
    """Random images at the model's resolution with captions (the step's cost does not depend on content)."""
    images = np.random.default_rng(0).integers(0, 256, (16, resolution, resolution, 3), dtype=np.uint8)
    return ImageTextSource(images, [CAPTIONS[i % len(CAPTIONS)] for i in range(16)], "random")


# ----------------------------------------------------------------------------- measurements
class OpCounter(TorchDispatchMode):
    """aten ops dispatched (each a kernel launch or more on a GPU): what a launch-bound step's time follows."""

    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(step: Step, device, args) -> dict:
    for i in range(args.warmup):
        step(1000 + i)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(args.steps):
        sync(device)
        t0 = time.perf_counter()
        step(i)
        sync(device)
        times.append(time.perf_counter() - t0)
    out = {"seconds_per_step": statistics.median(times), "seconds_all": times}
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    counter, flops = OpCounter(), FlopCounterMode(display=False)
    with flops, counter:
        step(2000)
    out["flops_per_step"] = flops.get_total_flops()
    out["aten_ops_per_step"] = counter.ops
    out["flop_per_s"] = out["flops_per_step"] / out["seconds_per_step"]
    return out


def peak_flops(device, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in DENSE_BF16_PEAK.items() if k in name), None)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default=None, help="default: full on CUDA, small on CPU")
    ap.add_argument("--resolution", type=int, default=None, help="pixels (default: 512 full, 64 small)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--m", type=int, default=3)
    ap.add_argument("--gen-steps", type=int, default=25, help="RLHF: DDIM steps generating x0 (released: 25)")
    ap.add_argument(
        "--impl",
        nargs="+",
        default=["sft-rerun", "sft-keep", "released", "rlhf-tweedie-rerun", "rlhf-ode-rerun"],
        help="sft-<rerun|keep>, released, rlhf-<tweedie|ode>-<rerun|keep>",
    )
    ap.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default=None, help="default: bf16 on CUDA")
    ap.add_argument("--checkpointing", action="store_true", help="gradient checkpointing of the UNet")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the GPU, if not known")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)

    quiet_hub_progress()
    from accelerate import Accelerator

    device = torch.device(default_device())
    size_name = args.size or ("full" if device.type == "cuda" else "small")
    resolution = args.resolution or (512 if size_name == "full" else 64)
    mp = args.mixed_precision or ("bf16" if device.type == "cuda" else "no")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    acc = Accelerator(mixed_precision=mp, cpu=device.type != "cuda")
    torch.manual_seed(0)
    base, reward = build_sdxl(SIZES[size_name], resolution, device), build_reward(SIZES[size_name], device)
    base.pipe.to("cpu")  # built on the device (fast initialisation), kept on the host between runs
    params = sum(p.numel() for p in base.unet.parameters())
    peak = peak_flops(device, args.peak_tflops)
    print(
        f"SDXL-shaped ({size_name}): UNet {params / 1e9:.3f} B parameters, {resolution} px, n={args.n} m={args.m}, "
        f"{mp}, checkpointing {'on' if args.checkpointing else 'off'}, {device}"
        + (f" ({torch.cuda.get_device_name(device)}, dense bf16 peak {peak / 1e12:.0f} TFLOP/s)" if peak else ""),
        flush=True,
    )
    rows = []
    for b in args.batch:
        for kind in args.impl:
            try:
                step = make(kind, base, reward, b, args, acc)
                r = measure(step, device, args)
            except torch.OutOfMemoryError:
                r = {"out_of_memory": True}
            finally:
                step = None
                acc.free_memory()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            r.update(impl=kind, batch=b)
            if peak and "flop_per_s" in r:
                r["mfu"] = r["flop_per_s"] / peak
            rows.append(r)
            if r.get("out_of_memory"):
                print(f"B={b:<3d} {kind:22s} out of memory", flush=True)
                continue
            print(
                f"B={b:<3d} {kind:22s} {r['seconds_per_step']:8.3f} s/step  "
                f"{r['seconds_per_step'] / b:7.3f} s/caption  "
                + (f"{r['peak_memory_gib']:6.1f} GiB  " if "peak_memory_gib" in r else "")
                + f"{r['flops_per_step'] / 1e12:9.3f} TFLOP/step  {r['flop_per_s'] / 1e12:8.2f} TFLOP/s  "
                + (f"MFU {r['mfu']:.3f}  " if "mfu" in r else "")
                + f"{r['aten_ops_per_step']:7d} aten ops",
                flush=True,
            )
        base_row = next(
            (r for r in rows if r["batch"] == b and r["impl"] == "released" and "seconds_per_step" in r), None
        )
        for r in rows:
            if base_row and r["batch"] == b and "seconds_per_step" in r and r is not base_row:
                r["speedup_vs_released"] = base_row["seconds_per_step"] / r["seconds_per_step"]
                print(f"B={b:<3d} {r['impl']:22s} {r['speedup_vs_released']:.2f}x the released structure per caption")
    result = {
        "size": size_name,
        "resolution": resolution,
        "unet_parameters": params,
        "n": args.n,
        "m": args.m,
        "mixed_precision": mp,
        "checkpointing": args.checkpointing,
        "peak_flops": peak,
        "machine": machine_info(device),
        "rows": rows,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
