"""The training loop and the sharpening step on CUDA (skipped cleanly without a CUDA device; `pytest -m gpu`).

The whole smoke pipeline on CUDA is tests/test_notebooks.py::test_every_stage_runs_on_cuda_and_its_pipelines_reload_there.
`GPU_TEST_DEVICE=cpu pytest tests/test_gpu.py` runs the same tests on the CPU (fp16 aside), which keeps them
working on machines without a GPU.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

from replication.methods.sharpening import RLHFSharpening, RLHFSpec, SFTSharpening, SharpeningSpec
from replication.models import LoraSpec, T2IModel
from replication.sources import ImageTextSource, PromptSource
from replication.train import TrainParams, step_generator, train

DEVICE = os.environ.get("GPU_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"),
]

PROMPTS = ["a red circle", "a blue square", "two green triangles", "a yellow star and a red square"]


def redness(images, prompts):
    return 10 * (images[:, 0].mean((1, 2)) - images[:, 1:].mean((1, 2, 3)))


@pytest.fixture
def cuda_sd(micro_sd_dir) -> T2IModel:
    torch.manual_seed(0)
    return T2IModel.from_pretrained(micro_sd_dir, device=DEVICE)


@pytest.fixture
def source(world_pairs):
    images, captions = world_pairs
    return ImageTextSource(images, captions, "pairs")


def unet_state(model):
    return {k: v.detach().float().cpu().clone() for k, v in model.unet.state_dict().items()}


def params(**kw) -> TrainParams:
    return TrainParams(**{"steps": 2, "batch_size": 4, "lr": 1e-3, "checkpoint_every": 1, **kw})


@pytest.mark.parametrize("mixed_precision", ["no", "bf16", "fp16"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_training_loop_on_cuda_with_mixed_precision_and_checkpointing(
    cuda_sd, source, tmp_path, mixed_precision, checkpointing
):
    if mixed_precision == "fp16" and DEVICE != "cuda":
        pytest.skip("fp16 mixed precision needs CUDA")
    before = unet_state(cuda_sd)
    method = SFTSharpening(cuda_sd, redness, source, 4, SharpeningSpec(n=3, m=2))
    cfg = params(mixed_precision=mixed_precision, gradient_checkpointing=checkpointing)
    out = train(method, cfg, tmp_path / "run", tmp_path / "log.csv", out_dir=tmp_path / "out", show_progress=False)
    assert out["steps"] == 2
    log = (tmp_path / "log.csv").read_text().splitlines()
    losses = [float(r.split(",")[1]) for r in log[1:]]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert cuda_sd.unet.is_gradient_checkpointing == checkpointing
    after = unet_state(T2IModel.from_pretrained(tmp_path / "out", device=DEVICE))
    assert any(not torch.equal(before[k], after[k]) for k in before), "the saved UNet did not change"


def test_bf16_step_matches_fp32_within_bf16_tolerance(cuda_sd, source):
    """The same sharpening loss in fp32 and under bf16 autocast: same choice of trajectories, close loss."""
    method = SFTSharpening(cuda_sd, redness, source, 4, SharpeningSpec(n=3, m=2))
    loss32, m32 = method.loss(3, step_generator(0, 3))
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        loss16, m16 = method.loss(3, step_generator(0, 3))
    torch.testing.assert_close(loss16.float(), loss32, rtol=0.05, atol=1e-3)
    assert m16["nfe"] == m32["nfe"]


@pytest.mark.parametrize("grad_pass", ["rerun", "keep"])
def test_lora_sharpening_on_cuda_trains_adapters_and_saves_merged(cuda_sd, tmp_path, grad_pass):
    from diffusers import UNet2DConditionModel

    before = unet_state(cuda_sd)
    spec = RLHFSpec(n=3, m=2, x0="tweedie", beta=50.0, gen_steps=3, grad_pass=grad_pass)
    method = RLHFSharpening(cuda_sd, redness, PromptSource(PROMPTS, "prompts"), 2, spec, lora=LoraSpec(rank=4))
    trainable = [p for n, p in cuda_sd.unet.named_parameters() if p.requires_grad]
    assert trainable and all(p.device.type == DEVICE for p in trainable)
    train(method, params(), tmp_path / "run", tmp_path / "log.csv", out_dir=tmp_path / "out", show_progress=False)
    merged = UNet2DConditionModel.from_pretrained(tmp_path / "out" / "unet")
    assert not any("lora" in k for k in merged.state_dict())
    assert any(not torch.equal(before[k], v.float()) for k, v in merged.state_dict().items() if k in before)


def test_both_grad_passes_agree_on_cuda(cuda_sd, source):
    def run(grad_pass):
        model = copy.deepcopy(cuda_sd)
        loss, _ = SFTSharpening(model, redness, source, 2, SharpeningSpec(n=3, m=3, grad_pass=grad_pass)).loss(
            5, step_generator(1, 5)
        )
        loss.backward()
        return loss, torch.cat([p.grad.flatten() for p in model.unet.parameters() if p.grad is not None])

    (l1, g1), (l2, g2) = run("rerun"), run("keep")
    torch.testing.assert_close(l1, l2, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(g1, g2, rtol=1e-3, atol=1e-3 * g1.abs().max().item())
