"""The one training loop: every model in the project (VAE, CLIP, base UNet, every fine-tuning
method) trains through `train`.

A method is an object with
    modules()           -> {name: nn.Module} whose trainable parameters are optimised and checkpointed
    bind(prepared)      <- the same modules after `accelerator.prepare` (DDP/mixed precision wrappers)
    loss(step, gen)     -> (scalar loss, {metric: float}); draws its own batch for `step` from `gen`
    save(out_dir)       writes the final artifact (a diffusers/transformers folder)
    fingerprint()       -> dict of everything the result depends on (resuming needs a match)
and optionally state_dict()/load_state_dict(): state beyond the modules that a resumed run needs
(DDPO's and D3PO's samples of the current round), checkpointed with the model; and
`one_batch_per_step = True` for methods whose batch is fixed by the step (gradient accumulation refused).

The loop owns what every method needs and none should re-implement: accelerate (CPU here, one
or many GPUs elsewhere, fp16/bf16), gradient accumulation, clipping, warmup, gradient
checkpointing, NaN guard, a tqdm bar, a CSV metrics log for `dvc plots`, and checkpoints.

Determinism and resume: step s draws all its randomness from a generator seeded by
(seed, s), so a run that is killed and resumed from its last checkpoint (model, optimiser,
scheduler, method state and log restored) ends with the same weights as an uninterrupted one.
A checkpoint is written to a temporary folder and renamed when complete, so a process killed while
writing one (SIGKILL, out of memory) leaves the previous checkpoint intact. Checkpoints
live under `.checkpoints/<run>/`, outside the stage's DVC outputs, so `dvc repro` after a crash
resumes instead of starting over; a checkpoint made with other parameters or other code (`digests.source_digest`)
is discarded. A
finished run keeps its result in `.checkpoints/<run>/final/` (hard-linked into `out_dir`), so a
stage that fails after training reruns without training again.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Protocol

import torch

from . import paths
from .digests import source_digest
from .progress import tqdm

# what every trained result depends on beyond the method's own classes: this loop, the sampling math, the pipeline
CORE_MODULES = ("replication.train", "replication.diffusion", "replication.models")


@dataclass
class TrainParams:
    """The one training loop's settings (params.yaml: the `train` entry of every training section)."""

    steps: int = 100
    batch_size: int = 8
    lr: float = 1e-4
    lr_warmup_steps: int = 0
    lr_schedule: Literal["constant", "cosine"] = "constant"  # cosine: decay to lr_min_ratio * lr at the last step
    lr_min_ratio: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    grad_accum: int = 1
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    checkpoint_every: int = 50
    log_every: int = 1
    seed: int = 0


class Method(Protocol):
    name: str

    def modules(self) -> dict[str, torch.nn.Module]: ...

    def bind(self, prepared: dict[str, torch.nn.Module]) -> None: ...

    def loss(self, step: int, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]: ...

    def save(self, out_dir: Path) -> None: ...

    def fingerprint(self) -> dict: ...


class TrainingDiverged(FloatingPointError):
    pass


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """The generator of one optimiser step on one process (CPU, so the stream is the same on every
    device); each process of a multi-GPU run draws its own batch."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step) + int(rank) * 998_244_353) % (2**63 - 1))


def lr_factor(cfg: TrainParams, s: int) -> float:
    """Learning-rate multiplier after s optimiser steps: linear warmup, then constant or cosine decay."""
    warm = max(0, cfg.lr_warmup_steps)
    if warm and s < warm:
        return (s + 1) / warm
    if cfg.lr_schedule == "constant":
        return 1.0
    total = max(1, cfg.steps - warm)
    progress = min(1.0, (s - warm + 1) / total)  # the last optimiser step runs at the floor
    return cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _fingerprint(method: Method, cfg: TrainParams) -> str:
    relevant = {k: v for k, v in asdict(cfg).items() if k not in ("checkpoint_every", "log_every")}
    reward = getattr(method, "reward", None)
    code = source_digest(method, *([reward] if reward is not None else []), *CORE_MODULES)
    blob = json.dumps({"method": method.fingerprint(), "train": relevant, "code": code}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainParams) -> torch.optim.AdamW:
    """AdamW with the configured betas, eps and weight decay, as the fused kernel where every parameter allows it
    (float tensors on CPU or CUDA): it updates all parameters in one call instead of a Python loop over them, which
    matters for small models with many tensors. Same update rule; rounding differs in the last bits."""
    fused = all(p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(
        params,
        lr=cfg.lr,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_eps,
        weight_decay=cfg.weight_decay,
        fused=fused,
    )


class MetricsLog:
    """CSV with one row per logged step; on resume, rows after the checkpoint are dropped."""

    def __init__(self, path: Path, keep_until: int):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        if keep_until > 0 and path.exists():
            with path.open() as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_until]
        self.fields = list(self.rows[0].keys()) if self.rows else None
        self._rewrite()

    def _rewrite(self) -> None:
        with self.path.open("w", newline="") as f:
            if self.fields:
                w = csv.DictWriter(f, self.fields)
                w.writeheader()
                w.writerows(self.rows)

    def append(self, row: dict) -> None:
        row = {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
        if self.fields is None:
            self.fields = list(row.keys())
            self._rewrite()
        extra = [k for k in row if k not in self.fields]
        if extra:
            raise KeyError(f"metric(s) {extra} appeared after the first logged step; log every key from step 1")
        self.rows.append(row)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow(row)


def _checkpoints(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))


def _release_accelerator_state(mixed_precision: str) -> None:
    """accelerate keeps one process-wide state and refuses a second Accelerator with another mixed precision;
    a notebook or test that trains twice with different settings gets the new one (the distributed process
    group, accelerate's PartialState, stays)."""
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and str(state.get("_mixed_precision", mixed_precision)) != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)


