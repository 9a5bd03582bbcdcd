"""Stage samples: Fig. 3 (the base model, SFT-DS and RLHF-DS on 4 prompts) and Figs. 9-10 (more prompts), each
column one prompt and one seed for every system, the prompt above it. The prompts are spread evenly over the
DrawBench-like set; results/samples.json records which, with their seeds."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import config, data, figures, paths
from ..evaluate import GenerationParams, generate_cached, seeds_for
from ..figures import FiguresParams
from ..tensors import default_device

LABELS = {"base": "Base model", "sft_sharpening": "SFT-DS", "rlhf_sharpening": "RLHF-DS"}


@dataclass
class SamplesParams:
    """params.yaml: samples."""

    systems: tuple[str, ...] = ("base", "sft_sharpening", "rlhf_sharpening")  # models/<name>, one row each
    prompts: str = "drawbench"
    fig3: int = 4  # prompts in Fig. 3
    fig9: int = 8  # prompts in Fig. 9, and as many again in Fig. 10
    generation: GenerationParams = field(default_factory=GenerationParams)
    seed: int = 3  # the seeds differ from the evaluation's, so these are fresh draws, not the scored images

    def __post_init__(self):
        if self.fig3 < 1 or self.fig9 < 1:
            raise ValueError("samples.fig3 and samples.fig9 must be >= 1")


params = config.loader({"samples": SamplesParams, "figures": FiguresParams})


def run(p: config.Params, show_progress: bool = True) -> dict:
    s = p.samples
    rows = data.load_prompts(s.prompts)
    n = s.fig3 + 2 * s.fig9
    if n > len(rows):
        raise ValueError(f"samples needs {n} prompts; {s.prompts} has {len(rows)}: lower samples.fig3 or fig9")
    pick = np.linspace(0, len(rows) - 1, n).round().astype(int)
    prompts = [rows[i]["prompt"] for i in pick]
    seeds = seeds_for(n, s.seed)
    missing = [name for name in s.systems if not (paths.models() / name).exists()]
    if missing:
        raise FileNotFoundError(f"samples needs models/{missing[0]}: run `dvc repro {missing[0]}` first")
    images = {
        LABELS.get(name, name): generate_cached(paths.models() / name, prompts, seeds, s.generation, default_device())[
            0
        ]
        for name in s.systems
    }
    parts = {
        "fig3_samples": slice(0, s.fig3),
        "fig9_samples": slice(s.fig3, s.fig3 + s.fig9),
        "fig10_samples": slice(s.fig3 + s.fig9, n),
    }
    for stem, sl in parts.items():
        fig = figures.sample_rows({k: v[sl] for k, v in images.items()}, prompts[sl])
        figures.save(fig, stem, dpi=p.figures.dpi)
    out = {
        "prompt_set": s.prompts,
        "systems": list(s.systems),
        "figures": {stem: {"prompts": prompts[sl], "seeds": seeds[sl]} for stem, sl in parts.items()},
        "generation": {"num_steps": s.generation.num_steps, "guidance_scale": s.generation.guidance_scale},
    }
    paths.write_json(paths.results() / "samples.json", out)
    return out


def show(result: dict, p: config.Params):
    return figures.inline(paths.figures() / "fig3_samples.png")
