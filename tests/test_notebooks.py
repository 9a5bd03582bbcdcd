"""Smoke run of every pipeline notebook through papermill, in dvc.yaml order, on the smoke profile,
in a scratch copy of the repository (so the working tree's models and results stay untouched)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import torch

from replication import pipeline
from replication.tables import FINETUNED

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scratch_repo(repo_root, tmp_path_factory):
    return copy_repo(repo_root, tmp_path_factory)


def copy_repo(repo_root, tmp_path_factory):
    if not (repo_root / "data" / "manifest.json").exists():
        pytest.fail("data/ is missing: run `make data` (make test does it first)")
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    dst = tmp_path_factory.mktemp("repo")
    for f in files:
        if (repo_root / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo_root / f, dst / f)
    (dst / "data").symlink_to(repo_root / "data")
    return dst


def test_every_notebook_runs_on_the_smoke_profile(scratch_repo, monkeypatch):
    run_smoke_pipeline(scratch_repo, monkeypatch)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_every_stage_runs_on_cuda_and_its_pipelines_reload_there(repo_root, tmp_path_factory, monkeypatch):
    """The same smoke run on a GPU machine (every model goes to `default_device()`, CUDA), then each saved
    pipeline reloaded onto the GPU and sampled."""
    from replication.models import T2IModel

    scratch = copy_repo(repo_root, tmp_path_factory)
    run_smoke_pipeline(scratch, monkeypatch)
    assert json.loads((scratch / "results" / "nfe_sweep.json").read_text())["device"] == "cuda"
    for name in ("base", *FINETUNED):
        model = T2IModel.from_pretrained(scratch / "models" / name)
        assert model.device.type == "cuda" and next(model.unet.parameters()).is_cuda, name
        images = model.generate(["a red circle", "two blue squares"], [0, 1], num_steps=4)
        assert images.is_cuda and torch.isfinite(images).all(), name


def con_verifiers():
    from replication.recipes.controls import BestOfNControl

    return BestOfNControl().verifiers


def run_smoke_pipeline(scratch_repo, monkeypatch):
    import papermill

    monkeypatch.setenv("REPLICATION_ROOT", str(scratch_repo))
    stages = pipeline.all_stages(scratch_repo)  # dvc.yaml's, then the search's (tuning/dvc.yaml) one cell
    notebooks = sorted(s["cmd"].split()[1] for s in stages.values())  # numbered in pipeline order (static test)
    assert len(notebooks) == len(list((scratch_repo / "notebooks").glob("*.ipynb")))
    (scratch_repo / "executed").mkdir(exist_ok=True)
    for nb in notebooks:
        out = scratch_repo / "executed" / os.path.basename(nb)
        papermill.execute_notebook(
            str(scratch_repo / nb),
            str(out),
            kernel_name="python3",
            engine_name="replication",  # the stages' engine (dvc.yaml's commands)
            cwd=str(scratch_repo),
            parameters={"PROFILE": "smoke", "SHOW_PROGRESS": False},
            progress_bar=False,
        )
        executed = json.loads(out.read_text())
        assert not any(o.get("output_type") == "error" for c in executed["cells"] for o in c.get("outputs", []))

    # every stage's declared outputs exist
    for name, stage in stages.items():
        for entry in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            path = entry if isinstance(entry, str) else next(iter(entry))
            assert (scratch_repo / path).exists(), f"stage {name} did not write {path}"

    base = json.loads((scratch_repo / "results" / "base_model_report.json").read_text())
    assert set(base["categories"]) >= {"color", "shape", "texture", "spatial", "non_spatial", "complex", "numeracy"}
    assert base["ceiling"]["renders"] == 1.0 and set(base["ceiling"]["categories"]) == set(base["categories"])
    con = json.loads((scratch_repo / "results" / "controls.json").read_text())
    assert set(con["passed"]) == {"draft", "oracle", "noise"} | {f"best_of_n[{v}]" for v in con_verifiers()}
    for c in con["controls"].values():
        assert c["ci"][0] <= c["delta"] <= c["ci"][1] and c["n"] > 0 and c["expect"] in ("rise", "flat")
    cell = json.loads((scratch_repo / "results" / "tuning" / "cell.json").read_text())  # tune's default cell
    assert cell["method"] == "draft" and cell["signal"] == "reward clip" and cell["n"] == 4
    assert cell["ci_low"] <= cell["delta"] <= cell["ci_high"] and cell["base"] + cell["delta"] == pytest.approx(
        cell["score"]
    )
    ev = json.loads((scratch_repo / "results" / "eval_clip.json").read_text())
    assert set(ev["systems"]) == {"base", "sft_sharpening", "standard_finetune", "rlhf_sharpening"}
    for r in ev["systems"].values():
        assert -1 <= r["clip"]["ci_low"] <= r["clip"]["mean"] <= r["clip"]["ci_high"] <= 1
        assert r["nfe_per_image"] == 2 * 10  # smoke: 10 DDIM steps with classifier-free guidance
    log = (scratch_repo / "results" / "train" / "sft_sharpening.csv").read_text().splitlines()
    assert log[0].startswith("step,loss,lr") and len(log) == 1 + 6
    png = scratch_repo / "paper_figures" / "fig6_reward_curve.png"
    assert png.stat().st_size > 5000

    from diffusers import DiffusionPipeline, StableDiffusionPipeline

    for name in FINETUNED:
        pipe = DiffusionPipeline.from_pretrained(str(scratch_repo / "models" / name))
        assert isinstance(pipe, StableDiffusionPipeline), name
        log = (scratch_repo / "results" / "train" / f"{name}.csv").read_text().splitlines()
        assert "nfe" in log[0].split(","), name
    sweep = json.loads((scratch_repo / "results" / "nfe_sweep.json").read_text())
    assert set(sweep["sharpened"]) == {"sft_sharpening", "rlhf_sharpening"}
