"""replication.verify: a fresh run's result files against committed ones (numbers beyond tolerance, verdicts)."""

from __future__ import annotations

import json
import shutil

import pytest

from replication import verify
from replication.claims import claims


def _write(folder, name, obj):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(obj))


def _eval(delta_sft: float, half: float = 0.01) -> dict:
    def est(m):
        return {"mean": m, "ci_low": m - half, "ci_high": m + half, "n": 200}

    return {
        "n_prompts": 200,
        "vs_base": {"sft_sharpening": est(delta_sft), "rlhf_sharpening": est(0.0)},
        "paired": {"sft_sharpening - standard_finetune": est(0.02)},
        "train_seconds": 12.0,
        "loss": 1.0,
    }


def test_identical_folders_agree_everywhere(tmp_path):
    for side in ("ref", "new"):
        _write(tmp_path / side, "eval_clip.json", _eval(0.03))
    res = verify.compare(tmp_path / "ref", tmp_path / "new")
    s = res["summary"]
    assert s["estimates"] == 3 and s["estimates_identical"] == 3 and s["estimates_outside"] == 0
    assert s["numbers"] == 2 and s["numbers_outside"] == 0  # n_prompts, loss; train_seconds is skipped
    assert s["verdicts_changed"] == 0 and s["verdicts"] == 3


def test_shift_beyond_the_ci_and_a_flipped_verdict_are_listed(tmp_path):
    _write(tmp_path / "ref", "eval_clip.json", _eval(0.03))  # SFT-DS beats the base: holds
    new = _eval(0.005)  # shift 0.025 = 2.5 half-widths; CI [-0.005, 0.015] contains 0: not distinguishable
    new["loss"] = 1.2
    _write(tmp_path / "new", "eval_clip.json", new)
    res = verify.compare(tmp_path / "ref", tmp_path / "new", tolerance=1.0, rtol=0.05)
    (e,) = res["estimates_outside"]
    assert e["key"] == "eval_clip.json:vs_base/sft_sharpening" and e["shift_in_half_widths"] == pytest.approx(2.5)
    (x,) = res["numbers_outside"]
    assert x["key"] == "eval_clip.json:loss" and x["relative"] == pytest.approx(0.2 / 1.2)
    (v,) = res["verdicts_changed"]
    assert v["id"] == "table1/clip/sft_sharpening-base" and (v["committed"], v["fresh"]) == (
        "holds",
        "not distinguishable",
    )
    assert "VERDICT table1/clip/sft_sharpening-base: holds -> not distinguishable" in verify.render(res, "HEAD")
    # a looser tolerance accepts the shift but never a changed verdict
    loose = verify.compare(tmp_path / "ref", tmp_path / "new", tolerance=3.0, rtol=0.5)
    assert loose["summary"]["estimates_outside"] == 0 and loose["summary"]["numbers_outside"] == 0
    assert loose["summary"]["verdicts_changed"] == 1


def test_a_missing_file_or_key_is_reported(tmp_path):
    _write(tmp_path / "ref", "eval_clip.json", _eval(0.03))
    _write(tmp_path / "ref", "other.json", {"a": 1})
    new = _eval(0.03)
    del new["loss"]
    _write(tmp_path / "new", "eval_clip.json", new)
    res = verify.compare(tmp_path / "ref", tmp_path / "new")
    assert set(res["missing"]) == {"other.json", "eval_clip.json:loss"}


def test_controls_are_compared_one_by_one(tmp_path, repo_root):
    src = repo_root / "results" / "controls.json"
    if not src.exists():
        pytest.skip("no results/controls.json")
    con = json.loads(src.read_text())
    for side in ("ref", "new"):
        (tmp_path / side).mkdir()
        shutil.copy(src, tmp_path / side / "controls.json")
    key = next(iter(con["controls"]))
    con["controls"][key]["pass"] = not con["controls"][key]["pass"]
    (tmp_path / "new" / "controls.json").write_text(json.dumps(con))
    res = verify.compare(tmp_path / "ref", tmp_path / "new")
    ids = {v["id"] for v in res["verdicts_changed"]}
    assert f"control/{key}" in ids
    assert {c.id for c in claims(tmp_path / "ref", controls=True)} >= {f"control/{k}" for k in con["controls"]}


def test_the_committed_results_verify_against_themselves(repo_root):
    """The command a reviewer runs: the working tree's results/ against HEAD's (identical on a clean checkout)."""
    import subprocess

    dirty = subprocess.run(
        ["git", "-C", str(repo_root), "status", "--porcelain", "results"], capture_output=True, text=True
    )
    if dirty.returncode != 0 or dirty.stdout.strip():
        pytest.skip("results/ differs from HEAD (a run in progress) or no git")
    assert verify.main(["--out", ""]) == 0


def test_make_verify_reruns_then_compares(repo_root):
    text = (repo_root / "Makefile").read_text()
    assert "\nverify: repro\n" in text and "-m replication.verify" in text
