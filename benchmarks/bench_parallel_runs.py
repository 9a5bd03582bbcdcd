"""Independent training runs side by side on one thread each, against one after the other on every thread.

    python benchmarks/bench_parallel_runs.py [--profile tiny] [--methods sft_sharpening,rlhf_sharpening]
                                             [--runs 2] [--steps 6] [--warmup 1]

The paper's tables are dozens of independent fine-tuning runs at batch 8. At that size a UNet call of the tiny
model is mostly per-operator overhead, which a second thread does not shorten (a batch-8 forward takes about
the same time on one thread as on two), so a runner of the grid could run as many runs at once as there are
cores, one thread each, instead of one run with every thread. This measures that choice on the pipeline's own
runs. For each method, `--runs` copies of the same run (the work of `--runs` seeds):
 - sequential: one process with torch's default threads (all cores), the runs one after the other;
 - parallel: one process per run with one thread each, all started together.
Every run is a freshly spawned process that builds its method with the stage's builder (params.yaml of the
profile, the pipeline's models: run `make repro` first) and times `--steps` optimiser steps (loss, backward,
AdamW, as `bench_methods.py`) after `--warmup`. Printed per method: seconds per step in each schedule and the
throughput ratio, runs x sequential s/step / parallel s/step (above 1: side by side is faster). Also the wall
time of each whole schedule, start-up included. Results go to benchmarks/results/parallel_runs.json.
Benchmarks are not tests: the ratio carries over to machines with the same per-core speed and overhead, the
seconds do not.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ.setdefault("REPLICATION_ROOT", str(HERE.parent))
sys.path.insert(0, str(HERE))  # spawned workers import bench_methods from here


def _set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def run_once(profile: str, name: str, steps: int, warmup: int) -> dict:
    """One run in this (worker) process: build the method as its stage does and time its optimiser steps."""
    import torch
    from bench_methods import build, time_method

    torch.manual_seed(0)
    method = build(name, profile)
    row = time_method(name, method, steps, warmup)
    row["threads"] = torch.get_num_threads()
    return row


def schedule(profile: str, name: str, runs: int, steps: int, warmup: int, parallel: bool) -> dict:
    """`runs` copies of one run: all at once on one thread each, or one after the other on every thread."""
    ctx = mp.get_context("spawn")
    workers, threads = (runs, 1) if parallel else (1, None)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_set_threads, initargs=(threads,)) as pool:
        rows = list(pool.map(run_once, *zip(*[(profile, name, steps, warmup)] * runs)))
    wall = time.perf_counter() - t0
    return {
        "parallel": parallel,
        "workers": workers,
        "threads_per_run": rows[0]["threads"],
        "wall_seconds": wall,
        "seconds_per_step": statistics.fmean(r["seconds_per_step_median"] for r in rows),
        "runs": rows,
    }


def main(argv=None) -> int:
    from bench_methods import ALL, pick_methods

    from replication.report import machine_info

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--methods", default="sft_sharpening,rlhf_sharpening", help=f"subset of {', '.join(ALL)}")
    ap.add_argument("--runs", type=int, default=os.cpu_count() or 2, help="runs per schedule (default: cores)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1)
    a = ap.parse_args(argv)
    try:
        names = pick_methods(a.methods)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.runs < 2:
        print("error: --runs must be at least 2 (one run has nothing to run beside it)", file=sys.stderr)
        return 2
    rows = []
    print(f"{a.runs} runs of each method, {a.steps} timed steps each")
    print(
        f"{'method':<18} {'seq s/step':>10} {'par s/step':>10} {'throughput x':>12} {'seq wall s':>10} {'par wall s':>10}"
    )
    for name in names:
        seq = schedule(a.profile, name, a.runs, a.steps, a.warmup, parallel=False)
        par = schedule(a.profile, name, a.runs, a.steps, a.warmup, parallel=True)
        ratio = a.runs * seq["seconds_per_step"] / par["seconds_per_step"]
        rows.append(
            {
                "method": name,
                "sequential": seq,
                "parallel": par,
                "throughput_ratio": ratio,
                "wall_ratio": seq["wall_seconds"] / par["wall_seconds"],
            }
        )
        print(
            f"{name:<18} {seq['seconds_per_step']:>10.3f} {par['seconds_per_step']:>10.3f} {ratio:>12.2f} "
            f"{seq['wall_seconds']:>10.1f} {par['wall_seconds']:>10.1f}"
        )
    out = HERE / "results" / "parallel_runs.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "independent runs side by side (1 thread each) vs one after the other",
                "profile": a.profile,
                "runs": a.runs,
                "steps": a.steps,
                "warmup": a.warmup,
                "machine": machine_info(),
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
