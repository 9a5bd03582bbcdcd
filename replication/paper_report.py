"""paper_figures/REPORT.md and REPORT.pdf, the tables as CSV and LaTeX, and the compact metrics DVC shows.

Everything is rendered from the result files (results/*.json, results/train/*.csv) and the figures the figure
stages drew, through one list of blocks: the Markdown and the PDF are two renderings of the same blocks, so they
cannot disagree. The verdicts are `replication.claims`' records; the controls come first because a verdict is
only as informative as the controls beside it.

Artefacts of the paper that no stage regenerates yet are listed as such, never given a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from . import paths, tables
from .claims import PAPER_SDXL, Claim, Results, claims
from .stats import ci_text

# The paper's artefacts (PAPER.md) and the stage that regenerates each; None: not regenerated yet.
ARTEFACTS = {
    "Table 1 (base-model row)": "evaluate_base",
    "Table 1 (CLIP column of the sharpened models and standard fine-tuning)": "evaluate",
    "Table 1 (all 11 systems x 10 columns)": None,
    "Table 2 (RLHF sharpening over n)": None,
    "Table 3 (RLHF sharpening over m)": None,
    "Fig. 3, Figs. 9-10 (samples; the CLIP-reward row)": "samples",
    "Fig. 3 (the rows of the other training rewards)": None,
    "Fig. 4 (training loss, SFT-DS vs standard fine-tuning, JourneyDB role)": "fig4",
    "Fig. 4 (the other two data sets; 3 seeds)": None,
    "Fig. 5 (CLIP score vs NFE)": "fig5",
    "Fig. 6 (training reward mean and spread)": "fig6",
    "Fig. 7 (user study, the simulated rater)": "user_study",
}
METRICS_DIR = "metrics"  # results/metrics/: one small file per table, declared as DVC metrics


@dataclass
class ReportParams:
    """params.yaml: report."""

    pdf_format: str = "A4"  # paper_figures/REPORT.pdf's page size: A4 | Letter
    pdf_orientation: str = "landscape"  # landscape | portrait (the claims table is wide)

    def __post_init__(self):
        if self.pdf_format not in ("A4", "Letter"):
            raise ValueError(f"report.pdf_format is {self.pdf_format!r}; use A4 or Letter")
        if self.pdf_orientation not in ("landscape", "portrait"):
            raise ValueError(f"report.pdf_orientation is {self.pdf_orientation!r}; use landscape or portrait")


@dataclass
class Block:
    kind: str  # h1 | h2 | p | table | image
    content: object  # text, a DataFrame, or a figure's path relative to paper_figures/
    caption: str = ""


# ----------------------------------------------------------------------------- the tables
def claims_frame(items: list[Claim]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"artefact": c.artefact, "claim": c.statement, "paper": c.paper, "ours": c.ours, "verdict": c.verdict}
            for c in items
        ],
        index=[c.id for c in items],
    )


def report_tables(res: Results) -> dict[str, pd.DataFrame]:
    """Every table the report shows, by the file name it is also written under (paper_figures/tables/)."""
    out: dict[str, pd.DataFrame] = {}
    con = res.json("controls.json")
    if con:
        out["controls"] = tables.controls_table(con)
    every = claims(res.folder)
    if every:
        out["claims"] = claims_frame(every)
    bm = res.json("base_model.json")
    if bm:
        out["table1_base"] = pd.DataFrame(
            {
                c: {
                    "ours (95% CI)": ci_text(v),
                    "paper (SDXL)": PAPER_SDXL.get(c),
                    "evaluator": bm["evaluators"].get(c, ""),
                }
                for c, v in bm["columns"].items()
            }
        ).T
    ev = res.json("eval_clip.json")
    if ev:
        out["table1_clip"] = tables.eval_table(ev)
    sweep = res.json("nfe_sweep.json")
    if sweep:
        out["fig5_nfe"] = tables.nfe_table(sweep, ("clip",))
    f4 = res.json("fig4.json")
    if f4:
        rows = {
            name: {
                "steps": r["steps"],
                "convergence step": r["convergence_step"] if r["convergence_step"] is not None else "never",
                "final loss (95% CI)": ci_text(r["final"], 4),
                "roughness (95% CI)": ci_text(r["roughness"], 4),
            }
            for name, r in f4["runs"].items()
        }
        d = f4["sft_sharpening - standard_finetune"]
        rows["SFT-DS - standard"] = {
            "steps": "",
            "convergence step": "",
            "final loss (95% CI)": ci_text(d["final"], 4),
            "roughness (95% CI)": ci_text(d["roughness"], 4),
        }
        out["fig4_convergence"] = pd.DataFrame(rows).T
    us = res.json("user_study.json")
    if us:
        out["fig7_user_study"] = tables.user_study_table(us)
    base = res.json("base_model_report.json")
    if base:
        out["base_model"] = tables.base_model_table(base).round(3)
    rew = res.json("rewards_report.json")
    if rew:
        out["rewards"] = tables.reward_summary(rew)
    return out


# ----------------------------------------------------------------------------- the compact metrics
def compact_metrics(res: Results) -> dict[str, dict]:
    """One small, flat file per table for `dvc metrics show`: point estimates and verdict counts, no CIs."""
    out: dict[str, dict] = {}
    con = res.json("controls.json")
    if con:
        c = con["controls"]
        noise = [abs(v["delta"]) for v in c.values() if v["control"] == "noise"]
        best = [v["delta"] for v in c.values() if v["control"].startswith("best_of_n")]
        out["controls"] = {
            "passed": sum(con["passed"].values()),
            "of": len(con["passed"]),
            **{k.replace("/", "_"): round(v["delta"], 4) for k, v in c.items() if v["control"] in ("draft", "oracle")},
            **({"noise_largest_move": round(max(noise), 4)} if noise else {}),
            **({"best_of_n_smallest_gain": round(min(best), 4)} if best else {}),
        }
    bm = res.json("base_model.json")
    if bm:
        out["table1_base"] = {c: round(v["mean"], 4) for c, v in bm["columns"].items()}
    ev = res.json("eval_clip.json")
    if ev:
        out["table1_clip"] = {name: round(r["clip"]["mean"], 4) for name, r in ev["systems"].items()}
    sweep = res.json("nfe_sweep.json")
    if sweep:
        fig5 = {"base": round(sweep["base"]["columns"]["clip"]["mean"], 4)}
        for key, m in sweep["methods"].items():  # each method at its largest budget
            q = m["points"][-1]
            fig5[f"{key}_x{q['budget_multiple']:g}"] = round(q["columns"]["clip"]["mean"], 4)
        for key, r in sweep["sharpened"].items():
            fig5[key] = round(r["columns"]["clip"]["mean"], 4)
        out["fig5"] = fig5
    f4 = res.json("fig4.json")
    if f4:
        d = f4["sft_sharpening - standard_finetune"]
        out["fig4"] = {
            **{f"{n}_final_loss": round(r["final"]["mean"], 5) for n, r in f4["runs"].items()},
            "final_loss_diff": round(d["final"]["mean"], 5),
            "roughness_diff": round(d["roughness"]["mean"], 5),
        }
    us = res.json("user_study.json")
    if us:
        out["fig7"] = {f"{n}_preferred": round(r["preferred"]["mean"], 4) for n, r in us["systems"].items()}
    every = claims(res.folder)
    if every:
        counts: dict[str, int] = {}
        for c in every:
            counts[c.verdict] = counts.get(c.verdict, 0) + 1
        out["verdicts"] = dict(sorted(counts.items()))
    return out


# ----------------------------------------------------------------------------- the document
def blocks(res: Results) -> list[Block]:
    tabs = report_tables(res)
    con = res.json("controls.json")
    out = [
        Block("h1", "Diffusion-Sharpening replication: report"),
        Block(
            "p",
            "Generated by the `report` stage from the result files of the last `dvc repro` of the tiny profile "
            "(a synthetic compositional world trained from scratch; scales differ from the paper's SDXL by "
            "construction, so compare orderings and verdicts, not values). Every number below is read from "
            "results/; the paper's numbers are copied from the paper. Verdicts: holds / does not hold / not "
            "distinguishable (the 95% CI contains no effect) / cannot be tested here; controls pass or fail.",
        ),
        Block("h2", "Controls: can this laboratory see an effect?"),
    ]
    if con:
        failing = [k for k, ok in con["passed"].items() if not ok]
        out.append(
            Block(
                "p",
                f"Paired differences against the base model on {con['n_prompts']} held-out prompts "
                f"({con['images_per_prompt']} images each): {sum(con['passed'].values())} of {len(con['passed'])} "
                "controls pass"
                + (
                    f"; failing: {', '.join(failing)}. A verdict below that leans on it is uninformative."
                    if failing
                    else "."
                ),
            )
        )
        out.append(Block("table", tabs["controls"], "controls"))
    else:
        out.append(Block("p", "No controls were run (results/controls.json is missing)."))
    out += [
        Block("h2", "The paper's claims"),
        Block("table", tabs["claims"].drop(index="controls/all", errors="ignore"), "claims")
        if "claims" in tabs
        else Block("p", "No claim can be judged yet: the result files are missing."),
    ]
    if "table1_base" in tabs:
        out += [
            Block("h2", "Table 1: the base model's row"),
            Block("table", tabs["table1_base"], "table1_base"),
        ]
    if "table1_clip" in tabs:
        out += [
            Block("h2", "Table 1: CLIP score of the sharpened models and standard fine-tuning"),
            Block("table", tabs["table1_clip"], "table1_clip"),
        ]
    if "fig4_convergence" in tabs:
        out += [
            Block("h2", "Fig. 4: training loss, SFT-DS vs standard fine-tuning"),
            Block("table", tabs["fig4_convergence"], "fig4_convergence"),
        ]
    if "fig5_nfe" in tabs:
        out += [Block("h2", "Fig. 5: CLIP score against NFE per image"), Block("table", tabs["fig5_nfe"], "fig5_nfe")]
    if "fig7_user_study" in tabs:
        out += [
            Block("h2", "Fig. 7: the user study, RLHF-DS against six systems (the simulated rater)"),
            Block("table", tabs["fig7_user_study"], "fig7_user_study"),
        ]
    for name, title in (
        ("fig7_user_study.png", "Fig. 7: RLHF-DS preferred / comparable / other (bars), the paper's preferred (tick)"),
        ("fig3_samples.png", "Fig. 3 (CLIP-reward row): base model, SFT-DS, RLHF-DS; one seed per column"),
        ("fig9_samples.png", "Fig. 9: more samples"),
        ("fig10_samples.png", "Fig. 10: more samples"),
        ("fig4_loss.png", "Fig. 4: training loss"),
        ("fig5_nfe.png", "Fig. 5"),
        ("fig6_reward_curve.png", "Fig. 6: the training reward"),
    ):
        if (paths.figures() / name).exists():
            out.append(Block("image", name, title))
    for key, title in (("base_model", "The base model per category"), ("rewards", "The learned rewards")):
        if key in tabs:
            out += [Block("h2", title), Block("table", tabs[key], key)]
    out += [
        Block("h2", "What this report does not cover yet"),
        Block(
            "p",
            "These artefacts of the paper have no stage yet, so no verdict is given on them: "
            + "; ".join(a for a, stage in ARTEFACTS.items() if stage is None)
            + ".",
        ),
    ]
    return out


def markdown(items: list[Block]) -> str:
    out = []
    for b in items:
        if b.kind == "h1":
            out.append(f"# {b.content}")
        elif b.kind == "h2":
            out.append(f"## {b.content}")
        elif b.kind == "p":
            out.append(str(b.content))
        elif b.kind == "table":
            out.append(
                tables.markdown_table(b.content) + f"\n\n(also `paper_figures/tables/{b.caption}.csv` and `.tex`)"
            )
        elif b.kind == "image":
            out.append(f"![{b.caption}]({b.content})")
        else:
            raise ValueError(f"unknown block kind {b.kind!r}")
    return "\n\n".join(out) + "\n"


def _latin1(text: str) -> str:
    """The PDF's core fonts are Latin-1: the few other characters our texts use, spelled out."""
    for a, b in (
        ("\u2212", "-"),
        ("\u2264", "<="),
        ("\u2265", ">="),
        ("\u2014", "-"),
        ("\u2013", "-"),
        ("\u2019", "'"),
    ):
        text = text.replace(a, b)
    return text.encode("latin-1", "replace").decode("latin-1")


