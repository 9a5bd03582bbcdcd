"""Stage fig4: training loss against steps, SFT Diffusion-Sharpening vs standard fine-tuning on the same data
(paper_figures/fig4_loss.*), and the paper's convergence claim measured from the two logs (results/fig4.json)."""

from __future__ import annotations

from pathlib import Path

from .. import config, curves, figures, paths
from ..curves import ConvergenceParams
from ..figures import FiguresParams

params = config.loader({"figures": FiguresParams, "fig4": ConvergenceParams})
RUNS = {"sft_sharpening": "SFT Diffusion-Sharpening", "standard_finetune": "standard fine-tuning"}


def run(p: config.Params, show_progress: bool = True) -> dict:
    logs = {name: paths.train_logs() / f"{name}.csv" for name in RUNS}
    missing = [str(v) for v in logs.values() if not v.exists()]
    if missing:
        raise FileNotFoundError(f"fig4 needs {missing}: run `dvc repro sft_sharpening standard_finetune`")
    loss = {name: figures.read_log(path)["loss"] for name, path in logs.items()}
    res = curves.compare(loss["sft_sharpening"], loss["standard_finetune"], p.fig4)
    out = {
        "runs": {"sft_sharpening": res["a"], "standard_finetune": res["b"]},
        "sft_sharpening - standard_finetune": {"final": res["final_diff"], "roughness": res["roughness_diff"]},
        "settings": {k: getattr(p.fig4, k) for k in ("window", "tolerance", "final_fraction", "confidence")},
    }
    paths.write_json(paths.results() / "fig4.json", out)
    fig = figures.loss_curve(
        {RUNS[n]: logs[n] for n in RUNS}, smoothing=p.fig4.window, title="Fig. 4: training loss (JourneyDB role)"
    )
    figures.save(fig, "fig4_loss", dpi=p.figures.dpi)
    return out


def show(result: dict, p: config.Params) -> Path:
    return figures.inline(paths.figures() / "fig4_loss.png")
