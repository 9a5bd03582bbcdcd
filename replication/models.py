"""Text-to-image pipelines: the tiny base model's parts, loading, and one adapter for SD and SDXL.

The tiny model is a stock diffusers ``StableDiffusionPipeline``: ``AutoencoderKL`` (latents at
1/4 of the image side), ``UNet2DConditionModel`` with cross-attention, a ``CLIPTextModel`` with
a ``CLIPTokenizer`` whose BPE vocabulary is trained on the tiny world's words, and a
``DDIMScheduler`` with Stable Diffusion's noise schedule. Saved with ``save_pretrained``, it
loads with an unmodified ``DiffusionPipeline.from_pretrained``.

``T2IModel`` wraps any SD or SDXL pipeline with the few operations the methods need (encode
prompts, predict noise with or without guidance, decode/encode latents, generate, save), so
sharpening, the baselines and evaluation run the same code at both scales.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import diffusion, quiet_hub_progress
from .tensors import resolve_device
from .world import vocab

# ----------------------------------------------------------------------------- tokenizer
FILLER_WORDS = (
    "a an one two three four picture of image showing drawing cartoon on gray white background "
    "with stripes pattern no and to the left right above below bigger smaller than same color as"
).split()


def world_words() -> list[str]:
    words = set(FILLER_WORDS) | set(vocab.COLORS) | set(vocab.SHAPES) | set(vocab.PLURAL.values())
    words |= set(vocab.TEXTURES) | set(vocab.SIZES)
    for r in vocab.RELATIONS:
        words |= set(r.split())
    return sorted(words)


def build_tokenizer(max_length: int = 48):
    """A CLIPTokenizer whose byte-level BPE makes every word of the tiny world one token.

    The merges are learned here by plain BPE over the world's word list (most frequent adjacent
    pair first, ties broken by the pair's spelling, so every build gives the same vocabulary; the
    `tokenizers` trainer breaks ties in hash order). Token ids: BOS, EOS, the byte alphabet, each
    byte with CLIP's end-of-word suffix, then merged tokens in merge order. Unknown words still
    tokenise into known pieces, as CLIP's tokenizer does.
    """
    from collections import Counter

    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    bos, eos = "<|startoftext|>", "<|endoftext|>"
    alphabet = sorted(ByteLevel.alphabet())
    seqs = [list(w[:-1]) + [w[-1] + "</w>"] for w in world_words()]
    merges: list[tuple[str, str]] = []
    while True:
        counts = Counter(pair for seq in seqs for pair in zip(seq, seq[1:]))
        if not counts:
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        joined = best[0] + best[1]
        for i, seq in enumerate(seqs):
            out, j = [], 0
            while j < len(seq):
                if j + 1 < len(seq) and (seq[j], seq[j + 1]) == best:
                    out.append(joined)
                    j += 2
                else:
                    out.append(seq[j])
                    j += 1
            seqs[i] = out
    tokens = [bos, eos] + alphabet + [c + "</w>" for c in alphabet] + [a + b for a, b in merges]
    vocab_ids: dict[str, int] = {}
    for t in tokens:
        vocab_ids.setdefault(t, len(vocab_ids))
    return CLIPTokenizer(vocab=vocab_ids, merges=merges, model_max_length=max_length)


# ----------------------------------------------------------------------------- tiny components
@dataclass
class TinyArch:
    """Sizes of the tiny base model (params.yaml: base_model.arch)."""

    image_size: int = 32
    vae_channels: tuple[int, ...] = (16, 32, 64)  # len - 1 halvings: 32 px -> 8x8 latents
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (32, 64, 64)
    unet_attention: tuple[bool, ...] = (False, True, True)  # cross-attention per UNet level
    unet_layers: int = 1
    attention_head_dim: int = 8
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    max_tokens: int = 48

    def __post_init__(self):
        self.vae_channels = tuple(self.vae_channels)
        self.unet_channels = tuple(self.unet_channels)
        self.unet_attention = tuple(self.unet_attention)
        if len(self.unet_attention) != len(self.unet_channels):
            raise ValueError("base_model.arch.unet_attention needs one flag per entry of unet_channels")

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.vae_channels) - 1)


def sd_scheduler_config() -> dict:
    """Stable Diffusion's DDIM configuration (scaled-linear betas 0.00085..0.012, 1000 steps)."""
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
        timestep_spacing="leading",
    )


def build_vae(arch: TinyArch):
    from diffusers import AutoencoderKL

    n = len(arch.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=arch.vae_channels,
        layers_per_block=1,
        latent_channels=arch.latent_channels,
        norm_num_groups=min(16, arch.vae_channels[0]),
        sample_size=arch.image_size,
    )


