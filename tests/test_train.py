"""The one training loop: resume equals an uninterrupted run, NaN guard, fingerprints, final reuse."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from replication.train import TrainingDiverged, TrainParams, step_generator, train


class Regression:
    """A linear model fitted to y = 3x - 1 with noise drawn from the step generator."""

    name = "regression"

    def __init__(self, tag: float = 0.0, nan_at: int | None = None):
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 1)
        self.nan_at = nan_at
        self.tag = tag

    def modules(self):
        return {"lin": self.lin}

    def bind(self, prepared):
        self.lin = prepared["lin"]

    def fingerprint(self):
        return {"tag": self.tag}

    def loss(self, step, gen):
        x = torch.randn(16, 4, generator=gen)
        y = 3 * x.sum(1, keepdim=True) - 1 + 0.1 * torch.randn(16, 1, generator=gen)
        loss = (self.lin(x) - y).pow(2).mean()
        if self.nan_at is not None and step >= self.nan_at:
            loss = loss * float("nan")
        return loss, {"abs_bias": self.lin.bias.abs().item()}

    def save(self, out_dir):
        torch.save(self.lin.state_dict(), out_dir / "lin.pt")


def cfg(**kw) -> TrainParams:
    base = dict(steps=8, batch_size=16, lr=0.4, checkpoint_every=2, seed=3, adam_beta1=0.9)
    base.update(kw)
    return TrainParams(**base)


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_step_generator_is_deterministic_and_step_specific():
    a = torch.randn(3, generator=step_generator(1, 5))
    assert torch.equal(a, torch.randn(3, generator=step_generator(1, 5)))
    assert not torch.equal(a, torch.randn(3, generator=step_generator(1, 6)))
    assert not torch.equal(a, torch.randn(3, generator=step_generator(2, 5)))


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path):
    full = Regression()
    train(full, cfg(), tmp_path / "a", tmp_path / "a.csv", out_dir=tmp_path / "out_a", show_progress=False)

    part = Regression()
    r = train(part, cfg(), tmp_path / "b", tmp_path / "b.csv", show_progress=False, stop_after=5)
    assert r["done"] is False and r["steps"] == 5
    assert (tmp_path / "b" / "step-000005").exists()
    resumed = Regression()  # a new process would start from fresh weights and load the checkpoint
    r = train(resumed, cfg(), tmp_path / "b", tmp_path / "b.csv", out_dir=tmp_path / "out_b", show_progress=False)
    assert r["done"] is True

    wa = torch.load(tmp_path / "out_a" / "lin.pt")
    wb = torch.load(tmp_path / "out_b" / "lin.pt")
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    ra, rb = rows(tmp_path / "a.csv"), rows(tmp_path / "b.csv")
    assert [r["step"] for r in rb] == [str(i) for i in range(1, 9)]
    assert ra == rb  # the log of the resumed run has no duplicated or missing steps
    # the loss went down: the loop optimises
    assert float(ra[-1]["loss"]) < float(ra[0]["loss"]) / 2


def test_finished_run_is_reused_not_retrained(tmp_path):
    train(Regression(), cfg(), tmp_path / "r", tmp_path / "r.csv", out_dir=tmp_path / "out", show_progress=False)
    (tmp_path / "r.csv").unlink()  # dvc repro deletes a stage's outputs before rerunning it
    import shutil

    shutil.rmtree(tmp_path / "out")
    again = train(
        Regression(), cfg(), tmp_path / "r", tmp_path / "r.csv", out_dir=tmp_path / "out", show_progress=False
    )
    assert again["seconds"] == 0.0
    assert (tmp_path / "out" / "lin.pt").exists() and len(rows(tmp_path / "r.csv")) == 8


def test_checkpoint_with_other_parameters_is_discarded(tmp_path, capsys):
    train(Regression(tag=1.0), cfg(), tmp_path / "r", tmp_path / "r.csv", show_progress=False, stop_after=4)
    train(Regression(tag=2.0), cfg(), tmp_path / "r", tmp_path / "r.csv", out_dir=tmp_path / "o2", show_progress=False)
    assert "other parameters" in capsys.readouterr().out
    train(
        Regression(tag=2.0), cfg(), tmp_path / "fresh", tmp_path / "f.csv", out_dir=tmp_path / "o3", show_progress=False
    )
    a, b = torch.load(tmp_path / "o2" / "lin.pt"), torch.load(tmp_path / "o3" / "lin.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_result_of_older_code_is_not_reused(tmp_path, monkeypatch, capsys):
    """dvc repro reruns a stage whose code changed; the loop must then retrain, not republish the old result."""
    import replication.train as tr

    train(Regression(), cfg(), tmp_path / "r", tmp_path / "r.csv", out_dir=tmp_path / "out", show_progress=False)
    real = tr.source_digest
    monkeypatch.setattr(tr, "source_digest", lambda *objs: real(*objs) + "-edited")
    again = train(
        Regression(), cfg(), tmp_path / "r", tmp_path / "r.csv", out_dir=tmp_path / "out", show_progress=False
    )
    assert again["seconds"] > 0.0 and "other parameters or code" in capsys.readouterr().out


def test_source_digest_covers_the_class_hierarchy_and_the_core(tmp_path):
    from replication.digests import source_digest
    from replication.methods.best_of_n import BestOfN
    from replication.methods.inference_scaling import ZeroOrderSearch

    core = source_digest()
    assert len(core) == 32 and core == source_digest()
    assert source_digest(BestOfN) != core  # its own file and inference_time.py's
    assert source_digest(BestOfN) != source_digest(ZeroOrderSearch)
    assert source_digest("replication.methods.best_of_n") != core


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"train\.lr"):
        train(Regression(nan_at=5), cfg(), tmp_path / "r", tmp_path / "r.csv", show_progress=False)
    assert (tmp_path / "r" / "step-000004").exists()


def test_fp16_on_cpu_is_refused_with_the_fix(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("fp16 is valid on a GPU")
    with pytest.raises(ValueError, match="mixed_precision"):
        train(Regression(), cfg(mixed_precision="fp16"), tmp_path / "r", tmp_path / "r.csv", show_progress=False)


def test_one_process_trains_with_one_mixed_precision_then_another(tmp_path):
    """accelerate's process-wide state would refuse the second run (a notebook training twice)."""
    from accelerate.state import AcceleratorState

    for i, mp in enumerate(["no", "bf16", "no"]):
        out = train(
            Regression(), cfg(mixed_precision=mp), tmp_path / f"r{i}", tmp_path / f"r{i}.csv", show_progress=False
        )
        assert out["steps"] == 8
        assert str(AcceleratorState().mixed_precision) == mp


