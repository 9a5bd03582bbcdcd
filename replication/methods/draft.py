"""Direct reward backpropagation for differentiable rewards: DRaFT-K (Clark et al., 2024) and ReFL
(Xu et al., ImageReward, 2023). Not in the paper's Table 1: the cheap, strong baseline a reader asks about.

For each prompt of a batch, sample with the current model (DDIM, eta = 0, classifier-free guidance):
  * `draft`: the first T - K steps without gradients, the last K with gradients through the network and
    the sampler; the reward of the final sample (decoded by the VAE, gradients through the decoder);
  * `refl`: without gradients down to a random one of the last `stop_range` steps, then one step with
    gradients; the reward of that step's one-step clean estimate x0_hat.
loss = -reward_scale * mean reward (`linear`), or ReFL's hinge reward_scale * mean ReLU(margin - reward).
The reward must be differentiable (`methods.common.differentiable`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from .. import diffusion
from ..models import T2IModel
from ..rewards import registry
from ..sources import PromptSource, prompt_source
from .common import LoraSpec, UNetMethod, differentiable, spec_fields

MODES = ("draft", "refl")


@dataclass
class BackpropSpec:
    """DRaFT-K / ReFL (params.yaml: draft.*, and iterpo.* with mode refl and the hinge objective)."""

    mode: Literal["draft", "refl"] = "draft"
    k: int = 1  # draft: steps with gradients (DRaFT-1 is the paper's most used setting)
    stop_range: int = 10  # refl: the gradient step is one of the last stop_range steps (ReFL: 10 of 40)
    sample_steps: int = 20
    guidance: float = 5.0
    objective: Literal["linear", "hinge"] = "linear"
    margin: float = 2.0  # hinge: ReLU(margin - reward) (ReFL's 2 is for ImageReward's z-scores)
    reward_scale: float = 1.0  # ReFL's grad_scale is 1e-3

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.objective not in ("linear", "hinge"):
            raise ValueError(f"objective must be 'linear' or 'hinge', got {self.objective!r}")
        if self.mode == "draft" and not 1 <= self.k <= self.sample_steps:
            raise ValueError(f"draft needs 1 <= k <= sample_steps (k={self.k}, sample_steps={self.sample_steps})")
        if self.mode == "refl" and not 1 <= self.stop_range <= self.sample_steps:
            raise ValueError(
                f"refl needs 1 <= stop_range <= sample_steps (stop_range={self.stop_range}, "
                f"sample_steps={self.sample_steps})"
            )


def backprop_images(model: T2IModel, prompts: list[str], spec: BackpropSpec, gen: torch.Generator) -> torch.Tensor:
    """Images in [0, 1] whose graph reaches the UNet through the last K steps (draft) or one step (refl)."""
    sched = model.scheduler
    b = len(prompts)
    grid = diffusion.ddim_grid(sched, spec.sample_steps, model.device)
    n = len(grid)
    first_grad = n - spec.k if spec.mode == "draft" else int(torch.randint(n - spec.stop_range, n, (1,), generator=gen))
    last = n if spec.mode == "draft" else first_grad + 1
    x = torch.randn((b, *model.latent_shape), generator=gen).to(model.device, model.dtype) * sched.init_noise_sigma
    eps_fn = model.denoiser(model.encode_prompts(prompts), spec.guidance)
    grad = torch.is_grad_enabled()
    for i, t, t_prev in grid.steps(b):
        if i == last:
            break
        with torch.set_grad_enabled(grad and i >= first_grad):
            step = diffusion.ddim_step(sched, eps_fn(x, t), t, x, t_prev)
        x = step.prev
    return model.decode(x if spec.mode == "draft" else step.x0)


def reward_objective(r: torch.Tensor, spec: BackpropSpec) -> torch.Tensor:
    if spec.objective == "hinge":
        return spec.reward_scale * torch.relu(spec.margin - r).mean()
    return -spec.reward_scale * r.mean()


class RewardBackprop(UNetMethod):
    name = "draft"

    def __init__(
        self,
        model: T2IModel,
        reward,
        prompts: PromptSource,
        batch_size: int,
        spec: BackpropSpec,
        lora: LoraSpec | None = None,
        fingerprint: dict | None = None,
    ):
        super().__init__(model, batch_size, {"spec": spec_fields(spec, BackpropSpec), **(fingerprint or {})}, lora=lora)
        self.reward, self.prompts, self.spec = differentiable(reward), prompts, spec
        self.name = spec.mode

    def loss(self, step: int, gen: torch.Generator):
        mark = self.nfe_mark()
        prompts = self.prompts.batch(self.batch_size, gen)
        r = self.reward(backprop_images(self.model, prompts, self.spec, gen), prompts).float()
        return reward_objective(r, self.spec), {
            "reward_mean": r.mean().item(),
            "reward_std": r.std(unbiased=False).item(),
            "nfe": self.nfe_since(mark),
        }


def reward_backprop(model: T2IModel, s, fingerprint: dict) -> RewardBackprop:
    """The method of a params section holding BackpropSpec's fields plus `reward`, `prompts`, `lora` and `train`
    (params.yaml: draft, controls.draft, controls.noise): the reward loaded by name on the model's device, the
    prompt set by name, both named in the fingerprint beside `fingerprint` (the starting model's)."""
    return RewardBackprop(
        model,
        registry.load_reward(s.reward, model.device),
        prompt_source(s.prompts),
        s.train.batch_size,
        s,
        lora=s.lora,
        fingerprint={**fingerprint, **registry.fingerprint(s.reward), "prompts": s.prompts},
    )
