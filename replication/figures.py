"""House plot style and byte-stable figure files (PDF + PNG) for paper_figures/.

Matplotlib writes creation dates and its version into files by default; `save` strips those so
a rerun with the same data gives byte-identical files.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import paths  # noqa: E402
from .stats import moving_average  # noqa: E402


@dataclass
class FiguresParams:
    """params.yaml: figures."""

    smoothing: int = 10  # moving-average window (steps) for training curves
    dpi: int = 200


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


def reward_curve(
    runs: dict[str, Path],
    smoothing: int = 10,
    title: str | None = None,
    ylabel: str = "training reward (CLIP, 100 x cos)",
):
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
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(loc="lower right", frameon=False)
    return fig


def loss_curve(runs: dict[str, Path], smoothing: int = 10, title: str | None = None, key: str = "loss"):
    """Training loss against steps (moving average, raw values faint), one line per run (Fig. 4's panels)."""
    use_style()
    fig, ax = plt.subplots(figsize=(4.2, 2.8))
    palette = [COLORS["sft"], COLORS["standard"], COLORS["rlhf"], COLORS["other"], COLORS["base"]]
    for i, (label, path) in enumerate(runs.items()):
        log = read_log(path)
        c = (
            COLORS["rlhf" if "rlhf" in label.lower() else "sft"]
            if "sharpening" in label.lower()
            else palette[1 + i % 4]
        )
        ax.plot(log["step"], log[key], color=c, lw=0.5, alpha=0.25)
        ax.plot(log["step"], moving_average(log[key], smoothing), color=c, lw=1.4, label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"training {key.replace('_', ' ')}")
    if title:
        ax.set_title(title)
    ax.legend(loc="upper right", frameon=False)
    return fig


def training_curve(log: Path, smoothing: int = 10, reward: str | None = None):
    """One run's curve as a notebook shows it: its training reward (mean +/- std) if it logs one, else its loss."""
    if "reward_mean" in read_log(log):
        return reward_curve({log.stem: log}, smoothing=smoothing, ylabel=f"training reward ({reward or 'its own'})")
    return loss_curve({log.stem: log}, smoothing=smoothing)


def inline(path: Path):
    """A saved PNG for a notebook to show."""
    from IPython.display import Image

    return Image(filename=str(path))


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


# ----------------------------------------------------------------------------- Fig. 5 (stage fig5)
METHOD_COLORS = {"demon": "#8e44ad", "free2guide": "#16a085", "inference_scaling": "#d35400", "best_of_n": "#7f8c8d"}
METHOD_MARKERS = {"demon": "o", "free2guide": "s", "inference_scaling": "^", "best_of_n": "v"}


def nfe_curve(res: dict, column: str = "clip", title: str | None = None):
    """Fig. 5: a metric against NFE per image (log x) for the inference-time methods (one curve each, 95% CI
    bands) and the sharpened models as single points at the base cost (stage nfe_sweep's result)."""
    use_style()
    fig, ax = plt.subplots(figsize=(4.6, 3.0))
    for name, m in res.get("methods", {}).items():
        pts = [q for q in m["points"] if column in q["columns"]]
        if not pts:
            continue
        x = np.array([q["nfe_per_image"] for q in pts])
        y = np.array([q["columns"][column]["mean"] for q in pts])
        lo = np.array([q["columns"][column]["ci_low"] for q in pts])
        hi = np.array([q["columns"][column]["ci_high"] for q in pts])
        c = METHOD_COLORS.get(name, COLORS["other"])
        ax.plot(x, y, marker=METHOD_MARKERS.get(name, "o"), ms=3.5, lw=1.3, color=c, label=m["label"])
        ax.fill_between(x, lo, hi, color=c, alpha=0.12, lw=0)
    for name, r in res.get("sharpened", {}).items():
        if column not in r["columns"]:
            continue
        v = r["columns"][column]
        c = COLORS["rlhf" if "rlhf" in name else "sft"]
        ax.errorbar(
            [r["nfe_per_image"]],
            [v["mean"]],
            yerr=[[v["mean"] - v["ci_low"]], [v["ci_high"] - v["mean"]]],
            fmt="*",
            ms=10,
            color=c,
            capsize=2,
            lw=1,
            label=f"{r['label']} (base cost)",
            zorder=5,
        )
        ax.axhline(v["mean"], color=c, lw=0.7, ls=":", zorder=1)
    base = res.get("base")
    if base and column in base["columns"]:
        ax.plot(
            [base["nfe_per_image"]],
            [base["columns"][column]["mean"]],
            "D",
            ms=5,
            color=COLORS["base"],
            label="Base model",
            zorder=4,
        )
    ax.set_xscale("log")
    ax.set_xlabel("NFE per image (UNet evaluations, counted)")
    ax.set_ylabel(f"{column.replace('_', ' ')} score" + (" (evaluator CLIP, cosine)" if column == "clip" else ""))
    if title:
        ax.set_title(title)
    ax.legend(loc="best", frameon=False, fontsize=6.5)
    return fig


# ----------------------------------------------------------------------------- Figs. 3, 9, 10 (stage samples)
def sample_rows(images: dict[str, np.ndarray], prompts: list[str], size: float = 1.15):
    """One row per system, one column per prompt (same seed down a column), each column headed by its prompt."""
    import textwrap

    use_style()
    labels = list(images)
    n = len(prompts)
    fig, axes = plt.subplots(
        len(labels), n, figsize=(0.5 + n * size, len(labels) * size + 0.7), squeeze=False, constrained_layout=True
    )
    for r, label in enumerate(labels):
        if len(images[label]) != n:
            raise ValueError(f"{label}: {len(images[label])} images for {n} prompts")
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(images[label][c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if r == 0:
                ax.set_title("\n".join(textwrap.wrap(prompts[c], 24)[:4]), fontsize=5)
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    return fig


# ----------------------------------------------------------------------------- Fig. 7 (stage user_study)
def user_study_bars(res: dict):
    """Fig. 7: per system, the shares of 'reference preferred' / 'comparable' / 'other preferred' as stacked
    horizontal bars, with the paper's 'preferred' share marked."""
    use_style()
    names = list(res["systems"])
    fig, ax = plt.subplots(figsize=(5.0, 0.45 * len(names) + 0.9))
    colors = {"preferred": COLORS["rlhf"], "comparable": "#bbbbbb", "other": COLORS["base"]}
    for i, name in enumerate(names):
        r = res["systems"][name]
        left = 0.0
        for part in ("preferred", "comparable", "other"):
            w = 100 * r[part]["mean"]
            ax.barh(i, w, left=left, color=colors[part], label=part if i == 0 else None, height=0.6)
            left += w
        if "paper" in r:
            ax.plot(
                r["paper"]["preferred"],
                i,
                marker="|",
                color="black",
                ms=14,
                mew=1.5,
                label="paper: preferred" if i == 0 else None,
            )
    ax.set_yticks(range(len(names)), [res["systems"][n]["label"] for n in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel(f"% of judgements ({res['n_prompts']} prompts x {res['raters']} simulated raters)")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=4, frameon=False, fontsize=6)
    return fig
