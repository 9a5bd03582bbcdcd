"""The per-method search (replication/recipes/tuning.py, stage tune of tuning/dvc.yaml)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from replication import config, data, diffusion, paths
from replication.recipes import tuning
from replication.recipes.tuning import SearchSpace, TuneParams
from replication.tensors import to_float
from replication.world import render_batch


def test_validation_prompts_are_apart_from_every_other_set():
    rows = tuning.validation_rows(60, seed=41)
    assert len(rows) == 60 and len({r["prompt"] for r in rows}) == 60
    others = tuning.excluded_prompts()
    assert {r["prompt"] for r in data.load_prompts("drawbench")} <= others
    assert set(data.load_image_set("journeydb").captions) <= others
    assert not {r["prompt"] for r in rows} & others
    assert [r["prompt"] for r in tuning.validation_rows(60, seed=41)] == [r["prompt"] for r in rows]  # seeded
    assert [r["prompt"] for r in tuning.validation_rows(60, seed=42)] != [r["prompt"] for r in rows]
    assert len({r["set"] for r in rows}) == 1 and rows[0]["set"] == "validation"


def test_grid_cells_and_overrides():
    t = TuneParams(grid={"rlhf_sharpening": {"lr": [1e-5, 3e-5], "beta": [2500.0, 5000.0]}, "draft": {}})
    assert isinstance(t.grid["draft"], SearchSpace) and t.grid["draft"].cells() == [{}]
    cells = t.grid["rlhf_sharpening"].cells()
    assert len(cells) == 4 and {"lr": 3e-5, "beta": 5000.0} in cells
    p = config.load({"tune": TuneParams, "draft": _draft_schema(), "rlhf_sharpening": _rlhf_schema()})
    cell = TuneParams(method="rlhf_sharpening", lr=3e-5, steps=20, beta=100.0)
    over = cell.overrides(p.rlhf_sharpening)["rlhf_sharpening"]
    assert over == {"train": {"lr": 3e-5, "steps": 20, "checkpoint_every": 20}, "beta": 100.0}
    assert cell.cell() == {"lr": 3e-5, "steps": 20, "beta": 100.0}
    with pytest.raises(ValueError, match="has no beta"):
        TuneParams(method="draft", beta=1.0).overrides(p.draft)
    with pytest.raises(ValueError, match="unknown method"):
        TuneParams(method="best_of_n")
    with pytest.raises(config.ConfigError, match="tune.grid.draft.lr"):
        TuneParams(grid={"draft": {"lr": ["fast"]}})


def _draft_schema():
    from replication.stages.draft import DraftParams

    return DraftParams


def _rlhf_schema():
    from replication.stages.rlhf_sharpening import RLHFSharpeningParams

    return RLHFSharpeningParams


def test_params_yaml_grid_names_every_table1_method_once():
    t = config.load({"tune": TuneParams}).tune
    assert set(t.grid) == set(tuning.METHODS)
    cmds = tuning.queue_commands(t)
    assert len(cmds) == sum(len(s.cells()) for s in t.grid.values())
    names = [c[c.index("-n") + 1] for c in cmds]
    assert len(set(names)) == len(names)
    for c in cmds:
        assert c[:6] == ["dvc", "exp", "run", "--queue", "-s", "-n"] and c[-1] == "tuning/dvc.yaml:tune"
        sets = [c[i + 1] for i, a in enumerate(c) if a == "-S"]
        assert [s.split("=")[0] for s in sets] == ["tune.method", "tune.lr", "tune.steps", "tune.beta"]


def test_params_yaml_trains_table1_with_the_searchs_choices():
    """Each Table-1 method's section holds the values results/tuning.json chose (a rerun of the search that chooses
    otherwise fails here until params.yaml follows it)."""
    chosen = json.loads((paths.root() / "results" / "tuning.json").read_text())["chosen"]
    assert set(chosen) == set(tuning.METHODS)
    raw = config.effective(config.read(), "tiny")  # the default profile: what the committed results come from
    for method, c in chosen.items():
        section = raw[method]
        assert section["train"]["lr"] == pytest.approx(c["lr"]), method
        assert section["train"]["steps"] == c["steps"], method
        if c.get("beta") is not None:
            assert section["beta"] == pytest.approx(c["beta"]), method


def _exp_show(cells):
    """The shape of `dvc exp show --json`: the baseline, then its experiments, each with its metrics file."""

    def rev(cell):
        return {"rev": "x", "data": {"metrics": {"results/tuning/cell.json": {"data": cell}}, "params": {}}}

    return [{**rev(cells[0]), "experiments": [{"revs": [rev(c)]} for c in cells[1:]] + [{"revs": [{"rev": "y"}]}]}]


def _cell(method, lr, score):  # as dvc exp show gives a metrics file: no null values
    return {"method": method, "lr": lr, "steps": 10, "signal": "s", "score": score, "base": 0.0,
            "delta": score, "ci_low": score - 1, "ci_high": score + 1, "n": 4}  # fmt: skip


def test_table_chooses_each_methods_highest_score(tmp_path):
    cells = [_cell("draft", 1e-5, 1.0), _cell("draft", 1e-4, 3.0), _cell("ddpo", 1e-5, -2.0), _cell("draft", 3e-5, 2.0)]
    got = tuning.cells_of_exp_show(_exp_show(cells))
    assert len(got) == 4
    chosen = tuning.write_table(got, tmp_path / "tuning.csv")
    assert chosen["draft"]["lr"] == 1e-4 and chosen["ddpo"]["lr"] == 1e-5
    rows = list(csv.DictReader((tmp_path / "tuning.csv").open()))
    assert [r["method"] for r in rows] == ["ddpo", "draft", "draft", "draft"]  # Table-1 order, best first
    assert [r["chosen"] for r in rows] == ["True", "True", "False", "False"]
    assert (tmp_path / "tuning.json").is_file()


def test_denoising_scores_are_paired_and_match_the_objective(micro_sd):
    rows = tuning.validation_rows(3, seed=41)
    images = render_batch([r["scene"] for r in rows])
    prompts = [r["prompt"] for r in rows]
    a = tuning.denoising_scores(micro_sd, images, prompts, draws=1, seed=5)
    assert np.array_equal(a, tuning.denoising_scores(micro_sd, images, prompts, draws=1, seed=5))
    # the same draw by hand: minus standard fine-tuning's epsilon-MSE per item
    gen = torch.Generator().manual_seed(5 * 1_000)
    with torch.no_grad():
        x0 = micro_sd.encode(to_float(images, micro_sd.device), sample=False)
        t = torch.randint(0, micro_sd.scheduler.config.num_train_timesteps, (3,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        out = micro_sd.eps(diffusion.add_noise(micro_sd.scheduler, x0, eps, t), t, micro_sd.encode_prompts(prompts))
        want = -(out - diffusion.target_for(micro_sd.scheduler, x0, eps, t)).pow(2).flatten(1).mean(1)
    np.testing.assert_allclose(a, want.numpy(), rtol=1e-5, atol=1e-7)
    assert (a < 0).all()


def test_rater_signal_prefers_the_prompts_own_render(monkeypatch):
    rows = tuning.validation_rows(6, seed=41)
    renders = render_batch([r["scene"] for r in rows])
    t = TuneParams(method="d3po", prompts=6, images_per_prompt=1)
    monkeypatch.setattr(tuning, "generate_rows", lambda *a, **k: (renders, 0.0))
    own = tuning.own_scores("d3po", None, None, rows, t)
    monkeypatch.setattr(tuning, "generate_rows", lambda *a, **k: (np.full_like(renders, 255), 0.0))
    blank = tuning.own_scores("d3po", None, None, rows, t)
    assert own.shape == (6,) and (own > blank).all()
