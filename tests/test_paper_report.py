"""paper_figures/REPORT.md, REPORT.pdf, the tables and the compact metrics, rendered from the result files."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from replication import paper_report
from replication.claims import Results, claims


def _tiny_results(repo_root) -> bool:
    lock = repo_root / "dvc.lock"
    if not (repo_root / "results" / "controls.json").exists():
        return False
    if lock.exists():
        stages = yaml.safe_load(lock.read_text()).get("stages", {})
        profiles = {st.get("params", {}).get("params.yaml", {}).get("profile") for st in stages.values()}
        return not (profiles - {None, "tiny"})
    return True


def test_committed_report_is_current(repo_root):
    """Every number in REPORT.md is one the result files hold: rendering them again gives the same text."""
    if not _tiny_results(repo_root) or not (repo_root / "paper_figures" / "REPORT.md").exists():
        pytest.skip("no committed tiny-profile results and report")
    text = (repo_root / "paper_figures" / "REPORT.md").read_text()
    assert text == paper_report.markdown(paper_report.blocks(Results())), (
        "paper_figures/REPORT.md is stale: run `dvc repro report`"
    )


def test_report_gives_every_claim_a_verdict_and_names_what_is_not_built(repo_root, tmp_path):
    if not _tiny_results(repo_root):
        pytest.skip("no committed tiny-profile results")
    md = paper_report.markdown(paper_report.blocks(Results()))
    for c in claims():
        if c.id == "controls/all":
            continue
        row = next(line for line in md.splitlines() if line.startswith(f"| {c.id} |"))
        assert row.rstrip().endswith(f"| {c.verdict} |"), row
    con = json.loads((repo_root / "results" / "controls.json").read_text())
    for key in con["controls"]:
        assert f"| {key} |" in md
    for artefact, stage in paper_report.ARTEFACTS.items():
        if stage is None:
            assert artefact in md


def test_pdf_is_deterministic(repo_root, tmp_path):
    if not _tiny_results(repo_root):
        pytest.skip("no committed tiny-profile results")
    items = paper_report.blocks(Results())
    a = paper_report.pdf(items, tmp_path / "a.pdf").read_bytes()
    b = paper_report.pdf(items, tmp_path / "b.pdf").read_bytes()
    assert a.startswith(b"%PDF") and a == b
    assert a.count(b"/Type /Page\n") + a.count(b"/Type /Page ") + a.count(b"/Type /Page>") >= 1


def test_compact_metrics_are_flat_and_small(tmp_path):
    est = {"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 10}
    (tmp_path / "controls.json").write_text(
        json.dumps(
            {
                "controls": {
                    "noise/clip": {
                        "control": "noise",
                        "metric": "clip",
                        "expect": "flat",
                        "min_gain": 0,
                        "delta": 0.001,
                        "ci": [-0.01, 0.01],
                        "confidence": 0.95,
                        "n": 10,
                        "pass": True,
                    }
                },
                "passed": {"noise": True},
            }
        )
    )
    (tmp_path / "eval_clip.json").write_text(
        json.dumps(
            {
                "systems": {"base": {"clip": est}, "sft_sharpening": {"clip": est}},
                "vs_base": {"sft_sharpening": {**est, "mean": 0.02, "ci_low": 0.01, "ci_high": 0.03}},
            }
        )
    )
    m = paper_report.compact_metrics(Results(tmp_path))
    assert m["controls"] == {"passed": 1, "of": 1, "noise_largest_move": 0.001}
    assert m["table1_clip"] == {"base": 0.5, "sft_sharpening": 0.5}
    assert m["verdicts"] == {"holds": 1, "pass": 1}
    for values in m.values():
        assert all(isinstance(v, (int, float)) for v in values.values()) and len(values) <= 40


def test_write_makes_every_file_it_names(repo_root, tmp_path, monkeypatch):
    if not _tiny_results(repo_root):
        pytest.skip("no committed tiny-profile results")
    for d in ("results", "paper_figures"):
        shutil.copytree(repo_root / d, tmp_path / d)
    for f in ("dvc.yaml", "params.yaml"):
        shutil.copy(repo_root / f, tmp_path / f)
    monkeypatch.setenv("REPLICATION_ROOT", str(tmp_path))
    written = paper_report.write()
    for group in written.values():
        for rel in group:
            assert (tmp_path / rel).stat().st_size > 0, rel
    assert "paper_figures/REPORT.pdf" in written["report"]
    tex = (tmp_path / "paper_figures" / "tables" / "claims.tex").read_text()
    assert "\\begin{tabular}" in tex
