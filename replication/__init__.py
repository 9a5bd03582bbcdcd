"""Reference replication of Diffusion-Sharpening (Tian et al., arXiv 2502.12146).

Floors, each importing only from those below it: paths, tensors, digests, stats -> config, world/, diffusion ->
data, models, figures -> rewards/, feedback, evaluate -> sources, metrics, tables -> methods/ -> train, report ->
recipes/ -> stages/ (one module per pipeline stage) -> pipeline (dvc.yaml's derived dependencies).
This file imports nothing, so importing one module never runs the others.
"""


def quiet_hub_progress() -> None:
    """Silence the per-file loading bars of diffusers/transformers (they flood papermill logs)."""
    try:
        import diffusers.utils.logging as dlog
        import transformers.utils.logging as tlog

        dlog.disable_progress_bar()
        tlog.disable_progress_bar()
        tlog.set_verbosity_error()
        dlog.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass
