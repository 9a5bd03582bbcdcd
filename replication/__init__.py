"""Reference replication of Diffusion-Sharpening (Tian et al., arXiv 2502.12146).

Modules: world/ (the tiny synthetic world), data, models, diffusion (sampling math), rewards/,
methods/ (sharpening and baselines), train (the one training loop), evaluate, stats, figures,
report, config (params.yaml schema), stages (what each pipeline notebook calls).
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
