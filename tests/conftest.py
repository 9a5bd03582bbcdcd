"""Shared fixtures: micro models built locally (random weights) and the repository's paths.

Nothing here downloads anything: the SD and SDXL pipelines are built from diffusers and
transformers classes with tiny configurations and saved with save_pretrained, then loaded
through the same code the pipeline uses.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("REPLICATION_ROOT", str(ROOT))

from replication import quiet_hub_progress  # noqa: E402
from replication.models import T2IModel, TinyArch, build_tiny_sd, build_tiny_sdxl  # noqa: E402

quiet_hub_progress()
# The micro models are far too small to gain from intra-op threads, and with two threads a test
# slows down badly whenever anything else uses the second core.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def micro_arch() -> TinyArch:
    """The smallest architecture of the tiny family: seconds to build, milliseconds per step."""
    return TinyArch(
        vae_channels=(8, 16, 16),
        unet_channels=(16, 32, 32),
        unet_attention=(False, True, True),
        text_width=32,
        text_layers=1,
        text_heads=2,
        attention_head_dim=8,
    )


@pytest.fixture(scope="session")
def micro_sd_dir(tmp_path_factory, micro_arch) -> Path:
    """A randomly initialised tiny StableDiffusionPipeline saved with save_pretrained."""
    d = tmp_path_factory.mktemp("micro_sd")
    build_tiny_sd(micro_arch, seed=0).save_pretrained(str(d))
    return d


@pytest.fixture(scope="session")
def micro_sdxl_dir(tmp_path_factory, micro_arch) -> Path:
    """A randomly initialised SDXL-shaped pipeline (two text encoders, added time ids) saved locally."""
    d = tmp_path_factory.mktemp("micro_sdxl")
    build_tiny_sdxl(micro_arch, seed=0).save_pretrained(str(d))
    return d


@pytest.fixture
def micro_sd(micro_sd_dir) -> T2IModel:
    """A fresh T2IModel on the micro SD pipeline (each test may train it)."""
    torch.manual_seed(0)
    return T2IModel.from_pretrained(micro_sd_dir)


@pytest.fixture
def micro_sdxl(micro_sdxl_dir) -> T2IModel:
    torch.manual_seed(0)
    return T2IModel.from_pretrained(micro_sdxl_dir)


@pytest.fixture(scope="session")
def world_pairs():
    """200 rendered pokemon-style images (one object each) with their captions."""
    from replication.world import Sampler, render_batch, sample_captioned

    s = Sampler(np.random.default_rng(123))
    items = [sample_captioned(s, "pokemon") for _ in range(200)]
    return render_batch([i[0] for i in items]), [i[1] for i in items]
