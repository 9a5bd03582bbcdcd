"""tools/lab_check.py's verdict per notebook (the browser run itself needs Chromium: `make lab-check`)."""

from __future__ import annotations

import importlib.util

import pytest


@pytest.fixture(scope="module")
def lab_check(repo_root):
    spec = importlib.util.spec_from_file_location("lab_check", repo_root / "tools" / "lab_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # selenium is imported only when a browser starts
    return mod


WIDGET = {"output_type": "display_data", "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "a"}}}
FALLBACK = {
    "output_type": "stream",
    "name": "stderr",
    "text": "TqdmWarning: IProgress not found. Please update jupyter and ipywidgets.",
}
ERROR = {"output_type": "error", "ename": "ConfigError", "evalue": "params: no key", "traceback": []}
TABLE = {"output_type": "execute_result", "data": {"text/plain": "a table"}}


@pytest.mark.parametrize(
    "cells, drawn, ok",
    [
        ([[], [WIDGET, TABLE]], 1, True),  # progress as a widget the page drew
        ([[TABLE]], 0, True),  # nothing to show as progress (a figure stage)
        ([[FALLBACK, TABLE]], 0, False),  # tqdm fell back to text: widgets missing in the kernel
        ([[WIDGET]], 0, False),  # the kernel sent a widget, the page drew none: the front-end extension is missing
        ([[WIDGET], [ERROR]], 1, False),
    ],
)
def test_a_notebook_passes_only_without_errors_and_with_drawn_progress_widgets(lab_check, cells, drawn, ok):
    r = lab_check.summarise("n.ipynb", {"cells": cells, "drawn": drawn, "seconds": 1.0})
    assert r["ok"] is ok
    assert r["errors"] == (["ConfigError: params: no key"] if [ERROR] in cells else [])
    assert r["text_fallbacks"] == sum(FALLBACK in c for c in cells)


def test_a_notebook_that_could_not_be_opened_fails_with_the_reason(lab_check):
    r = lab_check.summarise("n.ipynb", {"failed": "Error: Command 'docmanager:open' not registered."})
    assert r == {"notebook": "n.ipynb", "ok": False, "why": "Error: Command 'docmanager:open' not registered."}
