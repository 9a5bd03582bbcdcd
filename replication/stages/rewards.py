"""Stage rewards: the learned rewards (compositional, ImageReward and aesthetic roles) and their evaluator copies."""

from __future__ import annotations

from .. import config, paths, tables
from ..recipes.rewards import RewardsParams, reward_models
from ..world.rater import Rater

params = config.loader({"rewards": RewardsParams, "feedback.rater": Rater})


def run(p: config.Params, show_progress: bool = True) -> dict:
    report = reward_models(p.rewards, p.feedback.rater, show_progress)
    paths.write_json(paths.results() / "rewards_report.json", report)
    return report


def show(result: dict, p: config.Params):
    return tables.rewards_table(result)