def test_gradient_accumulation_logs_once_per_optimiser_step(tmp_path):
    train(Regression(), cfg(grad_accum=2, steps=3), tmp_path / "r", tmp_path / "r.csv", show_progress=False)
    assert [r["step"] for r in rows(tmp_path / "r.csv")] == ["1", "2", "3"]


def test_cosine_schedule_warms_up_then_decays_to_the_floor(tmp_path):
    from replication.train import lr_factor

    c = cfg(steps=10, lr_warmup_steps=2, lr_schedule="cosine", lr_min_ratio=0.1)
    f = [lr_factor(c, s) for s in range(10)]
    assert f[:2] == [0.5, 1.0]
    assert all(a > b for a, b in zip(f[1:], f[2:])), f  # strictly decreasing after warmup
    assert abs(lr_factor(c, 9) - 0.1) < 1e-12 and abs(lr_factor(c, 50) - 0.1) < 1e-12
    assert lr_factor(cfg(steps=10), 7) == 1.0  # constant is the default
    # the loop logs the scheduled rate: the last logged lr is the floor's neighbour, below the peak
    train(
        Regression(),
        cfg(steps=6, lr_schedule="cosine", lr_min_ratio=0.0),
        tmp_path / "r",
        tmp_path / "r.csv",
        show_progress=False,
    )
    lrs = [float(r["lr"]) for r in rows(tmp_path / "r.csv")]
    assert lrs[0] < 0.4 and lrs == sorted(lrs, reverse=True) and lrs[-1] == 0.0


def test_fingerprints_are_the_same_in_every_process():
    """A finished run is reused only if its fingerprint is reproducible: diffusers configs carry a set in hash
    order (`_use_default_values`), which once made the base model's VAE retrain in every new process."""
    import os
    import subprocess
    import sys

    script = (
        "from replication.models import TinyArch, build_vae\n"
        "from replication.sources import ImageTextSource\n"
        "from replication.recipes.base_model import VAETraining\n"
        "from replication.train import TrainParams\n"
        "from replication.train import _fingerprint\n"
        "import numpy as np\n"
        "vae = build_vae(TinyArch(vae_channels=(8, 16, 16)))\n"
        "src = ImageTextSource(np.zeros((2, 32, 32, 3), np.uint8), ['a', 'b'], 'x')\n"
        "print(_fingerprint(VAETraining(vae, src, 2, 1e-6), TrainParams()))\n"
    )
    out = {
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2", "3")
    }
    assert len(out) == 1, out


def test_optimizer_is_fused_adamw_with_the_configured_rule():
    """The loop's AdamW runs as the fused kernel on CPU float parameters and updates as the reference AdamW does."""
    from replication.train import make_optimizer

    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    start = [p.detach().clone() for p in a]
    cfg = TrainParams(lr=1e-2, adam_beta1=0.0, adam_beta2=0.99, weight_decay=0.1)
    fused = make_optimizer(a, cfg)
    ref = torch.optim.AdamW(b, lr=1e-2, betas=(0.0, 0.99), weight_decay=0.1, foreach=False)
    assert fused.defaults["fused"] is True
    for _ in range(3):
        for pa, pb in zip(a, b):
            g = torch.randn_like(pa)
            pa.grad, pb.grad = g.clone(), g.clone()
        fused.step()
        ref.step()
    for pa, pb, p0 in zip(a, b, start):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
        assert (pa - p0).abs().max() > 1e-3  # three steps of lr 1e-2 moved it


class SavesItsSource(Regression):
    """Saves a config naming the folder it was 'loaded from', as diffusers and transformers do."""

    def save(self, out_dir):
        super().save(out_dir)
        (out_dir / "config.json").write_text(json.dumps({"_name_or_path": str(out_dir.parent), "width": 4}))
        (out_dir / "hub.json").write_text(json.dumps({"_name_or_path": "org/model", "width": 4}))


def test_saved_result_names_no_local_folder(tmp_path):
    train(SavesItsSource(), cfg(), tmp_path / "r", tmp_path / "r.csv", out_dir=tmp_path / "out", show_progress=False)
    assert json.loads((tmp_path / "out" / "config.json").read_text()) == {"width": 4}
    assert json.loads((tmp_path / "out" / "hub.json").read_text()) == {"_name_or_path": "org/model", "width": 4}