def train(
    method: Method,
    cfg: TrainParams,
    run_dir: Path,
    log_path: Path,
    out_dir: Path | None = None,
    keep_checkpoints: bool = False,
    show_progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Train `method` for cfg.steps optimiser steps; resume from run_dir if a matching checkpoint exists.

    The result is saved to `run_dir/final` and linked into `out_dir` (if given). `stop_after`
    ends the call early after that step (a checkpoint is written), as if killed; tests use it to
    check that resuming reproduces an uninterrupted run.
    """
    from accelerate import Accelerator

    fp = _fingerprint(method, cfg)
    final = run_dir / "final"
    stamp = run_dir / "fingerprint.txt"
    if final.exists() and stamp.exists() and stamp.read_text().strip() == fp:
        print(f"{method.name}: already trained with these parameters ({final}); reusing it")
        _publish(final, out_dir)
        _publish_log(run_dir, log_path)
        return {"steps": cfg.steps, "done": True, "seconds": 0.0, **_where(log_path, final)}

    if cfg.grad_accum > 1 and getattr(method, "one_batch_per_step", False):
        raise ValueError(
            f"{method.name} draws one share of its sampled round per optimiser step, so "
            f"train.grad_accum > 1 would repeat the same samples; set train.grad_accum: 1 and raise "
            f"train.batch_size instead"
        )
    if cfg.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ValueError("train.mixed_precision=fp16 needs a CUDA GPU; use 'no' (or 'bf16') on CPU")
    _release_accelerator_state(cfg.mixed_precision)
    acc = Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum,
        cpu=not torch.cuda.is_available(),
    )
    mods = method.modules()
    if cfg.gradient_checkpointing:
        for m in mods.values():
            if hasattr(m, "enable_gradient_checkpointing"):
                m.enable_gradient_checkpointing()
            elif hasattr(m, "gradient_checkpointing_enable"):
                m.gradient_checkpointing_enable()
    for m in mods.values():
        m.train()
    params = [p for m in mods.values() for p in m.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{method.name}: no trainable parameters")
    opt = make_optimizer(params, cfg)
    # accelerate steps a prepared scheduler once per process at each optimiser step (never on micro-steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg, s // acc.num_processes))
    names = list(mods)
    prepared = acc.prepare(*mods.values(), opt, sched)
    method.bind(dict(zip(names, prepared[: len(names)])))
    opt, sched = prepared[len(names) :]
    if callable(getattr(method, "state_dict", None)) and callable(getattr(method, "load_state_dict", None)):
        acc.register_for_checkpointing(method)

    # -- resume
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        if stamp.exists() and stamp.read_text().strip() != fp:
            print(f"{method.name}: checkpoints in {run_dir} were made with other parameters or code; starting afresh")
            for c in _checkpoints(run_dir) + ([final] if final.exists() else []):
                shutil.rmtree(c)
        for partial in run_dir.glob(".partial-*"):  # a checkpoint being written when the process died
            shutil.rmtree(partial)
        stamp.write_text(fp + "\n")
    acc.wait_for_everyone()
    start = 0
    ckpts = _checkpoints(run_dir)
    if ckpts:
        acc.load_state(str(ckpts[-1]))
        start = int(ckpts[-1].name.split("-")[1])
        print(f"{method.name}: resumed from {ckpts[-1]} (step {start}/{cfg.steps})")
    main = acc.is_main_process
    log = MetricsLog(run_dir / "metrics.csv", keep_until=start) if main else None  # survives `dvc repro`

    bar = tqdm(total=cfg.steps, initial=start, desc=method.name, disable=not (show_progress and main), mininterval=3.0)
    t0 = time.time()
    last_step = start
    for step in range(start + 1, cfg.steps + 1):
        gen = step_generator(cfg.seed, step, acc.process_index)
        totals: dict[str, float] = {}
        for _ in range(cfg.grad_accum):
            with acc.accumulate(*prepared[: len(names)]):
                loss, metrics = method.loss(step, gen)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(
                        f"{method.name}: loss is {loss.item()} at step {step}. Lower the learning rate "
                        f"(train.lr={cfg.lr}) or enable gradient clipping (train.max_grad_norm); the last good "
                        f"checkpoint is kept in {run_dir} and a rerun resumes from it."
                    )
                acc.backward(loss)
                if acc.sync_gradients and cfg.max_grad_norm > 0:
                    gnorm = acc.clip_grad_norm_(params, cfg.max_grad_norm)
                    totals["grad_norm"] = float(gnorm)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
            totals["loss"] = totals.get("loss", 0.0) + loss.item() / cfg.grad_accum
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0.0) + float(v) / cfg.grad_accum
        last_step = step
        if acc.num_processes > 1:  # log the mean over processes
            keys = sorted(totals)
            vals = acc.reduce(torch.tensor([totals[k] for k in keys], device=acc.device), reduction="mean")
            totals = dict(zip(keys, vals.tolist()))
        if main and (step % cfg.log_every == 0 or step == cfg.steps):
            row = {"step": step, "loss": totals.pop("loss"), "lr": sched.get_last_lr()[0], **totals}
            log.append(row)
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k in ("loss", "reward_mean")}, refresh=False)
        bar.update(1)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or step == stop_after:
            partial = run_dir / f".partial-step-{step:06d}"
            acc.save_state(str(partial))
            acc.wait_for_everyone()
            if main:
                partial.rename(run_dir / f"step-{step:06d}")
                for old in _checkpoints(run_dir)[:-1]:
                    shutil.rmtree(old)
                _publish_log(run_dir, log_path)
        if stop_after is not None and step >= stop_after:
            break
    bar.close()
    done = last_step >= cfg.steps
    if done:
        acc.wait_for_everyone()
        method.bind({k: acc.unwrap_model(m) for k, m in zip(names, prepared[: len(names)])})
        if acc.is_main_process:
            tmp = run_dir / "final.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            method.save(tmp)
            paths.strip_local_paths(tmp)
            tmp.rename(final)
            if not keep_checkpoints:
                for c in _checkpoints(run_dir):
                    shutil.rmtree(c)
            _publish(final, out_dir)
    return {"steps": last_step, "done": done, "seconds": time.time() - t0, **_where(log_path, final)}


def _where(log_path: Path, final: Path) -> dict:
    """Where a run's log and result are, as result files record paths (relative to the repository root)."""
    return {"log": paths.display(log_path), "final": paths.display(final)}


def _publish_log(run_dir: Path, log_path: Path) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / "metrics.csv", log_path)


