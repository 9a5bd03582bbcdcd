"""Standard fine-tuning: the epsilon-MSE objective of diffusers' train_text_to_image(_sdxl) examples.

One random timestep and noise per (image, caption); regress the noise. With the text encoder
trainable and a share of captions dropped (replaced by "", so classifier-free guidance works
at inference) the same objective pretrains the tiny base model.
"""

from __future__ import annotations

import torch

from .. import diffusion
from ..models import T2IModel
from ..sources import ImageTextSource
from .common import LoraSpec, UNetMethod


class StandardFinetune(UNetMethod):
    name = "standard-finetune"

    def __init__(
        self,
        model: T2IModel,
        data: ImageTextSource,
        batch_size: int,
        cond_dropout: float = 0.0,
        train_text_encoder: bool = False,
        fingerprint: dict | None = None,
        lora: LoraSpec | None = None,
    ):
        super().__init__(
            model,
            batch_size,
            {"cond_dropout": cond_dropout, "train_text_encoder": train_text_encoder, **(fingerprint or {})},
            lora=lora,
        )
        self.data, self.cond_dropout, self.train_text_encoder = data, cond_dropout, train_text_encoder
        if train_text_encoder:
            if model.kind != "sd":
                raise ValueError("training the text encoder is supported for the tiny SD-style model only")
            model.pipe.text_encoder.requires_grad_(True)

    def modules(self):
        mods = super().modules()
        if self.train_text_encoder:
            mods["text_encoder"] = self.model.pipe.text_encoder
        return mods

    def bind(self, prepared):
        super().bind(prepared)
        if self.train_text_encoder:
            self.model.pipe.text_encoder = prepared["text_encoder"]

    def loss(self, step: int, gen: torch.Generator):
        model = self.model
        mark = self.nfe_mark()
        x0, captions = self.data.latent_batch(self.batch_size, gen, model)  # in-memory sets: a cached posterior
        if self.cond_dropout > 0:
            drop = torch.rand(len(captions), generator=gen) < self.cond_dropout  # host: masks a list of captions
            captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
        t = torch.randint(0, model.scheduler.config.num_train_timesteps, (len(captions),), generator=gen).to(x0.device)
        eps = torch.randn(x0.shape, generator=gen).to(x0.device, x0.dtype)
        x_t = diffusion.add_noise(model.scheduler, x0, eps, t)
        out = model.eps(x_t, t, model.encode_prompts(captions))
        loss = (out.float() - diffusion.target_for(model.scheduler, x0, eps, t).float()).pow(2).mean()
        return loss, {"nfe": self.nfe_since(mark)}