def pdf(items: list[Block], path: Path, p: ReportParams | None = None) -> Path:
    """The same blocks as a PDF (fpdf2), with a fixed creation date so reruns give the same bytes."""
    from fpdf import FPDF

    p = p or ReportParams()
    doc = FPDF(orientation=p.pdf_orientation, format=p.pdf_format)
    doc.set_creation_date(datetime(2025, 2, 17, tzinfo=UTC))  # the paper's date: a constant, not the run's
    doc.set_auto_page_break(True, margin=12)
    doc.add_page()
    width = doc.w - doc.l_margin - doc.r_margin
    for b in items:
        if b.kind in ("h1", "h2"):
            doc.set_font("Helvetica", "B", 16 if b.kind == "h1" else 12)
            doc.multi_cell(width, 8, _latin1(str(b.content)))
            doc.ln(1)
        elif b.kind == "p":
            doc.set_font("Helvetica", "", 9)
            doc.multi_cell(width, 4.5, _latin1(str(b.content).replace("`", "")))
            doc.ln(2)
        elif b.kind == "table":
            df = b.content
            doc.set_font("Helvetica", "", 6.5 if df.shape[1] > 5 else 7.5)
            with doc.table(text_align="LEFT", line_height=3.6, first_row_as_headings=True) as t:
                t.row(["", *(_latin1(str(c)) for c in df.columns)])
                for idx, row in df.iterrows():
                    t.row([_latin1(str(idx)), *(_latin1(tables.cell_text(v)) for v in row.tolist())])
            doc.ln(3)
        elif b.kind == "image":
            doc.set_font("Helvetica", "I", 9)
            doc.multi_cell(width, 5, _latin1(b.caption))
            doc.image(str(paths.figures() / b.content), w=min(width, 180))
            doc.ln(3)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc.output(str(path))
    return path