def _publish(final: Path, out_dir: Path | None) -> None:
    """Put the finished result at out_dir as hard links (no second copy on disk; DVC may delete out_dir)."""
    if out_dir is None:
        return
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copytree(final, out_dir, copy_function=os.link)
    except OSError:  # another filesystem: copy
        shutil.rmtree(out_dir, ignore_errors=True)
        shutil.copytree(final, out_dir)


# ----------------------------------------------------------------------------- the pipeline's conventions
def train_named(name: str, method: Method, cfg: TrainParams, show_progress: bool = True, publish: bool = True) -> dict:
    """`train` with the pipeline's places for run `name`: checkpoints under .checkpoints/<name>, the metrics log at
    results/train/<name>.csv, the result at models/<name> (unless publish=False); the returned summary adds the
    log's training NFEs and first/last logged reward."""
    log = paths.train_logs() / f"{name}.csv"
    out = paths.models() / name if publish else None
    fit = train(method, cfg, paths.checkpoints() / name, log, out_dir=out, show_progress=show_progress)
    return {**fit, **log_summary(log)}


def log_summary(log: Path) -> dict:
    """Training NFEs in total and per step, and the first/last logged reward, from a metrics CSV."""
    with log.open() as f:
        rows = list(csv.DictReader(f))
    out = {"logged_steps": len(rows)}
    if rows and "nfe" in rows[0]:
        out["train_nfe"] = sum(float(r["nfe"]) for r in rows)
        out["nfe_per_step"] = out["train_nfe"] / max(1, len(rows))
    if rows and "reward_mean" in rows[0]:
        out["reward_first"], out["reward_last"] = float(rows[0]["reward_mean"]), float(rows[-1]["reward_mean"])
    return out
