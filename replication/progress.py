"""Progress bars: widgets in a notebook a person has open in JupyterLab, text everywhere else.

A kernel that a Jupyter server started (JupyterLab, Notebook) carries `JPY_SESSION_NAME` in its environment;
papermill's kernels under `dvc repro`, scripts and tests do not. Under papermill the text bar is what
`--log-output` streams to the terminal, so `dvc repro` keeps showing progress; in JupyterLab tqdm's widget bar
renders (ipywidgets is a dependency: without it tqdm falls back to text with 'IProgress not found').
"""

from __future__ import annotations

import os


def in_notebook_server() -> bool:
    return bool(os.environ.get("JPY_SESSION_NAME"))


def tqdm(*args, **kwargs):
    """tqdm's bar for where the code runs (see the module docstring); the same arguments as `tqdm.tqdm`."""
    if in_notebook_server():
        from tqdm.notebook import tqdm as bar
    else:
        from tqdm import tqdm as bar
    return bar(*args, **kwargs)


__all__ = ["tqdm", "in_notebook_server"]
