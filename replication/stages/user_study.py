"""Stage user_study: Fig. 7, the simulated rater judging RLHF-DS against six systems on the same prompts and
seeds (results/user_study.json, paper_figures/fig7_user_study.*)."""

from __future__ import annotations

import pandas as pd

from .. import config, figures, paths
from ..figures import FiguresParams
from ..recipes.user_study import UserStudyParams, user_study
from ..world.rater import Rater

params = config.loader({"user_study": UserStudyParams, "feedback.rater": Rater, "figures": FiguresParams})


def run(p: config.Params, show_progress: bool = True) -> dict:
    res = user_study(p.user_study, p.feedback.rater, show_progress)
    paths.write_json(paths.results() / "user_study.json", res)
    figures.save(figures.user_study_bars(res), "fig7_user_study", dpi=p.figures.dpi)
    return res


def show(result: dict, p: config.Params) -> pd.DataFrame:
    from ..tables import user_study_table

    return user_study_table(result)
