"""Tensor helpers every floor uses: the compute device, uint8 image arrays <-> float image tensors, and the
module inside a distributed wrapper."""

from __future__ import annotations

import numpy as np
import torch


def default_device() -> str:
    """Where models run: the first CUDA device if there is one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device=None) -> torch.device:
    """`device` as a torch.device; None means `default_device()`. Loaders and models take `device=None` and call
    this, so code that forgets to name a device runs where the models run, never silently on the CPU beside a
    model on a GPU (tests/test_devices.py keeps `device="cpu"` defaults out of the package)."""
    return torch.device(default_device() if device is None else device)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float images in [0, 1], (N, 3, H, W), on any device -> uint8 (N, H, W, 3) on the host."""
    return (images.detach().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def to_float(images: np.ndarray | torch.Tensor, device=None) -> torch.Tensor:
    """uint8 images (N, H, W, 3), a NumPy array or a tensor -> floats in [0, 1], (N, 3, H, W), on `device`."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))  # host: moved below when a device is given
    x = images
    if device is not None:
        x = x.to(device)
    return x.permute(0, 3, 1, 2).float() / 255


def unwrap(module):
    """The module inside a DistributedDataParallel wrapper (accelerate on several GPUs), else the module."""
    return getattr(module, "module", module)
