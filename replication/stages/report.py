"""Stage report: paper_figures/REPORT.md (and .pdf) with a verdict per claim beside the controls, every table as
CSV and LaTeX under paper_figures/tables/, and the compact DVC metrics in results/metrics/."""

from __future__ import annotations

from .. import config, paper_report
from ..paper_report import ReportParams

params = config.loader({"report": ReportParams})


def run(p: config.Params, show_progress: bool = True) -> dict[str, list[str]]:
    return paper_report.write(p.report)


def show(result: dict[str, list[str]], p: config.Params):
    from IPython.display import Markdown

    from .. import paths

    return Markdown((paths.figures() / "REPORT.md").read_text())
