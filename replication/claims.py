"""The paper's claims as structured verdicts, computed from a folder of result files.

Each `Claim` names the artefact it comes from, the claim in words, the paper's number, ours (with its CI where
there is one) and a verdict from a fixed vocabulary. The README's sentences and the report's table are
renderings of these records, and `replication.verify` compares the verdicts of two result folders (a fresh run
against the committed one) by their stable `id`.

Verdicts: "holds", "does not hold", "not distinguishable" (the CI contains no effect), "cannot be tested here";
controls are "pass" or "fail".
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from . import paths
from .stats import ci_text

VERDICTS = ("holds", "does not hold", "not distinguishable", "cannot be tested here", "pass", "fail")

# The paper's numbers the claims are set against (PAPER.md, section 4): Table 1's SDXL row and the CLIP scores of
# the fine-tuned systems the `evaluate` stage scores.
PAPER_SDXL = {
    "clip": 0.322,
    "color": 0.6369,
    "shape": 0.5408,
    "texture": 0.5637,
    "spatial": 0.2032,
    "non_spatial": 0.3110,
    "complex": 0.4091,
    "aesthetic": 5.531,
    "image_reward": 0.780,
    "mllm": 0.780,
}
PAPER_CLIP = {
    "sft_sharpening": ("SFT-DS", 0.334),
    "rlhf_sharpening": ("RLHF-DS", 0.338),
    "standard_finetune": ("standard fine-tuning", 0.325),
}


@dataclass(frozen=True)
class Claim:
    id: str  # stable across runs: verify matches claims by it
    artefact: str  # "Table 1", "Fig. 5", "Control", ...
    statement: str  # the claim in words
    paper: str  # the paper's number(s), or "" where the paper states none
    ours: str  # our number(s), with a CI where there is one
    verdict: str  # one of VERDICTS
    detail: str  # one sentence: the numbers behind the verdict

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"claim {self.id}: verdict {self.verdict!r} is not one of {VERDICTS}")

    def sentence(self) -> str:
        return f"{self.artefact}, '{self.statement}': {self.detail}"

    def as_dict(self) -> dict:
        return asdict(self)


def diff_verdict(d: dict) -> str:
    """A paired difference's direction: 'better' (CI above 0), 'worse' (below) or 'not distinguishable'."""
    if d["ci_low"] > 0:
        return "better"
    if d["ci_high"] < 0:
        return "worse"
    return "not distinguishable"


def _rises(d: dict) -> str:
    """The verdict on 'A beats B' from the paired difference A - B."""
    return {"better": "holds", "worse": "does not hold"}.get(diff_verdict(d), "not distinguishable")


class Results:
    """Read access to one folder of result files (the working tree's results/ or a committed copy)."""

    def __init__(self, folder: str | Path | None = None):
        self.folder = Path(folder) if folder is not None else paths.results()

    def json(self, name: str) -> dict | None:
        path = self.folder / name
        return json.loads(path.read_text()) if path.exists() else None

    def train_log(self, run: str) -> list[dict] | None:
        path = self.folder / "train" / f"{run}.csv"
        if not path.exists():
            return None
        with path.open() as f:
            return list(csv.DictReader(f))


