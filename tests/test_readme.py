"""The README's results block is rendered from the committed result files, so every number in it is one the
pipeline produced; when the results change (`make repro`), the block must be re-rendered with them."""

from __future__ import annotations

import pytest
import yaml

from replication import report


def test_readme_results_block_is_current(repo_root):
    lock = repo_root / "dvc.lock"
    if lock.exists():
        stages = yaml.safe_load(lock.read_text()).get("stages", {})
        profiles = {st.get("params", {}).get("params.yaml", {}).get("profile") for st in stages.values()}
        if profiles - {None, "tiny"}:
            pytest.skip(
                f"results/ were made with profile(s) {sorted(profiles - {None})}; the README shows the tiny run"
            )
    text = (repo_root / "README.md").read_text()
    assert report.BEGIN in text and report.END in text
    block = text.split(report.BEGIN, 1)[1].split(report.END, 1)[0]
    assert block.strip() == report.readme_block().strip(), (
        "README.md's results block is stale: run `python -m replication.report readme`"
    )


def test_readme_maps_every_paper_figure_and_table(repo_root):
    text = (repo_root / "README.md").read_text()
    for item in (
        "Table 1",
        "Table 2",
        "Table 3",
        "Fig. 1, 2",
        "Fig. 3",
        "Fig. 4",
        "Fig. 5",
        "Fig. 6",
        "Fig. 7",
        "Fig. 8",
        "Figs. 9, 10",
    ):
        assert f"| {item} |" in text, item
    dvc = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    for name in dvc:
        assert f"`{name}`" in text, f"stage {name} is not described in the README"


def test_compute_report_reads_papermill_durations(tmp_path, monkeypatch):
    import json

    (tmp_path / "executed").mkdir()
    stages = {
        "a": {"cmd": "papermill notebooks/a.ipynb executed/a.ipynb -k python3"},
        "b": {"cmd": "papermill notebooks/b.ipynb executed/b.ipynb -k python3"},
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    (tmp_path / "params.yaml").write_text("profile: tiny\n")
    (tmp_path / "dvc.lock").write_text(
        yaml.safe_dump(
            {"schema": "2.0", "stages": {n: {"params": {"params.yaml": {"profile": "tiny"}}} for n in stages}}
        )
    )
    monkeypatch.setenv("REPLICATION_ROOT", str(tmp_path))

    def record(name, start, end, duration):
        pm = {"start_time": f"2026-12-08T01:{start}", "end_time": f"2026-12-08T01:{end}", "duration": duration}
        (tmp_path / "executed" / f"{name}.ipynb").write_text(json.dumps({"metadata": {"papermill": pm}}))

    record("a", "00:00.000000", "01:01.040000", 61.04)
    with pytest.raises(FileNotFoundError, match=r"\['b'\]"):
        report.compute_report()
    record("b", "01:01.500000", "03:00.500000", 119.0)
    comp = report.compute_report()
    assert comp["stages"] == {"a": 61.0, "b": 119.0} and comp["total_seconds"] == 180.0 and comp["profile"] == "tiny"
    assert comp["span_seconds"] == 180.5 and comp["side_by_side"] == []
    table = report.compute_table(comp)
    assert table.loc["all stages", "minutes"] == 3.0 and table.loc["b", "share"] == "66%"
    record("b", "00:30.000000", "02:29.000000", 119.0)  # b started while a ran (queued experiments)
    comp = report.compute_report()
    assert comp["span_seconds"] == 149.0 and comp["side_by_side"] == ["a", "b"]
    table = report.compute_table(comp)
    assert table.loc["a *", "minutes"] == 1.0 and table.loc["first start to last end", "minutes"] == 2.5
