"""Progress bars: text under papermill, scripts and tests; widgets in a kernel a Jupyter server started."""

from __future__ import annotations

import warnings

from replication import progress


def test_text_bar_outside_a_notebook_server(monkeypatch):
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    bar = progress.tqdm(total=3, disable=True)
    from tqdm.notebook import tqdm_notebook

    assert not isinstance(bar, tqdm_notebook)
    bar.close()


def test_widget_bar_in_a_notebook_server_without_iprogress_warning(monkeypatch):
    """ipywidgets is installed, so tqdm's notebook bar builds its widget instead of warning 'IProgress not found'."""
    monkeypatch.setenv("JPY_SESSION_NAME", "notebooks/10_base_model.ipynb")
    from tqdm.notebook import IProgress, tqdm_notebook

    assert IProgress is not None, "ipywidgets is missing: `make setup` installs it (pyproject.toml)"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # TqdmWarning('IProgress not found ...') would fail here
        bar = progress.tqdm(total=3)
    assert isinstance(bar, tqdm_notebook)
    bar.update(3)
    bar.close()