def build_unet(arch: TinyArch, cross_attention_dim: int | None = None, **extra):
    from diffusers import UNet2DConditionModel

    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in arch.unet_attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(arch.unet_attention))
    return UNet2DConditionModel(
        sample_size=arch.latent_size,
        in_channels=arch.latent_channels,
        out_channels=arch.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=arch.unet_channels,
        layers_per_block=arch.unet_layers,
        cross_attention_dim=cross_attention_dim or arch.text_width,
        attention_head_dim=arch.attention_head_dim,
        norm_num_groups=min(16, arch.unet_channels[0]),
        mid_block_type="UNetMidBlock2DCrossAttn",
        **extra,
    )


def build_text_encoder(arch: TinyArch, vocab_size: int, with_projection: bool = False, projection_dim: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=arch.text_width,
        intermediate_size=2 * arch.text_width,
        num_hidden_layers=arch.text_layers,
        num_attention_heads=arch.text_heads,
        max_position_embeddings=arch.max_tokens,
        projection_dim=projection_dim,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg)


def build_tiny_sd(arch: TinyArch, seed: int = 0):
    """A randomly initialised tiny StableDiffusionPipeline for the tiny world."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(arch.max_tokens)
    return StableDiffusionPipeline(
        vae=build_vae(arch),
        text_encoder=build_text_encoder(arch, len(tokenizer)),
        tokenizer=tokenizer,
        unet=build_unet(arch),
        scheduler=DDIMScheduler(**sd_scheduler_config()),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_sdxl(arch: TinyArch, seed: int = 0):
    """A randomly initialised SDXL-shaped pipeline: two text encoders (the second with a projection),
    pooled text embeddings and added time ids in the UNet, a small VAE. Used to test the paper-scale path."""
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline

    torch.manual_seed(seed)
    tok = build_tokenizer(arch.max_tokens)
    te1 = build_text_encoder(arch, len(tok))
    te2 = build_text_encoder(arch, len(tok), with_projection=True, projection_dim=arch.text_width // 2)
    unet = build_unet(
        arch,
        cross_attention_dim=2 * arch.text_width,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=arch.text_width // 2 + 6 * 8,
    )
    return StableDiffusionXLPipeline(
        vae=build_vae(arch),
        text_encoder=te1,
        text_encoder_2=te2,
        tokenizer=tok,
        tokenizer_2=tok,
        unet=unet,
        scheduler=DDIMScheduler(**sd_scheduler_config()),
        force_zeros_for_empty_prompt=True,
    )


def load_pipeline(name_or_path: str | os.PathLike, revision: str | None = None, dtype: torch.dtype | None = None):
    """DiffusionPipeline.from_pretrained for a local folder or a hub id (pinned by `revision`).

    A missing local folder fails with the stage that makes it; a hub id needs network access.
    """
    from diffusers import DiffusionPipeline

    quiet_hub_progress()  # now that diffusers is imported: its loading bar has no environment switch
    p = Path(name_or_path)
    looks_local = p.is_absolute() or str(name_or_path).startswith((".", "models", "/")) or p.exists()
    if looks_local and not (p / "model_index.json").exists():
        raise FileNotFoundError(
            f"no diffusers pipeline at {p}: run the stage that writes it (e.g. `dvc repro base_model`) "
            f"or point the parameter at a pipeline folder / hub id"
        )
    kw = {"torch_dtype": dtype} if dtype is not None else {}
    return DiffusionPipeline.from_pretrained(str(name_or_path), revision=revision, **kw)


# ----------------------------------------------------------------------------- LoRA
@dataclass
class LoraSpec:
    """LoRA on the UNet's attention projections (peft); rank 0 means full fine-tuning. Saved merged."""

    rank: int = 0
    alpha: float = 0.0  # 0: alpha = rank (scale 1)
    targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")

    def __post_init__(self):
        if self.rank < 0:
            raise ValueError(f"lora.rank must be >= 0 (0 = full fine-tuning), got {self.rank}")
        self.targets = tuple(self.targets)

    @property
    def enabled(self) -> bool:
        return self.rank > 0


