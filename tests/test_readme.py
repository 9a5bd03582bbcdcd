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
            pytest.skip(f"results/ were made with profile(s) {sorted(profiles - {None})}; the README shows the tiny run")
    text = (repo_root / "README.md").read_text()
    assert report.BEGIN in text and report.END in text
    block = text.split(report.BEGIN, 1)[1].split(report.END, 1)[0]
    assert block.strip() == report.readme_block().strip(), \
        "README.md's results block is stale: run `python -m replication.report readme`"


def test_readme_maps_every_paper_figure_and_table(repo_root):
    text = (repo_root / "README.md").read_text()
    for item in ("Table 1", "Table 2", "Table 3", "Fig. 1, 2", "Fig. 3", "Fig. 4", "Fig. 5", "Fig. 6", "Fig. 7",
                 "Fig. 8", "Figs. 9, 10"):
        assert f"| {item} |" in text, item
    dvc = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    for name in dvc:
        assert f"`{name}`" in text, f"stage {name} is not described in the README"
