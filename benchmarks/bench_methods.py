"""Cost of one optimiser step of every fine-tuning method, beside SFT Diffusion-Sharpening.

    python benchmarks/bench_methods.py [--profile tiny] [--steps 4] [--warmup 1] [--methods ddpo,d3po]
                                       [--set rlhf_sharpening.n=8 ...]

Each method is built by its stage's builder (`replication.stages.<method>.build`), so it is exactly what
`dvc repro` trains: the params.yaml settings of the profile, the pipeline's
models (models/base and the reward models; run `make repro` first), the stage's batch size. A timed step is
`loss` (which draws its own batch), backward and an AdamW step, as in the training loop, without the loop's
checkpointing and logging. DDPO and D3PO sample a new round every `updates_per_sample` steps, so their steps
are timed over whole rounds and reported as the mean.

Printed per method: UNet rows (NFEs) per optimiser step, from the model's own counter, split into the rows
with and without gradients where the method reports them; seconds per step; both as ratios to SFT
sharpening measured in the same run. Results go to benchmarks/results/methods_step.json (with `--set`, which
changes parameters as `dvc exp run -S` does, to methods_step_<settings>.json, so the reference file stays).
Benchmarks are not tests: the ratios carry over between machines, the seconds do not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
os.environ.setdefault("REPLICATION_ROOT", str(HERE.parent))

from replication import paths  # noqa: E402
from replication.report import machine_info  # noqa: E402
from replication.stages.__main__ import stage_module  # noqa: E402
from replication.train import TrainParams, make_optimizer, step_generator  # noqa: E402

ALL = ("sft_sharpening", "standard_finetune", "rlhf_sharpening", "diffusion_dpo", "ddpo", "d3po", "iterpo", "draft")


def build(name: str, profile: str, overrides: dict | None = None):
    """The method exactly as stage `name` trains it, with `overrides` of its own section applied."""
    stage = stage_module(name)
    mine = {k: v for k, v in (overrides or {}).items() if k in stage.params.sections}
    return stage.build(stage.params(profile, mine))


def time_method(name: str, method, steps: int, warmup: int) -> dict:
    params = [p for m in method.modules().values() for p in m.parameters() if p.requires_grad]
    opt = make_optimizer(params, TrainParams(lr=1e-6))
    period = getattr(getattr(method, "spec", None), "updates_per_sample", 1)
    total = -(-(warmup + steps) // period) * period  # whole rounds
    seconds, nfes = [], []
    for step in range(1, total + 1):
        t0 = time.perf_counter()
        loss, metrics = method.loss(step, step_generator(0, step))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        if step > warmup:
            seconds.append(dt)
            nfes.append(float(metrics["nfe"]))
    return {
        "method": name,
        "batch_size": method.batch_size,
        "steps_timed": len(seconds),
        "seconds_per_step_mean": statistics.fmean(seconds),
        "seconds_per_step_median": statistics.median(seconds),
        "nfe_per_step": statistics.fmean(nfes),
        "nfe_per_sample": statistics.fmean(nfes) / method.batch_size,
    }


def pick_methods(text: str) -> list[str]:
    """Comma-separated method names, checked; and the pipeline's models, which every method is built from."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in ALL]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(ALL)}")
    if not (paths.models() / "base" / "model_index.json").exists():
        raise FileNotFoundError(
            "models/base is missing; run `make repro` first (the benchmark times the pipeline's models)"
        )
    return names


def parse_sets(items: list[str]) -> dict:
    """["a.b=3", "c=x"] -> {"a": {"b": 3}, "c": "x"} (values parsed as YAML, as params.yaml)."""
    import yaml

    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: write KEY=VALUE, e.g. rlhf_sharpening.n=8")
        *parents, leaf = key.split(".")
        node = out
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = yaml.safe_load(value)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--methods", default=",".join(ALL), help=f"comma-separated subset of {', '.join(ALL)}")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a parameter for this run, as `dvc exp run -S` (repeatable)",
    )
    a = ap.parse_args(argv)
    try:
        overrides = parse_sets(a.set)
        names = pick_methods(a.methods)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if "sft_sharpening" not in names:
        names.insert(0, "sft_sharpening")  # the baseline of every ratio
    torch.manual_seed(0)
    rows = []
    for name in names:
        method = build(name, a.profile, overrides)
        rows.append(time_method(name, method, a.steps, a.warmup))
        del method
    ref = rows[0]
    print(f"{'method':<18} {'batch':>5} {'NFE/step':>9} {'x SFT-DS':>8} {'s/step':>8} {'x SFT-DS':>8}")
    for r in rows:
        r["nfe_ratio_to_sft_sharpening"] = r["nfe_per_step"] / ref["nfe_per_step"]
        r["time_ratio_to_sft_sharpening"] = r["seconds_per_step_median"] / ref["seconds_per_step_median"]
        print(
            f"{r['method']:<18} {r['batch_size']:>5} {r['nfe_per_step']:>9.0f} {r['nfe_ratio_to_sft_sharpening']:>8.2f} "
            f"{r['seconds_per_step_median']:>8.3f} {r['time_ratio_to_sft_sharpening']:>8.2f}"
        )
    tag = "_".join(x.replace("=", "-") for x in a.set)
    out = HERE / "results" / (f"methods_step_{tag}.json" if tag else "methods_step.json")
    out.parent.mkdir(exist_ok=True)
    machine = machine_info()
    out.write_text(
        json.dumps(
            {
                "benchmark": "one optimiser step per fine-tuning method",
                "profile": a.profile,
                "steps": a.steps,
                "warmup": a.warmup,
                "set": a.set,
                "machine": machine,
                "rows": rows,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {out.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
