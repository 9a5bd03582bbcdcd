"""Figures are byte-stable; confidence intervals and paired differences behave as documented."""

from __future__ import annotations

import numpy as np
import pytest

from replication import figures, stats


def write_log(path, steps=50, seed=0):
    rng = np.random.default_rng(seed)
    lines = ["step,loss,lr,reward_mean,reward_std"]
    for s in range(1, steps + 1):
        lines.append(f"{s},{rng.random():.6g},0.0001,{40 + s / 10 + rng.random():.6g},{5 - s / 20:.6g}")
    path.write_text("\n".join(lines) + "\n")


def test_reward_curve_files_are_byte_identical_across_reruns(tmp_path):
    write_log(tmp_path / "log.csv")
    a = figures.save(figures.reward_curve({"SFT": tmp_path / "log.csv"}), "fig", tmp_path / "a")
    b = figures.save(figures.reward_curve({"SFT": tmp_path / "log.csv"}), "fig", tmp_path / "b")
    for x, y in zip(a, b):
        assert x.read_bytes() == y.read_bytes(), x.name
    assert b"CreationDate" not in a[0].read_bytes()


def test_nfe_figure_files_are_byte_identical_across_reruns(tmp_path):
    def col(v):
        return {"clip": {"mean": v, "ci_low": v - 0.01, "ci_high": v + 0.01}}

    res = {
        "base": {"nfe_per_image": 40, "columns": col(0.60)},
        "methods": {
            "demon": {
                "label": "Demon",
                "points": [{"nfe_per_image": n, "columns": col(0.6 + n / 1e5)} for n in (40, 400, 4000)],
            }
        },
        "sharpened": {"rlhf_sharpening": {"label": "RLHF-DS", "nfe_per_image": 40, "columns": col(0.63)}},
    }
    a = figures.save(figures.nfe_curve(res), "fig5", tmp_path / "a")
    b = figures.save(figures.nfe_curve(res), "fig5", tmp_path / "b")
    assert [p.suffix for p in a] == [".pdf", ".png"]
    for x, y in zip(a, b):
        assert x.read_bytes() == y.read_bytes(), x.name


def test_read_log_parses_columns(tmp_path):
    write_log(tmp_path / "log.csv", steps=5)
    log = figures.read_log(tmp_path / "log.csv")
    assert list(log["step"]) == [1, 2, 3, 4, 5] and log["reward_std"][0] == pytest.approx(4.95)


def test_mean_ci_covers_the_true_mean_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    hits = 0
    for i in range(200):
        x = rng.normal(1.0, 2.0, size=60)
        r = stats.mean_ci(x, 0.9, n_boot=500, seed=i)
        hits += r["ci_low"] <= 1.0 <= r["ci_high"]
    assert 0.8 <= hits / 200 <= 0.97


def test_paired_difference_detects_a_shift_and_is_seeded():
    rng = np.random.default_rng(1)
    a = rng.normal(size=200)
    b = a - 0.3 + 0.1 * rng.normal(size=200)
    d = stats.paired_diff(a, b)
    assert d["ci_low"] > 0.25 and d["p_not_better"] == 0.0
    assert d == stats.paired_diff(a, b)


def test_moving_average():
    assert np.allclose(stats.moving_average([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])
    assert np.allclose(stats.moving_average([1, 2, 3], 1), [1, 2, 3])


def test_sample_rows_put_one_system_per_row_and_refuse_a_missing_image(tmp_path):
    import numpy as np

    imgs = {name: np.full((3, 8, 8, 3), i * 60, dtype=np.uint8) for i, name in enumerate(("Base", "SFT-DS"))}
    fig = figures.sample_rows(imgs, ["a red circle", "two blue squares", "a green star"])
    axes = fig.axes
    assert len(axes) == 6
    assert axes[0].get_ylabel() == "Base" and axes[3].get_ylabel() == "SFT-DS"
    assert axes[1].get_title() == "two blue squares"
    a = figures.save(fig, "s", tmp_path / "a")
    b = figures.save(
        figures.sample_rows(imgs, ["a red circle", "two blue squares", "a green star"]), "s", tmp_path / "b"
    )
    assert a[1].read_bytes() == b[1].read_bytes()
    with pytest.raises(ValueError, match="2 images for 3 prompts"):
        figures.sample_rows({"Base": imgs["Base"][:2]}, ["x", "y", "z"])
