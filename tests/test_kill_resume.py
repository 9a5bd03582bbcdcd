"""A training stage killed with SIGKILL mid-run resumes under `dvc repro` from its last checkpoint and ends with
the same weights (and the same metrics log) as an uninterrupted run, in a scratch copy of the repository."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

STAGE = "standard_finetune"


@pytest.fixture
def scratch(repo_root, tmp_path, micro_sd_dir):
    if not (repo_root / "data" / "manifest.json").exists():
        pytest.fail("data/ is missing: run `make data` (make test does it first)")
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    dst = tmp_path / "repo"
    for f in files:
        if (repo_root / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo_root / f, dst / f)
    (dst / "data").symlink_to(repo_root / "data")
    shutil.copytree(micro_sd_dir, dst / "models" / "base")  # the micro model stands in for the trained base
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["profile"] = "smoke"
    params["profiles"]["smoke"][STAGE] = {"train": {"steps": 600, "batch_size": 4, "checkpoint_every": 100}}
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    return dst


def env_for(root: Path) -> dict:
    return {
        **os.environ,
        "REPLICATION_ROOT": str(root),
        "DVC_NO_ANALYTICS": "1",
        "OMP_NUM_THREADS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }


def unet_weights(root: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(root / "models" / STAGE / "unet" / "diffusion_pytorch_model.safetensors"))


def test_sigkill_then_dvc_repro_resumes_to_the_uninterrupted_weights(scratch):
    env = env_for(scratch)
    run_dir = scratch / ".checkpoints" / STAGE
    proc = subprocess.Popen(
        ["dvc", "repro", "-s", STAGE],
        cwd=scratch,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 240
    while not list(run_dir.glob("step-*")):
        assert proc.poll() is None, (
            "the stage ended before its first checkpoint:\n" + proc.stdout.read().decode()[-3000:]
        )
        assert time.time() < deadline, "no checkpoint within 240 s"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # papermill, the kernel and dvc: the whole process group
    proc.wait()
    killed_at = [p.name for p in run_dir.glob("step-*")]
    assert killed_at and not (run_dir / "final").exists(), "the run must be cut off before it finished"
    assert int(killed_at[0].split("-")[1]) < 600

    resumed = subprocess.run(["dvc", "repro", "-s", STAGE], cwd=scratch, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    after_resume = unet_weights(scratch)
    log_resumed = (scratch / "results" / "train" / f"{STAGE}.csv").read_text()
    assert len(log_resumed.splitlines()) == 1 + 600

    # the same stage, uninterrupted, in a fresh process
    shutil.rmtree(run_dir)
    fresh = subprocess.run(
        [sys.executable, "-m", "replication.stages", STAGE], cwd=scratch, env=env, capture_output=True, text=True
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert "resumed" not in fresh.stdout + fresh.stderr
    uninterrupted = unet_weights(scratch)
    assert after_resume.keys() == uninterrupted.keys()
    for k in uninterrupted:
        assert (after_resume[k] == uninterrupted[k]).all(), k
    assert (scratch / "results" / "train" / f"{STAGE}.csv").read_text() == log_resumed