def add_lora(unet, spec: LoraSpec) -> None:
    """Freeze the UNet and add trainable LoRA adapters (diffusers' peft integration)."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    unet.add_adapter(
        LoraConfig(
            r=spec.rank,
            lora_alpha=spec.alpha or spec.rank,
            init_lora_weights="gaussian",
            target_modules=list(spec.targets),
        )
    )


def merged_unet(unet):
    """A copy of a LoRA UNet with the adapters fused into the weights and removed: a plain
    UNet2DConditionModel that `DiffusionPipeline.from_pretrained` loads like the base model's."""
    import copy

    out = copy.deepcopy(unet)
    out.fuse_lora()
    out.unload_lora()
    return out


# ----------------------------------------------------------------------------- the adapter
@dataclass
class Cond:
    """Prompt conditioning for the UNet: token embeddings, plus pooled embeddings and time ids (SDXL)."""

    hidden: torch.Tensor
    added: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.hidden.shape[0]

    def map(self, fn) -> Cond:
        return Cond(fn(self.hidden), {k: fn(v) for k, v in self.added.items()})

    def repeat_interleave(self, n: int) -> Cond:
        """Row b*n + i is prompt b (n samples per prompt, prompt-major)."""
        return self.map(lambda x: x.repeat_interleave(n, dim=0))

    def __getitem__(self, idx) -> Cond:
        return self.map(lambda x: x[idx])

    @staticmethod
    def cat(conds: Sequence[Cond]) -> Cond:
        return Cond(
            torch.cat([c.hidden for c in conds]), {k: torch.cat([c.added[k] for c in conds]) for k in conds[0].added}
        )


