"""DVC's experiment queue, as `make tune` and `make repro JOBS=N` use it: run a dvc command, read the queue, wait.

Runs go side by side only through DVC's own machinery (`dvc exp run --queue`, `dvc queue start -j N`): each
queued experiment runs in its own temporary copy of the workspace and ends as a commit under refs/exps/, its
cached outputs in DVC's cache (`make tune` reads them with `dvc exp show`; `make repro` takes each stage's run
into the workspace, replication/pipeline.py `take_result`).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

STATES = ("Queued", "Running", "Success", "Failed")


def dvc(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """`dvc <args>`, its output captured; a failure raises with DVC's own message."""
    env = {**(env or os.environ), "DVC_NO_ANALYTICS": "1"}
    r = subprocess.run(["dvc", *args], capture_output=True, text=True, cwd=cwd, env=env)
    if r.returncode:
        raise RuntimeError(f"`dvc {' '.join(args)}` failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    return r


def tasks(cwd: Path | None = None) -> list[tuple[str, str]]:
    """(name, state) of every task `dvc queue status` lists."""
    out = []
    for ln in dvc("queue", "status", cwd=cwd).stdout.splitlines()[1:]:
        words = ln.split()
        if len(words) >= 2 and words[-1] in STATES and not ln.startswith("Worker"):
            out.append((words[1], words[-1]))
    return out


def wait(
    names: list[str] | None = None, poll: float = 10.0, cwd: Path | None = None, show_progress: bool = False
) -> dict[str, int] | dict[str, str]:
    """Block until the queue holds no queued or running task. Without `names`: the count of each final state;
    with them: each named task's final state ("missing" where the queue does not list it), with a progress bar
    of how many have finished."""
    from .progress import tqdm

    bar = tqdm(total=len(names), desc="side by side", unit="run", disable=not (show_progress and names))
    while True:
        listed = tasks(cwd)
        if names:
            state = dict(listed)
            bar.n = sum(state.get(n) in ("Success", "Failed") for n in names)
            bar.set_postfix_str(", ".join(n for n in names if state.get(n) == "Running"), refresh=True)
        if not any(s in ("Queued", "Running") for _, s in listed):
            bar.close()
            if names:
                return {n: state.get(n, "missing") for n in names}
            states = [s for _, s in listed]
            return {s: states.count(s) for s in set(states)}
        time.sleep(poll)


def commit_of(name: str, cwd: Path | None = None) -> str:
    """The commit of the experiment called `name` (DVC keeps experiments as refs under refs/exps/)."""
    refs = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    found = [ln.split()[1] for ln in refs if ln and ln.split()[0].endswith(f"/{name}")]
    if len(found) != 1:
        raise RuntimeError(f"experiment {name!r}: {len(found)} refs under refs/exps (`dvc exp list -A`)")
    return found[0]


def exp_name(stage: str, prefix: str = "") -> str:
    """A git-ref-safe experiment name for a stage."""
    return f"{prefix}{stage}".replace("_", "-")
