"""Fig. 7's user study (replication/recipes/user_study.py): the simulated rater's judgements of a reference
system against others on nfe_sweep's prompts and seeds, and the claims and table made from them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from replication.claims import claims
from replication.recipes import user_study as us
from replication.tables import user_study_table
from replication.world import Sampler, render, sample_captioned
from replication.world.rater import Rater


@pytest.fixture
def sweep_root(tmp_path, monkeypatch):
    """A repository with nfe_sweep's outputs only: renders of the prompts for the reference, blank images for the
    base model, the renders again for Demon at 3x the base cost."""
    s = Sampler(np.random.default_rng(0))
    items = [sample_captioned(s, style) for style in ("color", "spatial", "texture", "complex") * 6]
    prompts = [t for _, t, _ in items]
    renders = np.stack([render(scene) for scene, _, _ in items])
    blank = np.full_like(renders, 128)
    (tmp_path / "generated").mkdir()
    (tmp_path / "results").mkdir()
    np.savez(
        tmp_path / "generated" / "nfe_sweep.npz",
        prompts=np.array(prompts),
        seeds=np.arange(len(prompts)),
        **{"images/base": blank, "images/rlhf_sharpening": renders, "images/demon@120": renders},
    )
    (tmp_path / "results" / "nfe_sweep.json").write_text(
        json.dumps({"settings": {"num_steps": 20, "guidance_scale": 5.0, "base_cost": 40}})
    )
    for f in ("dvc.yaml", "params.yaml"):
        (tmp_path / f).write_text("{}\n")
    monkeypatch.setenv("REPLICATION_ROOT", str(tmp_path))
    return tmp_path


def test_rater_prefers_the_faithful_images_and_calls_identical_ones_comparable(sweep_root):
    p = us.UserStudyParams(trained=("base",), inference_time=("demon",), budget_multiple=3, raters=4, bootstrap=300)
    res = us.user_study(p, Rater())
    base, demon = res["systems"]["base"], res["systems"]["demon"]
    assert res["n_prompts"] == 24 and res["budget_nfe"] == 120
    assert base["preferred"]["mean"] > 0.9 and base["preferred - other"]["ci_low"] > 0
    # identical images: the utility difference is 0, so only the rater's noise decides; ties and both sides appear
    assert demon["comparable"]["mean"] > 0.1 and abs(demon["preferred - other"]["mean"]) < 0.3
    for r in res["systems"].values():
        total = r["preferred"]["mean"] + r["comparable"]["mean"] + r["other"]["mean"]
        assert total == pytest.approx(1.0)
    assert base["paper"] == {"preferred": 63.2, "comparable": 23.3, "other": 14.5}
    (sweep_root / "results" / "user_study.json").write_text(json.dumps(res))
    verdicts = {c.id: c.verdict for c in claims(sweep_root / "results")}
    assert verdicts["fig7/base"] == "holds" and verdicts["fig7/demon"] == "not distinguishable"
    table = user_study_table(res)
    assert table.loc["Base model (SDXL's role)", "paper (%)"] == "63.2 / 23.3 / 14.5"


def test_a_budget_the_sweep_did_not_run_names_the_ones_it_did(sweep_root):
    p = us.UserStudyParams(trained=("base",), inference_time=("demon",), budget_multiple=10)
    with pytest.raises(KeyError, match="images/demon@120"):
        us.user_study(p, Rater())


def test_reference_must_be_a_swept_model(sweep_root):
    with pytest.raises(KeyError, match="nfe_sweep.sharpened"):
        us.user_study(us.UserStudyParams(reference="sft_sharpening", trained=("base",), inference_time=()), Rater())
