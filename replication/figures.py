"""House plot style and byte-stable figure files (PDF + PNG) for paper_figures/.

Matplotlib writes creation dates and its version into files by default; `save` strips those so
a rerun with the same data gives byte-identical files.
"""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import paths  # noqa: E402
from .stats import moving_average  # noqa: E402

COLORS = {"sft": "#1b6ca8", "rlhf": "#c0392b", "base": "#555555", "standard": "#e67e22", "other": "#27ae60"}

STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": 100,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,
    "svg.hashsalt": "replication",
}


def use_style() -> None:
    plt.rcParams.update(STYLE)


def save(fig, stem: str, out_dir: Path | None = None, dpi: int = 200) -> list[Path]:
    """Write stem.pdf and stem.png without timestamps or version strings."""
    out_dir = out_dir or paths.figures()
    out_dir.mkdir(parents=True, exist_ok=True)
    pdf, png = out_dir / f"{stem}.pdf", out_dir / f"{stem}.png"
    fig.savefig(pdf, metadata={"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None})
    fig.savefig(png, dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    return [pdf, png]


def read_log(path: Path) -> dict[str, np.ndarray]:
    """A training metrics CSV (replication.train) as columns of floats."""
    with Path(path).open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} has no logged steps")
    return {k: np.array([float(r[k]) if r[k] != "" else np.nan for r in rows]) for k in rows[0]}


def reward_curve(runs: dict[str, Path], smoothing: int = 10, title: str | None = None):
    """Fig. 6: training reward mean +/- std (over the trajectories of each step) against steps."""
    use_style()
    fig, ax = plt.subplots(figsize=(4.2, 2.8))
    for label, path in runs.items():
        log = read_log(path)
        key = "rlhf" if "rlhf" in label.lower() else "sft"
        mean = moving_average(log["reward_mean"], smoothing)
        std = moving_average(log["reward_std"], smoothing)
        ax.plot(log["step"], mean, color=COLORS[key], lw=1.4, label=label)
        ax.fill_between(log["step"], mean - std, mean + std, color=COLORS[key], alpha=0.2, lw=0)
    ax.set_xlabel("training step")
    ax.set_ylabel("training reward (CLIP, 100 x cos)")
    if title:
        ax.set_title(title)
    ax.legend(loc="lower right", frameon=False)
    return fig


def image_grid(images, captions=None, ncols: int = 8, size: float = 1.1):
    """A grid of uint8 images (N, H, W, 3) with wrapped captions."""
    import textwrap

    use_style()
    n = len(images)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * (size + 0.45)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], interpolation="nearest")
            if captions is not None:
                ax.set_title("\n".join(textwrap.wrap(captions[i], 22)[:3]), fontsize=5)
    return fig
