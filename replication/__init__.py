"""Reference replication of Diffusion-Sharpening (Tian et al., arXiv 2502.12146).

Floors, each importing only from those below it: paths, tensors, digests, stats -> config, world/, diffusion ->
data, models, figures -> rewards/, feedback, evaluate -> sources, metrics, tables -> methods/ -> train, report ->
recipes/ -> stages/ (one module per pipeline stage) -> pipeline (dvc.yaml's derived dependencies).
This file imports nothing, so importing one module never runs the others.
"""

# The switches read by the hub libraries when they are imported: progress bars (huggingface_hub's variable,
# which transformers also follows) and log verbosity. diffusers' progress-bar switch has no variable.
HUB_QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error"}


def quiet_hub_progress() -> None:
    """Silence the per-file loading bars and info logs of diffusers/transformers (they flood papermill logs)
    without importing them: importing both costs 4-5 s, and most stages never load a hub model. Sets the
    environment switches the libraries read at import (a value the user set is kept) and flips the logging
    switches of those already imported; `models.load_pipeline` calls it again once diffusers is imported."""
    import os
    import sys

    for var, value in HUB_QUIET_ENV.items():
        os.environ.setdefault(var, value)
    for name in ("diffusers.utils.logging", "transformers.utils.logging"):
        log = sys.modules.get(name)
        if log is not None:
            log.disable_progress_bar()
            log.set_verbosity_error()
    hub = sys.modules.get("huggingface_hub.utils")
    if hub is not None:
        hub.disable_progress_bars()