def _fig6(res: Results) -> list[Claim]:
    out = []
    for run, label in (("sft_sharpening", "SFT-DS"), ("rlhf_sharpening", "RLHF-DS")):
        log = res.train_log(run)
        if not log:
            continue
        k = max(1, len(log) // 10)
        m0, m1 = (sum(float(r["reward_mean"]) for r in rows) / k for rows in (log[:k], log[-k:]))
        s0, s1 = (sum(float(r["reward_std"]) for r in rows) / k for rows in (log[:k], log[-k:]))
        holds = m1 > m0 and s1 < s0
        out.append(
            Claim(
                id=f"fig6/{run}",
                artefact="Fig. 6",
                statement=f"{label}'s training reward rises and its spread shrinks",
                paper="mean rises, std falls",
                ours=f"mean {m0:.1f} -> {m1:.1f}, std {s0:.1f} -> {s1:.1f}",
                verdict="holds" if holds else "does not hold",
                detail=f"first vs last 10% of {len(log)} steps: mean {m0:.1f} -> {m1:.1f}, std {s0:.1f} -> "
                f"{s1:.1f} ({'holds' if holds else 'does not hold'}).",
            )
        )
    return out


def _fig4(res: Results) -> list[Claim]:
    f4 = res.json("fig4.json")
    if not f4:
        return []
    d = f4["sft_sharpening - standard_finetune"]
    sft, std = f4["runs"]["sft_sharpening"], f4["runs"]["standard_finetune"]
    window = f4["settings"]["window"]
    s_step, t_step = sft["convergence_step"], std["convergence_step"]
    if s_step is None or t_step is None:
        conv = "holds" if t_step is None and s_step is not None else "does not hold" if s_step is None else ""
    else:
        conv = ""
    if not conv:
        # both reach their final level; within one moving-average window of each other they are not told apart
        conv = (
            "not distinguishable" if abs(s_step - t_step) <= window else "holds" if s_step < t_step else "does not hold"
        )
    steps = f"{s_step if s_step is not None else 'never'} vs {t_step if t_step is not None else 'never'}"
    low = {"better": "does not hold", "worse": "holds"}  # a lower loss or roughness is SFT-DS's claim
    out = [
        Claim(
            id="fig4/convergence_step",
            artefact="Fig. 4",
            statement="SFT-DS converges in fewer steps than standard fine-tuning",
            paper="500-1000 vs 1000-1500 steps",
            ours=f"step {steps} (of {sft['steps']} and {std['steps']})",
            verdict=conv,
            detail=f"the {window}-step moving average reaches within {f4['settings']['tolerance']:.0%} of its final "
            f"level at step {steps} of {sft['steps']} and {std['steps']} (one seed; runs within one window of each "
            f"other are not told apart): {conv}.",
        ),
    ]
    for key, what in (("final", "a lower final loss"), ("roughness", "a smoother loss curve")):
        v = low.get(diff_verdict(d[key]), "not distinguishable")
        out.append(
            Claim(
                id=f"fig4/{key}",
                artefact="Fig. 4",
                statement=f"SFT-DS has {what} than standard fine-tuning",
                paper="lower" if key == "final" else "smoother",
                ours=f"SFT-DS - standard = {ci_text(d[key], 4)}",
                verdict=v,
                detail=f"SFT-DS - standard = {ci_text(d[key], 4)} ({key}; CI over steps, one seed): {v}.",
            )
        )
    return out


def _table1_clip(res: Results) -> list[Claim]:
    ev = res.json("eval_clip.json") or {}
    out = []
    for name, d in ev.get("vs_base", {}).items():
        if name not in PAPER_CLIP:
            continue
        label, value = PAPER_CLIP[name]
        out.append(
            Claim(
                id=f"table1/clip/{name}-base",
                artefact="Table 1",
                statement=f"{label} beats the base model on CLIP score",
                paper=f"{value} vs {PAPER_SDXL['clip']}",
                ours=f"{label} - base = {ci_text(d)}",
                verdict=_rises(d),
                detail=f"{label} - base = {ci_text(d)} on {d['n']} prompts: {diff_verdict(d)} (the paper: {value} "
                f"vs {PAPER_SDXL['clip']}).",
            )
        )
    d = ev.get("paired", {}).get("sft_sharpening - standard_finetune")
    if d:
        paper = f"{PAPER_CLIP['sft_sharpening'][1]} vs {PAPER_CLIP['standard_finetune'][1]}"
        out.append(
            Claim(
                id="table1/clip/sft_sharpening-standard_finetune",
                artefact="Table 1 and Fig. 4",
                statement="SFT-DS beats standard fine-tuning on the same data",
                paper=paper,
                ours=f"SFT-DS - standard = {ci_text(d)}",
                verdict=_rises(d),
                detail=f"SFT-DS - standard = {ci_text(d)}: {diff_verdict(d)} (the paper: {paper}).",
            )
        )
    return out


def _fig5(res: Results) -> list[Claim]:
    sweep = res.json("nfe_sweep.json")
    if not sweep or not sweep.get("methods"):
        return []
    best = max(
        (
            (q["columns"]["clip"]["mean"], m["label"], q["nfe_per_image"])
            for m in sweep["methods"].values()
            for q in m["points"]
        ),
        key=lambda x: x[0],
    )
    rising = [
        m["label"]
        for m in sweep["methods"].values()
        if m["points"][-1]["columns"]["clip"]["mean"] > m["points"][0]["columns"]["clip"]["mean"]
    ]
    n = len(sweep["methods"])
    out = [
        Claim(
            id="fig5/inference_time_rises",
            artefact="Fig. 5",
            statement="inference-time methods buy CLIP score with NFEs",
            paper="every inference-time curve rises with NFE",
            ours=f"{len(rising)} of {n} rise; best {best[1]} at {best[2]:.0f} NFE: {best[0]:.3f}",
            verdict="holds" if len(rising) == n else "does not hold",
            detail=f"it rises from the base cost to the largest budget for {len(rising)} of {n} methods; the best "
            f"is {best[1]} at {best[2]:.0f} NFE with {best[0]:.3f} (base model "
            f"{sweep['base']['columns']['clip']['mean']:.3f}).",
        )
    ]
    for key, r in sweep.get("sharpened", {}).items():
        v, d = r["columns"]["clip"], r["vs_base"]["clip"]
        above = v["mean"] > best[0]
        out.append(
            Claim(
                id=f"fig5/{key}_above_inference_time",
                artefact="Fig. 5",
                statement=f"{r['label']} at the base cost ({r['nfe_per_image']:.0f} NFE) is above the "
                "inference-time methods",
                paper="above every inference-time point",
                ours=f"{v['mean']:.3f} vs best {best[0]:.3f}; vs base {ci_text(d)}",
                verdict="holds" if above else "does not hold",
                detail=f"{v['mean']:.3f}, {'above' if above else 'below'} the best of them "
                f"({'holds' if above else 'does not hold'}); against the base model {diff_verdict(d)} "
                f"({ci_text(d)}).",
            )
        )
    return out


def _fig7(res: Results) -> list[Claim]:
    us = res.json("user_study.json")
    if not us:
        return []
    out = []
    for name, r in us["systems"].items():
        d = r["preferred - other"]
        paper = r.get("paper")
        paper_text = f"{paper['preferred']:g}% / {paper['comparable']:g}% / {paper['other']:g}%" if paper else ""
        ours = (
            f"{100 * r['preferred']['mean']:.0f}% / {100 * r['comparable']['mean']:.0f}% / "
            f"{100 * r['other']['mean']:.0f}%; preferred - other = {ci_text(d)}"
        )
        out.append(
            Claim(
                id=f"fig7/{name}",
                artefact="Fig. 7",
                statement=f"people prefer RLHF-DS over {r['label']} more often than the reverse",
                paper=paper_text,
                ours=ours,
                verdict=_rises(d),
                detail=f"preferred / comparable / other {ours} ({us['n_prompts']} prompts x {us['raters']} "
                f"simulated raters; the paper: {paper_text or 'no number'}): {_rises(d)}.",
            )
        )
    return out


def _controls(res: Results) -> list[Claim]:
    con = res.json("controls.json")
    if not con:
        return []
    out = []
    for key, c in con["controls"].items():
        gain = f" by >= {c['min_gain']:g}" if c["min_gain"] else ""
        ci = f"{c['delta']:.3f} [{c['ci'][0]:.3f}, {c['ci'][1]:.3f}] ({c['confidence']:.1%} CI, n = {c['n']})"
        out.append(
            Claim(
                id=f"control/{key}",
                artefact="Control",
                statement=f"{c['control']} moves {c['metric']}: expected to {c['expect']}{gain}",
                paper="",
                ours=ci,
                verdict="pass" if c["pass"] else "fail",
                detail=f"{ci}: {'pass' if c['pass'] else 'fail'}.",
            )
        )
    return out


def _controls_summary(res: Results) -> list[Claim]:
    con = res.json("controls.json")
    if not con:
        return []
    failed = [k for k, ok in con["passed"].items() if not ok]
    n_pass = sum(con["passed"].values())
    return [
        Claim(
            id="controls/all",
            artefact="Controls",
            statement="this laboratory can see an effect",
            paper="",
            ours=f"{n_pass} of {len(con['passed'])} pass",
            verdict="fail" if failed else "pass",
            detail=f"{n_pass} of {len(con['passed'])} controls pass"
            + (f"; failing: {', '.join(failed)} (a verdict that leans on these is uninformative)." if failed else "."),
        )
    ]


def _base_model(res: Results) -> list[Claim]:
    base = res.json("base_model_report.json")
    if not base:
        return []
    cats = base["categories"]
    above = [c for c, v in cats.items() if v["all"] > v["chance"]]
    o = base["overall"]
    holds = len(above) == len(cats) and o["exact_share"] < 1
    return [
        Claim(
            id="base/above_chance_imperfect",
            artefact="Base model",
            statement="clearly better than chance and clearly imperfect on composition",
            paper="",
            ours=f"parser {o['score']:.3f} (chance {o['chance']:.3f}), exact on {o['exact_share']:.0%}",
            verdict="holds" if holds else "does not hold",
            detail=f"above chance on {len(above)} of {len(cats)} categories, overall parser score {o['score']:.3f} "
            f"(chance {o['chance']:.3f}, renders 1.0), exact on {o['exact_share']:.0%} of prompts.",
        )
    ]


def claims(folder: str | Path | None = None, controls: bool = False) -> list[Claim]:
    """Every claim the result files in `folder` (default: results/) can speak to. `controls` adds one record per
    control check besides the summary."""
    res = Results(folder)
    out = _fig6(res) + _table1_clip(res) + _fig4(res) + _fig5(res) + _fig7(res) + _controls_summary(res)
    if controls:
        out += _controls(res)
    return out + _base_model(res)


__all__ = ["Claim", "Results", "claims", "diff_verdict", "PAPER_SDXL", "PAPER_CLIP", "VERDICTS"]
