"""Stage feedback: base-model images judged by the simulated rater, the Pick-a-Pic-role pairs (Diffusion-DPO's
data, generated/pickapic.npz) and the pool the learned rewards train on (generated/feedback.npz)."""

from __future__ import annotations

from .. import config, paths, tables
from ..feedback import FeedbackParams, empty_sets, judged_sets

params = config.loader({"feedback": FeedbackParams})

SKIPPED = (
    "paper scale: the simulated rater judges tiny-world images only; Diffusion-DPO uses its released SDXL "
    "checkpoint and the rewards load released checkpoints"
)


def run(p: config.Params, show_progress: bool = True) -> dict:
    if p.profile == "sdxl":
        (pick, pool), report = empty_sets(), {"skipped": SKIPPED}
    else:
        pick, pool, report = judged_sets(p.feedback, show_progress)
    pick.save(paths.generated() / "pickapic.npz")
    pool.save(paths.generated() / "feedback.npz")
    paths.write_json(paths.results() / "feedback_report.json", report)
    return report


def show(result: dict, p: config.Params):
    return tables.feedback_table(result)
