"""Stage fig6: training reward mean +/- std against steps, SFT and RLHF sharpening, from the training logs only."""

from __future__ import annotations

from pathlib import Path

from .. import config, figures, paths
from ..figures import FiguresParams

params = config.loader({"figures": FiguresParams, "sft_sharpening.reward": str, "rlhf_sharpening.reward": str})


def run(p: config.Params, show_progress: bool = True) -> list[Path]:
    runs = {
        "SFT Diffusion-Sharpening": paths.train_logs() / "sft_sharpening.csv",
        "RLHF Diffusion-Sharpening": paths.train_logs() / "rlhf_sharpening.csv",
    }
    missing = [str(v) for v in runs.values() if not v.exists()]
    if missing:
        raise FileNotFoundError(
            f"fig6 needs the training logs {missing}: run `dvc repro sft_sharpening rlhf_sharpening`"
        )
    rewards = {p.sft_sharpening.reward, p.rlhf_sharpening.reward}
    label = "CLIP, 100 x cos" if rewards == {"clip"} else " / ".join(sorted(rewards))
    fig = figures.reward_curve(runs, smoothing=p.figures.smoothing, ylabel=f"training reward ({label})")
    return figures.save(fig, "fig6_reward_curve", dpi=p.figures.dpi)


def show(result: list[Path], p: config.Params):
    return figures.inline(result[1])
