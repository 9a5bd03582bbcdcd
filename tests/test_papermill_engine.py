"""The stages' papermill engine stops the kernel after the last cell instead of waiting for its teardown."""

from __future__ import annotations

import nbformat
import papermill
import pytest
import yaml

CELL = """
import atexit
from pathlib import Path
out = Path({folder!r})
(out / "cell.txt").write_text("written by the cell")
atexit.register(lambda: (out / "teardown.txt").write_text("the kernel's own teardown ran"))
"""


@pytest.mark.parametrize("engine, teardown", [("replication", False), (None, True)])
def test_the_kernel_is_stopped_without_its_teardown_and_the_cells_outputs_stay(tmp_path, engine, teardown):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELL.format(folder=str(tmp_path)))])
    src = tmp_path / "in.ipynb"
    nbformat.write(nb, src)
    kw = {"engine_name": engine} if engine else {}
    papermill.execute_notebook(str(src), str(tmp_path / "out.ipynb"), kernel_name="python3", progress_bar=False, **kw)
    assert (tmp_path / "cell.txt").read_text() == "written by the cell"
    assert (tmp_path / "teardown.txt").exists() is teardown  # the default engine waits for it: the check can fail


def test_every_stage_runs_with_the_engine(repo_root):
    for f in ("dvc.yaml", "tuning/dvc.yaml"):
        stages = yaml.safe_load((repo_root / f).read_text())["stages"]
        assert all(st["cmd"].endswith(" --engine replication") for st in stages.values()), f