def write(p: ReportParams | None = None, folder: Path | None = None) -> dict[str, list[str]]:
    """Write REPORT.md and REPORT.pdf, every table as CSV and LaTeX, and results/metrics/*.json; the paths
    written."""
    res = Results(folder)
    items = blocks(res)
    fig = paths.figures()
    written = {"report": [], "tables": [], "metrics": []}
    (fig / "REPORT.md").write_text(markdown(items))
    written["report"].append("paper_figures/REPORT.md")
    pdf(items, fig / "REPORT.pdf", p)
    written["report"].append("paper_figures/REPORT.pdf")
    (fig / "tables").mkdir(parents=True, exist_ok=True)
    for name, df in report_tables(res).items():
        df.to_csv(fig / "tables" / f"{name}.csv")
        (fig / "tables" / f"{name}.tex").write_text(df.astype(str).to_latex(escape=True))
        written["tables"] += [f"paper_figures/tables/{name}.csv", f"paper_figures/tables/{name}.tex"]
    for name, m in compact_metrics(res).items():
        paths.write_json(paths.results() / METRICS_DIR / f"{name}.json", m)
        written["metrics"].append(f"results/{METRICS_DIR}/{name}.json")
    return written


__all__ = [
    "ReportParams",
    "Block",
    "blocks",
    "markdown",
    "pdf",
    "write",
    "report_tables",
    "compact_metrics",
    "ARTEFACTS",
]
