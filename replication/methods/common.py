"""Plumbing shared by the fine-tuning methods: which modules train (full or LoRA), the frozen reference model,
differentiable rewards, a method's own hyperparameters, NFE accounting, saving. Batches come from
`replication.sources`; LoRA itself is `models.add_lora`."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from pathlib import Path

import torch

from ..models import LoraSpec, T2IModel, add_lora, merged_unet
from ..tensors import unwrap


def spec_fields(spec, cls) -> dict:
    """The fields of the spec dataclass `cls` (a method's own hyperparameters) read from `spec`, which may be a
    params.yaml section extending `cls` with run settings (model, data, training loop); for fingerprints."""
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(cls)}


def differentiable(reward):
    """reward(images, prompts) with gradients flowing back to the images (DRaFT, ReFL, IterPO).

    Every reward of this repository scores under torch.no_grad (cheap everywhere else) and offers `with_grad`
    where it can be differentiated; that is used. Any other callable (a plain torch function) is called as is
    and must return a result that requires grad."""
    name = getattr(reward, "name", type(reward).__name__)
    fn = getattr(reward, "with_grad", False)
    if fn is None:  # a weighted mix with a part that cannot be differentiated
        raise TypeError(
            f"reward {name!r} mixes in a reward without gradients; draft and iterpo need differentiable ones"
        )
    if fn:
        return fn

    def checked(images, prompts):
        r = reward(images, prompts)
        if not r.requires_grad:
            raise TypeError(
                f"reward {name!r} gives no gradient (it scores under no_grad, e.g. the MLLM grader); methods that "
                f"backpropagate through the reward (draft, iterpo) need a differentiable one: give it a "
                f"`with_grad(images, prompts)` method"
            )
        return r

    return checked


# ----------------------------------------------------------------------------- rounds of on-policy samples
class SampledRounds:
    """Mixin of methods that sample a round with the current model and reuse it for `spec.updates_per_sample`
    optimiser steps (DDPO, D3PO). The subclass provides `_sample(gen) -> dict` (with an "order" permutation of
    the round's rows) and sets `self.group`. The round's samples are method state: the training loop
    checkpoints `state_dict()`, so a run killed mid-round resumes exactly."""

    _round: int = -1
    _buf: dict | None = None
    # one share of the round per optimiser step: a second micro-step (train.grad_accum > 1) would repeat its rows,
    # so the training loop refuses gradient accumulation for these methods
    one_batch_per_step = True

    def state_dict(self) -> dict:
        return {"round": self._round, "buffer": self._buf}

    def load_state_dict(self, state: dict) -> None:
        self._round, buf = state["round"], state["buffer"]
        self._buf = None if buf is None else {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in buf.items()}

    def round_rows(self, step: int, gen: torch.Generator) -> tuple[dict, torch.Tensor]:
        """The current round's samples (sampled now at a round's first step) and this step's share of its rows."""
        rnd, j = divmod(step - 1, self.spec.updates_per_sample)
        if self._round != rnd:
            if j:
                raise RuntimeError(
                    f"{self.name}: step {step} is inside round {rnd} but its samples are missing; "
                    f"resume from a checkpoint written by the training loop (it stores them)"
                )
            self._buf, self._round = self._sample(gen), rnd
        return self._buf, self._buf["order"][j * self.batch_size : (j + 1) * self.batch_size]


# ----------------------------------------------------------------------------- the method base
class UNetMethod:
    """Base of methods that fine-tune the UNet of a T2IModel: all of its weights, or LoRA adapters on
    its attention projections (`lora`); the text encoders and the VAE stay frozen, as in the paper's
    scripts. Methods with a KL anchor get a frozen reference: the starting UNet (a frozen copy for
    full fine-tuning; with LoRA, the same UNet with its adapters disabled)."""

    name = "unet-method"

    def __init__(
        self,
        model: T2IModel,
        batch_size: int,
        fingerprint: dict | None = None,
        lora: LoraSpec | None = None,
        reference: bool = False,
    ):
        self.model = model
        self.batch_size = batch_size
        self._fp = dict(fingerprint or {})
        self.lora = lora if lora is not None and lora.enabled else None
        if self.lora is not None:
            add_lora(model.unet, self.lora)
        self._ref_unet = None
        if reference and self.lora is None:
            self._ref_unet = copy.deepcopy(model.unet).requires_grad_(False).eval()

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.model.unet}

    def bind(self, prepared: dict[str, torch.nn.Module]) -> None:
        self.model.unet = prepared["unet"]

    def fingerprint(self) -> dict:
        fp = {"method": self.name, "batch_size": self.batch_size, **self._fp}
        if self.lora is not None:
            fp["lora"] = {"rank": self.lora.rank, "alpha": self.lora.alpha, "targets": list(self.lora.targets)}
        return fp

    def save(self, out_dir: Path) -> None:
        unet = merged_unet(unwrap(self.model.unet)) if self.lora is not None else self.model.unet
        self.model.save(out_dir, unet=unet)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # -- the frozen reference
    @contextlib.contextmanager
    def _reference_weights(self):
        if self.lora is None:
            yield self._ref_unet
            return
        inner = unwrap(self.model.unet)
        inner.disable_adapters()
        try:
            yield inner
        finally:
            inner.enable_adapters()

    def ref_denoiser(self, cond, guidance_scale: float = 1.0):
        """eps_fn of the frozen reference model (no gradients; its evaluations count as NFEs)."""
        if self.lora is None and self._ref_unet is None:
            raise RuntimeError(f"{self.name}: constructed without a reference model (reference=True)")

        uncond = self.model.encode_uncond(len(cond)) if guidance_scale != 1.0 else None

        def eps_fn(x, t):
            with torch.no_grad(), self._reference_weights() as unet:
                return self.model.denoiser(cond, guidance_scale, uncond, unet=unet)(x, t)

        return eps_fn

    def nfe_mark(self) -> int:
        return self.model.nfe.evals

    def nfe_since(self, mark: int) -> float:
        return float(self.model.nfe.evals - mark)