class T2IModel:
    """Adapter over a diffusers SD/SDXL pipeline; counts every UNet evaluation in `self.nfe`."""

    def __init__(self, pipe, device: str | torch.device | None = None, decode_chunk: int = 64):
        from diffusers import DDIMScheduler, StableDiffusionXLPipeline

        self.pipe = pipe
        self.kind = "sdxl" if isinstance(pipe, StableDiffusionXLPipeline) else "sd"
        self.device = resolve_device(device)
        pipe.to(self.device)
        self.unet = pipe.unet
        self.vae = pipe.vae
        self.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        self.nfe = diffusion.NFECounter()
        self.decode_chunk = decode_chunk
        for m in self.frozen_modules():
            m.requires_grad_(False)

    @classmethod
    def from_pretrained(cls, name_or_path, device=None, revision=None, dtype=None, **kw) -> T2IModel:
        return cls(load_pipeline(name_or_path, revision, dtype), device, **kw)

    def frozen_modules(self) -> list[torch.nn.Module]:
        mods = [self.pipe.vae, self.pipe.text_encoder]
        if self.kind == "sdxl":
            mods.append(self.pipe.text_encoder_2)
        return [m for m in mods if m is not None]

    # -- geometry
    @property
    def latent_shape(self) -> tuple[int, int, int]:
        c = self.unet.config
        return (c.in_channels, c.sample_size, c.sample_size)

    @property
    def image_size(self) -> int:
        return self.unet.config.sample_size * self.pipe.vae_scale_factor

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    # -- prompts
    def tokenize(self, prompts: Sequence[str], tokenizer=None) -> torch.Tensor:
        tok = tokenizer or self.pipe.tokenizer
        return tok(
            list(prompts), padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(self.device)

    def encode_prompts(self, prompts: Sequence[str]) -> Cond:
        """Conditioning exactly as the diffusers pipeline computes it (no classifier-free guidance)."""
        prompts = list(prompts)
        if self.kind == "sd":
            return Cond(self.pipe.text_encoder(self.tokenize(prompts))[0])
        with torch.no_grad():
            emb, _, pooled, _ = self.pipe.encode_prompt(
                prompts, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
        return Cond(emb, {"text_embeds": pooled, "time_ids": self._time_ids(len(prompts), emb.dtype)})

    def encode_uncond(self, n: int) -> Cond:
        """The unconditional branch of classifier-free guidance (empty prompt; zeros for SDXL if configured)."""
        if self.kind == "sdxl" and self.pipe.config.force_zeros_for_empty_prompt:
            c = self.encode_prompts([""])
            c = c.map(torch.zeros_like)
            c.added["time_ids"] = self._time_ids(1, c.hidden.dtype)
        else:
            c = self.encode_prompts([""])
        return c.map(lambda x: x.expand(n, *x.shape[1:]))

    def _time_ids(self, n: int, dtype) -> torch.Tensor:
        size = (self.image_size, self.image_size)
        ids = self.pipe._get_add_time_ids(
            size, (0, 0), size, dtype=dtype, text_encoder_projection_dim=self.pipe.text_encoder_2.config.projection_dim
        )
        return ids.to(self.device).repeat(n, 1)

    # -- denoising
    def eps(self, x: torch.Tensor, t: torch.Tensor, cond: Cond, unet=None) -> torch.Tensor:
        """One UNet evaluation (model output in the scheduler's prediction type)."""
        self.nfe.add(x.shape[0])
        unet = unet or self.unet
        added = cond.added or None
        return unet(x, t, encoder_hidden_states=cond.hidden, added_cond_kwargs=added, return_dict=False)[0]

    def denoiser(self, cond: Cond, guidance_scale: float = 1.0, uncond: Cond | None = None, unet=None):
        """eps_fn(x, t) for diffusion.*: conditional, or classifier-free guided in one batched call."""
        if guidance_scale == 1.0:
            return lambda x, t: self.eps(x, t, cond, unet)
        uncond = uncond if uncond is not None else self.encode_uncond(len(cond))
        both = Cond.cat([uncond, cond])

        def eps_fn(x, t):
            out = self.eps(torch.cat([x, x]), torch.cat([t, t]), both, unet)
            u, c = out.chunk(2)
            return u + guidance_scale * (c - u)

        return eps_fn

    # -- pixels <-> latents
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (scaled) -> images in [0, 1], (N, 3, H, W), decoded in chunks."""
        cfg = self.vae.config
        z = latents / cfg.scaling_factor
        if getattr(cfg, "shift_factor", None):
            z = z + cfg.shift_factor
        z = z.to(self.vae.dtype)
        parts = [self.vae.decode(c, return_dict=False)[0] for c in z.split(self.decode_chunk)]
        return (torch.cat(parts).float() / 2 + 0.5).clamp(0, 1)

    def encode(
        self, images: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True
    ) -> torch.Tensor:
        """Images in [0, 1] (N, 3, H, W) -> scaled latents (a sample of the posterior, as diffusers trains;
        its mode with sample=False)."""
        mean, std = self.posterior(images)
        return self.posterior_sample(mean, std, generator) if sample else self.scale_latents(mean)

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of the VAE posterior of images in [0, 1] (unscaled latent units)."""
        dist = self.vae.encode(images.to(self.device, self.vae.dtype) * 2 - 1).latent_dist
        return dist.mean, dist.std

    def posterior_sample(
        self, mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """mean + std * (one standard normal of the latent's shape from `generator`, as diffusers' posterior
        `sample` draws it), in the UNet's latent units."""
        noise = torch.randn(
            mean.shape,
            generator=generator,
            dtype=mean.dtype,
            device=generator.device if generator is not None else mean.device,
        )
        return self.scale_latents(mean + std * noise.to(mean.device))

    def scale_latents(self, z: torch.Tensor) -> torch.Tensor:
        """VAE latents -> the UNet's latent units (shift and scaling factor of the VAE's config)."""
        cfg = self.vae.config
        if getattr(cfg, "shift_factor", None):
            z = z - cfg.shift_factor
        return z * cfg.scaling_factor

    # -- generation
    def initial_latents(self, seeds: Sequence[int]) -> torch.Tensor:
        """One standard-normal latent per seed (CPU generator, so identical on every device)."""
        shape = self.latent_shape
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        z = torch.stack([torch.randn(shape, generator=g) for g in gens])  # host: CPU generators, moved below
        return z.to(self.device, self.dtype) * self.scheduler.init_noise_sigma

    @torch.no_grad()
    def generate_latents(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        num_steps: int = 50,
        guidance_scale: float = 5.0,
        eta: float = 0.0,
        batch_size: int = 256,
    ) -> torch.Tensor:
        out = []
        for i in range(0, len(prompts), batch_size):
            p, s = list(prompts[i : i + batch_size]), list(seeds[i : i + batch_size])
            eps_fn = self.denoiser(self.encode_prompts(p), guidance_scale)
            gen = torch.Generator().manual_seed(int(s[0]) + 7919) if eta > 0 else None
            out.append(diffusion.sample(eps_fn, self.scheduler, self.initial_latents(s), num_steps, eta, gen))
        return torch.cat(out)

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], seeds: Sequence[int], **kw) -> torch.Tensor:
        """Images in [0, 1] for prompts with fixed seeds (DDIM, classifier-free guidance)."""
        return self.decode(self.generate_latents(prompts, seeds, **kw))

    # -- saving
    def save(self, out_dir: str | os.PathLike, unet=None) -> None:
        """save_pretrained of the whole pipeline with the (possibly fine-tuned) UNet."""
        if unet is not None:
            self.pipe.unet = unet
        self.pipe.save_pretrained(str(out_dir), safe_serialization=True)
